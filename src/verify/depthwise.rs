//! Depthwise convolution (forward, input and weight gradients) against the reference.

use anyhow::Result;

use super::{f64s, Checker};
use crate::gpu::{with_lane_order, LaneOrder};
use crate::{ops, reference};

/// (n, h, w, c, k, stride). Channel counts off a multiple of 4 take the storage-buffer path
/// (single pixels, one channel, odd sizes); the others take the texture path with every
/// (k, stride) pair, widths off the column strip, stride 2 on odd inputs, row-chunked small
/// batches, several images per weight-gradient slice (the 15-image case, a partial last
/// chunk), and the channel counts of the real network on small images.
const SHAPES: &[(usize, usize, usize, usize, usize, usize)] = &[
    (1, 1, 1, 1, 3, 1),
    (1, 1, 1, 1, 5, 2),
    (1, 5, 7, 3, 3, 1),
    (2, 7, 5, 5, 5, 2),
    (1, 9, 11, 6, 3, 1),
    (2, 13, 9, 7, 5, 2),
    (1, 2, 3, 4, 5, 1),
    (1, 1, 1, 4, 7, 2),
    (1, 11, 17, 4, 7, 2),
    (1, 17, 19, 16, 3, 1),
    (2, 12, 12, 24, 5, 2),
    (3, 9, 10, 32, 3, 1),
    (2, 7, 7, 40, 5, 2),
    (2, 5, 6, 80, 3, 1),
    (1, 6, 5, 96, 7, 1),
    (2, 9, 9, 144, 3, 2),
    (1, 4, 4, 192, 5, 1),
    (2, 16, 16, 240, 5, 1),
    (1, 3, 3, 320, 3, 1),
    (1, 5, 5, 480, 7, 2),
    (1, 4, 3, 576, 5, 2),
    (2, 2, 2, 1152, 7, 1),
    (15, 3, 8, 1152, 3, 1),
    (1, 3, 2, 1280, 3, 2),
];

/// Every shape in both lane orders (the device picks one; the other must be right too).
pub fn run(c: &mut Checker) -> Result<()> {
    for order in [LaneOrder::Coalesced, LaneOrder::Spread] {
        with_lane_order(order, || shapes(c, order))?;
    }
    Ok(())
}

fn shapes(c: &mut Checker, order: LaneOrder) -> Result<()> {
    for &(n, h, w, ch, k, s) in SHAPES {
        let xv = c.random(n * h * w * ch);
        let wv = c.random(ch * k * k);
        let x = c.upload(&xv, &[n, h, w, ch])?;
        let wt = c.upload(&wv, &[ch, k, k])?;
        let (xd, wd) = (f64s(&xv), f64s(&wv));
        let (y_ref, ys) = reference::depthwise_forward(&xd, [n, h, w, ch], &wd, k, s);
        let dyv = c.random(ys.iter().product());
        let dy = c.upload(&dyv, &ys)?;
        let (dx_ref, dw_ref) =
            reference::depthwise_backward(&xd, [n, h, w, ch], &wd, k, s, &f64s(&dyv));
        let y = ops::depthwise::depthwise_forward(c.gpu, &x, &wt, s)?;
        let (dx, dw) = ops::depthwise::depthwise_backward(c.gpu, &x, &wt, s, &dy)?;
        let shape = format!("x[{n},{h},{w},{ch}] k{k} s{s} {order:?}");
        c.compare("depthwise", shape.clone(), "y", &y, &y_ref)?;
        c.compare("depthwise", shape.clone(), "dx", &dx, &dx_ref)?;
        c.compare("depthwise", shape, "dw", &dw, &dw_ref)?;
    }
    Ok(())
}
