//! Inverted dropout (`shaders/dropout.wgsl`) with a mask regenerated from `(seed, element
//! index)` by the integer hash of `reference::dropout_hash`; no mask is stored, so the
//! backward needs only the forward's `p` and `seed`.

use anyhow::Result;

use super::elementwise::{dispatch_units, same_shapes};
use super::{ensure, u32_of};
use crate::gpu::{Access, Gpu, KernelSpec, Tensor};

const DROPOUT: KernelSpec = KernelSpec {
    file: "dropout",
    source: include_str!("../../shaders/dropout.wgsl"),
    entry: "dropout",
    bindings: &[Access::Read, Access::ReadWrite],
};

/// x * keep(seed, i) / (1 - p) for every element i of `x`.
fn apply(gpu: &Gpu, op: &str, x: &Tensor, p: f32, seed: u32) -> Result<Tensor> {
    same_shapes(op, &[("input", x)])?;
    ensure((0.0..1.0).contains(&p), op, || {
        format!("drop probability {p} is not in [0, 1)")
    })?;
    u32_of(x.numel(), op)?;
    let scale = (1.0 / (1.0 - f64::from(p))) as f32;
    let y = gpu.empty(&x.shape);
    dispatch_units(
        gpu,
        &DROPOUT,
        op,
        x.numel(),
        &[seed, p.to_bits(), scale.to_bits()],
        &[&x.buf, &y.buf],
    )?;
    Ok(y)
}

/// y = x * mask / (1 - p), element i kept when `reference::dropout_keep(seed, i, p)`.
pub fn dropout_forward(gpu: &Gpu, x: &Tensor, p: f32, seed: u32) -> Result<Tensor> {
    apply(gpu, "dropout_forward", x, p, seed)
}

/// dx = dy * mask / (1 - p) with the forward's mask (same `p` and `seed`).
pub fn dropout_backward(gpu: &Gpu, dy: &Tensor, p: f32, seed: u32) -> Result<Tensor> {
    apply(gpu, "dropout_backward", dy, p, seed)
}
