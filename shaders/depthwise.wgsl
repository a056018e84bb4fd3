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
// The bindings, the loaders and the unrolled per-row work (one strip, all taps) are generated
// by src/ops/depthwise.rs for the kernel size, stride, strip width and operand kind, and pasted
// into the placeholders below. Indices are clamped and out-of-range values replaced by zero
// with `select`, so the inner code has no branches except the guards on stores past the right
// and bottom edges.

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
const KK: u32 = {{K}}u * {{K}}u;
const S: u32 = {{S}}u;
const PAD: i32 = {{PAD}};
// Texels per texture row.
const TW: u32 = {{TW}}u;

@group(0) @binding(0) var<uniform> p: Params;
{{BINDINGS}}

// Element (or texel) i of the first operand: x, or dy for the input gradient.
fn lda(i: u32) -> V {
    {{LOAD_A}}
}

// Element (or texel) i of the second operand: the weights, or dy for the weight gradient.
fn ldb(i: u32) -> V {
    {{LOAD_B}}
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
// group). LANE_ORDER (generated) says which varies fastest: channel groups, so that
// neighbouring lanes read and write neighbouring addresses (coalesced on a GPU), or column
// strips then channel groups, so that the 8 lanes of a lavapipe SIMD batch write into
// different cache lines at once (twice as fast there, benches/NOTES.md). Either way
// slice = t * strips + strip with t = image chunk * chunks + row chunk.
fn cell(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> Cell {
    let g = (wid.x + wid.y * nwg.x) * 64u + lid.x;
{{LANE_ORDER}}
    let chunk = t % p.chunks;
    let n0 = (t / p.chunks) * p.ipc;
    return Cell(n0, min(n0 + p.ipc, p.n), chunk, strip, q, slice, n0 < p.n);
}

// y[n, oy, ox, c] = sum over ky, kx of x[n, oy*S + ky - PAD, ox*S + kx - PAD, c] * w[c, ky, kx].
// a = x [n, h, w, c], b = w [c, k, k], out = y [n, ho, wo, c].
// One invocation: channel group q of its images, output columns strip*T .. +T, output rows
// chunk*rows .. +rows; the window holds the K input rows of the current output row. The
// variant with output statistics also keeps the mean and squared deviations of what it writes
// and stores them, with their count, as its slice's partials for the BN that follows
// (FWD_STORE; see gen_output_stats in src/ops/depthwise.rs).
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
    let ox0 = cl.strip * {{FWD_T}}u;
    let ix0 = i32(ox0 * S) - PAD;
{{FWD_DECL}}
    for (var n = cl.n0; n < cl.n1; n = n + 1u) {
        let img = n * p.h;
        var iy = i32(oy0 * S) - PAD;
{{FWD_PRELOAD}}
        for (var oy = oy0; oy < oy1; oy = oy + 1u) {
            let ybase = ((n * p.ho + oy) * p.wo + ox0) * p.cq + q;
{{FWD_STEP}}
            iy = iy + i32(S);
        }
    }
{{FWD_STORE}}
}

// dx[n, iy, ix, c] = sum over taps with iy = oy*S + ky - PAD, ix = ox*S + kx - PAD of
// dy[n, oy, ox, c] * w[c, ky, kx] (the transposed convolution).
// a = dy [n, ho, wo, c], b = w [c, k, k], out = dx [n, h, w, c].
// One invocation: channel group q of its images, input columns strip*T .. +T, and per step m
// of its chunk the S input rows m*S .. m*S + S - 1. Each input row and column only visits the
// taps whose output coordinate is an integer, so stride 2 does no wasted work; the window
// holds the dy rows m + DMIN .. m + DMAX that those taps reach.
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
    let ix0 = cl.strip * {{DX_T}}u;
    let ox0 = i32(ix0 / S) + ({{DX_DMIN}});
{{DX_DECL}}
    for (var n = cl.n0; n < cl.n1; n = n + 1u) {
        let img = n * p.ho;
        var oy = i32(m0) + ({{DX_DMIN}});
{{DX_PRELOAD}}
        for (var m = m0; m < m1; m = m + 1u) {
{{DX_STEP}}
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
    let ox0 = cl.strip * {{DW_T}}u;
    let ix0 = i32(ox0 * S) - PAD;
{{DW_DECL}}
    for (var n = cl.n0; n < cl.n1; n = n + 1u) {
        let img = n * p.h;
        var iy = i32(oy0 * S) - PAD;
{{DW_PRELOAD}}
        for (var oy = oy0; oy < oy1; oy = oy + 1u) {
            let dbase = (n * p.ho + oy) * p.wo * p.cq;
{{DW_STEP}}
            iy = iy + i32(S);
        }
    }
    let pbase = cl.slice * p.cq * KK;
{{DW_STORE}}
}
