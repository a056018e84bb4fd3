// Full 2-D convolution: the network's stem (3x3, 3 -> 32 channels, stride 1 or 2), written for
// any odd k and any stride, padding k/2. Forward and both backward passes.
//
//   x, dx [n, h, w, cin] NHWC      wt, dw [cout, cin, k, k] OIHW      y, dy [n, ho, wo, cout] NHWC
//   y[b, oy, ox, co] = sum over ci, ky, kx of
//                      x[b, oy*s + ky - pad, ox*s + kx - pad, ci] * wt[co, ci, ky, kx]
//
// Operands are read through rgba32float textures (element i in component i % 4 of texel i / 4,
// see gpu::texture): on CPU drivers a textureLoad is a real SIMD gather, several times cheaper
// than a storage load, and a texel brings four values. The weights are first packed as
// wp[t, co] (t = (ci*k + ky)*k + kx, co padded with zeros to cout4 = a multiple of 4), so four
// consecutive output channels of a tap are one texel: the kernels work on quads of output
// channels with vec4 arithmetic. dy's quads are one texel too when cout is a multiple of 4
// (DY_ALIGNED), four element loads otherwise.
//
// Taps in the zero padding read a clamped, valid address and are zeroed by a select, so lanes
// never branch in the loops. Every invocation computes a register tile (pixels x channel quads,
// or channel quads x taps for dw) so that each load feeds several FMAs. The tiles are generated
// (unrolled) by src/ops/conv.rs into each entry point's placeholders; the placeholders of the
// other entry points are left empty.

struct Params {
    n: u32, h: u32, w: u32, cin: u32,
    ho: u32, wo: u32, cout: u32, k: u32,
    stride: u32, pad: u32,
    cout4: u32,    // cout rounded up to a multiple of 4: the packed weights' row length
    taps: u32,     // cin * k * k
    count: u32,    // items over lanes: output pixels (forward), input pixels of one phase (dx),
                   // weight elements (pack)
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

// Texels per texture row.
const TW: u32 = {{TW}}u;

@group(0) @binding(0) var<uniform> p: Params;
// conv_pack_weights: wt -> wp
@group(0) @binding(1) var<storage, read> wt: array<f32>;
@group(0) @binding(2) var<storage, read_write> wp: array<f32>;
// conv_forward: x_tex, wp_tex -> y (scalar stores) or y4 (vec4 stores, cout % 4 == 0)
@group(0) @binding(1) var x_tex: texture_2d<f32>;
@group(0) @binding(2) var wp_tex: texture_2d<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> y4: array<vec4<f32>>;
// conv_backward_input: dy_tex, wp_tex -> dx
@group(0) @binding(1) var dy_tex: texture_2d<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
// conv_backward_weight: x_tex, dy_tex2 (dy) -> dw_part
@group(0) @binding(2) var dy_tex2: texture_2d<f32>;
@group(0) @binding(3) var<storage, read_write> dw_part: array<f32>;

fn coords(texel: u32) -> vec2<u32> {
    return vec2<u32>(texel % TW, texel / TW);
}

// Element i of x.
fn ld_x(i: u32) -> f32 {
    return textureLoad(x_tex, coords(i >> 2u), 0)[i & 3u];
}

// Packed weights wp[t, 4q .. 4q+3].
fn ld_w4(t: u32, q: u32) -> vec4<f32> {
    return textureLoad(wp_tex, coords(t * (p.cout4 >> 2u) + q), 0);
}

// dy[pix, 4q .. 4q+3] (zero past cout) from dy bound as dy_tex; ld_dy4_w from dy_tex2.
fn ld_dy4(pix: u32, q: u32) -> vec4<f32> {
    {{LD_DY4}}
}
fn ld_dy4_w(pix: u32, q: u32) -> vec4<f32> {
    {{LD_DY4_W}}
}

// Whether input row iy, column ix lies inside the image rather than in the padding.
fn inside(iy: i32, ix: i32) -> bool {
    return iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
}

// Flat index in x of channel 0 of pixel (iy, ix) of the image whose first row is row0
// (= b * h), clamped into the image so that padding taps still read a valid address.
fn x_pixel(row0: u32, iy: i32, ix: i32) -> u32 {
    let cy = u32(clamp(iy, 0, i32(p.h) - 1));
    let cx = u32(clamp(ix, 0, i32(p.w) - 1));
    return ((row0 + cy) * p.w + cx) * p.cin;
}

// Packs OIHW weights as wp[t, co] = wt[co, t], zero for co >= cout. One invocation per element
// of wp; grid x/y over blocks of 64.
@compute @workgroup_size(64)
fn conv_pack_weights(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.x + wid.y * p.groups_x) * 64u + lid.x;
    if (i >= p.count) {
        return;
    }
    let t = i / p.cout4;
    let co = i % p.cout4;
    wp[i] = select(0.0, wt[min(co, p.cout - 1u) * p.taps + t], co < p.cout);
}

// Forward. Grid: x/y over blocks of 64*ROWS output pixels (flat over n*ho*wo), z over blocks
// of QUADS quads of output channels. One invocation computes ROWS pixels (lid.x + r*64 of its
// block) x QUADS channel quads: per tap and input channel, ROWS input values and QUADS weight
// texels (the same for every lane), ROWS x QUADS vec4 FMAs. Out-of-range pixels are clamped
// and not stored.
@compute @workgroup_size(64)
fn conv_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let pix_base = (wid.x + wid.y * p.groups_x) * (64u * {{ROWS}}u) + lid.x;
    let q0 = wid.z * {{QUADS}}u;
{{FWD_DECL}}
    for (var ky = 0u; ky < p.k; ky = ky + 1u) {
        for (var kx = 0u; kx < p.k; kx = kx + 1u) {
{{FWD_TAP}}
            for (var ci = 0u; ci < p.cin; ci = ci + 1u) {
                let t = (ci * p.k + ky) * p.k + kx;
{{FWD_LOAD}}
{{FWD_FMA}}
            }
        }
    }
{{FWD_STORE}}
}

// Input gradient, one stride phase at a time: input pixels (iy, ix) with iy = py + s*jy,
// ix = px + s*jx all receive gradient through the same taps, ky = (py + pad) mod s + s*i
// (likewise kx), from output row oy = jy + (py + pad - ky) / s. So no lane runs a tap that
// misses its pixel and the weight texels stay the same for every lane.
// Grid: x/y over (phase, block of 64*ROWS pixels of that phase's [n, hq, wq] grid), z over
// blocks of COLS input channels. One invocation computes ROWS pixels x COLS input channels:
// per tap and output-channel quad, ROWS dy texels and COLS weight texels, ROWS x COLS dot
// products.
@compute @workgroup_size(64)
fn conv_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let flat = wid.x + wid.y * p.groups_x;
    let phase = flat / p.blocks;
    let py = phase / p.phases_x;
    let px = phase % p.phases_x;
    let j_base = (flat % p.blocks) * (64u * {{ROWS}}u) + lid.x;
    let ci0 = wid.z * {{COLS}}u;
    let s = i32(p.stride);
    let quads = p.cout4 >> 2u;
{{DX_DECL}}
    for (var ky = (py + p.pad) % p.stride; ky < p.k; ky = ky + p.stride) {
        let oy_off = (i32(py + p.pad) - i32(ky)) / s;
        for (var kx = (px + p.pad) % p.stride; kx < p.k; kx = kx + p.stride) {
            let ox_off = (i32(px + p.pad) - i32(kx)) / s;
            let tap = ky * p.k + kx;
{{DX_TAP}}
            for (var q = 0u; q < quads; q = q + 1u) {
{{DX_LOAD}}
{{DX_FMA}}
            }
        }
    }
{{DX_STORE}}
}

// Weight gradient, split over chunks of output pixels and over the 64 lanes:
//   dw_part[s, co, t] = sum over the output pixels q of slice s of dy[q, co] * x(q, t)
// with x(q, t) the input value tap t of pixel q reads (zero in the padding) and slice
// s = chunk * 64 + lane: lane l of a chunk takes pixels l, l + 64, ... The caller sums the
// slices. Grid: x over blocks of TAPS taps, y over blocks of QUADS output-channel quads, z over
// chunks. One invocation accumulates QUADS x TAPS vec4s: per pixel QUADS dy texels and TAPS
// x values.
@compute @workgroup_size(64)
fn conv_backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t0 = wid.x * {{TAPS}}u;
    let q0 = wid.y * {{QUADS}}u;
    let kk = p.k * p.k;
    let q_end = min((wid.z + 1u) * p.chunk, p.npix);
    let first = wid.z * p.chunk + lid.x;
    // The lane's pixel as (first input row of its image, oy, ox), stepped 64 pixels at a time
    // without divisions.
    var row0 = first / (p.ho * p.wo) * p.h;
    var oy = (first / p.wo) % p.ho;
    var ox = first % p.wo;
{{DW_DECL}}
    for (var q = first; q < q_end; q = q + 64u) {
        let iy = i32(oy * p.stride);
        let ix = i32(ox * p.stride);
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
    let out_base = (wid.z * 64u + lid.x) * p.cout * p.taps;
{{DW_STORE}}
}
