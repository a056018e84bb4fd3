//! Depthwise convolution: each channel is convolved with its own k x k filter
//! (k in 3, 5, 7; stride 1 or 2; padding `k / 2`).
//!
//! Input `x` is NHWC `[n, h, w, c]`, weight `w` is `[c, k, k]` (PyTorch's `[c, 1, k, k]`),
//! output `y` is NHWC `[n, ho, wo, c]` with
//!
//! `y[b, oy, ox, ch] = sum_{ky, kx} x[b, oy*s + ky - p, ox*s + kx - p, ch] * w[ch, ky, kx]`
//!
//! where taps that land in the zero padding contribute nothing.

use super::conv::{conv_out_hw, input_coord};

/// Forward pass; returns `y` and its shape `[n, ho, wo, c]`.
pub fn depthwise_forward(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    k: usize,
    stride: usize,
) -> (Vec<f64>, [usize; 4]) {
    let [n, h, wd, c] = xs;
    assert_eq!(
        x.len(),
        n * h * wd * c,
        "depthwise_forward: x does not match shape {xs:?}"
    );
    assert_eq!(
        w.len(),
        c * k * k,
        "depthwise_forward: w does not match [c={c}, k={k}, k={k}]"
    );
    let (ho, wo) = conv_out_hw(h, wd, k, stride);
    let pad = k / 2;
    let mut y = vec![0.0; n * ho * wo * c];
    for b in 0..n {
        for oy in 0..ho {
            for ox in 0..wo {
                for ch in 0..c {
                    let mut acc = 0.0;
                    for ky in 0..k {
                        let Some(iy) = input_coord(oy, ky, stride, pad, h) else {
                            continue;
                        };
                        for kx in 0..k {
                            let Some(ix) = input_coord(ox, kx, stride, pad, wd) else {
                                continue;
                            };
                            acc += x[((b * h + iy) * wd + ix) * c + ch] * w[(ch * k + ky) * k + kx];
                        }
                    }
                    y[((b * ho + oy) * wo + ox) * c + ch] = acc;
                }
            }
        }
    }
    (y, [n, ho, wo, c])
}

/// Backward pass given `dy` (shape `[n, ho, wo, c]`); returns `(dx, dw)`, `dw` as `[c, k, k]`.
///
/// Same loops as the forward, scattering `dy * w` into `dx` and `dy * x` into `dw`.
pub fn depthwise_backward(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    k: usize,
    stride: usize,
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let [n, h, wd, c] = xs;
    assert_eq!(
        x.len(),
        n * h * wd * c,
        "depthwise_backward: x does not match shape {xs:?}"
    );
    assert_eq!(
        w.len(),
        c * k * k,
        "depthwise_backward: w does not match [c={c}, k={k}, k={k}]"
    );
    let (ho, wo) = conv_out_hw(h, wd, k, stride);
    assert_eq!(
        dy.len(),
        n * ho * wo * c,
        "depthwise_backward: dy does not match [{n}, {ho}, {wo}, {c}]"
    );
    let pad = k / 2;
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; w.len()];
    for b in 0..n {
        for oy in 0..ho {
            for ox in 0..wo {
                for ch in 0..c {
                    let g = dy[((b * ho + oy) * wo + ox) * c + ch];
                    for ky in 0..k {
                        let Some(iy) = input_coord(oy, ky, stride, pad, h) else {
                            continue;
                        };
                        for kx in 0..k {
                            let Some(ix) = input_coord(ox, kx, stride, pad, wd) else {
                                continue;
                            };
                            let xi = ((b * h + iy) * wd + ix) * c + ch;
                            let wi = (ch * k + ky) * k + kx;
                            dx[xi] += g * w[wi];
                            dw[wi] += g * x[xi];
                        }
                    }
                }
            }
        }
    }
    (dx, dw)
}
