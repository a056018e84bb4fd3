//! Pointwise convolution (and the matrix product behind it) against the reference.

use anyhow::Result;

use super::{f64s, with_each_subgroup_setting, Checker};
use crate::{ops, reference};

/// (n, h, w, cin, cout): batch 1, one channel, odd sizes, sizes off every tile, split-K sized
/// reductions, short weight gradients and the channel counts of the real network.
const SHAPES: &[(usize, usize, usize, usize, usize)] = &[
    (1, 1, 1, 1, 1),
    (1, 3, 5, 7, 9),
    (2, 7, 7, 16, 24),
    (1, 9, 9, 33, 17),
    (3, 5, 5, 40, 240),
    (4, 16, 16, 24, 144),
    (2, 4, 4, 320, 1280),
    (1, 2, 2, 1280, 10),
    // Short weight gradients (m = cout small, k long): lanes split between m and k slices.
    (4, 17, 16, 72, 24),
    (2, 16, 20, 48, 96),
    (5, 13, 16, 16, 8),
    // Lanes along m not a power of two (m / 4 = 10 and 6 lanes, 6 and 10 slices of k).
    (3, 17, 17, 24, 40),
    (5, 17, 16, 72, 24),
    // m = 240 in 8-row tiles needs 30 lanes: with subgroups, 8 lanes and 4 groups along m.
    (2, 16, 16, 16, 240),
    // A weight gradient with n = cin = 40 in two column groups of 20.
    (1, 16, 36, 40, 16),
    // With shared B loads, n = 80 in three column groups of 28 (the last past n).
    (1, 16, 20, 16, 80),
    // ... and n = 1280 in 54 groups of 24 (16 columns past n).
    (1, 18, 16, 56, 1280),
    // Short k in 4 x 16 tiles, forward and input gradient, rows past m (273 = 256 + 17).
    (3, 7, 13, 48, 32),
    // Weight gradients in column groups past n: n = cin = 52 in 3 x 20 (dy^T x), and the
    // transposed form of a narrowing conv, n = cout = 52 in 3 x 20 (x^T dy).
    (2, 16, 16, 52, 56),
    (2, 16, 16, 56, 52),
];

/// Every shape with and without B loads shared through subgroups (`gemm_vec4.wgsl`).
pub fn run(c: &mut Checker) -> Result<()> {
    with_each_subgroup_setting(c, shapes)
}

fn shapes(c: &mut Checker, suffix: &str) -> Result<()> {
    for &(n, h, w, cin, cout) in SHAPES {
        let m = n * h * w;
        let xv = c.random(m * cin);
        let wv = c.random(cout * cin);
        let dyv = c.random(m * cout);
        let x = c.upload(&xv, &[n, h, w, cin])?;
        let wt = c.upload(&wv, &[cout, cin])?;
        let dy = c.upload(&dyv, &[n, h, w, cout])?;
        let shape = format!("x[{n},{h},{w},{cin}] w[{cout},{cin}]{suffix}");
        let y = ops::pointwise::pointwise_forward(c.gpu, &x, &wt)?;
        let (dx, dw) = ops::pointwise::pointwise_backward(c.gpu, &x, &wt, &dy)?;
        let (xd, wd, dyd) = (f64s(&xv), f64s(&wv), f64s(&dyv));
        let y_ref = reference::pointwise_forward(&xd, m, cin, &wd, cout);
        let (dx_ref, dw_ref) = reference::pointwise_backward(&xd, m, cin, &wd, cout, &dyd);
        c.compare("pointwise", shape.clone(), "y", &y, &y_ref)?;
        c.compare("pointwise", shape.clone(), "dx", &dx, &dx_ref)?;
        c.compare("pointwise", shape, "dw", &dw, &dw_ref)?;
    }
    accumulate(c, suffix)
}

/// (m, k, n) of C += A B through `gemm` with `accumulate`: a row overhang, a grid that fits C
/// exactly (unguarded stores), a split reduction summed onto C, and an odd scalar product.
const ACCUMULATE_SHAPES: &[(usize, usize, usize)] =
    &[(45, 16, 24), (512, 40, 240), (96, 1024, 8), (7, 9, 5)];

fn accumulate(c: &mut Checker, suffix: &str) -> Result<()> {
    for &(m, k, n) in ACCUMULATE_SHAPES {
        let (av, bv, cv) = (c.random(m * k), c.random(n * k), c.random(m * n));
        let a = c.upload(&av, &[m, k])?;
        let b = c.upload(&bv, &[n, k])?;
        let out = c.upload(&cv, &[m, n])?;
        let g = ops::gemm::Gemm {
            m,
            n,
            k,
            a_si: k,
            a_sk: 1,
            b_sk: 1,
            b_sj: k,
            c_si: n,
            c_sj: 1,
        };
        ops::gemm::gemm(c.gpu, &a.buf, &b.buf, &out.buf, g, true)?;
        let product = reference::pointwise_forward(&f64s(&av), m, k, &f64s(&bv), n);
        let want: Vec<f64> = product
            .iter()
            .zip(&cv)
            .map(|(p, &c0)| p + c0 as f64)
            .collect();
        c.compare(
            "pointwise",
            format!("C[{m},{n}] += A[{m},{k}] B{suffix}"),
            "c",
            &out,
            &want,
        )?;
    }
    Ok(())
}
