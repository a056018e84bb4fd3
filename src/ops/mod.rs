//! Layer 2: typed launchers of the WGSL kernels in `shaders/`. Every launcher checks shapes
//! before it dispatches and returns an error naming the op and the shapes that do not fit.
//! Tensors are NHWC f32; conv weights keep PyTorch's OIHW order.

pub mod batchnorm;
pub mod bn_relu6_conv;
pub mod conv;
pub mod depthwise;
pub mod dropout;
pub mod elementwise;
pub mod gemm;
pub mod linear;
pub mod loss;
pub mod optim;
pub mod pointwise;
pub mod pool;
pub mod reduce;

use anyhow::{bail, Result};

use crate::gpu::Tensor;

/// Errors unless `cond`; the message names the op.
pub(crate) fn ensure(cond: bool, op: &str, what: impl FnOnce() -> String) -> Result<()> {
    if !cond {
        bail!("{op}: {}", what());
    }
    Ok(())
}

/// Checks a tensor's rank and that no dimension is zero.
pub(crate) fn expect_rank(t: &Tensor, rank: usize, op: &str, name: &str) -> Result<()> {
    ensure(t.shape.len() == rank, op, || {
        format!("{name} must have {rank} dims, got shape {:?}", t.shape)
    })?;
    ensure(t.shape.iter().all(|&d| d > 0), op, || {
        format!("{name} has a zero-sized dimension: {:?}", t.shape)
    })
}

/// Checks that `t` has exactly `shape`.
pub(crate) fn expect_shape(t: &Tensor, shape: &[usize], op: &str, name: &str) -> Result<()> {
    ensure(t.shape == shape, op, || {
        format!("{name} has shape {:?}, expected {shape:?}", t.shape)
    })
}

/// Words of a u32 count for the uniform block, or an error if it does not fit 32 bits.
pub(crate) fn u32_of(v: usize, op: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| anyhow::anyhow!("{op}: size {v} does not fit in 32 bits"))
}

/// Errors when a tensor is larger than one storage binding of this adapter (lavapipe: 128 MiB).
pub(crate) fn expect_bindable(
    gpu: &crate::gpu::Gpu,
    t: &Tensor,
    op: &str,
    name: &str,
) -> Result<()> {
    let max = gpu.max_binding_bytes();
    ensure(t.bytes() <= max, op, || {
        format!(
            "{name} of shape {:?} is {} MiB, over this adapter's storage-binding limit of {} MiB \
             (split the batch)",
            t.shape,
            t.bytes() >> 20,
            max >> 20
        )
    })
}
