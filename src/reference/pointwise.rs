//! Pointwise (1x1) convolution. On NHWC data it is a GEMM over the `m = n * h * w` pixel
//! rows: `x` is `[m, cin]`, `w` is `[cout, cin]`, `y` is `[m, cout]` with
//!
//! `y[i, o] = sum_k x[i, k] * w[o, k]`   (y = x W^T)

/// Forward pass: `y = x W^T`, shape `[m, cout]`.
pub fn pointwise_forward(x: &[f64], m: usize, cin: usize, w: &[f64], cout: usize) -> Vec<f64> {
    assert_eq!(
        x.len(),
        m * cin,
        "pointwise_forward: x does not match [m={m}, cin={cin}]"
    );
    assert_eq!(
        w.len(),
        cout * cin,
        "pointwise_forward: w does not match [cout={cout}, cin={cin}]"
    );
    let mut y = vec![0.0; m * cout];
    for i in 0..m {
        let row = &x[i * cin..(i + 1) * cin];
        for o in 0..cout {
            let wrow = &w[o * cin..(o + 1) * cin];
            y[i * cout + o] = row.iter().zip(wrow).map(|(a, b)| a * b).sum();
        }
    }
    y
}

/// Backward pass given `dy` `[m, cout]`; returns `(dx, dw)` with
/// `dx = dy W` (`[m, cin]`) and `dw = dy^T x` (`[cout, cin]`).
pub fn pointwise_backward(
    x: &[f64],
    m: usize,
    cin: usize,
    w: &[f64],
    cout: usize,
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(
        x.len(),
        m * cin,
        "pointwise_backward: x does not match [m={m}, cin={cin}]"
    );
    assert_eq!(
        w.len(),
        cout * cin,
        "pointwise_backward: w does not match [cout={cout}, cin={cin}]"
    );
    assert_eq!(
        dy.len(),
        m * cout,
        "pointwise_backward: dy does not match [m={m}, cout={cout}]"
    );
    let mut dx = vec![0.0; m * cin];
    let mut dw = vec![0.0; cout * cin];
    for i in 0..m {
        for o in 0..cout {
            let g = dy[i * cout + o];
            for k in 0..cin {
                dx[i * cin + k] += g * w[o * cin + k];
                dw[o * cin + k] += g * x[i * cin + k];
            }
        }
    }
    (dx, dw)
}
