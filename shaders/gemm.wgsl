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
// ROWS and COLS are the holes (src/ops/gemm.rs); the loops over them are unrolled when the
// kernel is loaded (`unroll_loops` in src/gpu/kernel.rs), so the tile stays in registers.

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

const ROWS: u32 = {{ROWS}}u;
const COLS: u32 = {{COLS}}u;

@compute @workgroup_size(64)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i_base = wid.x * (64u * ROWS) + lid.x;
    let j0 = wid.y * COLS;
    let k_begin = wid.z * p.k_chunk;
    let k_end = min(k_begin + p.k_chunk, p.k);
    let out_base = wid.z * p.m * p.n;
    var row_a: array<u32, ROWS>;  // where row r of the tile starts in A (clamped)
    for (var r = 0u; r < ROWS; r++) {
        row_a[r] = min(i_base + r * 64u, p.m - 1u) * p.a_si;
    }
    var col_b: array<u32, COLS>;  // where column c starts in B (clamped)
    for (var c = 0u; c < COLS; c++) {
        col_b[c] = min(j0 + c, p.n - 1u) * p.b_sj;
    }
    var acc: array<array<f32, COLS>, ROWS>;
    for (var k = k_begin; k < k_end; k = k + 1u) {
        let ka = k * p.a_sk;
        let kb = k * p.b_sk;
        var av: array<f32, ROWS>;
        for (var r = 0u; r < ROWS; r++) {
            av[r] = a[row_a[r] + ka];
        }
        var bv: array<f32, COLS>;
        for (var c = 0u; c < COLS; c++) {
            bv[c] = b[kb + col_b[c]];
        }
        for (var r = 0u; r < ROWS; r++) {
            for (var c = 0u; c < COLS; c++) {
                acc[r][c] = fma(av[r], bv[c], acc[r][c]);
            }
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        let row = i_base + r * 64u;
        if (row < p.m) {
            for (var c = 0u; c < COLS; c++) {
                if (j0 + c < p.n) {
                    put(out_base + row * p.c_si + (j0 + c) * p.c_sj, acc[r][c]);
                }
            }
        }
    }
}
