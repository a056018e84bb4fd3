// Elementwise ops on contiguous f32 tensors: ReLU6 forward and backward, residual add, in-place
// accumulate (gradients of a tensor used twice) and scaling.
//
// Every entry point is instantiated twice by src/ops/elementwise.rs: with V = vec4<f32> over
// the first len/4 vec4 units, and with V = f32 over the last len%4 elements (the tail), so a
// length that is not a multiple of 4 needs no padding. Each invocation handles one unit at
// index start + f, where f is its flat index over a grid folded into x and y (65535 workgroups
// per dimension at most); indices past `count` do nothing. Lane i touches unit i of its
// workgroup's run: contiguous per lane, 16-byte loads in the vec4 instance.

alias V = {{V}};

struct Params {
    count: u32,         // units (vec4 or scalar) this dispatch covers
    start: u32,         // first unit, in units of V
    stride_groups: u32, // workgroups along x, to rebuild the flat index
    s: f32,             // scale factor (scale only)
}

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read> x: array<V>;
@group(0) @binding(2) var<storage, read_write> y: array<V>;

// relu6_forward: x, y [len]; y = clamp(x, 0, 6) for one unit.
@compute @workgroup_size(64)
fn relu6_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let f = gid.x + gid.y * p.stride_groups * 64u;
    if (f >= p.count) {
        return;
    }
    let i = p.start + f;
    y[i] = clamp(x[i], V(0.0), V(6.0));
}

// scale: x, y [len]; y = s * x for one unit.
@compute @workgroup_size(64)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>) {
    let f = gid.x + gid.y * p.stride_groups * 64u;
    if (f >= p.count) {
        return;
    }
    let i = p.start + f;
    y[i] = x[i] * p.s;
}

@group(0) @binding(2) var<storage, read> b_in: array<V>;
@group(0) @binding(3) var<storage, read_write> out: array<V>;

// relu6_backward: x, dy, dx [len] (x at binding 1, dy at 2, dx at 3); dx = dy where
// 0 < x < 6, else 0 (the kinks get 0, like PyTorch), for one unit.
@compute @workgroup_size(64)
fn relu6_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let f = gid.x + gid.y * p.stride_groups * 64u;
    if (f >= p.count) {
        return;
    }
    let i = p.start + f;
    let v = x[i];
    out[i] = select(V(0.0), b_in[i], (v > V(0.0)) & (v < V(6.0)));
}

// add: a, b, y [len] (a at binding 1, b at 2, y at 3); y = a + b for one unit.
@compute @workgroup_size(64)
fn add(@builtin(global_invocation_id) gid: vec3<u32>) {
    let f = gid.x + gid.y * p.stride_groups * 64u;
    if (f >= p.count) {
        return;
    }
    let i = p.start + f;
    out[i] = x[i] + b_in[i];
}

@group(0) @binding(1) var<storage, read_write> acc: array<V>;

// add_assign: acc, b [len] (acc at binding 1, read and written; b at 2); acc += b in place
// for one unit.
@compute @workgroup_size(64)
fn add_assign(@builtin(global_invocation_id) gid: vec3<u32>) {
    let f = gid.x + gid.y * p.stride_groups * 64u;
    if (f >= p.count) {
        return;
    }
    let i = p.start + f;
    acc[i] = acc[i] + b_in[i];
}
