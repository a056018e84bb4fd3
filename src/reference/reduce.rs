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
