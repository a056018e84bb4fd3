//! Full 2-D convolution (used for the 3x3 stem), any stride, padding `k / 2`.
//!
//! Input `x` is NHWC `[n, h, w, cin]`, weight `w` is OIHW `[cout, cin, k, k]`, output `y` is
//! NHWC `[n, ho, wo, cout]` with
//!
//! `y[b, oy, ox, co] = sum_{ci, ky, kx} x[b, oy*s + ky - p, ox*s + kx - p, ci] * w[co, ci, ky, kx]`
//!
//! where taps that land in the zero padding contribute nothing.

/// Output spatial size `(ho, wo)` of a k x k conv with padding `k / 2`:
/// `ho = (h + 2p - k) / stride + 1`.
pub fn conv_out_hw(h: usize, w: usize, k: usize, stride: usize) -> (usize, usize) {
    assert!(k >= 1 && stride >= 1, "conv_out_hw: k={k} stride={stride}");
    let pad = k / 2;
    (
        (h + 2 * pad - k) / stride + 1,
        (w + 2 * pad - k) / stride + 1,
    )
}

/// Input coordinate read by output coordinate `o` through kernel tap `tap`, or `None` when it
/// falls in the zero padding. Shared by the full and depthwise convs.
pub(super) fn input_coord(
    o: usize,
    tap: usize,
    stride: usize,
    pad: usize,
    size: usize,
) -> Option<usize> {
    (o * stride + tap).checked_sub(pad).filter(|&i| i < size)
}

/// Forward pass; returns `y` and its shape `[n, ho, wo, cout]`.
pub fn conv2d_forward(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    cout: usize,
    k: usize,
    stride: usize,
) -> (Vec<f64>, [usize; 4]) {
    let [n, h, wd, cin] = xs;
    assert_eq!(
        x.len(),
        n * h * wd * cin,
        "conv2d_forward: x does not match shape {xs:?}"
    );
    assert_eq!(
        w.len(),
        cout * cin * k * k,
        "conv2d_forward: w does not match [cout={cout}, cin={cin}, k={k}, k={k}]"
    );
    let (ho, wo) = conv_out_hw(h, wd, k, stride);
    let pad = k / 2;
    let mut y = vec![0.0; n * ho * wo * cout];
    for b in 0..n {
        for oy in 0..ho {
            for ox in 0..wo {
                for co in 0..cout {
                    let mut acc = 0.0;
                    for ky in 0..k {
                        let Some(iy) = input_coord(oy, ky, stride, pad, h) else {
                            continue;
                        };
                        for kx in 0..k {
                            let Some(ix) = input_coord(ox, kx, stride, pad, wd) else {
                                continue;
                            };
                            for ci in 0..cin {
                                acc += x[((b * h + iy) * wd + ix) * cin + ci]
                                    * w[((co * cin + ci) * k + ky) * k + kx];
                            }
                        }
                    }
                    y[((b * ho + oy) * wo + ox) * cout + co] = acc;
                }
            }
        }
    }
    (y, [n, ho, wo, cout])
}

/// Backward pass given `dy` (shape `[n, ho, wo, cout]`); returns `(dx, dw)`.
///
/// Every forward product `x * w` sends `dy * w` to its `x` and `dy * x` to its `w`, so the
/// backward walks the same loops and scatters instead of gathering.
pub fn conv2d_backward(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    cout: usize,
    k: usize,
    stride: usize,
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let [n, h, wd, cin] = xs;
    assert_eq!(
        x.len(),
        n * h * wd * cin,
        "conv2d_backward: x does not match shape {xs:?}"
    );
    assert_eq!(
        w.len(),
        cout * cin * k * k,
        "conv2d_backward: w does not match [cout={cout}, cin={cin}, k={k}, k={k}]"
    );
    let (ho, wo) = conv_out_hw(h, wd, k, stride);
    assert_eq!(
        dy.len(),
        n * ho * wo * cout,
        "conv2d_backward: dy does not match [{n}, {ho}, {wo}, {cout}]"
    );
    let pad = k / 2;
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; w.len()];
    for b in 0..n {
        for oy in 0..ho {
            for ox in 0..wo {
                for co in 0..cout {
                    let g = dy[((b * ho + oy) * wo + ox) * cout + co];
                    for ky in 0..k {
                        let Some(iy) = input_coord(oy, ky, stride, pad, h) else {
                            continue;
                        };
                        for kx in 0..k {
                            let Some(ix) = input_coord(ox, kx, stride, pad, wd) else {
                                continue;
                            };
                            for ci in 0..cin {
                                let xi = ((b * h + iy) * wd + ix) * cin + ci;
                                let wi = ((co * cin + ci) * k + ky) * k + kx;
                                dx[xi] += g * w[wi];
                                dw[wi] += g * x[xi];
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw)
}
