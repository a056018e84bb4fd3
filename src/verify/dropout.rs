//! Dropout against the reference mask, bit for bit: forward and backward values, and the
//! number of elements whose zero/non-zero state differs from the reference mask (must be 0;
//! the inputs are never zero, so an output is zero exactly where it was dropped).

use anyhow::Result;
use rand::Rng;

use super::{f64s, Checker, Outcome};
use crate::gpu::Tensor;
use crate::{ops, reference};

const SHAPES: &[&[usize]] = &[
    &[1],
    &[3],
    &[7],
    &[1000],
    &[4099],
    &[100_003],
    &[2, 14, 14, 144],
    &[32, 1280],
];

/// Records, as the outcome's error, how many elements of `out` are zero where `reference` is
/// not or the other way round.
fn count_mask_mismatches(
    c: &mut Checker,
    kernel: &str,
    shape: String,
    out: &Tensor,
    reference: &[f64],
) -> Result<()> {
    let got = c.gpu.read_f32(out)?;
    let mismatches = if got.len() == reference.len() {
        got.iter()
            .zip(reference)
            .filter(|(g, r)| (**g == 0.0) != (**r == 0.0))
            .count() as f64
    } else {
        f64::INFINITY
    };
    c.outcomes.push(Outcome {
        kernel: kernel.to_string(),
        shape,
        output: "mask mismatches",
        rel_error: mismatches,
    });
    Ok(())
}

pub fn run(c: &mut Checker) -> Result<()> {
    for &shape in SHAPES {
        for p in [0.0f32, 0.2, 0.5] {
            let len: usize = shape.iter().product();
            let seed: u32 = c.rng.random();
            let xv = c.random(len);
            let dyv = c.random(len);
            let x = c.upload(&xv, shape)?;
            let dy = c.upload(&dyv, shape)?;
            let name = format!("{shape:?} p {p} seed {seed}");
            let y = ops::dropout::dropout_forward(c.gpu, &x, p, seed)?;
            let dx = ops::dropout::dropout_backward(c.gpu, &dy, p, seed)?;
            let y_ref = reference::dropout_forward(&f64s(&xv), p, seed);
            let dx_ref = reference::dropout_backward(&f64s(&dyv), p, seed);
            c.compare("dropout", name.clone(), "y", &y, &y_ref)?;
            count_mask_mismatches(c, "dropout", name.clone(), &y, &y_ref)?;
            c.compare("dropout", name.clone(), "dx", &dx, &dx_ref)?;
            count_mask_mismatches(c, "dropout", name, &dx, &dx_ref)?;
        }
    }
    Ok(())
}
