// Bias and layout kernels of a fully connected layer; the matrix products run in
// shaders/gemm.wgsl. For a batch smaller than the other side of a product, src/ops/linear.rs
// computes the product transposed (the gemm row tile then spans the wide side instead of
// idling past the last row of the batch) and transposes the result back here.
//
// add_bias is instantiated with V = vec4<f32> when the output width is a multiple of 4 and
// with V = f32 otherwise; the transposes always with V = f32. Flat indices come from a grid
// folded into x and y (65535 workgroups per dimension at most); indices past `count` do
// nothing.

alias V = {{V}};

struct Params {
    count: u32,         // invocations with work
    stride_groups: u32, // workgroups along x, to rebuild the flat index
    rows: u32,          // add_bias: output features in units of V; transposes: rows of src
    cols: u32,          // transposes: columns of src
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<V>;
@group(0) @binding(2) var<storage, read> bias: array<V>;

// add_bias: y [n, out] row-major (read and written), bias [out].
// One invocation per unit f of y: y[f] += bias[f mod rows]. Lanes take consecutive units.
@compute @workgroup_size(64)
fn add_bias(@builtin(global_invocation_id) gid: vec3<u32>) {
    let f = gid.x + gid.y * p.stride_groups * 64u;
    if (f >= p.count) {
        return;
    }
    y[f] = y[f] + bias[f % p.rows];
}

@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> row_bias: array<f32>;

// transpose: src [rows, cols] -> dst [cols, rows]. One invocation per element f of dst, so
// the writes are contiguous across lanes: dst[f] = src[(f mod rows) * cols + f / rows].
@compute @workgroup_size(64)
fn transpose(@builtin(global_invocation_id) gid: vec3<u32>) {
    let f = gid.x + gid.y * p.stride_groups * 64u;
    if (f >= p.count) {
        return;
    }
    let c = f / p.rows;
    let r = f - c * p.rows;
    dst[f] = src[r * p.cols + c];
}

@group(0) @binding(1) var src_stex: texture_storage_2d<rgba32float, read>;

// transpose_texture: transpose with src read through its texture copy (element i in component
// i % 4 of texel i / 4, see gpu::texture), for cols a multiple of 4. One invocation per texel
// t of src: src[r, 4q .. 4q + 3] with r = t / (cols / 4), written to dst[4q + e, r]. The
// loads of `transpose` stride by `cols`, each a scalar loop over the SIMD lanes on lavapipe;
// here one gather serves four elements, and the 8 lanes of a SIMD batch store into 8
// different cache lines (lavapipe stores are per lane; a batch storing into one line costs
// twice as much, benches/NOTES.md).
@compute @workgroup_size(64)
fn transpose_texture(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x + gid.y * p.stride_groups * 64u;
    if (t >= p.count) {
        return;
    }
    let quads = p.cols / 4u;
    let r = t / quads;
    let c = (t - r * quads) * 4u;
    let tw = textureDimensions(src_stex).x;
    let v = textureLoad(src_stex, vec2<u32>(t % tw, t / tw));
    let o = c * p.rows + r;
    dst[o] = v.x;
    dst[o + p.rows] = v.y;
    dst[o + 2u * p.rows] = v.z;
    dst[o + 3u * p.rows] = v.w;
}

// transpose_bias: src [rows, cols] (y transposed: rows = out, cols = n), row_bias [rows] ->
// dst [cols, rows] = y [n, out]: as transpose, plus the bias of the source row.
@compute @workgroup_size(64)
fn transpose_bias(@builtin(global_invocation_id) gid: vec3<u32>) {
    let f = gid.x + gid.y * p.stride_groups * 64u;
    if (f >= p.count) {
        return;
    }
    let c = f / p.rows;
    let r = f - c * p.rows;
    dst[f] = src[r * p.cols + c] + row_bias[r];
}
