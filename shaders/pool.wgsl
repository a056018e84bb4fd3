// Global average pooling over the pixels of NHWC activations: [n, h, w, c] -> [n, c].
//
// src/ops/pool.rs instantiates the kernels with V = vec4<f32> when c is a multiple of 4 (4
// channels per invocation, 16-byte loads) and with V = f32 otherwise; `cv` below is c in units
// of V. Flat invocation indices come from a grid folded into x and y (65535 workgroups per
// dimension at most); indices past `count` do nothing.

alias V = {{V}};

struct Params {
    count: u32,         // invocations with work: n * cv (forward), n * h * w * cv (backward)
    stride_groups: u32, // workgroups along x, to rebuild the flat index
    hw: u32,            // pixels per image, h * w
    cv: u32,            // channels in units of V
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<V>;
@group(0) @binding(2) var<storage, read_write> dst: array<V>;

// global_avg_pool_forward: src = x [n, hw, cv], dst = y [n, cv].
// One invocation per (image, channel unit) f = b * cv + ch: y[f] = mean over the hw pixels of
// x[b, pixel, ch]. Consecutive lanes take consecutive channels, so each pixel step reads a
// contiguous run. The sum is over one image only (h * w, at most a few thousand pixels at the
// end of the network), so it is not split.
@compute @workgroup_size(64)
fn global_avg_pool_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let f = gid.x + gid.y * p.stride_groups * 64u;
    if (f >= p.count) {
        return;
    }
    let b = f / p.cv;
    let ch = f - b * p.cv;
    var at = b * p.hw * p.cv + ch;
    var acc = V(0.0);
    for (var pix = 0u; pix < p.hw; pix = pix + 1u) {
        acc = acc + src[at];
        at = at + p.cv;
    }
    dst[f] = acc / f32(p.hw);
}

// global_avg_pool_backward: src = dy [n, cv], dst = dx [n, hw, cv].
// One invocation per unit f of dx: dx[b, pixel, ch] = dy[b, ch] / hw.
@compute @workgroup_size(64)
fn global_avg_pool_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let f = gid.x + gid.y * p.stride_groups * 64u;
    if (f >= p.count) {
        return;
    }
    let per_image = p.hw * p.cv;
    let b = f / per_image;
    let ch = f % p.cv;
    dst[f] = src[b * p.cv + ch] / f32(p.hw);
}
