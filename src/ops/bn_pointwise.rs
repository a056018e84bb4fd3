//! Batch norm (training, batch statistics) + ReLU6 + pointwise conv as one op: the MBConv's
//! depthwise BN and its 1x1 projection. Like `bn_depthwise`, the normalised activation is
//! never stored: the forward product applies the normalisation and the clamp as it loads x
//! (`gemm::GemmPre` on A), the weight gradient recomputes them the same way (on B), and the BN
//! backward recomputes its ReLU6 mask from x. One texture copy of x serves the statistics and
//! the product in the forward, and the weight gradient and the BN backward in the backward.
//! Where the products cannot take the transform (channel counts off the vec4 kernel's), the
//! ops run separately.

use anyhow::Result;

use super::batchnorm::{self, BnAct};
use super::pointwise;
use crate::gpu::{Gpu, GpuTexture, Tensor};

/// Whether the fused op applies to x and w (else run BN+ReLU6 and the conv separately).
pub fn fusable(gpu: &Gpu, x: &Tensor, w: &Tensor) -> Result<bool> {
    Ok(pointwise::input_transform_support(gpu, x, w)?.0)
}

/// A texture copy of x when both the BN kernels and the products read one.
fn shared_texture(gpu: &Gpu, x: &Tensor, w: &Tensor) -> Result<Option<GpuTexture>> {
    let (_, products_read_textures) = pointwise::input_transform_support(gpu, x, w)?;
    if batchnorm::reads_textures(gpu, x) && products_read_textures {
        Ok(Some(gpu.to_texture(&x.buf, x.numel())?))
    } else {
        Ok(None)
    }
}

/// The texture of [gamma | beta | mean | rstd] that the products' loaders read.
fn packed(gpu: &Gpu, ts: [&Tensor; 4]) -> Result<GpuTexture> {
    let p = gpu.concat(&ts);
    gpu.to_texture(&p.buf, p.numel())
}

/// y = pointwise(relu6(batchnorm(x)), w) with batch statistics; updates the running
/// statistics like `batchnorm_act_train_forward`. Returns `(y, mean, rstd)`. Errors where
/// `fusable` is false.
#[allow(clippy::too_many_arguments)]
pub fn bn_relu6_pointwise_forward(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running: (&Tensor, &Tensor),
    momentum: f32,
    eps: f32,
    w: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let tex = shared_texture(gpu, x, w)?;
    let (mean, rstd) =
        batchnorm::batchnorm_train_stats(gpu, x, tex.as_ref(), running, momentum, eps)?;
    let pre = packed(gpu, [gamma, beta, &mean, &rstd])?;
    let y = pointwise::pointwise_forward_with(gpu, x, tex.as_ref(), w, Some(&pre))?;
    Ok((y, mean, rstd))
}

/// Gradients of `bn_relu6_pointwise_forward` for the upstream gradient dy: returns
/// `(dx, dgamma, dbeta, dw)`.
#[allow(clippy::too_many_arguments)]
pub fn bn_relu6_pointwise_backward(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    (mean, rstd): (&Tensor, &Tensor),
    w: &Tensor,
    dy: &Tensor,
) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
    let tex = shared_texture(gpu, x, w)?;
    let pre = packed(gpu, [gamma, beta, mean, rstd])?;
    let (da, dw) = pointwise::pointwise_backward_with(gpu, x, tex.as_ref(), w, dy, Some(&pre))?;
    let (dx, dgamma, dbeta) = batchnorm::batchnorm_act_train_backward_with(
        gpu,
        x,
        tex.as_ref(),
        gamma,
        beta,
        (mean, rstd),
        &da,
        BnAct::Relu6,
    )?;
    Ok((dx, dgamma, dbeta, dw))
}
