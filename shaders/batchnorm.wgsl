// Batch normalisation over the rows of x viewed as an [m, c] matrix (the channel is the last
// dimension: NHWC [n, h, w, c] has m = n*h*w, [n, c] has m = n):
//   xhat = (x - mean) * rstd,  rstd = 1 / sqrt(var + eps),  y = gamma * xhat + beta
// Training uses the batch statistics (biased var), evaluation the running ones.
//
// Every kernel but bn_stats_finalize runs on the same grid: x over blocks of 64 consecutive
// channels (lanes, so a row's reads are contiguous in NHWC), y over chunks of `chunk` rows.
// An invocation loads its channel's per-channel values once and walks its chunk's rows.
// Reductions over m are split into per-chunk partials (no barriers, no shared memory) that a
// second dispatch combines per channel.

struct Params {
    c: u32,        // channels (the last dimension)
    m: u32,        // rows: numel / c
    chunk: u32,    // rows per chunk
    chunks: u32,   // ceil(m / chunk)
    momentum: f32, // running = (1 - momentum) * running + momentum * batch statistic
    eps: f32,
    unbias: f32,   // m / (m - 1), 1 when m == 1: the running variance is the unbiased one
}

@group(0) @binding(0) var<uniform> p: Params;

// bn_stats_partial: x -> part
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> part: array<f32>;

// bn_stats_finalize: part_in -> running_mean, running_var (in place), mean_out, rstd_out
@group(0) @binding(1) var<storage, read> part_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(4) var<storage, read_write> mean_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> rstd_out: array<f32>;

// bn_train_normalize: x, gamma, beta, mean_in, rstd_in -> y
// bn_eval_forward:    x, gamma, beta, mean_in (running mean), var_in (running var) -> y
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read> mean_in: array<f32>;
@group(0) @binding(5) var<storage, read> rstd_in: array<f32>;
@group(0) @binding(5) var<storage, read> var_in: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

// bn_backward_partial: x, dy, mean_b, rstd_b -> part_dbeta, part_dgamma
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> mean_b: array<f32>;
@group(0) @binding(4) var<storage, read> rstd_b: array<f32>;
@group(0) @binding(5) var<storage, read_write> part_dbeta: array<f32>;
@group(0) @binding(6) var<storage, read_write> part_dgamma: array<f32>;

// bn_backward_dx: x, dy, gamma_d, mean_d, rstd_d, dgamma, dbeta -> dx
@group(0) @binding(3) var<storage, read> gamma_d: array<f32>;
@group(0) @binding(4) var<storage, read> mean_d: array<f32>;
@group(0) @binding(5) var<storage, read> rstd_d: array<f32>;
@group(0) @binding(6) var<storage, read> dgamma: array<f32>;
@group(0) @binding(7) var<storage, read> dbeta: array<f32>;
@group(0) @binding(8) var<storage, read_write> dx: array<f32>;

// Rows [r0, r1) of chunk `s`.
fn chunk_rows(s: u32) -> vec2<u32> {
    let r0 = s * p.chunk;
    return vec2<u32>(r0, min(r0 + p.chunk, p.m));
}

// Per-chunk statistics, the first half of a numerically safe split of the batch variance:
//   part[s * c + ch] = mean of channel ch over chunk s's rows
//   part[(chunks + s) * c + ch] = sum over those rows of (x - that mean)^2
// The second loop re-reads rows the first just brought into cache; subtracting the chunk's own
// mean avoids the cancellation of sum(x^2) - sum(x)^2 / m.
@compute @workgroup_size(64)
fn bn_stats_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let ch = wid.x * 64u + lid.x;
    if (ch >= p.c) {
        return;
    }
    let rows = chunk_rows(wid.y);
    var s = 0.0;
    for (var r = rows.x; r < rows.y; r = r + 1u) {
        s = s + x[r * p.c + ch];
    }
    let mu = s / f32(rows.y - rows.x);
    var q = 0.0;
    for (var r = rows.x; r < rows.y; r = r + 1u) {
        let d = x[r * p.c + ch] - mu;
        q = fma(d, d, q);
    }
    part[wid.y * p.c + ch] = mu;
    part[(p.chunks + wid.y) * p.c + ch] = q;
}

// Combines the chunks' (mean, sum of squared deviations) per channel (Chan et al.):
//   mean = sum n_s mean_s / m,  m * var = sum over s of [ssd_s + n_s (mean_s - mean)^2]
// then writes mean and rstd and updates the running statistics in place. Grid: x over blocks
// of 64 channels, one invocation per channel looping over the chunks.
@compute @workgroup_size(64)
fn bn_stats_finalize(@builtin(global_invocation_id) gid: vec3<u32>) {
    let ch = gid.x;
    if (ch >= p.c) {
        return;
    }
    let mf = f32(p.m);
    var s = 0.0;
    for (var i = 0u; i < p.chunks; i = i + 1u) {
        let rows = chunk_rows(i);
        s = fma(f32(rows.y - rows.x), part_in[i * p.c + ch], s);
    }
    let mu = s / mf;
    var q = 0.0;
    for (var i = 0u; i < p.chunks; i = i + 1u) {
        let rows = chunk_rows(i);
        let d = part_in[i * p.c + ch] - mu;
        q = q + fma(f32(rows.y - rows.x) * d, d, part_in[(p.chunks + i) * p.c + ch]);
    }
    let var_b = q / mf;
    mean_out[ch] = mu;
    rstd_out[ch] = 1.0 / sqrt(var_b + p.eps);
    let keep = 1.0 - p.momentum;
    running_mean[ch] = keep * running_mean[ch] + p.momentum * mu;
    running_var[ch] = keep * running_var[ch] + p.momentum * (var_b * p.unbias);
}

// y = (x - mu) * scale + shift over the rows of chunk wid.y, channel ch.
fn normalize_rows(ch: u32, s: u32, mu: f32, scale: f32, shift: f32) {
    let rows = chunk_rows(s);
    for (var r = rows.x; r < rows.y; r = r + 1u) {
        let i = r * p.c + ch;
        y[i] = fma(x[i] - mu, scale, shift);
    }
}

// Training forward's normalisation with the batch statistics from bn_stats_finalize.
@compute @workgroup_size(64)
fn bn_train_normalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let ch = wid.x * 64u + lid.x;
    if (ch >= p.c) {
        return;
    }
    normalize_rows(ch, wid.y, mean_in[ch], gamma[ch] * rstd_in[ch], beta[ch]);
}

// Evaluation forward with the running statistics.
@compute @workgroup_size(64)
fn bn_eval_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let ch = wid.x * 64u + lid.x;
    if (ch >= p.c) {
        return;
    }
    let rstd = 1.0 / sqrt(var_in[ch] + p.eps);
    normalize_rows(ch, wid.y, mean_in[ch], gamma[ch] * rstd, beta[ch]);
}

// Per-chunk partials of the parameter gradients, both from one pass over x and dy:
//   part_dbeta[s * c + ch] = sum dy,  part_dgamma[s * c + ch] = sum dy * xhat
// over chunk s's rows (the caller sums the slices).
@compute @workgroup_size(64)
fn bn_backward_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let ch = wid.x * 64u + lid.x;
    if (ch >= p.c) {
        return;
    }
    let mu = mean_b[ch];
    let rows = chunk_rows(wid.y);
    var sb = 0.0;
    var sg = 0.0;
    for (var r = rows.x; r < rows.y; r = r + 1u) {
        let i = r * p.c + ch;
        let g = dy[i];
        sb = sb + g;
        sg = fma(g, x[i] - mu, sg);
    }
    part_dbeta[wid.y * p.c + ch] = sb;
    // rstd is the same for every row: applied once to the sum.
    part_dgamma[wid.y * p.c + ch] = sg * rstd_b[ch];
}

// Input gradient, the statistics differentiated too:
//   dx = gamma * rstd * (dy - dbeta / m - xhat * dgamma / m)
@compute @workgroup_size(64)
fn bn_backward_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let ch = wid.x * 64u + lid.x;
    if (ch >= p.c) {
        return;
    }
    let mf = f32(p.m);
    let mu = mean_d[ch];
    let rstd = rstd_d[ch];
    let scale = gamma_d[ch] * rstd;
    let db = dbeta[ch] / mf;
    let dg = dgamma[ch] / mf;
    let rows = chunk_rows(wid.y);
    for (var r = rows.x; r < rows.y; r = r + 1u) {
        let i = r * p.c + ch;
        let xhat = (x[i] - mu) * rstd;
        dx[i] = scale * (dy[i] - db - xhat * dg);
    }
}
