//! Batch normalisation against the reference: training forward (y, batch mean and rstd, the
//! running statistics after the update), evaluation forward, and the training backward
//! (dx, dgamma, dbeta); and the same three with ReLU6 fused after the normalisation.

use anyhow::Result;

use super::{f64s, Checker};
use crate::gpu::{with_lane_order, LaneOrder};
use crate::{ops, reference};

/// x shape, input range, momentum, eps.
type Case = (&'static [usize], (f32, f32), f32, f32);

/// m = 1 and 2, one channel, odd m, channel counts off the 64-lane block, rows off the chunk
/// size, the benchmark's [32, 16, 16, 240] (m = 8192), wide channel counts of the real network,
/// inputs with a mean far from zero (the variance's cancellation test), the defaults
/// (momentum 0.1, eps 1e-3) and another setting.
///
/// With m = 2 the centred dy lies along xhat and dx is only eps / (var + eps) of the terms the
/// formula subtracts, so its f32 error grows like 1e-7 * var / eps (PyTorch's kernels alike);
/// with only rstd (not eps) reaching the backward no ordering of the arithmetic avoids it. The
/// m = 2 cases therefore keep var near eps (inputs within +-0.05, eps 1e-3). The m = 7 case's
/// single channel takes inputs in (0.5, 2.5): its batch mean is one scalar, whose relative
/// error near zero measures the conditioning, not the kernel (with inputs in (-1, 1) about one
/// seed in a hundred failed on the mean).
const SHAPES: &[Case] = &[
    (&[1, 1], (-1.0, 1.0), 0.1, 1e-3),
    (&[1, 1, 1, 16], (-1.0, 1.0), 0.3, 1e-5),
    (&[2, 3], (-0.05, 0.05), 0.1, 1e-3),
    (&[2, 1, 1, 24], (-0.05, 0.05), 0.3, 1e-3),
    (&[7, 1], (0.5, 2.5), 0.1, 1e-3),
    (&[3, 5, 5, 17], (-1.0, 1.0), 0.3, 1e-5),
    (&[2, 3, 3, 100], (-1.0, 1.0), 0.1, 1e-3),
    (&[3, 7, 13, 40], (-1.0, 1.0), 0.3, 1e-5),
    (&[4, 8, 8, 32], (-1.0, 1.0), 0.1, 1e-3),
    (&[25, 20, 40, 8], (-1.0, 1.0), 0.3, 1e-5),
    (&[32, 16, 16, 240], (-1.0, 1.0), 0.1, 1e-3),
    (&[8, 4, 4, 144], (0.5, 2.5), 0.3, 1e-5),
    (&[16, 8, 8, 24], (100.0, 102.0), 0.1, 1e-3),
    (&[32, 16, 16, 240], (0.5, 2.5), 0.1, 1e-3),
    (&[2, 2, 2, 1280], (-1.0, 1.0), 0.1, 1e-3),
    (&[1, 4, 4, 1152], (-1.0, 1.0), 0.3, 1e-5),
    (&[5, 1280], (-1.0, 1.0), 0.1, 1e-3),
];

/// Every case in both lane orders (the device picks one; the other must be right too).
pub fn run(c: &mut Checker) -> Result<()> {
    for order in [LaneOrder::Coalesced, LaneOrder::Spread] {
        with_lane_order(order, || cases(c, order))?;
    }
    Ok(())
}

fn cases(c: &mut Checker, order: LaneOrder) -> Result<()> {
    for &(shape, (lo, hi), momentum, eps) in SHAPES {
        let ch = shape[shape.len() - 1];
        let numel: usize = shape.iter().product();
        let m = numel / ch;
        let xv = c.random_in(numel, lo, hi);
        let gv = c.random_in(ch, 0.5, 1.5);
        // A single output is one scalar gamma * xhat + beta: with beta in (-1, 1) it can land
        // near zero, where its relative error measures the cancellation, not the kernel (the
        // eval forward of x[1, 1] failed at 1.4e-4 for seed 17325459813517208131, on the
        // kernels of this and earlier builds alike). Beta in (5, 6) keeps it away from zero:
        // |gamma * xhat| stays under 4.3 for these ranges.
        let bv = if numel == 1 {
            c.random_in(ch, 5.0, 6.0)
        } else {
            c.random(ch)
        };
        let rmv = c.random(ch);
        let rvv = c.random_in(ch, 0.5, 1.5);
        // With one channel, dgamma = sum of dy * xhat is one scalar, and xhat has mean zero:
        // with dy independent of x the sum lands near zero now and then, where its relative
        // error measures the cancellation (x[7, 1] failed at 1.2e-4 and 2.1e-4 for seeds
        // 7936869820957870290 and 7069770619993216679, on this and earlier builds alike). dy
        // correlated with x keeps it well away from zero.
        let noise = c.random(numel);
        let dyv: Vec<f32> = if ch == 1 {
            xv.iter().zip(&noise).map(|(x, r)| x + 0.25 * r).collect()
        } else {
            noise
        };
        let x = c.upload(&xv, shape)?;
        let gamma = c.upload(&gv, &[ch])?;
        let beta = c.upload(&bv, &[ch])?;
        let rm = c.upload(&rmv, &[ch])?;
        let rv = c.upload(&rvv, &[ch])?;
        let dy = c.upload(&dyv, shape)?;
        let label = format!("x{shape:?} in ({lo}, {hi}) momentum {momentum} eps {eps} {order:?}");

        let (y, mean, rstd) = ops::batchnorm::batchnorm_train_forward(
            c.gpu, &x, &gamma, &beta, &rm, &rv, momentum, eps,
        )?;
        let (xd, gd, bd) = (f64s(&xv), f64s(&gv), f64s(&bv));
        let eps_d = eps as f64;
        let (y_ref, mean_ref, var_ref) =
            reference::batchnorm_train_forward(&xd, m, ch, &gd, &bd, eps_d);
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
        c.compare("batchnorm_train", label.clone(), "y", &y, &y_ref)?;
        c.compare("batchnorm_train", label.clone(), "mean", &mean, &mean_ref)?;
        c.compare("batchnorm_train", label.clone(), "rstd", &rstd, &rstd_ref)?;
        c.compare(
            "batchnorm_train",
            label.clone(),
            "running_mean",
            &rm,
            &rm_ref,
        )?;
        c.compare(
            "batchnorm_train",
            label.clone(),
            "running_var",
            &rv,
            &rv_ref,
        )?;

        // Evaluation with the updated running statistics (as read back from the device).
        let rm_now = f64s(&c.gpu.read_f32(&rm)?);
        let rv_now = f64s(&c.gpu.read_f32(&rv)?);
        let ye = ops::batchnorm::batchnorm_eval_forward(c.gpu, &x, &gamma, &beta, &rm, &rv, eps)?;
        let ye_ref =
            reference::batchnorm_eval_forward(&xd, m, ch, &gd, &bd, &rm_now, &rv_now, eps_d);
        c.compare("batchnorm_eval", label.clone(), "y", &ye, &ye_ref)?;

        let (dx, dgamma, dbeta) =
            ops::batchnorm::batchnorm_train_backward(c.gpu, &x, &gamma, &mean, &rstd, &dy)?;
        let (dx_ref, dg_ref, db_ref) =
            reference::batchnorm_train_backward(&xd, m, ch, &gd, eps_d, &f64s(&dyv));
        c.compare("batchnorm_backward", label.clone(), "dx", &dx, &dx_ref)?;
        c.compare(
            "batchnorm_backward",
            label.clone(),
            "dgamma",
            &dgamma,
            &dg_ref,
        )?;
        c.compare(
            "batchnorm_backward",
            label.clone(),
            "dbeta",
            &dbeta,
            &db_ref,
        )?;

        // BN + ReLU6 fused: the forward is relu6 of the reference, the backward the reference
        // backward of the masked dy. The mask comes from the device's own fused output (0 < y
        // < 6 exactly where the pre-activation is): an f64 pre-activation within rounding of
        // 0 or 6 would otherwise flip single elements.
        let relu6 = ops::batchnorm::BnAct::Relu6;
        let ye6 = ops::batchnorm::batchnorm_act_eval_forward(
            c.gpu,
            &x,
            &gamma,
            &beta,
            (&rm, &rv),
            eps,
            relu6,
        )?;
        let ye6_ref = reference::relu6_forward(&ye_ref);
        c.compare("batchnorm_relu6_eval", label.clone(), "y", &ye6, &ye6_ref)?;
        let (y6, mean6, rstd6) = ops::batchnorm::batchnorm_act_train_forward(
            c.gpu,
            &x,
            &gamma,
            &beta,
            (&rm, &rv),
            momentum,
            eps,
            relu6,
        )?;
        let y6_ref = reference::relu6_forward(&y_ref);
        c.compare("batchnorm_relu6_train", label.clone(), "y", &y6, &y6_ref)?;
        let (dx6, dg6, db6) = ops::batchnorm::batchnorm_act_train_backward(
            c.gpu,
            &x,
            &gamma,
            &beta,
            (&mean6, &rstd6),
            &dy,
            relu6,
        )?;
        let y6_dev = f64s(&c.gpu.read_f32(&y6)?);
        let dy_masked = reference::relu6_backward(&y6_dev, &f64s(&dyv));
        let (dx6_ref, dg6_ref, db6_ref) =
            reference::batchnorm_train_backward(&xd, m, ch, &gd, eps_d, &dy_masked);
        let fused = "batchnorm_relu6_backward";
        c.compare(fused, label.clone(), "dx", &dx6, &dx6_ref)?;
        c.compare(fused, label.clone(), "dgamma", &dg6, &dg6_ref)?;
        c.compare(fused, label.clone(), "dbeta", &db6, &db6_ref)?;

        // With a residual branch added in the same pass (both activations): y + skip.
        for act in [ops::batchnorm::BnAct::Identity, relu6] {
            let skipv = c.random(numel);
            let skip = c.upload(&skipv, shape)?;
            let (ya, _, _) = ops::batchnorm::batchnorm_act_train_forward_add(
                c.gpu,
                &x,
                &gamma,
                &beta,
                (&rm, &rv),
                momentum,
                eps,
                act,
                &skip,
            )?;
            let ya_ref: Vec<f64> = match act {
                ops::batchnorm::BnAct::Identity => y_ref.clone(),
                ops::batchnorm::BnAct::Relu6 => y6_ref.clone(),
            }
            .iter()
            .zip(&skipv)
            .map(|(y, s)| y + f64::from(*s))
            .collect();
            let kernel = format!("batchnorm_add {act:?}");
            c.compare(&kernel, label.clone(), "y", &ya, &ya_ref)?;
        }
    }
    Ok(())
}
