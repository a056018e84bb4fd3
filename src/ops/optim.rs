//! Optimizer steps (`shaders/optim.wgsl`), in place on device tensors: SGD with momentum
//! (optionally Nesterov) and Adam, both with L2 weight decay folded into the gradient.

use anyhow::Result;

use super::elementwise::{dispatch_units, distinct, same_shapes};
use super::ensure;
use crate::gpu::{Access, Gpu, KernelSpec, Tensor};

const SOURCE: &str = include_str!("../../shaders/optim.wgsl");
const SGD: KernelSpec = KernelSpec {
    file: "optim",
    source: SOURCE,
    entry: "sgd_step",
    bindings: &[Access::ReadWrite, Access::Read, Access::ReadWrite],
};
const ADAM: KernelSpec = KernelSpec {
    file: "optim",
    source: SOURCE,
    entry: "adam_step",
    bindings: &[
        Access::ReadWrite,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
    ],
};

fn finite(op: &str, values: &[(&str, f32)]) -> Result<()> {
    for &(name, v) in values {
        ensure(v.is_finite(), op, || format!("{name} = {v} is not finite"))?;
    }
    Ok(())
}

/// One SGD step on `w` given its gradient `g`, updating `momentum_buf` (zeros before the first
/// step): d = g + wd w, buf = momentum buf + d, w -= lr (d + momentum buf if `nesterov`, else
/// buf).
// The arguments are the optimizer's hyperparameters, one to one with the reference.
#[allow(clippy::too_many_arguments)]
pub fn sgd_step(
    gpu: &Gpu,
    w: &Tensor,
    g: &Tensor,
    momentum_buf: &Tensor,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    nesterov: bool,
) -> Result<()> {
    let op = "sgd_step";
    let tensors = [("w", w), ("g", g), ("momentum_buf", momentum_buf)];
    same_shapes(op, &tensors)?;
    distinct(op, &tensors)?;
    finite(
        op,
        &[
            ("lr", lr),
            ("momentum", momentum),
            ("weight_decay", weight_decay),
        ],
    )?;
    let extra = [
        lr.to_bits(),
        momentum.to_bits(),
        weight_decay.to_bits(),
        nesterov as u32,
    ];
    dispatch_units(
        gpu,
        &SGD,
        op,
        w.numel(),
        &extra,
        &[&w.buf, &g.buf, &momentum_buf.buf],
    )
}

/// One Adam step (`t` is the 1-based step count) on `w` given `g`, updating the moments `m`
/// and `v` (zeros before the first step); the bias corrections 1 - beta^t are computed here
/// in f64.
// The arguments are the optimizer's hyperparameters, one to one with the reference.
#[allow(clippy::too_many_arguments)]
pub fn adam_step(
    gpu: &Gpu,
    w: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    t: u32,
) -> Result<()> {
    let op = "adam_step";
    let tensors = [("w", w), ("g", g), ("m", m), ("v", v)];
    same_shapes(op, &tensors)?;
    distinct(op, &tensors)?;
    finite(
        op,
        &[("lr", lr), ("eps", eps), ("weight_decay", weight_decay)],
    )?;
    ensure(t >= 1, op, || format!("step count t starts at 1, got {t}"))?;
    for (name, b) in [("beta1", beta1), ("beta2", beta2)] {
        ensure((0.0..1.0).contains(&b), op, || {
            format!("{name} = {b} is not in [0, 1)")
        })?;
    }
    let correction = |b: f32| (1.0 - f64::from(b).powf(f64::from(t))) as f32;
    let (c1, c2) = (correction(beta1), correction(beta2));
    // 1 - beta^t can round to 0 in f32 only for beta within ~1e-38 of 1: never in practice,
    // but a zero would make every weight NaN.
    ensure(c1 > 0.0 && c2 > 0.0, op, || {
        format!("bias corrections 1 - beta^t ({c1}, {c2}) underflow f32")
    })?;
    let extra = [
        lr.to_bits(),
        beta1.to_bits(),
        beta2.to_bits(),
        eps.to_bits(),
        weight_decay.to_bits(),
        c1.to_bits(),
        c2.to_bits(),
    ];
    dispatch_units(
        gpu,
        &ADAM,
        op,
        w.numel(),
        &extra,
        &[&w.buf, &g.buf, &m.buf, &v.buf],
    )
}
