//! BN + ReLU6 + depthwise conv as one op (`ops::bn_depthwise`) against the composition of the
//! references: forward (y, batch mean and rstd, running statistics) and backward (dx, dgamma,
//! dbeta, dw).

use anyhow::Result;

use super::{f64s, Checker};
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

pub fn run(c: &mut Checker) -> Result<()> {
    for &(n, h, w, ch, k, s) in SHAPES {
        let numel = n * h * w * ch;
        let m = numel / ch;
        let (momentum, eps) = (0.1f32, 1e-3f32);
        let xv = c.random_in(numel, -2.0, 2.0);
        // Scales up to 8 push some pre-activations past 6, so both clamps are exercised.
        let gv = c.random_in(ch, 0.5, 8.0);
        let bv = c.random(ch);
        let rmv = c.random(ch);
        let rvv = c.random_in(ch, 0.5, 1.5);
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
        // The ReLU6 mask from the device's own BN + ReLU6 output (the same expression as the
        // fused load): an f64 pre-activation within rounding of 0 or 6 would otherwise flip
        // single elements.
        let scratch = (c.upload(&rmv, &[ch])?, c.upload(&rvv, &[ch])?);
        let (a_dev, _, _) = ops::batchnorm::batchnorm_act_train_forward(
            c.gpu,
            &x,
            &gamma,
            &beta,
            (&scratch.0, &scratch.1),
            momentum,
            eps,
            ops::batchnorm::BnAct::Relu6,
        )?;
        let da_masked = reference::relu6_backward(&f64s(&c.gpu.read_f32(&a_dev)?), &da_ref);
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
