//! The fused training op BN + ReLU6 + conv (`ops::bn_relu6_conv`), with a depthwise and with a
//! pointwise conv, against the composition of the references: forward (y, batch mean and
//! rstd, running statistics) and backward (dx, dgamma, dbeta, dw).

use anyhow::{bail, Context, Result};

use super::{f64s, with_each_subgroup_setting, Checker};
use crate::ops::bn_relu6_conv::NextConv;
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
    // Two output rows an invocation (so the output statistics fold rows together), and a
    // last column strip of 3.
    (2, 16, 15, 144, 5, 1),
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
    // Weight gradients long enough in k for the 8 x ~16 tile (n = cin = 40: 16 columns a
    // group and a group past n; 24: two groups of 12).
    (2, 17, 16, 40, 24),
    (1, 16, 33, 24, 72),
    // A weight gradient with 64 lanes along m (m = 288), so its B loads are shared.
    (2, 8, 8, 40, 288),
    (3, 3, 3, 8, 8),
];

pub fn run(c: &mut Checker) -> Result<()> {
    for &(n, h, w, ch, k, s) in SHAPES {
        let conv = ConvRef {
            conv: NextConv::Depthwise { stride: s },
            name: "bn_relu6_depthwise",
            w_shape: vec![ch, k, k],
            forward: &move |a, wd| reference::depthwise_forward(a, [n, h, w, ch], wd, k, s).0,
            backward: &move |a, wd, dy| {
                reference::depthwise_backward(a, [n, h, w, ch], wd, k, s, dy)
            },
        };
        check(
            c,
            [n, h, w, ch],
            &conv,
            format!("x[{n},{h},{w},{ch}] k{k} s{s}"),
        )?;
    }
    // The pointwise cases with and without B loads shared through subgroups.
    with_each_subgroup_setting(c, pointwise_cases)
}

fn pointwise_cases(c: &mut Checker, suffix: &str) -> Result<()> {
    for &(n, h, w, cin, cout) in POINTWISE_SHAPES {
        let m = n * h * w;
        let conv = ConvRef {
            conv: NextConv::Pointwise,
            name: "bn_relu6_pointwise",
            w_shape: vec![cout, cin],
            forward: &move |a, wd| reference::pointwise_forward(a, m, cin, wd, cout),
            backward: &move |a, wd, dy| reference::pointwise_backward(a, m, cin, wd, cout, dy),
        };
        check(
            c,
            [n, h, w, cin],
            &conv,
            format!("x[{n},{h},{w},{cin}] -> {cout}{suffix}"),
        )?;
    }
    Ok(())
}

/// The chained form's output statistics (`bn_relu6_conv_forward_chained` with `y_stats`, the
/// depthwise kernel's per-invocation partials) as the next BN combines them
/// (`batchnorm_train_stats_from`, and the chained op given them as `x_stats`): mean, rstd and
/// running statistics against the reference's batch statistics of y.
fn output_stats(
    c: &mut Checker,
    x: &crate::gpu::Tensor,
    (gamma, beta): (&crate::gpu::Tensor, &crate::gpu::Tensor),
    wt: &crate::gpu::Tensor,
    r: &ConvRef,
    y_ref: &[f64],
    label: &str,
) -> Result<()> {
    let (momentum, eps) = (0.1f32, 1e-3f32);
    let ch = *wt.shape.first().context("depthwise weights [c, k, k]")?;
    let m = y_ref.len() / ch;
    let running = |c: &mut Checker| -> Result<_> {
        let (rmv, rvv) = (c.random(ch), c.random_in(ch, 0.5, 1.5));
        let t = (c.upload(&rmv, &[ch])?, c.upload(&rvv, &[ch])?);
        Ok((t, f64s(&rmv), f64s(&rvv)))
    };
    let ((rm, rv), _, _) = running(c)?;
    let params = (gamma, beta, (&rm, &rv), momentum, eps);
    let (_, _, _, stats) = ops::bn_relu6_conv::bn_relu6_conv_forward_chained(
        c.gpu, x, None, params, wt, r.conv, true,
    )?;
    let stats = stats.context("the depthwise op computed no output statistics")?;
    let ones = vec![1.0; ch];
    let (_, mean_ref, var_ref) =
        reference::batchnorm_train_forward(y_ref, m, ch, &ones, &vec![0.0; ch], f64::from(eps));
    let rstd_ref: Vec<f64> = var_ref
        .iter()
        .map(|v| 1.0 / (v + f64::from(eps)).sqrt())
        .collect();
    let ((rm, rv), mut rm_ref, mut rv_ref) = running(c)?;
    let (mean, rstd) =
        ops::batchnorm::batchnorm_train_stats_from(c.gpu, &stats, (&rm, &rv), momentum, eps)?;
    reference::batchnorm_update_running(
        &mut rm_ref,
        &mut rv_ref,
        &mean_ref,
        &var_ref,
        m,
        f64::from(momentum),
    );
    let kernel = format!("{}_output_stats", r.name);
    c.compare(&kernel, label.to_string(), "mean", &mean, &mean_ref)?;
    c.compare(&kernel, label.to_string(), "rstd", &rstd, &rstd_ref)?;
    c.compare(&kernel, label.to_string(), "running_mean", &rm, &rm_ref)?;
    c.compare(&kernel, label.to_string(), "running_var", &rv, &rv_ref)?;
    // The same statistics through the next op of a chain (here a second depthwise op on y).
    let y = c.upload(
        &y_ref.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        &stats_shape(x, y_ref, ch),
    )?;
    let ((rm, rv), _, _) = running(c)?;
    let params = (gamma, beta, (&rm, &rv), momentum, eps);
    let (_, mean, _, _) = ops::bn_relu6_conv::bn_relu6_conv_forward_chained(
        c.gpu,
        &y,
        Some(&stats),
        params,
        wt,
        NextConv::Depthwise { stride: 1 },
        false,
    )?;
    c.compare(
        &kernel,
        label.to_string(),
        "mean (chained)",
        &mean,
        &mean_ref,
    )
}

/// An NHWC shape for y: x's batch, y's pixels in one row.
fn stats_shape(x: &crate::gpu::Tensor, y_ref: &[f64], ch: usize) -> Vec<usize> {
    let n = x.shape[0];
    let pixels = y_ref.len() / ch / n;
    vec![n, 1, pixels, ch]
}

/// The conv of a case and its f64 reference, as functions of its input a = relu6(bn(x)) and
/// its weights w: forward(a, w) = y, backward(a, w, dy) = (da, dw).
struct ConvRef<'a> {
    conv: NextConv,
    name: &'static str,
    w_shape: Vec<usize>,
    forward: &'a RefForward,
    backward: &'a RefBackward,
}

type RefForward = dyn Fn(&[f64], &[f64]) -> Vec<f64>;
type RefBackward = dyn Fn(&[f64], &[f64], &[f64]) -> (Vec<f64>, Vec<f64>);

/// Runs the fused op forward and backward on fresh random inputs for x of shape `xs` and
/// records every output's error against the reference composition.
fn check(c: &mut Checker, xs: [usize; 4], r: &ConvRef, label: String) -> Result<()> {
    let ch = xs[3];
    let numel: usize = xs.iter().product();
    let m = numel / ch;
    let (momentum, eps) = (0.1f32, 1e-3f32);
    let xv = c.random_in(numel, -2.0, 2.0);
    // Scales up to 8 push some pre-activations past 6, so both clamps of the ReLU6 are
    // exercised.
    let gv = c.random_in(ch, 0.5, 8.0);
    let bv = c.random(ch);
    let rmv = c.random(ch);
    let rvv = c.random_in(ch, 0.5, 1.5);
    let wv = c.random(r.w_shape.iter().product());
    let x = c.upload(&xv, &xs)?;
    let gamma = c.upload(&gv, &[ch])?;
    let beta = c.upload(&bv, &[ch])?;
    let rm = c.upload(&rmv, &[ch])?;
    let rv = c.upload(&rvv, &[ch])?;
    let wt = c.upload(&wv, &r.w_shape)?;
    let fusable = ops::bn_relu6_conv::fusable(c.gpu, &x, &wt, r.conv)?;
    if r.conv == NextConv::Pointwise && !m.is_multiple_of(4) {
        anyhow::ensure!(!fusable, "{} claims to fuse {label}", r.name);
        return Ok(());
    }
    anyhow::ensure!(fusable, "{} does not fuse {label}", r.name);

    let (y, mean, rstd) = ops::bn_relu6_conv::bn_relu6_conv_forward(
        c.gpu,
        &x,
        &gamma,
        &beta,
        (&rm, &rv),
        momentum,
        eps,
        &wt,
        r.conv,
    )?;
    let (xd, gd, bd, wd) = (f64s(&xv), f64s(&gv), f64s(&bv), f64s(&wv));
    let eps_d = eps as f64;
    let (bn_ref, mean_ref, var_ref) =
        reference::batchnorm_train_forward(&xd, m, ch, &gd, &bd, eps_d);
    let a_ref = reference::relu6_forward(&bn_ref);
    let y_ref = (r.forward)(&a_ref, &wd);
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
    c.compare(r.name, label.clone(), "y", &y, &y_ref)?;
    c.compare(r.name, label.clone(), "mean", &mean, &mean_ref)?;
    c.compare(r.name, label.clone(), "rstd", &rstd, &rstd_ref)?;
    c.compare(r.name, label.clone(), "running_mean", &rm, &rm_ref)?;
    c.compare(r.name, label.clone(), "running_var", &rv, &rv_ref)?;
    if let NextConv::Depthwise { .. } = r.conv {
        output_stats(c, &x, (&gamma, &beta), &wt, r, &y_ref, &label)?;
    }

    let dyv = c.random(y_ref.len());
    let dy = c.upload(&dyv, &y.shape)?;
    let backward = |weight_grad: bool| {
        ops::bn_relu6_conv::bn_relu6_conv_backward(
            c.gpu,
            &x,
            &gamma,
            &beta,
            (&mean, &rstd),
            &wt,
            r.conv,
            &dy,
            weight_grad,
        )
    };
    let (dx, dgamma, dbeta, dw) = backward(true)?;
    let dw = dw.context("bn_relu6_conv_backward: no weight gradient asked for")?;
    // Frozen weights: the same input gradient, no weight gradient.
    let (dx_frozen, _, _, dw_frozen) = backward(false)?;
    if dw_frozen.is_some() || c.gpu.read_f32(&dx_frozen)? != c.gpu.read_f32(&dx)? {
        bail!(
            "{} backward {label}: without the weight gradient, dx differs or dw was computed",
            r.name
        );
    }
    let (da_ref, dw_ref) = (r.backward)(&a_ref, &wd, &f64s(&dyv));
    // The ReLU6 mask from the device's own unfused BN + ReLU6 (the expression of the fused
    // loads): an f64 pre-activation within rounding of 0 or 6 would otherwise flip single
    // elements. Scratch running statistics.
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
    let kernel = format!("{}_backward", r.name);
    c.compare(&kernel, label.clone(), "dx", &dx, &dx_ref)?;
    c.compare(&kernel, label.clone(), "dgamma", &dgamma, &dg_ref)?;
    c.compare(&kernel, label.clone(), "dbeta", &dbeta, &db_ref)?;
    c.compare(&kernel, label, "dw", &dw, &dw_ref)
}
