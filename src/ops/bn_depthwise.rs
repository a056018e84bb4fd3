//! Batch norm (training, batch statistics) + ReLU6 + depthwise conv as one op: the MBConv's
//! expand BN and its depthwise conv. The normalised activation is never stored. The forward
//! computes the batch statistics, then the depthwise kernel applies the normalisation and the
//! clamp as it loads its input (`depthwise::BnRelu6Input`). The backward recomputes that
//! input inside the weight-gradient kernel, and the BN backward recomputes its ReLU6 mask from
//! x as it already does. One texture copy of x serves the statistics and the conv in the
//! forward, and the weight gradient and the BN backward in the backward.
//!
//! Against BN+ReLU6 then depthwise as two ops, this saves a pass that reads x and writes the
//! normalised tensor, and two texture copies: the store of a float costs several times its
//! load on lavapipe (benches/NOTES.md).

use anyhow::Result;

use super::batchnorm::{self, BnAct};
use super::depthwise::{self, BnRelu6Input};
use crate::gpu::{Gpu, GpuTexture, Tensor};

/// A texture copy of x when both the BN kernels and the depthwise kernels read one.
fn shared_texture(gpu: &Gpu, x: &Tensor, w: &Tensor, stride: usize) -> Result<Option<GpuTexture>> {
    if batchnorm::reads_textures(gpu, x) && depthwise::reads_input_texture(gpu, x, w, stride)? {
        Ok(Some(gpu.to_texture(&x.buf, x.numel())?))
    } else {
        Ok(None)
    }
}

/// y = depthwise(relu6(batchnorm(x)), w, stride) with batch statistics; updates the running
/// statistics like `batchnorm_act_train_forward`. Returns `(y, mean, rstd)`.
#[allow(clippy::too_many_arguments)]
pub fn bn_relu6_depthwise_forward(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running: (&Tensor, &Tensor),
    momentum: f32,
    eps: f32,
    w: &Tensor,
    stride: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    let tex = shared_texture(gpu, x, w, stride)?;
    let (mean, rstd) =
        batchnorm::batchnorm_train_stats(gpu, x, tex.as_ref(), running, momentum, eps)?;
    let pre = BnRelu6Input {
        gamma,
        beta,
        mean: &mean,
        rstd: &rstd,
    };
    let y = depthwise::depthwise_forward_with(gpu, x, tex.as_ref(), w, stride, Some(pre))?;
    Ok((y, mean, rstd))
}

/// Gradients of `bn_relu6_depthwise_forward` for the upstream gradient dy: returns
/// `(dx, dgamma, dbeta, dw)`.
#[allow(clippy::too_many_arguments)]
pub fn bn_relu6_depthwise_backward(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    (mean, rstd): (&Tensor, &Tensor),
    w: &Tensor,
    stride: usize,
    dy: &Tensor,
) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
    let tex = shared_texture(gpu, x, w, stride)?;
    let pre = BnRelu6Input {
        gamma,
        beta,
        mean,
        rstd,
    };
    let (da, dw) =
        depthwise::depthwise_backward_with(gpu, x, tex.as_ref(), w, stride, dy, Some(pre))?;
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
