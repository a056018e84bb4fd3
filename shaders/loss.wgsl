// Softmax cross-entropy with label smoothing, and top-1 accuracy counting.
// logits [n, k] row-major f32, labels [n] u32. A label >= k is clamped to k - 1 wherever it
// indexes a row (the host validates labels; the clamp only keeps reads in bounds).
//
// The target of row r is q = (1 - s) * onehot(label) + s / k. Per-row work is one invocation
// per row (k is at most ~1000 classes, n a batch); elementwise work is one invocation per
// element, its flat index rebuilt from a grid folded into x and y.

struct Params {
    n: u32,             // rows
    k: u32,             // classes
    count: u32,         // ce_grad: n * k; rows_sum: values to add
    stride_groups: u32, // workgroups along x of a folded grid
    one_minus_s: f32,   // 1 - smoothing
    s: f32,             // smoothing
    q_on: f32,          // target of the labelled class, (1 - s) + s / k
    q_off: f32,         // target of every other class, s / k
    offset: u32,        // rows_sum: index of the first value
    divisor: f32,       // rows_sum: the sum is divided by this
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> stats_out: array<f32>;

// ce_rows: logits [n, k], labels [n] -> stats_out [2n]: stats_out[r] = log-sum-exp of row r,
// stats_out[n + r] = its loss. One invocation per row r.
// log-sum-exp = max + log(sum exp(z - max)): subtracting the max keeps exp from overflowing.
// The loss -sum q_j log p_j is written as sum q_j (lse - z_j)
//   = (1 - s) (lse - z_label) + s (lse - mean z),
// a sum of non-negative terms, exactly 0 for k = 1.
@compute @workgroup_size(64)
fn ce_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x + gid.y * p.stride_groups * 64u;
    if (r >= p.n) {
        return;
    }
    let base = r * p.k;
    var mx = logits[base];
    for (var j = 1u; j < p.k; j = j + 1u) {
        mx = max(mx, logits[base + j]);
    }
    var sum_exp = 0.0;
    var sum_z = 0.0;
    for (var j = 0u; j < p.k; j = j + 1u) {
        let z = logits[base + j];
        sum_exp = sum_exp + exp(z - mx);
        sum_z = sum_z + z;
    }
    let lse = mx + log(sum_exp);
    let label = min(labels[r], p.k - 1u);
    let z_label = logits[base + label];
    stats_out[r] = lse;
    stats_out[p.n + r] = p.one_minus_s * (lse - z_label) + p.s * (lse - sum_z / f32(p.k));
}

@group(0) @binding(3) var<storage, read> stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;

// ce_grad: logits [n, k], labels [n], stats [2n] from ce_rows -> dlogits [n, k], the gradient
// of the mean loss: (softmax - q) / n. One invocation per element; lanes take consecutive
// elements of a row.
@compute @workgroup_size(64)
fn ce_grad(@builtin(global_invocation_id) gid: vec3<u32>) {
    let f = gid.x + gid.y * p.stride_groups * 64u;
    if (f >= p.count) {
        return;
    }
    let r = f / p.k;
    let j = f - r * p.k;
    let label = min(labels[r], p.k - 1u);
    let q = select(p.q_off, p.q_on, j == label);
    dlogits[f] = (exp(logits[f] - stats[r]) - q) / f32(p.n);
}

// count_rows: logits [n, k], labels [n] -> stats_out [n]: 1 where the row's argmax (the first
// of equal maxima) is the label, else 0. One invocation per row. The label is only compared,
// never used as an index.
@compute @workgroup_size(64)
fn count_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x + gid.y * p.stride_groups * 64u;
    if (r >= p.n) {
        return;
    }
    let base = r * p.k;
    var best = 0u;
    var best_z = logits[base];
    for (var j = 1u; j < p.k; j = j + 1u) {
        let z = logits[base + j];
        // Strictly greater: the first of equal maxima wins.
        if (z > best_z) {
            best = j;
            best_z = z;
        }
    }
    stats_out[r] = select(0.0, 1.0, best == labels[r]);
}

@group(0) @binding(2) var<storage, read_write> total: array<f32>;

// rows_sum: logits binding = per-row values -> total [1] = sum of the `count` values from
// `offset`, divided by `divisor` (n for a mean, 1 for a count). A single invocation: there is
// one value per row of a batch.
@compute @workgroup_size(64)
fn rows_sum(@builtin(local_invocation_id) lid: vec3<u32>) {
    if (lid.x != 0u) {
        return;
    }
    var acc = 0.0;
    for (var i = 0u; i < p.count; i = i + 1u) {
        acc = acc + logits[p.offset + i];
    }
    total[0] = acc / p.divisor;
}
