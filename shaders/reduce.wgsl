// Reductions: summing split-K slices, the sum of a tensor and the dot product of two.
// All avoid workgroup barriers (costly on CPU drivers): each invocation reduces its own
// strided run, and a second small dispatch combines the partials.

struct Params {
    len: u32,      // elements per slice (sum_slices) or in the input (sum, dot)
    slices: u32,   // sum_slices: number of slices; sum/dot: number of partials (invocations)
    accumulate: u32,
    stride_groups: u32, // workgroups along x, to rebuild a flat index from a 2-D grid
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// Element e of the sum of slices first .. first + slices of x (each len long).
fn slices_sum(first: u32, e: u32) -> f32 {
    var acc = 0.0;
    for (var s = 0u; s < p.slices; s = s + 1u) {
        acc = acc + x[(first + s) * p.len + e];
    }
    return acc;
}

// out[e] (+)= sum over s < slices of x[s * len + e]; one invocation per element e.
@compute @workgroup_size(64)
fn sum_slices(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = gid.x + gid.y * p.stride_groups * 64u;
    if (e >= p.len) {
        return;
    }
    var acc = slices_sum(0u, e);
    if (p.accumulate != 0u) {
        acc = acc + out[e];
    }
    out[e] = acc;
}

@group(0) @binding(3) var<storage, read_write> out_b: array<f32>;

// Two reductions of the same shape in one dispatch (the BN backward's dbeta and dgamma): x
// holds [2, slices, len]; out[e] = sum of the first slices' element e, out_b[e] of the second's.
@compute @workgroup_size(64)
fn sum_slices_pair(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = gid.x + gid.y * p.stride_groups * 64u;
    if (e >= p.len) {
        return;
    }
    out[e] = slices_sum(0u, e);
    out_b[e] = slices_sum(p.slices, e);
}

@group(0) @binding(1) var x_stex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out4_b: array<vec4<f32>>;

// Texel g of the sum of slices first .. first + slices of x's texture (len / 4 texels each).
fn slices_sum_texture(first: u32, g: u32) -> vec4<f32> {
    let tw = textureDimensions(x_stex).x;
    let groups = p.len / 4u;
    var acc = vec4<f32>(0.0);
    var t = first * groups + g;
    for (var s = 0u; s < p.slices; s = s + 1u) {
        acc = acc + textureLoad(x_stex, vec2<u32>(t % tw, t / tw));
        t = t + groups;
    }
    return acc;
}

// sum_slices_texture: sum_slices for len a multiple of 4, with x read through its texture copy
// (element i in component i % 4 of texel i / 4, see gpu::texture): one invocation per four
// elements e = 4g .. 4g + 3, out4[g] (+)= sum over s of texel s * len / 4 + g. On lavapipe a
// texel gather costs about what one lane's scalar storage load does, so this reads 4x faster.
@compute @workgroup_size(64)
fn sum_slices_texture(@builtin(global_invocation_id) gid: vec3<u32>) {
    let g = gid.x + gid.y * p.stride_groups * 64u;
    if (g >= p.len / 4u) {
        return;
    }
    var acc = slices_sum_texture(0u, g);
    if (p.accumulate != 0u) {
        acc = acc + out4[g];
    }
    out4[g] = acc;
}

// sum_slices_pair through the texture: four elements an invocation, as sum_slices_texture.
@compute @workgroup_size(64)
fn sum_slices_texture_pair(@builtin(global_invocation_id) gid: vec3<u32>) {
    let g = gid.x + gid.y * p.stride_groups * 64u;
    if (g >= p.len / 4u) {
        return;
    }
    out4[g] = slices_sum_texture(0u, g);
    out4_b[g] = slices_sum_texture(p.slices, g);
}

// Partial sums: invocation t of `slices` adds x[t], x[t + slices], ... into out[t].
@compute @workgroup_size(64)
fn sum_partial(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    if (t >= p.slices) {
        return;
    }
    var acc = 0.0;
    for (var i = t; i < p.len; i = i + p.slices) {
        acc = acc + x[i];
    }
    out[t] = acc;
}

@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> out_dot: array<f32>;

// Partial dot products, strided like sum_partial: out_dot[t] = sum x[i] * y[i].
@compute @workgroup_size(64)
fn dot_partial(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    if (t >= p.slices) {
        return;
    }
    var acc = 0.0;
    for (var i = t; i < p.len; i = i + p.slices) {
        acc = fma(x[i], y[i], acc);
    }
    out_dot[t] = acc;
}

@group(0) @binding(4) var<storage, read> bn_gamma: array<f32>;
@group(0) @binding(5) var<storage, read> bn_beta: array<f32>;
@group(0) @binding(6) var<storage, read> bn_mean: array<f32>;
@group(0) @binding(7) var<storage, read> bn_rstd: array<f32>;

// dot_partial of y with the batch-normalised x, gamma (x - mean) rstd + beta per channel of a
// row-major [m, c] x (c in `accumulate`): the normalised tensor is never stored.
@compute @workgroup_size(64)
fn batchnorm_dot_partial(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    if (t >= p.slices) {
        return;
    }
    let c = p.accumulate;
    var acc = 0.0;
    for (var i = t; i < p.len; i = i + p.slices) {
        let ch = i % c;
        let xn = (x[i] - bn_mean[ch]) * bn_rstd[ch];
        acc = fma(fma(xn, bn_gamma[ch], bn_beta[ch]), y[i], acc);
    }
    out_dot[t] = acc;
}

// Per-channel partial sums of a row-major [m, c] matrix (NHWC activations, bias gradients):
// grid x over channel blocks of 64, y over row chunks; out[chunk * c + ch] = sum of the
// chunk's rows. Lanes read consecutive channels of a row. `len` = c, `slices` = rows per chunk,
// `accumulate` carries m here.
@compute @workgroup_size(64)
fn channel_sum_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = p.len;
    let ch = wid.x * 64u + lid.x;
    if (ch >= c) {
        return;
    }
    let m = p.accumulate;
    let r0 = wid.y * p.slices;
    let r1 = min(r0 + p.slices, m);
    var acc = 0.0;
    for (var r = r0; r < r1; r = r + 1u) {
        acc = acc + x[r * c + ch];
    }
    out[wid.y * c + ch] = acc;
}
