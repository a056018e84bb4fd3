// Matrix product, the kernel behind pointwise (1x1) convolution and linear layers, forward and
// both backward products (they differ only in strides, set by the caller).
//
//   C[s, i, j] = sum over k in chunk s of A(i, k) * B(k, j)
//   A(i, k) = a[i * a_si + k * a_sk]      B(k, j) = b[k * b_sk + j * b_sj]
//   C[s, i, j] = c[s * m * n + i * c_si + j * c_sj]
//
// Grid: x over row blocks of 64*ROWS, y over column blocks of COLS, z over reduction chunks s
// (split-K: the caller sums the slices when there is more than one).
// One invocation computes ROWS x COLS outputs: rows lid.x + r*64 of its row block, columns
// j0 .. j0+COLS. Every lane of a workgroup shares j0, so the B reads are the same address for
// all lanes (uniform: one load on SIMD-per-lane CPUs like lavapipe, a broadcast on GPUs), and
// A reads are one per row. Indices are clamped instead of branched on in the inner loop;
// out-of-range results are simply not stored.
// The ROWS x COLS body is generated (unrolled) by src/ops/gemm.rs into the DECL, LOAD, FMA
// and STORE placeholders below.

struct Params {
    m: u32, n: u32, k: u32,
    a_si: u32, a_sk: u32, b_sk: u32, b_sj: u32,
    c_si: u32, c_sj: u32,
    k_chunk: u32,
    accumulate: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

fn put(idx: u32, v: f32) {
    if (p.accumulate != 0u) {
        c[idx] = c[idx] + v;
    } else {
        c[idx] = v;
    }
}

@compute @workgroup_size(64)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i_base = wid.x * (64u * {{ROWS}}u) + lid.x;
    let j0 = wid.y * {{COLS}}u;
    let k_begin = wid.z * p.k_chunk;
    let k_end = min(k_begin + p.k_chunk, p.k);
    let out_base = wid.z * p.m * p.n;
{{DECL}}
    for (var k = k_begin; k < k_end; k = k + 1u) {
        let ka = k * p.a_sk;
        let kb = k * p.b_sk;
{{LOAD}}
{{FMA}}
    }
{{STORE}}
}
