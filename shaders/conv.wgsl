// Full 2-D convolution: the network's stem (3x3, 3 -> 32 channels, stride 1 or 2), written for
// any odd k and any stride, padding k/2. Forward and both backward passes.
//
//   x, dx [n, h, w, cin] NHWC      wt, dw [cout, cin, k, k] OIHW      y, dy [n, ho, wo, cout] NHWC
//   y[b, oy, ox, co] = sum over ci, ky, kx of
//                      x[b, oy*s + ky - pad, ox*s + kx - pad, ci] * wt[co, ci, ky, kx]
//
// Every invocation computes a register tile (several pixels x several channels, or channels x
// taps for dw) so that each value loaded feeds several FMAs: per-lane loads are what costs on
// CPU drivers. Addresses shared by a workgroup (weights) are kept uniform, which CPU drivers
// can turn into one scalar load outside loops and GPUs into a broadcast. Taps in the zero
// padding read a clamped, valid address and are zeroed by a select, so no lane branches.
// Each entry point's tile is generated (unrolled) by src/ops/conv.rs into that entry point's
// placeholders; the placeholders of the other entry points are left empty.

struct Params {
    n: u32, h: u32, w: u32, cin: u32,
    ho: u32, wo: u32, cout: u32, k: u32,
    stride: u32, pad: u32,
    count: u32,    // items over lanes: output pixels (forward), input pixels of one phase (dx),
                   // taps cin*k*k (dw)
    groups_x: u32, // workgroups along x, to rebuild a flat index from a 2-D grid
    chunk: u32,    // dw: output pixels per chunk
    npix: u32,     // output pixels n*ho*wo
    hq: u32,       // dx: rows and columns of one stride phase, ceil(h / s) and ceil(w / s)
    wq: u32,
    blocks: u32,   // dx: pixel blocks per phase
    phases_x: u32, // dx: column phases, min(s, w)
    step_x: u32,   // dw: 64 pixels = step_img images + step_y rows + step_x columns
    step_y: u32,
    step_img: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// conv_forward: x, wt -> y
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
// conv_backward_input: dy, wt -> dx
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
// conv_backward_weight: x, dy_w (dy) -> dw_part
@group(0) @binding(2) var<storage, read> dy_w: array<f32>;
@group(0) @binding(3) var<storage, read_write> dw_part: array<f32>;

// Whether input row iy, column ix lies inside the image rather than in the padding.
fn inside(iy: i32, ix: i32) -> bool {
    return iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
}

// Offset in x of pixel (iy, ix) of the image whose first row is row0 (= b * h), clamped into
// the image so that padding taps still read a valid address.
fn x_pixel(row0: u32, iy: i32, ix: i32) -> u32 {
    let cy = u32(clamp(iy, 0, i32(p.h) - 1));
    let cx = u32(clamp(ix, 0, i32(p.w) - 1));
    return ((row0 + cy) * p.w + cx) * p.cin;
}

// Forward. Grid: x/y over blocks of 64*ROWS output pixels (flat over n*ho*wo), z over blocks
// of COLS output channels. One invocation computes ROWS x COLS outputs: pixels lid.x + r*64 of
// its block, channels co0 .. co0+COLS. Per tap and input channel it gathers ROWS input values
// and loads COLS weights at uniform addresses. For small k*k*cin (the stem) the tap and
// channel loops are unrolled by the generator (FWD_BODY), otherwise FWD_BODY holds the loops.
// Out-of-range pixels and channels are clamped and not stored.
@compute @workgroup_size(64)
fn conv_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let pix_base = (wid.x + wid.y * p.groups_x) * (64u * {{ROWS}}u) + lid.x;
    let co0 = wid.z * {{COLS}}u;
    let kk = p.k * p.k;
{{FWD_DECL}}
{{FWD_BODY}}
{{FWD_STORE}}
}

// Input gradient, one stride phase at a time: input pixels (iy, ix) with iy = py + s*jy,
// ix = px + s*jx all receive gradient through the same taps, ky = (py + pad) mod s + s*i
// (likewise kx), from output row oy = jy + (py + pad - ky) / s. So no lane runs a tap that
// misses its pixel and the weight addresses stay uniform.
// Grid: x/y over (phase, block of 64*ROWS pixels of that phase's [n, hq, wq] grid), z over
// blocks of COLS input channels. One invocation computes ROWS x COLS values of dx, gathering
// ROWS dy values and loading COLS weights per tap and output channel.
@compute @workgroup_size(64)
fn conv_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let flat = wid.x + wid.y * p.groups_x;
    let phase = flat / p.blocks;
    let py = phase / p.phases_x;
    let px = phase % p.phases_x;
    let j_base = (flat % p.blocks) * (64u * {{ROWS}}u) + lid.x;
    let ci0 = wid.z * {{COLS}}u;
    let kk = p.k * p.k;
    let s = i32(p.stride);
{{DX_DECL}}
    for (var ky = (py + p.pad) % p.stride; ky < p.k; ky = ky + p.stride) {
        let oy_off = (i32(py + p.pad) - i32(ky)) / s;
        for (var kx = (px + p.pad) % p.stride; kx < p.k; kx = kx + p.stride) {
            let ox_off = (i32(px + p.pad) - i32(kx)) / s;
            let tap = ky * p.k + kx;
{{DX_TAP}}
            for (var co = 0u; co < p.cout; co = co + 1u) {
                let wofs = co * p.cin * kk + tap;
{{DX_LOAD}}
{{DX_FMA}}
            }
        }
    }
{{DX_STORE}}
}

// Weight gradient, split over chunks of output pixels and over the 64 lanes:
//   dw_part[s, co, t] = sum over the output pixels q of slice s of dy[q, co] * x(q, t)
// with tap t = (ci*k + ky)*k + kx, x(q, t) the input value tap t of pixel q reads (zero in the
// padding), and slice s = chunk * 64 + lane: lane l of a chunk takes pixels l, l + 64, ...
// The caller sums the slices. Grid: x over blocks of TAPS taps, y over blocks of COLS output
// channels, z over chunks. One invocation accumulates a COLS x TAPS tile, gathering COLS dy
// and TAPS x values per pixel.
@compute @workgroup_size(64)
fn conv_backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t0 = wid.x * {{TAPS}}u;
    let co0 = wid.y * {{COLS}}u;
    let kk = p.k * p.k;
    let q_end = min((wid.z + 1u) * p.chunk, p.npix);
    let q0 = wid.z * p.chunk + lid.x;
    // The lane's pixel as (first input row of its image, oy, ox), stepped 64 pixels at a time
    // without divisions.
    var row0 = q0 / (p.ho * p.wo) * p.h;
    var oy = (q0 / p.wo) % p.ho;
    var ox = q0 % p.wo;
{{DW_DECL}}
    for (var q = q0; q < q_end; q = q + 64u) {
        let iy = i32(oy * p.stride);
        let ix = i32(ox * p.stride);
        let dyb = q * p.cout;
{{DW_LOAD}}
{{DW_FMA}}
        ox = ox + p.step_x;
        let carry_x = ox >= p.wo;
        ox = select(ox, ox - p.wo, carry_x);
        oy = oy + p.step_y + u32(carry_x);
        let carry_y = oy >= p.ho;
        oy = select(oy, oy - p.ho, carry_y);
        row0 = row0 + (p.step_img + u32(carry_y)) * p.h;
    }
    let out_base = (wid.z * 64u + lid.x) * p.cout * p.count;
{{DW_STORE}}
}
