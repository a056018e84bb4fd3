//! ReLU6, residual add, in-place accumulation and scaling against the reference, on lengths
//! below, at and off multiples of 4 (the vec4 body and its scalar tail), activation sizes of
//! the real network, and one length past 65535 workgroups (the folded 2-D grid).

use anyhow::Result;

use super::{f64s, Checker};
use crate::{ops, reference};

/// Tensor shapes; the kernels only see their lengths.
const SHAPES: &[&[usize]] = &[
    &[1],
    &[2],
    &[3],
    &[4],
    &[5],
    &[7],
    &[64],
    &[1001],
    &[1, 3, 5, 7],
    &[2, 7, 7, 144],
    &[1, 14, 14, 40],
    &[3, 4, 4, 1152],
    &[2, 9, 9, 24],
];

/// Over 65535 * 64 vec4 units, with a tail of 3; checked with ReLU6 forward only (every op
/// shares the launcher that folds the grid).
const FOLDED: usize = 65535 * 64 * 4 + 1027;

/// Compares every op on `shape`, or only ReLU6 forward unless `all`.
fn check(c: &mut Checker, shape: &[usize], all: bool) -> Result<()> {
    let len: usize = shape.iter().product();
    let name = format!("{shape:?}");
    // Straddles both kinks of ReLU6.
    let xv = c.random_in(len, -2.0, 8.0);
    let x = c.upload(&xv, shape)?;
    let xd = f64s(&xv);
    let y = ops::elementwise::relu6_forward(c.gpu, &x)?;
    c.compare(
        "relu6",
        name.clone(),
        "y",
        &y,
        &reference::relu6_forward(&xd),
    )?;
    if !all {
        return Ok(());
    }
    let s = 0.37f32;
    let y = ops::elementwise::scale(c.gpu, &x, s)?;
    let scaled: Vec<f64> = xd.iter().map(|v| v * f64::from(s)).collect();
    c.compare("scale", name.clone(), "y", &y, &scaled)?;
    let dyv = c.random(len);
    let dy = c.upload(&dyv, shape)?;
    let dyd = f64s(&dyv);
    let dx = ops::elementwise::relu6_backward(c.gpu, &x, &dy)?;
    c.compare(
        "relu6",
        name.clone(),
        "dx",
        &dx,
        &reference::relu6_backward(&xd, &dyd),
    )?;
    let sum_ref = reference::add_forward(&xd, &dyd);
    let y = ops::elementwise::add(c.gpu, &x, &dy)?;
    c.compare("add", name.clone(), "y", &y, &sum_ref)?;
    let acc = c.upload(&xv, shape)?;
    ops::elementwise::add_assign(c.gpu, &acc, &dy)?;
    c.compare("add_assign", name, "acc", &acc, &sum_ref)?;
    Ok(())
}

pub fn run(c: &mut Checker) -> Result<()> {
    for &shape in SHAPES {
        check(c, shape, true)?;
    }
    check(c, &[FOLDED], false)
}
