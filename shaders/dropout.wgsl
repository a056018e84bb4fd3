// Inverted dropout with a counter-based mask: element i is kept when the top 24 bits of
// hash(seed, i), scaled to [0, 1), are >= p, and kept elements are scaled by 1 / (1 - p).
// The mask is never stored: forward and backward regenerate it from (seed, i), so the backward
// is the same kernel applied to dy. The hash and the keep test are bit-exact twins of
// dropout_hash and dropout_keep in src/reference/dropout.rs (wrapping u32 ops, 24-bit f32).
//
// Instantiated by src/ops/dropout.rs like the elementwise kernels: V = vec4<f32> (U =
// vec4<u32>, 4 elements per unit) over the first len/4 units, V = f32 (U = u32) over the
// len%4 tail.

alias V = {{V}};
alias U = {{U}};

struct Params {
    count: u32,         // units this dispatch covers
    start: u32,         // first unit, in units of V
    stride_groups: u32, // workgroups along x, to rebuild the flat index from a folded grid
    seed: u32,
    p: f32,             // drop probability
    scale: f32,         // 1 / (1 - p)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<V>;
@group(0) @binding(2) var<storage, read_write> y: array<V>;

// PCG-style hash of (seed, index), componentwise for U = vec4<u32>.
fn dropout_hash(seed: u32, index: U) -> U {
    let v = (index * 747796405u + U(2891336453u)) ^ U(seed * 0x9E3779B9u);
    let word = ((v >> ((v >> U(28u)) + U(4u))) ^ v) * 277803737u;
    return (word >> U(22u)) ^ word;
}

// dropout: x, y [len] (x is the activation forward, dy backward); y = x * mask * scale for
// the elements of one unit, element indices start * W + f * W + LANES.
@compute @workgroup_size(64)
fn dropout(@builtin(global_invocation_id) gid: vec3<u32>) {
    let f = gid.x + gid.y * p.stride_groups * 64u;
    if (f >= p.count) {
        return;
    }
    let i = p.start + f;
    let index = U(i * {{W}}) + {{LANES}};
    let u = V(dropout_hash(p.seed, index) >> U(8u)) * (1.0 / 16777216.0);
    y[i] = select(V(0.0), x[i] * p.scale, u >= V(p.p));
}
