//! Fully connected layer: `x` `[n, fin]`, `w` `[fout, fin]`, bias `b` `[fout]`,
//! `y = x W^T + b` (`[n, fout]`). Without the bias this is the pointwise GEMM.

use super::pointwise::{pointwise_backward, pointwise_forward};
use super::reduce::channel_sum;

/// Forward pass: `y[i, o] = sum_k x[i, k] w[o, k] + b[o]`.
pub fn linear_forward(
    x: &[f64],
    n: usize,
    fin: usize,
    w: &[f64],
    b: &[f64],
    fout: usize,
) -> Vec<f64> {
    assert_eq!(
        x.len(),
        n * fin,
        "linear_forward: x does not match [n={n}, fin={fin}]"
    );
    assert_eq!(
        w.len(),
        fout * fin,
        "linear_forward: w does not match [fout={fout}, fin={fin}]"
    );
    assert_eq!(b.len(), fout, "linear_forward: b is not [fout={fout}]");
    let mut y = pointwise_forward(x, n, fin, w, fout);
    for row in y.chunks_exact_mut(fout) {
        for (v, bias) in row.iter_mut().zip(b) {
            *v += bias;
        }
    }
    y
}

/// Backward pass given `dy` `[n, fout]`; returns `(dx, dw, db)` with
/// `dx = dy W`, `dw = dy^T x`, `db = sum_rows dy`.
pub fn linear_backward(
    x: &[f64],
    n: usize,
    fin: usize,
    w: &[f64],
    fout: usize,
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    assert_eq!(
        x.len(),
        n * fin,
        "linear_backward: x does not match [n={n}, fin={fin}]"
    );
    assert_eq!(
        w.len(),
        fout * fin,
        "linear_backward: w does not match [fout={fout}, fin={fin}]"
    );
    assert_eq!(
        dy.len(),
        n * fout,
        "linear_backward: dy does not match [n={n}, fout={fout}]"
    );
    let (dx, dw) = pointwise_backward(x, n, fin, w, fout, dy);
    let db = channel_sum(dy, n, fout);
    (dx, dw, db)
}
