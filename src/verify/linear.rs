//! Fully connected layer against the reference: the classifier shapes of the real network
//! (1280 features to 10 or 1000 classes), batch 1, a single feature, batches narrower than the
//! layer (the transposed products) and wider (direct, with the bias kernel over vec4 units
//! when the width is a multiple of 4, over scalars otherwise).

use anyhow::Result;

use super::{f64s, Checker};
use crate::{ops, reference};

/// (n, in, out).
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (3, 7, 5),
    (2, 5, 8),
    (32, 1280, 10),
    (64, 1280, 1000),
    (5, 1000, 3),
    (7, 1152, 12),
    (130, 24, 40),
    (300, 16, 7),
];

pub fn run(c: &mut Checker) -> Result<()> {
    for &(n, fin, fout) in SHAPES {
        let xv = c.random(n * fin);
        let wv = c.random(fout * fin);
        // Positive biases above 1 keep y = x w + b of the 1x1 case away from a cancellation
        // to zero (which would turn one rounding of x w into a large relative error).
        let bv = c.random_in(fout, 1.0, 2.0);
        let dyv = c.random(n * fout);
        let x = c.upload(&xv, &[n, fin])?;
        let w = c.upload(&wv, &[fout, fin])?;
        let b = c.upload(&bv, &[fout])?;
        let dy = c.upload(&dyv, &[n, fout])?;
        let name = format!("x[{n},{fin}] w[{fout},{fin}]");
        let y = ops::linear::linear_forward(c.gpu, &x, &w, &b)?;
        let (dx, dw, db) = ops::linear::linear_backward(c.gpu, &x, &w, &dy)?;
        let (xd, wd, dyd) = (f64s(&xv), f64s(&wv), f64s(&dyv));
        let y_ref = reference::linear_forward(&xd, n, fin, &wd, &f64s(&bv), fout);
        let (dx_ref, dw_ref, db_ref) = reference::linear_backward(&xd, n, fin, &wd, fout, &dyd);
        c.compare("linear", name.clone(), "y", &y, &y_ref)?;
        c.compare("linear", name.clone(), "dx", &dx, &dx_ref)?;
        c.compare("linear", name.clone(), "dw", &dw, &dw_ref)?;
        c.compare("linear", name, "db", &db, &db_ref)?;
    }
    // The transposes alone (the pointwise input gradient's weights go through them): scalar
    // and texture paths, odd row counts, one row, columns not a multiple of 4.
    for &(rows, cols) in &[
        (7usize, 12usize),
        (41, 6),
        (37, 40),
        (33, 44),
        (1, 1024),
        (240, 40),
        (1152, 192),
    ] {
        let sv = c.random(rows * cols);
        let src = c.upload(&sv, &[rows, cols])?;
        let dst = c.gpu.empty(&[cols, rows]);
        ops::linear::transpose(c.gpu, &src.buf, &dst.buf, rows, cols)?;
        let r: Vec<f64> = (0..cols * rows)
            .map(|f| sv[(f % rows) * cols + f / rows] as f64)
            .collect();
        let path = if ops::linear::transposes_through_texture(c.gpu, rows, cols) {
            "texture"
        } else {
            "scalar"
        };
        c.compare(
            "transpose",
            format!("[{rows},{cols}] {path}"),
            "dst",
            &dst,
            &r,
        )?;
    }
    Ok(())
}
