// Bias of a fully connected layer; the matrix products run in shaders/gemm.wgsl.
//
// src/ops/linear.rs instantiates the kernel with V = vec4<f32> when the output width is a
// multiple of 4 (rows then split into whole vec4 units) and with V = f32 otherwise.

alias V = {{V}};

struct Params {
    count: u32,         // units of y: n * out / (elements per V)
    stride_groups: u32, // workgroups along x, to rebuild the flat index from a folded grid
    outv: u32,          // output features in units of V
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<V>;
@group(0) @binding(2) var<storage, read> bias: array<V>;

// add_bias: y [n, out] row-major (read and written), bias [out].
// One invocation per unit f of y: y[f] += bias[f mod outv]. Lanes take consecutive units.
@compute @workgroup_size(64)
fn add_bias(@builtin(global_invocation_id) gid: vec3<u32>) {
    let f = gid.x + gid.y * p.stride_groups * 64u;
    if (f >= p.count) {
        return;
    }
    y[f] = y[f] + bias[f % p.outv];
}
