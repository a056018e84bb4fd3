//! Softmax cross-entropy (the mean loss and the full dlogits matrix) and top-1 counting against
//! the reference: one class (loss 0), one row, 10 and 1000 classes, batches past one workgroup
//! of rows, label smoothing on and off, and logits large enough to overflow exp without the
//! max subtraction.

use anyhow::Result;
use rand::Rng;

use super::{f64s, Checker};
use crate::{ops, reference};

/// (n, k, smoothing, logit range).
const CASES: &[(usize, usize, f32, f32, f32)] = &[
    (1, 1, 0.0, -1.0, 1.0),
    (3, 1, 0.1, -1.0, 1.0),
    (1, 10, 0.0, -1.0, 1.0),
    (7, 10, 0.1, -3.0, 3.0),
    (64, 10, 0.1, -3.0, 3.0),
    (64, 1000, 0.1, -3.0, 3.0),
    (3, 1000, 0.0, -1.0, 1.0),
    (5, 3, 0.2, -1.0, 1.0),
    (130, 10, 0.0, -5.0, 5.0),
    (4, 10, 0.1, 80.0, 120.0),
];

fn random_labels(c: &mut Checker, n: usize, k: usize) -> Vec<u32> {
    (0..n).map(|_| c.rng.random_range(0..k as u32)).collect()
}

/// Logits and labels where rows are right, random, or tied between two maxima with the label
/// on the first (counted) or the second (not counted) of them.
fn count_case(c: &mut Checker, n: usize, k: usize) -> (Vec<f32>, Vec<u32>) {
    let mut z = c.random(n * k);
    let mut labels = random_labels(c, n, k);
    for r in 0..n {
        let row = &mut z[r * k..(r + 1) * k];
        match r % 4 {
            0 => row[labels[r] as usize] = 2.0,
            2 | 3 if k >= 2 => {
                let a = c.rng.random_range(0..k - 1);
                let b = c.rng.random_range(a + 1..k);
                row[a] = 2.0;
                row[b] = 2.0;
                labels[r] = if r % 4 == 2 { a } else { b } as u32;
            }
            _ => {}
        }
    }
    (z, labels)
}

pub fn run(c: &mut Checker) -> Result<()> {
    for &(n, k, s, lo, hi) in CASES {
        let zv = c.random_in(n * k, lo, hi);
        let lv = random_labels(c, n, k);
        let logits = c.upload(&zv, &[n, k])?;
        let labels = c.gpu.upload(&lv, &[n])?;
        let name = format!("[{n},{k}] smoothing {s} logits in ({lo},{hi})");
        let (loss, dlogits) = ops::loss::softmax_cross_entropy(c.gpu, &logits, &labels, s)?;
        let (loss_ref, dlogits_ref) =
            reference::softmax_cross_entropy(&f64s(&zv), n, k, &lv, f64::from(s));
        c.compare(
            "softmax_cross_entropy",
            name.clone(),
            "loss",
            &loss,
            &[loss_ref],
        )?;
        c.compare(
            "softmax_cross_entropy",
            name,
            "dlogits",
            &dlogits,
            &dlogits_ref,
        )?;

        let (zv, lv) = count_case(c, n, k);
        let logits = c.upload(&zv, &[n, k])?;
        let labels = c.gpu.upload(&lv, &[n])?;
        let count = ops::loss::count_correct(c.gpu, &logits, &labels)?;
        let count_ref = reference::count_correct(&f64s(&zv), n, k, &lv) as f64;
        c.compare(
            "count_correct",
            format!("[{n},{k}]"),
            "count",
            &count,
            &[count_ref],
        )?;
    }
    Ok(())
}
