// Batch normalisation over the rows of x viewed as an [m, c] matrix (the channel is the last
// dimension: NHWC [n, h, w, c] has m = n*h*w, [n, c] has m = n):
//   xhat = (x - mean) * rstd,  rstd = 1 / sqrt(var + eps),  y = gamma * xhat + beta
// Training uses the batch statistics (biased var), evaluation the running ones.
//
// Every kernel but bn_stats_finalize gives an invocation one channel group g (V: four
// consecutive channels when c is a multiple of 4, one channel otherwise) and walks rows of a
// chunk: rows r0 + phase, r0 + phase + phases, ... Lanes of a workgroup cover `span`
// consecutive groups of a row times `phases` row phases, which keeps all 64 lanes busy when c
// is small (the lane order, see `lane`, says which of the two varies fastest). Per-channel
// values are loaded once per invocation. Reductions over m are split into per-slice partials,
// slice = chunk * phases + phase (no barriers, no shared memory), combined per channel by a
// second dispatch.
//
// x and dy are read through the generated loaders ld_x / ld_dy: from rgba32float textures
// (element i in component i % 4 of texel i / 4, so with V = vec4 a group is one texel) where a
// textureLoad is much cheaper than a storage load (CPU drivers), from storage buffers otherwise.

struct Params {
    c: u32,        // channels (the last dimension)
    cg: u32,       // channel groups: c / (components of V)
    m: u32,        // rows: numel / c
    chunk: u32,    // rows per chunk
    chunks: u32,   // ceil(m / chunk)
    span: u32,     // channel groups per workgroup: min(cg, 64), or min(cg, 8) with lanes spread
    phases: u32,   // row phases per workgroup: 64 / span
    momentum: f32, // running = (1 - momentum) * running + momentum * batch statistic
    eps: f32,
    unbias: f32,   // m / (m - 1), 1 when m == 1: the running variance is the unbiased one
}

alias V = {{V}};
// Texels per texture row.
const TW: u32 = {{TW}}u;

@group(0) @binding(0) var<uniform> p: Params;

// x and dy as textures or as storage buffers; only the generated loaders use them.
@group(0) @binding(1) var x_tex: texture_2d<f32>;
@group(0) @binding(1) var x_stex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(1) var<storage, read> x_buf: array<f32>;
@group(0) @binding(2) var dy_tex: texture_2d<f32>;
@group(0) @binding(2) var dy_stex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var<storage, read> dy_buf: array<f32>;

// The activation fused after the normalisation (ACT: identity or ReLU6, clamp to [0, 6]) and
// its backward (ACT_GRAD: dy where 0 < pre < 6 for ReLU6). The backward recomputes the
// pre-activation from x with the forward's exact expression, so nothing else is saved.
fn act(v: V) -> V {
    {{ACT}}
}
fn act_grad(dy: V, pre: V) -> V {
    {{ACT_GRAD}}
}

// Channel group e of the flat [m, cg] view of x (of dy).
fn ld_x(e: u32) -> V {
    {{LD_X}}
}
fn ld_dy(e: u32) -> V {
    {{LD_DY}}
}

// bn_stats_partial: x -> part
@group(0) @binding(2) var<storage, read_write> part: array<V>;

// bn_stats_finalize: part_in -> running_mean, running_var (in place), mean_out, rstd_out
@group(0) @binding(1) var<storage, read> part_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(4) var<storage, read_write> mean_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> rstd_out: array<f32>;

// bn_train_normalize: x, gamma, beta, mean_in, rstd_in -> y
// bn_eval_forward:    x, gamma, beta, mean_in (running mean), var_in (running var) -> y
@group(0) @binding(2) var<storage, read> gamma: array<V>;
@group(0) @binding(3) var<storage, read> beta: array<V>;
@group(0) @binding(4) var<storage, read> mean_in: array<V>;
@group(0) @binding(5) var<storage, read> rstd_in: array<V>;
@group(0) @binding(5) var<storage, read> var_in: array<V>;
@group(0) @binding(6) var<storage, read_write> y: array<V>;
// bn_train_normalize_add: the same, then + skip (a residual connection's other branch), read
// like x.
@group(0) @binding(7) var skip_tex: texture_2d<f32>;
@group(0) @binding(7) var skip_stex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(7) var<storage, read> skip_buf: array<f32>;
fn ld_skip(e: u32) -> V {
    {{LD_SKIP}}
}

// bn_backward_partial: x, dy, mean_b, rstd_b -> part_sums ([2, slices, c]: dbeta's partials,
// then dgamma's); gamma_p, beta_p (read only by a fused activation's mask)
@group(0) @binding(3) var<storage, read> mean_b: array<V>;
@group(0) @binding(4) var<storage, read> rstd_b: array<V>;
@group(0) @binding(5) var<storage, read_write> part_sums: array<V>;
@group(0) @binding(6) var<storage, read> gamma_p: array<V>;
@group(0) @binding(7) var<storage, read> beta_p: array<V>;

// bn_backward_dx: x, dy, gamma_d, mean_d, rstd_d, dgamma, dbeta -> dx; beta_d (for the mask)
@group(0) @binding(3) var<storage, read> gamma_d: array<V>;
@group(0) @binding(4) var<storage, read> mean_d: array<V>;
@group(0) @binding(5) var<storage, read> rstd_d: array<V>;
@group(0) @binding(6) var<storage, read> dgamma: array<V>;
@group(0) @binding(7) var<storage, read> dbeta: array<V>;
@group(0) @binding(8) var<storage, read_write> dx: array<V>;
@group(0) @binding(9) var<storage, read> beta_d: array<V>;

// An invocation's channel group, row phase and rows: it takes rows first, first + step, ...
// below end. `ok` is false for lanes past the channel groups or the phases. LANE_SPLIT
// (generated) gives neighbouring lanes neighbouring channel groups of a row (coalesced on a
// GPU) or, on CPU drivers, neighbouring row phases of one channel group, so that an 8-lane
// store writes 8 rows' cache lines at once instead of 2 (benches/NOTES.md).
struct Lane {
    g: u32,
    phase: u32,
    first: u32,
    step: u32,
    end: u32,
    ok: bool,
}

fn lane(wid: vec3<u32>, lid: vec3<u32>) -> Lane {
{{LANE_SPLIT}}
    let r0 = wid.y * p.chunk;
    return Lane(g, phase, r0 + phase, p.phases, min(r0 + p.chunk, p.m),
                g < p.cg && phase < p.phases);
}

// Per-slice statistics, the first half of a numerically safe split of the batch variance:
//   part[slice * cg + g] = mean of the slice's rows (zero when it has none)
//   part[(slices + slice) * cg + g] = sum over them of (x - that mean)^2
// accumulated with Welford's update, which needs no second pass and does not cancel.
@compute @workgroup_size(64)
fn bn_stats_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let l = lane(wid, lid);
    if (!l.ok) {
        return;
    }
    var mu = V(0.0);
    var m2 = V(0.0);
    var n = 0.0;
    for (var r = l.first; r < l.end; r = r + l.step) {
        let v = ld_x(r * p.cg + l.g);
        n = n + 1.0;
        let d = v - mu;
        mu = mu + d / n;
        m2 = fma(d, v - mu, m2);
    }
    let slice = wid.y * p.phases + l.phase;
    let slices = p.chunks * p.phases;
    part[slice * p.cg + l.g] = mu;
    part[(slices + slice) * p.cg + l.g] = m2;
}

// Rows of slice i: chunk i / phases, phase i % phases.
fn slice_rows(i: u32) -> u32 {
    let r0 = (i / p.phases) * p.chunk;
    let len = min(r0 + p.chunk, p.m) - r0;
    return (len + p.phases - 1u - i % p.phases) / p.phases;
}

// Combines the slices' (mean, sum of squared deviations) per channel (Chan et al.):
//   mean = sum n_i mean_i / m,  m * var = sum over i of [ssd_i + n_i (mean_i - mean)^2]
// then writes mean and rstd and updates the running statistics in place. Grid: x over blocks
// of 64 channels, one invocation per channel (scalar, whatever V is) looping over the slices.
// SLICE_COUNT (generated) is n_i: the rows of slice i of bn_stats_partial's split, or the
// count stored after the partials (part_in[(2 slices + i) c + ch]) by a kernel that wrote them
// for its own output (depthwise::depthwise_forward_stats).
fn slice_count(i: u32, ch: u32, slices: u32) -> f32 {
    {{SLICE_COUNT}}
}
@compute @workgroup_size(64)
fn bn_stats_finalize(@builtin(global_invocation_id) gid: vec3<u32>) {
    let ch = gid.x;
    if (ch >= p.c) {
        return;
    }
    let slices = p.chunks * p.phases;
    let mf = f32(p.m);
    // Offsets from slice 0's mean (never empty) keep the sum small: its rounding then scales
    // with the spread of the data, not with the size of its mean.
    let base = part_in[ch];
    var s = 0.0;
    for (var i = 0u; i < slices; i = i + 1u) {
        s = fma(slice_count(i, ch, slices), part_in[i * p.c + ch] - base, s);
    }
    let mu = base + s / mf;
    var q = 0.0;
    for (var i = 0u; i < slices; i = i + 1u) {
        let d = part_in[i * p.c + ch] - mu;
        q = q + fma(slice_count(i, ch, slices) * d, d, part_in[(slices + i) * p.c + ch]);
    }
    let var_b = q / mf;
    mean_out[ch] = mu;
    rstd_out[ch] = 1.0 / sqrt(var_b + p.eps);
    let keep = 1.0 - p.momentum;
    running_mean[ch] = keep * running_mean[ch] + p.momentum * mu;
    running_var[ch] = keep * running_var[ch] + p.momentum * (var_b * p.unbias);
}

// y = act((x - mu) * scale + shift) over the lane's rows.
fn normalize_rows(l: Lane, mu: V, scale: V, shift: V) {
    for (var r = l.first; r < l.end; r = r + l.step) {
        let e = r * p.cg + l.g;
        y[e] = act(fma(ld_x(e) - mu, scale, shift));
    }
}

// Training forward's normalisation with the batch statistics from bn_stats_finalize.
@compute @workgroup_size(64)
fn bn_train_normalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let l = lane(wid, lid);
    if (!l.ok) {
        return;
    }
    normalize_rows(l, mean_in[l.g], gamma[l.g] * rstd_in[l.g], beta[l.g]);
}

// Training forward's normalisation plus a residual branch: y = act(bn(x)) + skip, one pass
// instead of the normalisation and then an elementwise add.
@compute @workgroup_size(64)
fn bn_train_normalize_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let l = lane(wid, lid);
    if (!l.ok) {
        return;
    }
    let mu = mean_in[l.g];
    let scale = gamma[l.g] * rstd_in[l.g];
    let shift = beta[l.g];
    for (var r = l.first; r < l.end; r = r + l.step) {
        let e = r * p.cg + l.g;
        y[e] = act(fma(ld_x(e) - mu, scale, shift)) + ld_skip(e);
    }
}

// Evaluation forward with the running statistics.
@compute @workgroup_size(64)
fn bn_eval_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let l = lane(wid, lid);
    if (!l.ok) {
        return;
    }
    let rstd = 1.0 / sqrt(var_in[l.g] + p.eps);
    normalize_rows(l, mean_in[l.g], gamma[l.g] * rstd, beta[l.g]);
}

// Per-slice partials of the parameter gradients, both from one pass over x and dy:
//   part_sums[slice * cg + g] = sum dy,  part_sums[(slices + slice) * cg + g] = sum dy * xhat
// over the slice's rows (the caller sums the slices of both in one dispatch).
@compute @workgroup_size(64)
fn bn_backward_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let l = lane(wid, lid);
    if (!l.ok) {
        return;
    }
    let mu = mean_b[l.g];
    // The forward's scale and shift, for the pre-activation of a fused activation.
    let scale = gamma_p[l.g] * rstd_b[l.g];
    let shift = beta_p[l.g];
    var sb = V(0.0);
    var sg = V(0.0);
    for (var r = l.first; r < l.end; r = r + l.step) {
        let e = r * p.cg + l.g;
        let xc = ld_x(e) - mu;
        let g = act_grad(ld_dy(e), fma(xc, scale, shift));
        sb = sb + g;
        sg = fma(g, xc, sg);
    }
    let out = (wid.y * p.phases + l.phase) * p.cg + l.g;
    part_sums[out] = sb;
    // rstd is the same for every row: applied once to the sum.
    part_sums[p.chunks * p.phases * p.cg + out] = sg * rstd_b[l.g];
}

// Input gradient, the statistics differentiated too (dy after the fused activation's mask):
//   dx = gamma * rstd * (dy - dbeta / m - xhat * dgamma / m)
@compute @workgroup_size(64)
fn bn_backward_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let l = lane(wid, lid);
    if (!l.ok) {
        return;
    }
    let mf = f32(p.m);
    let mu = mean_d[l.g];
    let rstd = rstd_d[l.g];
    let scale = gamma_d[l.g] * rstd;
    let db = dbeta[l.g] / mf;
    let dg = dgamma[l.g] / mf;
    let shift = beta_d[l.g];
    for (var r = l.first; r < l.end; r = r + l.step) {
        let e = r * p.cg + l.g;
        let xc = ld_x(e) - mu;
        let g = act_grad(ld_dy(e), fma(xc, scale, shift));
        dx[e] = scale * (g - db - xc * rstd * dg);
    }
}
