//! Softmax cross-entropy with label smoothing, and top-1 accuracy counting.
//!
//! `logits` is `[n, classes]` row-major, `labels` is `[n]`.

/// Mean softmax cross-entropy over the `n` rows and its gradient with respect to `logits`.
///
/// The target is `q = (1 - smoothing) * onehot(label) + smoothing / classes`, and per row
///
/// `loss = -sum_k q_k log softmax_k`,  with `log softmax_k = z_k - max(z) - log sum_j exp(z_j - max(z))`
///
/// (subtracting the max keeps `exp` from overflowing). Returns the mean loss and
/// `dlogits = (softmax - q) / n`, the gradient of that mean.
pub fn softmax_cross_entropy(
    logits: &[f64],
    n: usize,
    classes: usize,
    labels: &[u32],
    smoothing: f64,
) -> (f64, Vec<f64>) {
    assert!(
        n >= 1 && classes >= 1,
        "softmax_cross_entropy: empty shape [n={n}, classes={classes}]"
    );
    assert_eq!(
        logits.len(),
        n * classes,
        "softmax_cross_entropy: logits do not match [n={n}, classes={classes}]"
    );
    assert_eq!(
        labels.len(),
        n,
        "softmax_cross_entropy: labels are not [n={n}]"
    );
    let mut total = 0.0;
    let mut dlogits = vec![0.0; n * classes];
    for ((z, dz), &label) in logits
        .chunks_exact(classes)
        .zip(dlogits.chunks_exact_mut(classes))
        .zip(labels)
    {
        let label = label as usize;
        assert!(
            label < classes,
            "softmax_cross_entropy: label {label} >= classes {classes}"
        );
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let log_sum_exp = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        for k in 0..classes {
            let log_p = z[k] - log_sum_exp;
            let onehot = if k == label { 1.0 } else { 0.0 };
            let q = (1.0 - smoothing) * onehot + smoothing / classes as f64;
            total -= q * log_p;
            dz[k] = (log_p.exp() - q) / n as f64;
        }
    }
    (total / n as f64, dlogits)
}

/// Number of rows whose argmax equals the label; on ties the first maximum wins.
pub fn count_correct(logits: &[f64], n: usize, classes: usize, labels: &[u32]) -> usize {
    assert!(classes >= 1, "count_correct: classes must be >= 1");
    assert_eq!(
        logits.len(),
        n * classes,
        "count_correct: logits do not match [n={n}, classes={classes}]"
    );
    assert_eq!(labels.len(), n, "count_correct: labels are not [n={n}]");
    logits
        .chunks_exact(classes)
        .zip(labels)
        .filter(|(z, &label)| {
            let mut best = 0;
            for (k, &v) in z.iter().enumerate() {
                // Strictly greater, so the first of equal maxima is kept.
                if v > z[best] {
                    best = k;
                }
            }
            best == label as usize
        })
        .count()
}
