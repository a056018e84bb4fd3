//! Global average pooling: NHWC `[n, h, w, c]` -> `[n, c]`,
//! `y[b, ch] = 1 / (h w) * sum_{y, x} x[b, y, x, ch]`.

/// Forward pass; returns `[n, c]`.
pub fn global_avg_pool_forward(x: &[f64], xs: [usize; 4]) -> Vec<f64> {
    let [n, h, w, c] = xs;
    assert_eq!(
        x.len(),
        n * h * w * c,
        "global_avg_pool_forward: x does not match shape {xs:?}"
    );
    let hw = h * w;
    let mut y = vec![0.0; n * c];
    for b in 0..n {
        for pixel in x[b * hw * c..(b + 1) * hw * c].chunks_exact(c) {
            for (s, v) in y[b * c..(b + 1) * c].iter_mut().zip(pixel) {
                *s += v;
            }
        }
    }
    y.iter_mut().for_each(|s| *s /= hw as f64);
    y
}

/// Backward pass given `dy` `[n, c]`: every pixel receives `dy[b, ch] / (h w)`. Returns `dx`
/// with shape `xs`.
pub fn global_avg_pool_backward(dy: &[f64], xs: [usize; 4]) -> Vec<f64> {
    let [n, h, w, c] = xs;
    assert_eq!(
        dy.len(),
        n * c,
        "global_avg_pool_backward: dy does not match [n={n}, c={c}]"
    );
    let hw = h * w;
    let mut dx = vec![0.0; n * hw * c];
    for b in 0..n {
        let g = &dy[b * c..(b + 1) * c];
        for pixel in dx[b * hw * c..(b + 1) * hw * c].chunks_exact_mut(c) {
            for (d, v) in pixel.iter_mut().zip(g) {
                *d = v / hw as f64;
            }
        }
    }
    dx
}
