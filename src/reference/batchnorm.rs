//! Batch normalization, per channel over the `m = n * h * w` rows of an NHWC tensor viewed as
//! an `[m, c]` matrix:
//!
//! `xhat = (x - mean) / sqrt(var + eps)`,  `y = gamma * xhat + beta`
//!
//! In training, `mean` and `var` are the batch statistics (`var` biased, divided by `m`); in
//! evaluation they are the running estimates.

/// Per-channel batch mean and biased variance of an `[m, c]` matrix.
fn batch_stats(x: &[f64], m: usize, c: usize) -> (Vec<f64>, Vec<f64>) {
    let mut mean = vec![0.0; c];
    for row in x.chunks_exact(c) {
        for (s, v) in mean.iter_mut().zip(row) {
            *s += v;
        }
    }
    mean.iter_mut().for_each(|s| *s /= m as f64);
    // Two-pass variance: subtracting the mean first avoids the cancellation of E[x^2] - E[x]^2.
    let mut var = vec![0.0; c];
    for row in x.chunks_exact(c) {
        for ((s, v), mu) in var.iter_mut().zip(row).zip(&mean) {
            *s += (v - mu) * (v - mu);
        }
    }
    var.iter_mut().for_each(|s| *s /= m as f64);
    (mean, var)
}

/// `y = gamma * (x - mean) * inv_std + beta` per channel, with `inv_std = 1 / sqrt(var + eps)`.
fn normalize_affine(
    x: &[f64],
    c: usize,
    gamma: &[f64],
    beta: &[f64],
    mean: &[f64],
    var: &[f64],
    eps: f64,
) -> Vec<f64> {
    let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let mut y = vec![0.0; x.len()];
    for (yrow, xrow) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        for ch in 0..c {
            yrow[ch] = gamma[ch] * (xrow[ch] - mean[ch]) * inv_std[ch] + beta[ch];
        }
    }
    y
}

/// Training-mode forward with batch statistics; returns `(y, mean, biased_var)`, the latter
/// two of length `c` (the caller feeds them to [`batchnorm_update_running`]).
pub fn batchnorm_train_forward(
    x: &[f64],
    m: usize,
    c: usize,
    gamma: &[f64],
    beta: &[f64],
    eps: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    assert!(
        m >= 1 && c >= 1,
        "batchnorm_train_forward: empty shape [m={m}, c={c}]"
    );
    assert_eq!(
        x.len(),
        m * c,
        "batchnorm_train_forward: x does not match [m={m}, c={c}]"
    );
    assert_eq!(
        gamma.len(),
        c,
        "batchnorm_train_forward: gamma is not [c={c}]"
    );
    assert_eq!(
        beta.len(),
        c,
        "batchnorm_train_forward: beta is not [c={c}]"
    );
    let (mean, var) = batch_stats(x, m, c);
    let y = normalize_affine(x, c, gamma, beta, &mean, &var, eps);
    (y, mean, var)
}

/// Updates the running statistics in place, PyTorch convention:
/// `r = (1 - momentum) * r + momentum * stat`.
///
/// The running variance tracks the unbiased variance `biased_var * m / (m - 1)` (the biased
/// one when `m == 1`, where the unbiased one is undefined).
pub fn batchnorm_update_running(
    running_mean: &mut [f64],
    running_var: &mut [f64],
    mean: &[f64],
    biased_var: &[f64],
    m: usize,
    momentum: f64,
) {
    let c = running_mean.len();
    assert_eq!(
        running_var.len(),
        c,
        "batchnorm_update_running: running_var is not [c={c}]"
    );
    assert_eq!(
        mean.len(),
        c,
        "batchnorm_update_running: mean is not [c={c}]"
    );
    assert_eq!(
        biased_var.len(),
        c,
        "batchnorm_update_running: biased_var is not [c={c}]"
    );
    let unbias = if m > 1 {
        m as f64 / (m as f64 - 1.0)
    } else {
        1.0
    };
    for ch in 0..c {
        running_mean[ch] = (1.0 - momentum) * running_mean[ch] + momentum * mean[ch];
        running_var[ch] = (1.0 - momentum) * running_var[ch] + momentum * biased_var[ch] * unbias;
    }
}

/// Evaluation-mode forward with the running statistics.
// The argument list mirrors the GPU kernel's bindings one to one.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_eval_forward(
    x: &[f64],
    m: usize,
    c: usize,
    gamma: &[f64],
    beta: &[f64],
    running_mean: &[f64],
    running_var: &[f64],
    eps: f64,
) -> Vec<f64> {
    assert_eq!(
        x.len(),
        m * c,
        "batchnorm_eval_forward: x does not match [m={m}, c={c}]"
    );
    assert_eq!(
        gamma.len(),
        c,
        "batchnorm_eval_forward: gamma is not [c={c}]"
    );
    assert_eq!(beta.len(), c, "batchnorm_eval_forward: beta is not [c={c}]");
    assert_eq!(
        running_mean.len(),
        c,
        "batchnorm_eval_forward: running_mean is not [c={c}]"
    );
    assert_eq!(
        running_var.len(),
        c,
        "batchnorm_eval_forward: running_var is not [c={c}]"
    );
    normalize_affine(x, c, gamma, beta, running_mean, running_var, eps)
}

/// Training-mode backward (the statistics depend on `x`, so they are differentiated too);
/// recomputes them from `x` and returns `(dx, dgamma, dbeta)`:
///
/// `dbeta = sum_rows dy`,  `dgamma = sum_rows dy * xhat`,
/// `dx = gamma * inv_std / m * (m * dy - dbeta - xhat * dgamma)`
pub fn batchnorm_train_backward(
    x: &[f64],
    m: usize,
    c: usize,
    gamma: &[f64],
    eps: f64,
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    assert!(
        m >= 1 && c >= 1,
        "batchnorm_train_backward: empty shape [m={m}, c={c}]"
    );
    assert_eq!(
        x.len(),
        m * c,
        "batchnorm_train_backward: x does not match [m={m}, c={c}]"
    );
    assert_eq!(
        gamma.len(),
        c,
        "batchnorm_train_backward: gamma is not [c={c}]"
    );
    assert_eq!(
        dy.len(),
        m * c,
        "batchnorm_train_backward: dy does not match [m={m}, c={c}]"
    );
    let (mean, var) = batch_stats(x, m, c);
    let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let xhat = |row: &[f64], ch: usize| (row[ch] - mean[ch]) * inv_std[ch];

    let mut dgamma = vec![0.0; c];
    let mut dbeta = vec![0.0; c];
    for (xrow, grow) in x.chunks_exact(c).zip(dy.chunks_exact(c)) {
        for ch in 0..c {
            dbeta[ch] += grow[ch];
            dgamma[ch] += grow[ch] * xhat(xrow, ch);
        }
    }

    let mf = m as f64;
    let mut dx = vec![0.0; x.len()];
    for ((dxrow, xrow), grow) in dx
        .chunks_exact_mut(c)
        .zip(x.chunks_exact(c))
        .zip(dy.chunks_exact(c))
    {
        for ch in 0..c {
            dxrow[ch] = gamma[ch] * inv_std[ch] / mf
                * (mf * grow[ch] - dbeta[ch] - xhat(xrow, ch) * dgamma[ch]);
        }
    }
    (dx, dgamma, dbeta)
}
