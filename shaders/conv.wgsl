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
// or channel quads x taps for dw) so that each load feeds several FMAs. The tile sizes are
// constants (holes filled by src/ops/conv.rs: the compiled entry point's, 1 for the others),
// and the loops over them are unrolled when the kernel is loaded (`unroll_loops` in
// src/gpu/kernel.rs), so the tiles stay in registers.

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
const ROWS: u32 = {{ROWS}}u;    // forward, dx: pixels per invocation, 64 apart
const COLS: u32 = {{COLS}}u;    // dx: input channels per invocation
const QUADS: u32 = {{QUADS}}u;  // forward, dw: output-channel quads per invocation
const TAPS: u32 = {{TAPS}}u;    // dw: taps per invocation
const ALIGNED: bool = {{ALIGNED}};  // cout % 4 == 0: dy quads are texels, y takes vec4 stores

@group(0) @binding(0) var<uniform> p: Params;
// conv_pack_weights: wt -> wp
@group(0) @binding(1) var<storage, read> wt: array<f32>;
@group(0) @binding(2) var<storage, read_write> wp: array<f32>;
// conv_forward: x_tex, wp_tex -> y (scalar stores) or y4 (vec4 stores, cout % 4 == 0)
@group(0) @binding(1) var x_tex: texture_2d<f32>;
@group(0) @binding(2) var wp_tex: texture_2d<f32>;
// OUTPUT: y as array<vec4<f32>> with put_y4 (ALIGNED) or array<f32> with put_y, the other
// writer a stub.
{{OUTPUT}}
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

// dy[pix, 4q .. 4q+3] (zero past cout) from dy bound as texture t: one texel when ALIGNED,
// else four element loads (clamped to the tensor).
fn ld_dy4(t: texture_2d<f32>, pix: u32, q: u32) -> vec4<f32> {
    if (ALIGNED) {
        return textureLoad(t, coords(pix * (p.cout >> 2u) + q), 0);
    }
    let i = pix * p.cout + 4u * q;
    let last = p.npix * p.cout - 1u;
    var v = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        let e = min(i + c, last);
        v[c] = select(0.0, textureLoad(t, coords(e >> 2u), 0)[e & 3u], 4u * q + c < p.cout);
    }
    return v;
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
    let pix_base = (wid.x + wid.y * p.groups_x) * (64u * ROWS) + lid.x;
    let q0 = wid.z * QUADS;
    let quads = p.cout4 >> 2u;
    var qq: array<u32, QUADS>;  // channel quads (clamped)
    for (var q = 0u; q < QUADS; q++) {
        qq[q] = min(q0 + q, quads - 1u);
    }
    // Pixel r: its first input row and column (before the tap) and its image's first row.
    var oy: array<i32, ROWS>;
    var ox: array<i32, ROWS>;
    var row0: array<u32, ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        let pix = min(pix_base + r * 64u, p.count - 1u);
        oy[r] = i32((pix / p.wo) % p.ho * p.stride) - i32(p.pad);
        ox[r] = i32(pix % p.wo * p.stride) - i32(p.pad);
        row0[r] = pix / (p.ho * p.wo) * p.h;
    }
    var acc: array<array<vec4<f32>, QUADS>, ROWS>;
    for (var ky = 0u; ky < p.k; ky = ky + 1u) {
        for (var kx = 0u; kx < p.k; kx = kx + 1u) {
            var valid: array<bool, ROWS>;
            var xb: array<u32, ROWS>;
            for (var r = 0u; r < ROWS; r++) {
                valid[r] = inside(oy[r] + i32(ky), ox[r] + i32(kx));
                xb[r] = x_pixel(row0[r], oy[r] + i32(ky), ox[r] + i32(kx));
            }
            for (var ci = 0u; ci < p.cin; ci = ci + 1u) {
                let t = (ci * p.k + ky) * p.k + kx;
                var w: array<vec4<f32>, QUADS>;
                for (var q = 0u; q < QUADS; q++) {
                    w[q] = ld_w4(t, qq[q]);
                }
                for (var r = 0u; r < ROWS; r++) {
                    let xv = vec4<f32>(select(0.0, ld_x(xb[r] + ci), valid[r]));
                    for (var q = 0u; q < QUADS; q++) {
                        acc[r][q] = fma(xv, w[q], acc[r][q]);
                    }
                }
            }
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        let pix = pix_base + r * 64u;
        if (pix < p.count) {
            for (var q = 0u; q < QUADS; q++) {
                if (ALIGNED && q0 + q < quads) {
                    put_y4(pix * (p.cout >> 2u) + q0 + q, acc[r][q]);
                }
                if (!ALIGNED) {
                    for (var c = 0u; c < 4u; c++) {
                        let co = 4u * (q0 + q) + c;
                        if (co < p.cout) {
                            put_y(pix * p.cout + co, acc[r][q][c]);
                        }
                    }
                }
            }
        }
    }
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
    let j_base = (flat % p.blocks) * (64u * ROWS) + lid.x;
    let ci0 = wid.z * COLS;
    let s = i32(p.stride);
    let quads = p.cout4 >> 2u;
    var wt: array<u32, COLS>;  // input channel c's first packed row (clamped)
    for (var c = 0u; c < COLS; c++) {
        wt[c] = min(ci0 + c, p.cin - 1u) * p.k * p.k;
    }
    // Pixel r of the phase grid: its image, its coordinates in the grid and in the input.
    var img: array<u32, ROWS>;
    var jy: array<i32, ROWS>;
    var jx: array<i32, ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        let j = min(j_base + r * 64u, p.count - 1u);
        img[r] = j / (p.hq * p.wq);
        jy[r] = i32((j / p.wq) % p.hq);
        jx[r] = i32(j % p.wq);
    }
    var acc: array<array<f32, COLS>, ROWS>;
    for (var ky = (py + p.pad) % p.stride; ky < p.k; ky = ky + p.stride) {
        let oy_off = (i32(py + p.pad) - i32(ky)) / s;
        for (var kx = (px + p.pad) % p.stride; kx < p.k; kx = kx + p.stride) {
            let ox_off = (i32(px + p.pad) - i32(kx)) / s;
            let tap = ky * p.k + kx;
            // Where pixel r's dy lies through this tap (clamped), and whether it exists.
            var ok: array<bool, ROWS>;
            var pd: array<u32, ROWS>;
            for (var r = 0u; r < ROWS; r++) {
                let oy = jy[r] + oy_off;
                let ox = jx[r] + ox_off;
                ok[r] = oy >= 0 && oy < i32(p.ho) && ox >= 0 && ox < i32(p.wo);
                pd[r] = (img[r] * p.ho + u32(clamp(oy, 0, i32(p.ho) - 1))) * p.wo
                    + u32(clamp(ox, 0, i32(p.wo) - 1));
            }
            for (var q = 0u; q < quads; q = q + 1u) {
                var w: array<vec4<f32>, COLS>;
                for (var c = 0u; c < COLS; c++) {
                    w[c] = ld_w4(wt[c] + tap, q);
                }
                for (var r = 0u; r < ROWS; r++) {
                    let g = select(vec4<f32>(0.0), ld_dy4(dy_tex, pd[r], q), ok[r]);
                    for (var c = 0u; c < COLS; c++) {
                        acc[r][c] = acc[r][c] + dot(g, w[c]);
                    }
                }
            }
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        let iy = py + p.stride * u32(jy[r]);
        let ix = px + p.stride * u32(jx[r]);
        if (j_base + r * 64u < p.count && iy < p.h && ix < p.w) {
            let xb = ((img[r] * p.h + iy) * p.w + ix) * p.cin + ci0;
            for (var c = 0u; c < COLS; c++) {
                if (ci0 + c < p.cin) {
                    dx[xb + c] = acc[r][c];
                }
            }
        }
    }
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
    let t0 = wid.x * TAPS;
    let q0 = wid.y * QUADS;
    let kk = p.k * p.k;
    let q_end = min((wid.z + 1u) * p.chunk, p.npix);
    let first = wid.z * p.chunk + lid.x;
    // The lane's pixel as (first input row of its image, oy, ox), stepped 64 pixels at a time
    // without divisions.
    var row0 = first / (p.ho * p.wo) * p.h;
    var oy = (first / p.wo) % p.ho;
    var ox = first % p.wo;
    var qq: array<u32, QUADS>;  // output-channel quads (clamped)
    for (var q = 0u; q < QUADS; q++) {
        qq[q] = min(q0 + q, (p.cout4 >> 2u) - 1u);
    }
    // Tap t of the tile: its input channel and offsets (clamped to the last tap).
    var ci: array<u32, TAPS>;
    var ky: array<i32, TAPS>;
    var kx: array<i32, TAPS>;
    for (var t = 0u; t < TAPS; t++) {
        let tc = min(t0 + t, p.taps - 1u);
        ci[t] = tc / kk;
        ky[t] = i32((tc % kk) / p.k) - i32(p.pad);
        kx[t] = i32(tc % p.k) - i32(p.pad);
    }
    var acc: array<array<vec4<f32>, TAPS>, QUADS>;
    for (var q = first; q < q_end; q = q + 64u) {
        let iy = i32(oy * p.stride);
        let ix = i32(ox * p.stride);
        var g: array<vec4<f32>, QUADS>;
        for (var j = 0u; j < QUADS; j++) {
            g[j] = ld_dy4(dy_tex2, q, qq[j]);  // pixel q's dy, quad j of the tile
        }
        var xv: array<vec4<f32>, TAPS>;
        for (var t = 0u; t < TAPS; t++) {
            let v = ld_x(x_pixel(row0, iy + ky[t], ix + kx[t]) + ci[t]);
            xv[t] = vec4<f32>(select(0.0, v, inside(iy + ky[t], ix + kx[t])));
        }
        for (var j = 0u; j < QUADS; j++) {
            for (var t = 0u; t < TAPS; t++) {
                acc[j][t] = fma(g[j], xv[t], acc[j][t]);
            }
        }
        ox = ox + p.step_x;
        let carry_x = ox >= p.wo;
        ox = select(ox, ox - p.wo, carry_x);
        oy = oy + p.step_y + u32(carry_x);
        let carry_y = oy >= p.ho;
        oy = select(oy, oy - p.ho, carry_y);
        row0 = row0 + (p.step_img + u32(carry_y)) * p.h;
    }
    let out_base = (wid.z * 64u + lid.x) * p.cout * p.taps;
    for (var q = 0u; q < QUADS; q++) {
        for (var t = 0u; t < TAPS; t++) {
            for (var c = 0u; c < 4u; c++) {
                let co = 4u * (q0 + q) + c;
                if (co < p.cout && t0 + t < p.taps) {
                    dw_part[out_base + co * p.taps + t0 + t] = acc[q][t][c];
                }
            }
        }
    }
}
