//! Sum and dot-product reductions against the reference.

use anyhow::Result;

use super::{f64s, Checker};
use crate::{ops, reference};

pub fn run(c: &mut Checker) -> Result<()> {
    for &len in &[1usize, 7, 255, 256, 1000, 65537, 300_001] {
        // A sum of zero-mean values can land near zero, where ||out - ref|| / ||ref|| measures
        // the problem's conditioning rather than the kernel: give the inputs a positive mean.
        let xv = c.random_in(len, -0.5, 1.0);
        let yv = c.random_in(len, -0.5, 1.0);
        let x = c.upload(&xv, &[len])?;
        let y = c.upload(&yv, &[len])?;
        let s = ops::reduce::sum(c.gpu, &x)?;
        let d = ops::reduce::dot(c.gpu, &x, &y)?;
        let (xd, yd) = (f64s(&xv), f64s(&yv));
        c.compare("sum", format!("[{len}]"), "sum", &s, &[reference::sum(&xd)])?;
        c.compare(
            "dot",
            format!("[{len}]"),
            "dot",
            &d,
            &[reference::dot(&xd, &yd)],
        )?;
    }
    for &(m, ch) in &[
        (1usize, 1usize),
        (7, 3),
        (63, 65),
        (1000, 24),
        (8192, 240),
        (20_000, 7),
    ] {
        let xv = c.random(m * ch);
        let x = c.upload(&xv, &[m, ch])?;
        let out = c.gpu.empty(&[ch]);
        ops::reduce::channel_sum(c.gpu, &x.buf, m, ch, &out.buf, false)?;
        let r = reference::channel_sum(&f64s(&xv), m, ch);
        c.compare("channel_sum", format!("[{m},{ch}]"), "sum", &out, &r)?;
    }
    // The dot product with a batch-normalised tensor (a candidate's dL/dg): batch 1, odd
    // channel counts, more partials than channels and fewer.
    for &(m, ch) in &[(1usize, 1usize), (7, 3), (63, 65), (1000, 24), (20_000, 7)] {
        let xv = c.random(m * ch);
        let yv = c.random_in(m * ch, -0.5, 1.0);
        let per: Vec<Vec<f32>> = vec![
            c.random(ch),
            c.random_in(ch, 0.2, 1.0),
            c.random(ch),
            c.random_in(ch, 0.5, 2.0),
        ];
        let x = c.upload(&xv, &[m, ch])?;
        let y = c.upload(&yv, &[m, ch])?;
        let t: Vec<_> = per
            .iter()
            .map(|v| c.upload(v, &[ch]))
            .collect::<Result<_>>()?;
        let d = ops::reduce::batchnorm_dot(c.gpu, &x, (&t[0], &t[1]), (&t[2], &t[3]), &y)?;
        let pd: Vec<Vec<f64>> = per.iter().map(|v| f64s(v)).collect();
        let r =
            reference::batchnorm_dot(&f64s(&xv), (&pd[0], &pd[1]), (&pd[2], &pd[3]), &f64s(&yv));
        c.compare("batchnorm_dot", format!("[{m},{ch}]"), "dot", &d, &[r])?;
    }
    // Split-K slices: scalar loads and, where large enough, the texture path; with and
    // without accumulating into the output.
    for &(len, slices, accumulate) in &[
        (7usize, 3usize, false),
        (1001, 40, true),
        (4000, 5, true),
        (6000, 128, false),
        (12, 2000, false),
        (110_592, 2, true),
    ] {
        let xv = c.random(len * slices);
        let x = c.upload(&xv, &[len * slices])?;
        let initial = c.random(len);
        // Overwriting: the poisoned (NaN) output of `empty`, so an unwritten element fails.
        let out = if accumulate {
            c.upload(&initial, &[len])?
        } else {
            c.gpu.empty(&[len])
        };
        ops::reduce::sum_slices(c.gpu, &x.buf, &out.buf, len, slices, accumulate)?;
        let r: Vec<f64> = (0..len)
            .map(|e| {
                let start = if accumulate { initial[e] as f64 } else { 0.0 };
                start + (0..slices).map(|s| xv[s * len + e] as f64).sum::<f64>()
            })
            .collect();
        let path = if ops::reduce::sums_through_texture(c.gpu, len, slices) {
            "texture"
        } else {
            "scalar"
        };
        c.compare(
            "sum_slices",
            format!("{slices}x[{len}] {path} acc={accumulate}"),
            "out",
            &out,
            &r,
        )?;
    }
    // Pairs of slice sums (the BN backward's dbeta and dgamma): one slice, scalar loads, the
    // texture path.
    for &(len, slices) in &[(7usize, 1usize), (24, 40), (1152, 64)] {
        let xv = c.random(2 * len * slices);
        let x = c.upload(&xv, &[2 * len * slices])?;
        let (a, b) = (c.gpu.empty(&[len]), c.gpu.empty(&[len]));
        ops::reduce::sum_slices_pair(c.gpu, &x.buf, (&a.buf, &b.buf), len, slices)?;
        let path = if ops::reduce::sums_through_texture(c.gpu, len, slices) {
            "texture"
        } else {
            "scalar"
        };
        for (half, out, output) in [(0, &a, "first"), (1, &b, "second")] {
            let r: Vec<f64> = (0..len)
                .map(|e| {
                    (0..slices)
                        .map(|s| f64::from(xv[(half * slices + s) * len + e]))
                        .sum::<f64>()
                })
                .collect();
            let name = format!("2x{slices}x[{len}] {path}");
            c.compare("sum_slices_pair", name, output, out, &r)?;
        }
    }
    Ok(())
}
