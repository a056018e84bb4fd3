// Full 2-D convolution: the network's stem (3x3, 3 -> 32 channels, stride 1 or 2), written for
// any odd k and any stride, padding k/2. Forward and both backward passes.
//
//   x, dx [n, h, w, cin] NHWC      wt, dw [cout, cin, k, k] OIHW      y, dy [n, ho, wo, cout] NHWC
//   y[b, oy, ox, co] = sum over ci, ky, kx of
//                      x[b, oy*s + ky - pad, ox*s + kx - pad, ci] * wt[co, ci, ky, kx]
//
// Taps that fall in the zero padding read a clamped (valid) address and are zeroed by a select
// rather than skipped, so every lane runs the same loops and the addresses shared by a
// workgroup (weights in forward and dx, dy in dw) stay uniform: one load per SIMD group on
// lavapipe, a broadcast on GPUs; only the per-pixel reads are gathers.
// Each entry point's register tile is generated (unrolled) by src/ops/conv.rs into its
// placeholders; the placeholders of the other entry points are left empty.

struct Params {
    n: u32, h: u32, w: u32, cin: u32,
    ho: u32, wo: u32, cout: u32, k: u32,
    stride: u32, pad: u32,
    count: u32,    // items over lanes: output pixels (forward), input pixels (dx), taps cin*k*k (dw)
    groups_x: u32, // workgroups along x, to rebuild a flat index from a 2-D grid
    chunk: u32,    // dw: output pixels per reduction chunk
    npix: u32,     // dw: output pixels n*ho*wo
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

// The output coordinate o with o*stride == t (t = input coordinate + pad - tap), or -1 when t
// is negative, not a multiple of the stride, or o is past the output's edge.
fn out_coord(t: i32, size: u32) -> i32 {
    let s = i32(p.stride);
    let o = t / s;
    return select(-1, o, t >= 0 && o * s == t && o < i32(size));
}

// Forward. Grid: x/y over blocks of 64*ROWS output pixels (flat over n*ho*wo), z over blocks
// of COLS output channels. One invocation computes ROWS x COLS outputs: pixels lid.x + r*64 of
// its block, channels co0 .. co0+COLS. Per tap and input channel it gathers ROWS input values
// and loads COLS uniform weights. Out-of-range pixels and channels are clamped, not stored.
@compute @workgroup_size(64)
fn conv_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let pix_base = (wid.x + wid.y * p.groups_x) * (64u * {{ROWS}}u) + lid.x;
    let co0 = wid.z * {{COLS}}u;
    let kk = p.k * p.k;
{{FWD_DECL}}
    for (var ky = 0u; ky < p.k; ky = ky + 1u) {
        for (var kx = 0u; kx < p.k; kx = kx + 1u) {
            let tap = ky * p.k + kx;
{{FWD_TAP}}
            for (var ci = 0u; ci < p.cin; ci = ci + 1u) {
                let wofs = ci * kk + tap;
{{FWD_LOAD}}
{{FWD_FMA}}
            }
        }
    }
{{FWD_STORE}}
}

// Input gradient. Grid: x/y over blocks of 64*ROWS input pixels (flat over n*h*w), z over
// blocks of COLS input channels. One invocation computes ROWS x COLS values of dx: for each tap
// (ky, kx), the output pixel (if any) whose window puts that tap on its input pixel, then a
// loop over output channels gathering dy and loading uniform weights.
@compute @workgroup_size(64)
fn conv_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let pix_base = (wid.x + wid.y * p.groups_x) * (64u * {{ROWS}}u) + lid.x;
    let ci0 = wid.z * {{COLS}}u;
    let kk = p.k * p.k;
{{DX_DECL}}
    for (var ky = 0u; ky < p.k; ky = ky + 1u) {
        for (var kx = 0u; kx < p.k; kx = kx + 1u) {
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

// Weight gradient, split over chunks of output pixels (the caller sums the slices):
//   dw_part[s, co, t] = sum over output pixels q of chunk s of dy[q, co] * x(q, t)
// with tap t = (ci*k + ky)*k + kx and x(q, t) the input value tap t of pixel q reads (zero in
// the padding). Grid: x over blocks of 64 taps, y over blocks of COLS output channels, z over
// chunks. Lanes are taps and all walk the same pixels, so the COLS dy loads per pixel are
// uniform and only the x read is a gather.
@compute @workgroup_size(64)
fn conv_backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t_lane = wid.x * 64u + lid.x;
    let t = min(t_lane, p.count - 1u);
    let co0 = wid.y * {{COLS}}u;
    let kk = p.k * p.k;
    let ci = t / kk;
    let ky = i32((t % kk) / p.k) - i32(p.pad);
    let kx = i32(t % p.k) - i32(p.pad);
    let q0 = wid.z * p.chunk;
    let q1 = min(q0 + p.chunk, p.npix);
    // Pixel q as (first input row of its image, oy, ox), stepped along with q: no divisions
    // in the loop.
    var row0 = q0 / (p.ho * p.wo) * p.h;
    var oy = (q0 / p.wo) % p.ho;
    var ox = q0 % p.wo;
{{DW_DECL}}
    for (var q = q0; q < q1; q = q + 1u) {
        let iy = i32(oy * p.stride) + ky;
        let ix = i32(ox * p.stride) + kx;
        let xv = select(0.0, x[x_pixel(row0, iy, ix) + ci], inside(iy, ix));
        let dyb = q * p.cout;
{{DW_FMA}}
        ox = ox + 1u;
        if (ox == p.wo) {
            ox = 0u;
            oy = oy + 1u;
            if (oy == p.ho) {
                oy = 0u;
                row0 = row0 + p.h;
            }
        }
    }
    if (t_lane < p.count) {
        let out_base = wid.z * p.cout * p.count + t;
{{DW_STORE}}
    }
}
