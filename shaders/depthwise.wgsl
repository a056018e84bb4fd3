// Depthwise k x k convolution (k in 3, 5, 7; stride 1 or 2; padding k / 2), forward and both
// backward passes. Activations NHWC [n, h, w, c], weights [c, k, k], output NHWC [n, ho, wo, c].
//
// Every entry point gives one invocation one channel group (V: four consecutive channels, one
// rgba32float texel, when the operands are read through textures; one channel when they are
// storage buffers) of a few images and a strip of a few columns, and walks down a chunk of rows
// keeping a rolling window of source rows in registers, so each source element is loaded once
// per strip instead of once per tap. Lanes of a workgroup cover consecutive channel groups,
// or consecutive strips of them (the lane order, see `cell`).
// On lavapipe a storage-buffer load is a scalar loop over the SIMD lanes while a textureLoad is
// a real gather, so the fast variant reads both operands through textures (see gpu::texture:
// element i is component i % 4 of texel i / 4) and writes with vec4 stores.
//
// Every loop over constants below is unrolled when the kernel is loaded (`unroll_loops` in
// src/gpu/kernel.rs), so the window, the weights and the sums are indexed by constants and
// stay in registers, and the taps that a stride skips are folded away. Indices are clamped
// and out-of-range values replaced by zero with `select`, so the inner code has no branches
// but the guards on stores past the right and bottom edges.
//
// The holes, filled per variant by src/ops/depthwise/codegen.rs: the constants; BINDINGS and
// ACCESS, the operands (storage buffers or textures) and their accessors: lda(i) and ldb(i)
// (element or texel i of the first and second operand), weights(q) (channel group q's K*K
// taps), put_taps (a channel group's K*K weight gradients), pre_factors(q) (the input
// transform's, or an identity) and put_stats (or nothing).

struct Params {
    n: u32,       // batch
    h: u32,       // input rows
    w: u32,       // input columns
    cq: u32,      // channel groups per pixel: c / (components of V)
    ho: u32,      // output rows
    wo: u32,      // output columns
    ipc: u32,     // images per image chunk
    strips: u32,  // column strips per image
    chunks: u32,  // row chunks per image
    rows: u32,    // row steps per row chunk
    steps: u32,   // row steps per image (the loop runs over chunk * rows .. min(+rows, steps))
}

alias V = {{V}};
const K: u32 = {{K}}u;
const KK: u32 = K * K;
const S: u32 = {{S}}u;
const PAD: i32 = {{PAD}};
const TW: u32 = {{TW}}u;           // texels per texture row
// Columns per strip of each entry point: output columns (forward, weight gradient) or input
// columns (input gradient); only the compiled entry point's is its variant's, the others are
// the least that compiles.
const FWD_T: u32 = {{FWD_T}}u;
const DX_T: u32 = {{DX_T}}u;
const DW_T: u32 = {{DW_T}}u;
// The input gradient's window: the dy rows DMIN .. DMIN + DX_ROWS - 1 (relative to m) that
// reach an input row m * S + r (r < S) through some tap.
const DX_ROWS: u32 = {{DX_ROWS}}u;
const DMIN: i32 = {{DMIN}};
// Window columns of the compiled entry point: (T - 1) * S + K, or for the input gradient
// DX_T / S - 1 + DX_ROWS; window rows are held in arrays of WIN = max(WIDTH, K), enough for
// every entry point.
const WIDTH: u32 = {{WIDTH}}u;
const WIN: u32 = {{WIN}}u;
const STATS: bool = {{STATS}};     // the forward writes its output's batch statistics
const PRE: bool = {{PRE}};         // x passes through BN + ReLU6 as it is loaded
// Lane order: channel groups fastest (neighbouring lanes read and write neighbouring
// addresses, coalesced on a GPU), or column strips then channel groups (the 8 lanes of a
// lavapipe SIMD batch write into different cache lines at once: twice as fast there,
// benches/NOTES.md).
const COALESCED: bool = {{COALESCED}};
// Independent partial sums per output: one chain of K*K dependent additions cannot overlap
// with anything (each output's store ends the basic block); 4 chains measured ~5% faster on
// dw5.
const CHAINS: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Params;
{{BINDINGS}}
{{ACCESS}}

// BN with batch statistics, then ReLU6, per channel: the BN kernels' expression, so the
// fused forward sees bit for bit what an unfused BN would store.
struct Bn {
    mean: V,
    scale: V,  // gamma * rstd
    beta: V,
}

fn bn_relu6(v: V, f: Bn) -> V {
    return clamp(fma(v - f.mean, f.scale, f.beta), V(0.0), V(6.0));
}

struct Cell {
    n0: u32,     // images n0 .. n1
    n1: u32,
    chunk: u32,  // row chunk
    strip: u32,  // column strip
    q: u32,      // channel group
    slice: u32,  // (image chunk, row chunk, strip), for partial sums
    valid: bool,
}

// Splits the flat invocation index into (image chunk, row chunk, column strip, channel
// group), in the lane order; either way slice = t * strips + strip with t = image chunk *
// chunks + row chunk.
fn cell(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> Cell {
    let g = (wid.x + wid.y * nwg.x) * 64u + lid.x;
    var q: u32;
    var strip: u32;
    var t: u32;
    if (COALESCED) {
        q = g % p.cq;
        strip = (g / p.cq) % p.strips;
        t = g / p.cq / p.strips;
    } else {
        strip = g % p.strips;
        q = (g / p.strips) % p.cq;
        t = g / p.strips / p.cq;
    }
    let chunk = t % p.chunks;
    let n0 = (t / p.chunks) * p.ipc;
    return Cell(n0, min(n0 + p.ipc, p.n), chunk, strip, q, t * p.strips + strip, n0 < p.n);
}

// The window's columns: where column c of a row starts (clamped into the row, channel group
// q), and whether it lies inside the row; `first` is the source column of window column 0.
struct Columns {
    at: array<u32, WIN>,
    inside: array<bool, WIN>,
}

fn columns(first: i32, cols: u32, q: u32) -> Columns {
    var c: Columns;
    for (var i = 0u; i < WIDTH; i++) {
        let x = first + i32(i);
        c.inside[i] = x >= 0 && x < i32(cols);
        c.at[i] = u32(clamp(x, 0, i32(cols) - 1)) * p.cq + q;
    }
    return c;
}

// Source row yy (of hi rows, image row base img) as one window row: zero outside the image
// (the padding is zero after the input transform, so the transform goes inside the select).
fn load_row(yy: i32, hi: i32, img: u32, row_stride: u32, cols: Columns, bn: Bn) -> array<V, WIN> {
    var row: array<V, WIN>;
    let ok = yy >= 0 && yy < hi;
    let rb = (img + u32(clamp(yy, 0, hi - 1))) * row_stride;
    for (var c = 0u; c < WIDTH; c++) {
        let v = lda(rb + cols.at[c]);
        row[c] = select(V(0.0), select(v, bn_relu6(v, bn), PRE), ok && cols.inside[c]);
    }
    return row;
}

// y[n, oy, ox, c] = sum over ky, kx of x[n, oy*S + ky - PAD, ox*S + kx - PAD, c] * w[c, ky, kx].
// a = x [n, h, w, c], b = w [c, k, k], out = y [n, ho, wo, c].
// One invocation: channel group q of its images, output columns strip*FWD_T .. +FWD_T, output rows
// chunk*rows .. +rows; the window holds the K input rows of the current output row. With
// STATS it also keeps the mean and squared deviations of what it writes, folding in one row
// of its strip at a time with Chan's formula (the row's own mean and deviations first, so
// nothing cancels), and stores them with their count as its slice's partials for the BN that
// follows: the layout `bn_stats_partial` writes plus a count row.
@compute @workgroup_size(64)
fn dw_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let cl = cell(wid, nwg, lid);
    if (!cl.valid) {
        return;
    }
    let q = cl.q;
    let hi = i32(p.h);
    let row_stride = p.w * p.cq;
    let oy0 = cl.chunk * p.rows;
    let oy1 = min(oy0 + p.rows, p.steps);
    let ox0 = cl.strip * FWD_T;
    let cols = columns(i32(ox0 * S) - PAD, p.w, q);
    let w = weights(q);
    let bn = pre_factors(q);
    var win: array<array<V, WIN>, K>;
    let st_w = f32(min(FWD_T, p.wo - ox0));  // outputs a row of the strip writes
    var st_n = 0.0;
    var st_mean = V(0.0);
    var st_m2 = V(0.0);
    for (var n = cl.n0; n < cl.n1; n = n + 1u) {
        let img = n * p.h;
        var iy = i32(oy0 * S) - PAD;
        for (var j = 0u; j < K - S; j++) {
            win[j] = load_row(iy + i32(j), hi, img, row_stride, cols, bn);
        }
        for (var oy = oy0; oy < oy1; oy = oy + 1u) {
            let ybase = ((n * p.ho + oy) * p.wo + ox0) * p.cq + q;
            for (var j = K - S; j < K; j++) {
                win[j] = load_row(iy + i32(j), hi, img, row_stride, cols, bn);
            }
            var y: array<V, FWD_T>;
            for (var c = 0u; c < FWD_T; c++) {
                var sums: array<V, CHAINS>;
                for (var ky = 0u; ky < K; ky++) {
                    for (var kx = 0u; kx < K; kx++) {
                        let chain = (ky * K + kx) % CHAINS;
                        sums[chain] = fma(win[ky][c * S + kx], w[ky * K + kx], sums[chain]);
                    }
                }
                let acc = (sums[0] + sums[1]) + (sums[2] + sums[3]);
                if (ox0 + c < p.wo) {
                    out[ybase + c * p.cq] = acc;
                }
                y[c] = select(V(0.0), acc, ox0 + c < p.wo);
            }
            if (STATS) {
                var row_sum = V(0.0);
                for (var c = 0u; c < FWD_T; c++) {
                    row_sum += y[c];
                }
                let rm = row_sum / st_w;
                var rq = V(0.0);
                for (var c = 0u; c < FWD_T; c++) {
                    let e = select(V(0.0), y[c] - rm, ox0 + c < p.wo);
                    rq = fma(e, e, rq);
                }
                let nn = st_n + st_w;
                let f = st_w / nn;
                let delta = rm - st_mean;
                st_mean = fma(delta, V(f), st_mean);
                st_m2 = st_m2 + rq + delta * delta * V(st_n * f);
                st_n = nn;
            }
            for (var j = 0u; j < K - S; j++) {
                win[j] = win[j + S];
            }
            iy = iy + i32(S);
        }
    }
    if (STATS) {
        let slices = ((p.n + p.ipc - 1u) / p.ipc) * p.chunks * p.strips;
        put_stats(cl.slice * p.cq + q, st_mean);
        put_stats((slices + cl.slice) * p.cq + q, st_m2);
        put_stats((2u * slices + cl.slice) * p.cq + q, V(st_n));
    }
}

// dx[n, iy, ix, c] = sum over taps with iy = oy*S + ky - PAD, ix = ox*S + kx - PAD of
// dy[n, oy, ox, c] * w[c, ky, kx] (the transposed convolution).
// a = dy [n, ho, wo, c], b = w [c, k, k], out = dx [n, h, w, c].
// One invocation: channel group q of its images, input columns strip*DX_T .. +DX_T, and per step m
// of its chunk the S input rows m*S .. m*S + S - 1. Input coordinate m*S + r reaches output
// coordinate m + (r + PAD - tap) / S through a tap where S divides r + PAD - tap, and through
// no other: each input row and column visits only those taps (a condition on constants once
// unrolled), so stride 2 does no wasted work. The window holds the dy rows m + DMIN ..
// m + DMIN + DX_ROWS - 1 and the dy columns from ix0 / S + DMIN.
@compute @workgroup_size(64)
fn dw_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_id) lid: vec3<u32>) {
    let cl = cell(wid, nwg, lid);
    if (!cl.valid) {
        return;
    }
    let q = cl.q;
    let hi = i32(p.ho);
    let row_stride = p.wo * p.cq;
    let m0 = cl.chunk * p.rows;
    let m1 = min(m0 + p.rows, p.steps);
    let ix0 = cl.strip * DX_T;
    let cols = columns(i32(ix0 / S) + DMIN, p.wo, q);
    let w = weights(q);
    let none = Bn(V(0.0), V(1.0), V(0.0));
    var win: array<array<V, WIN>, DX_ROWS>;
    for (var n = cl.n0; n < cl.n1; n = n + 1u) {
        let img = n * p.ho;
        var oy = i32(m0) + DMIN;
        for (var j = 0u; j < DX_ROWS - 1u; j++) {
            win[j] = load_row(oy + i32(j), hi, img, row_stride, cols, none);
        }
        for (var m = m0; m < m1; m = m + 1u) {
            win[DX_ROWS - 1u] = load_row(oy + i32(DX_ROWS - 1u), hi, img, row_stride, cols, none);
            for (var r = 0u; r < S; r++) {
                let iy = m * S + r;
                let xbase = ((n * p.h + iy) * p.w + ix0) * p.cq + q;
                for (var j = 0u; j < DX_T; j++) {
                    var sums: array<V, CHAINS>;
                    for (var ky = 0u; ky < K; ky++) {
                        let num_y = i32(r) + PAD - i32(ky);
                        for (var kx = 0u; kx < K; kx++) {
                            let num_x = i32(j % S) + PAD - i32(kx);
                            if (num_y % i32(S) == 0 && num_x % i32(S) == 0) {
                                let wy = num_y / i32(S) - DMIN;
                                let wx = i32(j / S) + num_x / i32(S) - DMIN;
                                let chain = (ky * K + kx) % CHAINS;
                                sums[chain] = fma(win[wy][wx], w[ky * K + kx], sums[chain]);
                            }
                        }
                    }
                    let acc = (sums[0] + sums[1]) + (sums[2] + sums[3]);
                    if (iy < p.h && ix0 + j < p.w) {
                        out[xbase + j * p.cq] = acc;
                    }
                }
            }
            for (var j = 0u; j < DX_ROWS - 1u; j++) {
                win[j] = win[j + 1u];
            }
            oy = oy + 1;
        }
    }
}

// Partial weight gradient: part[slice, c, ky, kx] = sum over the output pixels of the slice
// of dy[n, oy, ox, c] * x[n, oy*S + ky - PAD, ox*S + kx - PAD, c]; a slice is one (image
// chunk, row chunk, column strip), and the caller sums the slices.
// a = x [n, h, w, c], b = dy [n, ho, wo, c], out = part [slices, c, k, k].
// One invocation: channel group q of one slice; the K*K sums stay in registers while it walks
// its rows with the same rolling input window as the forward pass.
@compute @workgroup_size(64)
fn dw_backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_id) lid: vec3<u32>) {
    let cl = cell(wid, nwg, lid);
    if (!cl.valid) {
        return;
    }
    let q = cl.q;
    let hi = i32(p.h);
    let row_stride = p.w * p.cq;
    let oy0 = cl.chunk * p.rows;
    let oy1 = min(oy0 + p.rows, p.steps);
    let ox0 = cl.strip * DW_T;
    let cols = columns(i32(ox0 * S) - PAD, p.w, q);
    let bn = pre_factors(q);
    // Where dy's column c of the strip is (clamped), and whether it is inside.
    var dy_at: array<u32, DW_T>;
    var dy_inside: array<bool, DW_T>;
    for (var c = 0u; c < DW_T; c++) {
        dy_inside[c] = ox0 + c < p.wo;
        dy_at[c] = min(ox0 + c, p.wo - 1u) * p.cq + q;
    }
    var win: array<array<V, WIN>, K>;
    var g: array<V, KK>;
    for (var n = cl.n0; n < cl.n1; n = n + 1u) {
        let img = n * p.h;
        var iy = i32(oy0 * S) - PAD;
        for (var j = 0u; j < K - S; j++) {
            win[j] = load_row(iy + i32(j), hi, img, row_stride, cols, bn);
        }
        for (var oy = oy0; oy < oy1; oy = oy + 1u) {
            let dbase = (n * p.ho + oy) * p.wo * p.cq;
            for (var j = K - S; j < K; j++) {
                win[j] = load_row(iy + i32(j), hi, img, row_stride, cols, bn);
            }
            var d: array<V, DW_T>;
            for (var c = 0u; c < DW_T; c++) {
                d[c] = select(V(0.0), ldb(dbase + dy_at[c]), dy_inside[c]);
            }
            for (var ky = 0u; ky < K; ky++) {
                for (var kx = 0u; kx < K; kx++) {
                    for (var c = 0u; c < DW_T; c++) {
                        g[ky * K + kx] = fma(d[c], win[ky][c * S + kx], g[ky * K + kx]);
                    }
                }
            }
            for (var j = 0u; j < K - S; j++) {
                win[j] = win[j + S];
            }
            iy = iy + i32(S);
        }
    }
    put_taps(cl.slice * p.cq * KK, q, g);
}
