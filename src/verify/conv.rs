//! Full 2-D convolution (the stem) against the reference: forward, dx and dw.

use anyhow::Result;

use super::{f64s, Checker};
use crate::{ops, reference};

/// (n, h, w, cin, cout, k, stride): 1x1 images, batch 1, one channel, k 1/3/5/7, stride 2 and
/// 3 with odd inputs, channel counts off every tile and off whole quads (cout 1, 3, 5, 9, 10,
/// 17), the stem's shapes (CIFAR stride 1, an ImageNet-like stride 2), shapes with 4-row dx
/// tiles (2048 pixels and more) and 8-row forward tiles (4096 and more, off a whole workgroup's
/// 512), several dw chunks, and strides that leave input pixels no tap (k 1 stride 2) or exceed
/// the image.
const SHAPES: &[(usize, usize, usize, usize, usize, usize, usize)] = &[
    (1, 1, 1, 1, 1, 1, 1),
    (1, 1, 1, 1, 1, 3, 1),
    (1, 7, 5, 1, 3, 3, 2),
    (2, 7, 5, 3, 8, 3, 2),
    (1, 5, 7, 2, 5, 5, 1),
    (1, 6, 6, 4, 9, 5, 2),
    (3, 4, 5, 5, 17, 1, 1),
    (2, 9, 9, 3, 16, 1, 2),
    (1, 13, 11, 3, 8, 7, 3),
    (1, 8, 8, 16, 24, 3, 1),
    (2, 32, 32, 3, 32, 3, 1),
    (1, 33, 31, 3, 16, 3, 2),
    (2, 30, 34, 3, 48, 3, 2),
    (5, 21, 20, 3, 24, 3, 1),
    (4, 24, 24, 3, 32, 3, 1),
    (1, 7, 8, 2, 3, 1, 2),
    (2, 2, 3, 2, 4, 3, 4),
    (2, 5, 9, 6, 5, 3, 3),
    (2, 65, 63, 3, 16, 3, 2),
    (3, 26, 27, 3, 10, 3, 1),
    (3, 37, 41, 3, 32, 3, 1),
    (2, 45, 47, 3, 24, 3, 1),
];

pub fn run(c: &mut Checker) -> Result<()> {
    for &(n, h, w, cin, cout, k, stride) in SHAPES {
        let xs = [n, h, w, cin];
        let xv = c.random(n * h * w * cin);
        let wv = c.random(cout * cin * k * k);
        let x = c.upload(&xv, &xs)?;
        let wt = c.upload(&wv, &[cout, cin, k, k])?;
        let (xd, wd) = (f64s(&xv), f64s(&wv));
        let (y_ref, ys) = reference::conv2d_forward(&xd, xs, &wd, cout, k, stride);
        let dyv = c.random(y_ref.len());
        let dy = c.upload(&dyv, &ys)?;
        let (dx_ref, dw_ref) =
            reference::conv2d_backward(&xd, xs, &wd, cout, k, stride, &f64s(&dyv));
        let y = ops::conv::conv2d_forward(c.gpu, &x, &wt, stride)?;
        let (dx, dw) = ops::conv::conv2d_backward(c.gpu, &x, &wt, stride, &dy)?;
        let shape = format!("x{xs:?} w[{cout},{cin},{k},{k}] s{stride}");
        anyhow::ensure!(
            y.shape == ys,
            "conv2d_forward: shape {:?} != {ys:?}",
            y.shape
        );
        c.compare("conv", shape.clone(), "y", &y, &y_ref)?;
        c.compare("conv", shape.clone(), "dx", &dx, &dx_ref)?;
        c.compare("conv", shape.clone(), "dw", &dw, &dw_ref)?;
        let dw_only = ops::conv::conv2d_backward_weight(c.gpu, &x, &wt, stride, &dy)?;
        c.compare("conv_backward_weight", shape, "dw", &dw_only, &dw_ref)?;
    }
    Ok(())
}
