// Matrix product with vec4 loads: the variant of gemm.wgsl for shapes whose strides allow
// 16-byte loads (every channel count of the network is a multiple of 8). Same contract:
//
//   C[s, i, j] = sum over k in chunk s of A(i, k) * B(k, j)
//   A(i, k) = a[i * a_si + k * a_sk]      B(k, j) = b[k * b_sj + j * b_sj]
//
// Shapes: m x k times k x n, k a multiple of 4 (its chunks too); one workgroup of 64 lanes,
// LANES_M of them along m, the other 64 / LANES_M taking successive slices of k (split-K:
// slice s writes C[s], summed by the caller). Work of an invocation: a ROWS x COLS tile of C
// (rows 4g..4g+3 of the ROWS/4 row groups g spaced LANES_M apart, columns j0..j0+COLS shared
// by the workgroup), walking its k chunk four at a time: per k-step it loads ROWS + COLS vec4
// texels and does 4 x ROWS x COLS multiply-adds.
//
// On CPU drivers (lavapipe) every load instruction costs about the same whatever it loads, so
// the tile is large. Every loop below over a constant (ROWS, COLS, 4u, ...) is unrolled when
// the kernel is loaded (`unroll_loops` in src/gpu/kernel.rs), so `acc`, `a` and `b` are
// indexed by constants only and live in registers.
//
// A is read as vec4 along k (A_ALONG_K: a_sk = 1) or along i (a_si = 1, four rows of one k a
// texel); B along k (B_ALONG_K: b_sk = 1) or along j (b_sj = 1). Requirements checked by the
// caller: the vec4 strides multiples of 4, m % 4 == 0 when A is read along i, n % 4 == 0 when
// B is read along j.
//
// The holes, filled per variant by src/ops/gemm/codegen.rs: the constants below; OPERANDS,
// the bindings of A and B with their loaders ld_a/ld_b (storage buffers, or rgba32float
// textures holding the same floats, texel t at (t % 1024, t / 1024): on CPU drivers a texture
// load is a SIMD gather and a storage load a per-lane loop); OUTPUT, C with its writers put
// (array<f32>) and put4 (array<vec4<f32>>, when C's rows are dense and their lengths multiples
// of 4), overwrite or accumulate compiled in; PRE, the packed per-channel BN parameters and
// ld_pre (or a stub); SUBGROUP, all_lanes (subgroupAll, or the condition itself without
// SHARE); LANE_VALUE, subgroupBroadcast, or without SHARE a one-lane stand-in (a module that
// names a subgroup builtin does not compile where the adapter has no subgroups);
// SUBGROUP_ARG, the builtin that names sg_lane (the subgroup lane; without SHARE another
// builtin, unused).

struct Params {
    m: u32, n: u32, k: u32,
    a_si: u32, a_sk: u32, b_sk: u32, b_sj: u32,
    c_si: u32, c_sj: u32,
    k_chunk: u32,
    accumulate: u32,
    pre_cg: u32,  // channel groups of the input transform (PRE), 0 without one
}

@group(0) @binding(0) var<uniform> p: Params;
{{OPERANDS}}
{{OUTPUT}}
{{PRE}}
{{SUBGROUP}}

const ROWS: u32 = {{ROWS}}u;         // rows of C per invocation, a multiple of 4
const COLS: u32 = {{COLS}}u;         // columns of C per invocation, a multiple of 4
const GROUPS: u32 = {{GROUPS}}u;     // ROWS / 4: row groups of 4 per invocation
const COL_GROUPS: u32 = {{COL_GROUPS}}u;  // COLS / 4
const LANES_M: u32 = {{LANES_M}}u;   // lanes along m; 64 / LANES_M slices of k
const A_ALONG_K: bool = {{A_ALONG_K}};
const B_ALONG_K: bool = {{B_ALONG_K}};
// PRE_A / PRE_B: BN with batch statistics, then ReLU6, applied to A's or B's texels as they
// are loaded (`GemmPre` in src/ops/gemm.rs): the channel of A(i, k) is k along k, i along i;
// the channel of B(k, j) is j (B read along j only).
const PRE_A: bool = {{PRE_A}};
const PRE_B: bool = {{PRE_B}};
const VEC4_OUT: bool = {{VEC4_OUT}};
// Store guards only along a dimension where the grid overhangs C: on lavapipe a store under
// a branch costs more (benches/NOTES.md).
const GUARD_M: bool = {{GUARD_M}};
const GUARD_N: bool = {{GUARD_N}};
// SHARE = S > 0: B's texels are loaded once per subgroup of S lanes and passed around. Every
// lane of a k slice needs the same B texels per k-step, and on lavapipe a texture load is a
// gather costing the same for S equal addresses as for S different ones; so lane s loads
// texels s, s + S, ... of the k-step and LANE_VALUE (subgroupBroadcast, a register extract
// there; its lane must be a constant expression) hands them to the others. Used only where whole subgroups lie along m, each inside
// one k slice; a lane past m stays to load.
const SHARE: u32 = {{SHARE}}u;
const LANES: u32 = {{LANES}}u;              // max(SHARE, 1)
const SHARED_LOADS: u32 = {{SHARED_LOADS}}u;  // COLS / LANES, rounded up

// BN + ReLU6 of a texel of one channel group: the BN kernels' expression, so the product sees
// bit for bit what an unfused BN would store.
struct Bn {
    mean: vec4<f32>,
    scale: vec4<f32>,  // gamma * rstd
    beta: vec4<f32>,
}

fn bn_of_group(g: u32) -> Bn {
    return Bn(ld_pre(2u * p.pre_cg + g), ld_pre(g) * ld_pre(3u * p.pre_cg + g), ld_pre(p.pre_cg + g));
}

fn bn_relu6(v: vec4<f32>, f: Bn) -> vec4<f32> {
    return clamp(fma(v - f.mean, f.scale, f.beta), vec4<f32>(0.0), vec4<f32>(6.0));
}

@compute @workgroup_size(64)
fn gemm_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>{{SUBGROUP_ARG}}) {
    let lane_m = lid.x % LANES_M;
    let slice = wid.z * (64u / LANES_M) + lid.x / LANES_M;
    let g_base = wid.x * (LANES_M * GROUPS) + lane_m;
    let j0 = wid.y * COLS;
    let k_begin = min(slice * p.k_chunk, p.k);
    let k_end = min(k_begin + p.k_chunk, p.k);
    let out_base = slice * p.m * p.n;
    if (64u % LANES_M != 0u && lid.x >= 64u / LANES_M * LANES_M) {
        return;  // lanes past the last whole k slice
    }
    // A lane whose rows all lie past m would compute clamped copies of the last row: leave
    // instead, so that lavapipe skips 8-lane batches with no lane left. With shared B loads
    // only a subgroup with no row left may leave.
    if (GUARD_M && all_lanes(4u * g_base >= p.m)) {
        return;
    }

    // Where each row and column starts in A and B (clamped, so that loads stay in bounds),
    // and the transforms that are the same for every k-step.
    var row_a: array<u32, ROWS>;   // A along k: texel index of row r at k = 0
    var group_a: array<u32, GROUPS>;  // A along i: texel column of row group q
    var bn_a: array<Bn, GROUPS>;
    for (var q = 0u; q < GROUPS; q++) {
        let g = g_base + q * LANES_M;
        for (var t = 0u; t < 4u; t++) {
            row_a[4u * q + t] = min(4u * g + t, p.m - 1u) * (p.a_si / 4u);
        }
        group_a[q] = min(g, p.m / 4u - 1u);
        if (PRE_A && !A_ALONG_K) {
            bn_a[q] = bn_of_group(group_a[q]);
        }
    }
    var col_b: array<u32, COLS>;   // B along k: texel index of column c at k = 0
    var group_b: array<u32, COL_GROUPS>;  // B along j: texel column of column group cc
    var bn_b: array<Bn, COL_GROUPS>;
    for (var c = 0u; c < COLS; c++) {
        col_b[c] = min(j0 + c, p.n - 1u) * (p.b_sj / 4u);
    }
    for (var cc = 0u; cc < COL_GROUPS; cc++) {
        group_b[cc] = min(j0 / 4u + cc, p.n / 4u - 1u);
        if (PRE_B) {
            bn_b[cc] = bn_of_group(group_b[cc]);
        }
    }
    // With SHARE, load q of lane s is entry e = q * S + s of the k-step's COLS texels,
    // clamped to the last: column e of the tile along k, or texel (t, cc) = (e / COL_GROUPS,
    // e % COL_GROUPS) along j, transformed by the loading lane.
    var shared_b: array<u32, SHARED_LOADS>;  // along k: texel index at k = 0; along j: column
    var shared_t: array<u32, SHARED_LOADS>;
    var bn_shared: array<Bn, SHARED_LOADS>;
    if (SHARE > 0u) {
        for (var q = 0u; q < SHARED_LOADS; q++) {
            let e = min(q * SHARE + sg_lane, COLS - 1u);
            if (B_ALONG_K) {
                shared_b[q] = min(j0 + e, p.n - 1u) * (p.b_sj / 4u);
            } else {
                shared_t[q] = e / COL_GROUPS;
                shared_b[q] = min(j0 / 4u + e % COL_GROUPS, p.n / 4u - 1u);
                if (PRE_B) {
                    bn_shared[q] = bn_of_group(shared_b[q]);
                }
            }
        }
    }

    // acc[r][cc] holds C(row r, columns 4cc..4cc+3): vec4 multiply-adds keep the unrolled
    // body short enough for the driver to unroll every loop (a scalar accumulator per output
    // left tiles of 8 x 16 and over rolled, their arrays in memory: 3x slower).
    var acc: array<array<vec4<f32>, COL_GROUPS>, ROWS>;
    for (var k = k_begin; k < k_end; k += 4u) {
        // a[r] = A(row r, k..k+3) and b[t][cc] = B(k + t, columns 4cc..4cc+3), whatever the
        // layouts.
        var a: array<vec4<f32>, ROWS>;
        if (A_ALONG_K) {
            var bn_k: Bn;
            if (PRE_A) {
                bn_k = bn_of_group(k / 4u);  // one channel group per k-step, for every row
            }
            for (var r = 0u; r < ROWS; r++) {
                let v = ld_a(row_a[r] + k / 4u);
                a[r] = select(v, bn_relu6(v, bn_k), PRE_A);
            }
        } else {
            for (var t = 0u; t < 4u; t++) {
                for (var q = 0u; q < GROUPS; q++) {
                    let u = ld_a((k + t) * (p.a_sk / 4u) + group_a[q]);
                    let v = select(u, bn_relu6(u, bn_a[q]), PRE_A);
                    for (var i = 0u; i < 4u; i++) {
                        a[4u * q + i][t] = v[i];
                    }
                }
            }
        }
        var b: array<array<vec4<f32>, COL_GROUPS>, 4>;
        if (SHARE == 0u) {
            if (B_ALONG_K) {
                for (var c = 0u; c < COLS; c++) {
                    let v = ld_b(col_b[c] + k / 4u);
                    for (var t = 0u; t < 4u; t++) {
                        b[t][c / 4u][c % 4u] = v[t];
                    }
                }
            } else {
                for (var t = 0u; t < 4u; t++) {
                    for (var cc = 0u; cc < COL_GROUPS; cc++) {
                        let u = ld_b((k + t) * (p.b_sk / 4u) + group_b[cc]);
                        b[t][cc] = select(u, bn_relu6(u, bn_b[cc]), PRE_B);
                    }
                }
            }
        } else {
            // This lane's loads of the k-step's COLS texels, then every texel from its lane.
            var loaded: array<vec4<f32>, SHARED_LOADS>;
            for (var q = 0u; q < SHARED_LOADS; q++) {
                if (B_ALONG_K) {
                    loaded[q] = ld_b(shared_b[q] + k / 4u);
                } else {
                    let u = ld_b((k + shared_t[q]) * (p.b_sk / 4u) + shared_b[q]);
                    loaded[q] = select(u, bn_relu6(u, bn_shared[q]), PRE_B);
                }
            }
            if (B_ALONG_K) {
                for (var c = 0u; c < COLS; c++) {
                    let v = {{LANE_VALUE}}(loaded[c / LANES], c % LANES);
                    for (var t = 0u; t < 4u; t++) {
                        b[t][c / 4u][c % 4u] = v[t];
                    }
                }
            } else {
                for (var t = 0u; t < 4u; t++) {
                    for (var cc = 0u; cc < COL_GROUPS; cc++) {
                        const e = t * COL_GROUPS + cc;  // a constant: t and cc are unrolled
                        b[t][cc] = {{LANE_VALUE}}(loaded[e / LANES], e % LANES);
                    }
                }
            }
        }
        // Each accumulator takes its four k's in a row, in order (so each output's sum is
        // the same as with one scalar accumulator): an accumulator spilled by the register
        // allocator is loaded and stored once per k-step, not once per k.
        for (var r = 0u; r < ROWS; r++) {
            for (var cc = 0u; cc < COL_GROUPS; cc++) {
                var s = acc[r][cc];
                for (var t = 0u; t < 4u; t++) {
                    s = fma(vec4<f32>(a[r][t]), b[t][cc], s);
                }
                acc[r][cc] = s;
            }
        }
    }

    for (var r = 0u; r < ROWS; r++) {
        let row = 4u * (g_base + (r / 4u) * LANES_M) + r % 4u;
        if (!(GUARD_M && row >= p.m)) {
            for (var cc = 0u; cc < COL_GROUPS; cc++) {
                // A group of four columns is all in or all out when n % 4 == 0 (vec4 stores).
                if (VEC4_OUT && !(GUARD_N && j0 + 4u * cc >= p.n)) {
                    put4((out_base + row * p.c_si + j0) / 4u + cc, acc[r][cc]);
                }
                if (!VEC4_OUT) {
                    for (var i = 0u; i < 4u; i++) {
                        let c = 4u * cc + i;
                        if (!(GUARD_N && j0 + c >= p.n)) {
                            put(out_base + row * p.c_si + (j0 + c) * p.c_sj, acc[r][cc][i]);
                        }
                    }
                }
            }
        }
    }
}
