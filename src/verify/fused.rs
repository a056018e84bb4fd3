//! The fused training ops, BN + ReLU6 + depthwise conv (`ops::bn_depthwise`) and BN + ReLU6 +
//! pointwise conv (`ops::bn_pointwise`), against the composition of the references: forward
//! (y, batch mean and rstd, running statistics) and backward (dx, dgamma, dbeta, dw).

use anyhow::Result;

use super::{f64s, Checker};
use crate::gpu::Tensor;
use crate::{ops, reference};

/// (n, h, w, c, k, stride): batch 1, a single pixel, channel counts off a multiple of 4 (the
/// storage-buffer path), every (k, stride) pair, stride 2 on odd inputs, widths off the column
/// strip, and network channel counts on small images.
const SHAPES: &[(usize, usize, usize, usize, usize, usize)] = &[
    (1, 1, 1, 4, 3, 1),
    (2, 5, 7, 3, 3, 1),
    (2, 7, 5, 5, 5, 2),
    (1, 11, 9, 8, 7, 2),
    (3, 9, 10, 32, 3, 1),
    (2, 7, 7, 40, 5, 2),
    (1, 6, 5, 96, 7, 1),
    (2, 9, 9, 144, 3, 2),
    (4, 8, 8, 240, 5, 1),
];

/// (n, h, w, cin, cout) of the pointwise op: batch 1, odd sizes, rows off the GEMM tile, the
/// split-K weight gradient, and the network's projection shapes. The op fuses only where the
/// products take the vec4 kernel (cin and the pixel count multiples of 4; `Tape` runs the two
/// ops separately otherwise), so these shapes all do; the last one checks that it refuses.
const POINTWISE_SHAPES: &[(usize, usize, usize, usize, usize)] = &[
    (1, 2, 2, 4, 4),
    (1, 1, 4, 8, 12),
    (4, 3, 5, 24, 16),
    (2, 7, 6, 16, 40),
    (3, 9, 4, 144, 24),
    (2, 8, 8, 240, 40),
    (1, 4, 4, 1152, 192),
    (3, 3, 3, 8, 8),
];

pub fn run(c: &mut Checker) -> Result<()> {
    depthwise(c)?;
    pointwise(c)
}

/// Uniform random per-channel BN parameters and running statistics, as
/// (gamma, beta, running mean, running var); scales up to 8 push some pre-activations past 6,
/// so both clamps of the ReLU6 are exercised.
fn bn_params(c: &mut Checker, ch: usize) -> [Vec<f32>; 4] {
    [
        c.random_in(ch, 0.5, 8.0),
        c.random(ch),
        c.random(ch),
        c.random_in(ch, 0.5, 1.5),
    ]
}

fn pointwise(c: &mut Checker) -> Result<()> {
    for &(n, h, w, cin, cout) in POINTWISE_SHAPES {
        let numel = n * h * w * cin;
        let m = n * h * w;
        let (momentum, eps) = (0.1f32, 1e-3f32);
        let xv = c.random_in(numel, -2.0, 2.0);
        let [gv, bv, rmv, rvv] = bn_params(c, cin);
        let wv = c.random(cout * cin);
        let x = c.upload(&xv, &[n, h, w, cin])?;
        let gamma = c.upload(&gv, &[cin])?;
        let beta = c.upload(&bv, &[cin])?;
        let rm = c.upload(&rmv, &[cin])?;
        let rv = c.upload(&rvv, &[cin])?;
        let wt = c.upload(&wv, &[cout, cin])?;
        let label = format!("x[{n},{h},{w},{cin}] -> {cout}");
        let fusable = ops::bn_pointwise::fusable(c.gpu, &x, &wt)?;
        if m % 4 != 0 {
            anyhow::ensure!(!fusable, "bn_relu6_pointwise claims to fuse {label}");
            continue;
        }
        anyhow::ensure!(fusable, "bn_relu6_pointwise does not fuse {label}");
        let (y, mean, rstd) = ops::bn_pointwise::bn_relu6_pointwise_forward(
            c.gpu,
            &x,
            &gamma,
            &beta,
            (&rm, &rv),
            momentum,
            eps,
            &wt,
        )?;
        let (xd, gd, bd, wd) = (f64s(&xv), f64s(&gv), f64s(&bv), f64s(&wv));
        let eps_d = eps as f64;
        let (bn_ref, mean_ref, var_ref) =
            reference::batchnorm_train_forward(&xd, m, cin, &gd, &bd, eps_d);
        let a_ref = reference::relu6_forward(&bn_ref);
        let y_ref = reference::pointwise_forward(&a_ref, m, cin, &wd, cout);
        let rstd_ref: Vec<f64> = var_ref.iter().map(|v| 1.0 / (v + eps_d).sqrt()).collect();
        let (mut rm_ref, mut rv_ref) = (f64s(&rmv), f64s(&rvv));
        reference::batchnorm_update_running(
            &mut rm_ref,
            &mut rv_ref,
            &mean_ref,
            &var_ref,
            m,
            momentum as f64,
        );
        let kernel = "bn_relu6_pointwise";
        c.compare(kernel, label.clone(), "y", &y, &y_ref)?;
        c.compare(kernel, label.clone(), "mean", &mean, &mean_ref)?;
        c.compare(kernel, label.clone(), "rstd", &rstd, &rstd_ref)?;
        c.compare(kernel, label.clone(), "running_mean", &rm, &rm_ref)?;
        c.compare(kernel, label.clone(), "running_var", &rv, &rv_ref)?;

        let dyv = c.random(m * cout);
        let dy = c.upload(&dyv, &[n, h, w, cout])?;
        let (dx, dgamma, dbeta, dw) = ops::bn_pointwise::bn_relu6_pointwise_backward(
            c.gpu,
            &x,
            &gamma,
            &beta,
            (&mean, &rstd),
            &wt,
            &dy,
        )?;
        let (da_ref, dw_ref) =
            reference::pointwise_backward(&a_ref, m, cin, &wd, cout, &f64s(&dyv));
        let a_dev = device_bn_relu6(c, &x, &gamma, &beta, &rmv, &rvv)?;
        let da_masked = reference::relu6_backward(&a_dev, &da_ref);
        let (dx_ref, dg_ref, db_ref) =
            reference::batchnorm_train_backward(&xd, m, cin, &gd, eps_d, &da_masked);
        let kernel = "bn_relu6_pointwise_backward";
        c.compare(kernel, label.clone(), "dx", &dx, &dx_ref)?;
        c.compare(kernel, label.clone(), "dgamma", &dgamma, &dg_ref)?;
        c.compare(kernel, label.clone(), "dbeta", &dbeta, &db_ref)?;
        c.compare(kernel, label, "dw", &dw, &dw_ref)?;
    }
    Ok(())
}

/// The device's own unfused BN + ReLU6 of x (the same expression as the fused loads), for the
/// ReLU6 mask: an f64 pre-activation within rounding of 0 or 6 would otherwise flip single
/// elements. Uses scratch running statistics.
fn device_bn_relu6(
    c: &mut Checker,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    rmv: &[f32],
    rvv: &[f32],
) -> Result<Vec<f64>> {
    let ch = gamma.numel();
    let scratch = (c.upload(rmv, &[ch])?, c.upload(rvv, &[ch])?);
    let (a, _, _) = ops::batchnorm::batchnorm_act_train_forward(
        c.gpu,
        x,
        gamma,
        beta,
        (&scratch.0, &scratch.1),
        0.1,
        1e-3,
        ops::batchnorm::BnAct::Relu6,
    )?;
    Ok(f64s(&c.gpu.read_f32(&a)?))
}

fn depthwise(c: &mut Checker) -> Result<()> {
    for &(n, h, w, ch, k, s) in SHAPES {
        let numel = n * h * w * ch;
        let m = numel / ch;
        let (momentum, eps) = (0.1f32, 1e-3f32);
        let xv = c.random_in(numel, -2.0, 2.0);
        let [gv, bv, rmv, rvv] = bn_params(c, ch);
        let wv = c.random(ch * k * k);
        let x = c.upload(&xv, &[n, h, w, ch])?;
        let gamma = c.upload(&gv, &[ch])?;
        let beta = c.upload(&bv, &[ch])?;
        let rm = c.upload(&rmv, &[ch])?;
        let rv = c.upload(&rvv, &[ch])?;
        let wt = c.upload(&wv, &[ch, k, k])?;
        let label = format!("x[{n},{h},{w},{ch}] k{k} s{s}");

        let (y, mean, rstd) = ops::bn_depthwise::bn_relu6_depthwise_forward(
            c.gpu,
            &x,
            &gamma,
            &beta,
            (&rm, &rv),
            momentum,
            eps,
            &wt,
            s,
        )?;
        let (xd, gd, bd, wd) = (f64s(&xv), f64s(&gv), f64s(&bv), f64s(&wv));
        let eps_d = eps as f64;
        let (bn_ref, mean_ref, var_ref) =
            reference::batchnorm_train_forward(&xd, m, ch, &gd, &bd, eps_d);
        let a_ref = reference::relu6_forward(&bn_ref);
        let (y_ref, ys) = reference::depthwise_forward(&a_ref, [n, h, w, ch], &wd, k, s);
        let rstd_ref: Vec<f64> = var_ref.iter().map(|v| 1.0 / (v + eps_d).sqrt()).collect();
        let (mut rm_ref, mut rv_ref) = (f64s(&rmv), f64s(&rvv));
        reference::batchnorm_update_running(
            &mut rm_ref,
            &mut rv_ref,
            &mean_ref,
            &var_ref,
            m,
            momentum as f64,
        );
        let kernel = "bn_relu6_depthwise";
        c.compare(kernel, label.clone(), "y", &y, &y_ref)?;
        c.compare(kernel, label.clone(), "mean", &mean, &mean_ref)?;
        c.compare(kernel, label.clone(), "rstd", &rstd, &rstd_ref)?;
        c.compare(kernel, label.clone(), "running_mean", &rm, &rm_ref)?;
        c.compare(kernel, label.clone(), "running_var", &rv, &rv_ref)?;

        let dyv = c.random(ys.iter().product());
        let dy = c.upload(&dyv, &ys)?;
        let (dx, dgamma, dbeta, dw) = ops::bn_depthwise::bn_relu6_depthwise_backward(
            c.gpu,
            &x,
            &gamma,
            &beta,
            (&mean, &rstd),
            &wt,
            s,
            &dy,
        )?;
        let (da_ref, dw_ref) =
            reference::depthwise_backward(&a_ref, [n, h, w, ch], &wd, k, s, &f64s(&dyv));
        let a_dev = device_bn_relu6(c, &x, &gamma, &beta, &rmv, &rvv)?;
        let da_masked = reference::relu6_backward(&a_dev, &da_ref);
        let (dx_ref, dg_ref, db_ref) =
            reference::batchnorm_train_backward(&xd, m, ch, &gd, eps_d, &da_masked);
        let kernel = "bn_relu6_depthwise_backward";
        c.compare(kernel, label.clone(), "dx", &dx, &dx_ref)?;
        c.compare(kernel, label.clone(), "dgamma", &dgamma, &dg_ref)?;
        c.compare(kernel, label.clone(), "dbeta", &dbeta, &db_ref)?;
        c.compare(kernel, label, "dw", &dw, &dw_ref)?;
    }
    Ok(())
}
