//! Reductions.

/// Sum of all elements.
pub fn sum(x: &[f64]) -> f64 {
    x.iter().sum()
}

/// Inner product `sum_i a[i] b[i]`.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(
        a.len(),
        b.len(),
        "dot: a has {} elements, b has {}",
        a.len(),
        b.len()
    );
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `sum_i bn(x)[i] y[i]`, bn(x) = gamma (x - mean) rstd + beta per channel of a row-major
/// `[m, c]` x (c = gamma's length).
pub fn batchnorm_dot(
    x: &[f64],
    (gamma, beta): (&[f64], &[f64]),
    (mean, rstd): (&[f64], &[f64]),
    y: &[f64],
) -> f64 {
    let c = gamma.len();
    assert!(
        c > 0 && x.len().is_multiple_of(c) && y.len() == x.len(),
        "batchnorm_dot: x ({}) and y ({}) must be whole rows of {c} channels",
        x.len(),
        y.len()
    );
    x.iter()
        .zip(y)
        .enumerate()
        .map(|(i, (xv, yv))| {
            let ch = i % c;
            (gamma[ch] * (xv - mean[ch]) * rstd[ch] + beta[ch]) * yv
        })
        .sum()
}

/// Column sums of a row-major `[m, c]` matrix; returns `[c]`.
pub fn channel_sum(x: &[f64], m: usize, c: usize) -> Vec<f64> {
    assert_eq!(
        x.len(),
        m * c,
        "channel_sum: x does not match [m={m}, c={c}]"
    );
    let mut s = vec![0.0; c];
    for row in x.chunks_exact(c) {
        for (acc, v) in s.iter_mut().zip(row) {
            *acc += v;
        }
    }
    s
}
