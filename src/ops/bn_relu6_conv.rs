//! Batch norm (training, batch statistics) + ReLU6 + the conv that reads its output, as one op:
//! an MBConv's expand BN with its depthwise conv, and its depthwise BN with the 1x1
//! projection. The normalised activation is never stored. The forward computes the batch
//! statistics, then the conv applies the normalisation and the clamp as it loads its input
//! (`depthwise::BnRelu6Input`; `gemm::GemmPre` on A for the pointwise product); the backward
//! recomputes that input inside the weight gradient (on B for the pointwise one), and the BN
//! backward recomputes its ReLU6 mask from x as it always does. One texture copy of x serves
//! the statistics and the conv in the forward, and the weight gradient and the BN backward in
//! the backward: after the forward it is x's only copy (`Gpu::keep_only_texture`), so x is
//! held once until the backward and copied once.
//!
//! Against BN+ReLU6 then the conv as two ops, this saves a pass that reads x and stores the
//! normalised tensor, two texture copies, and the saved activation: on lavapipe a stored float
//! costs several times a loaded one (benches/NOTES.md).

use anyhow::Result;

use super::batchnorm::{self, BnAct, StatsPartials};
use super::depthwise::{self, BnRelu6Input};
use super::ensure;
use super::pointwise;
use std::sync::Arc;

use crate::gpu::{Gpu, GpuTexture, Tensor};

/// The conv after the BN: depthwise (w `[c, k, k]`) or pointwise (w `[cout, c]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextConv {
    Depthwise { stride: usize },
    Pointwise,
}

/// Whether the fused op applies to x and w: always for depthwise; for pointwise where the
/// products take the input transform (`pointwise::input_transform_support`). Elsewhere run BN +
/// ReLU6 and the conv as separate ops.
pub fn fusable(gpu: &Gpu, x: &Tensor, w: &Tensor, conv: NextConv) -> Result<bool> {
    match conv {
        NextConv::Depthwise { stride } => {
            depthwise::reads_input_texture(gpu, x, w, stride).map(|_| true)
        }
        NextConv::Pointwise => Ok(pointwise::input_transform_support(gpu, x, w)?.0),
    }
}

/// A texture copy of x when both the BN kernels and the conv read one.
fn shared_texture(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    conv: NextConv,
) -> Result<Option<Arc<GpuTexture>>> {
    let conv_reads = match conv {
        NextConv::Depthwise { stride } => depthwise::reads_input_texture(gpu, x, w, stride)?,
        NextConv::Pointwise => pointwise::input_transform_support(gpu, x, w)?.1,
    };
    if batchnorm::reads_textures(gpu, x) && conv_reads {
        Ok(Some(gpu.to_texture(&x.buf, x.numel())?))
    } else {
        Ok(None)
    }
}

/// The transform's per-channel tensors as the conv takes them: bound as they are by the
/// depthwise kernels, packed into one texture [gamma | beta | mean | rstd] for the GEMM.
enum Transform<'a> {
    Depthwise(BnRelu6Input<'a>, usize),
    Pointwise(Arc<GpuTexture>),
}

impl<'a> Transform<'a> {
    fn new(gpu: &Gpu, conv: NextConv, t: [&'a Tensor; 4]) -> Result<Self> {
        Ok(match conv {
            NextConv::Depthwise { stride } => Transform::Depthwise(
                BnRelu6Input {
                    gamma: t[0],
                    beta: t[1],
                    mean: t[2],
                    rstd: t[3],
                },
                stride,
            ),
            NextConv::Pointwise => {
                let p = gpu.concat(&t);
                Transform::Pointwise(gpu.to_texture(&p.buf, p.numel())?)
            }
        })
    }
}

/// y = conv(relu6(batchnorm(x)), w) with batch statistics; updates the running statistics
/// like `batchnorm_act_train_forward`. Returns `(y, mean, rstd)`. Errors where `fusable` is
/// false.
#[allow(clippy::too_many_arguments)]
pub fn bn_relu6_conv_forward(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running: (&Tensor, &Tensor),
    momentum: f32,
    eps: f32,
    w: &Tensor,
    conv: NextConv,
) -> Result<(Tensor, Tensor, Tensor)> {
    let bn = (gamma, beta, running, momentum, eps);
    let (y, mean, rstd, _) = bn_relu6_conv_forward_chained(gpu, x, None, bn, w, conv, false)?;
    Ok((y, mean, rstd))
}

/// BN parameters and running statistics: (gamma, beta, (running_mean, running_var),
/// momentum, eps).
pub type BnParams<'a> = (&'a Tensor, &'a Tensor, (&'a Tensor, &'a Tensor), f32, f32);

/// `bn_relu6_conv_forward` for a chain of these ops: `x_stats` are x's batch statistics in
/// partial form if the op that produced x computed them (then x is not read for them), and
/// with `y_stats` the op returns y's as well where its conv can compute them (the depthwise
/// conv; `None` otherwise). Returns `(y, mean, rstd, y's statistics)`.
pub fn bn_relu6_conv_forward_chained(
    gpu: &Gpu,
    x: &Tensor,
    x_stats: Option<&StatsPartials>,
    (gamma, beta, running, momentum, eps): BnParams,
    w: &Tensor,
    conv: NextConv,
    y_stats: bool,
) -> Result<(Tensor, Tensor, Tensor, Option<StatsPartials>)> {
    let tex = shared_texture(gpu, x, w, conv)?;
    let (mean, rstd) = match x_stats {
        Some(sp) => {
            ensure(
                sp.m * sp.c == x.numel() && x.shape.last() == Some(&sp.c),
                "bn_relu6_conv_forward",
                || {
                    format!(
                        "statistics of {} rows of {} channels do not describe x {:?}",
                        sp.m, sp.c, x.shape
                    )
                },
            )?;
            batchnorm::batchnorm_train_stats_from(gpu, sp, running, momentum, eps)?
        }
        None => batchnorm::batchnorm_train_stats(gpu, x, tex.as_deref(), running, momentum, eps)?,
    };
    let (y, stats) = match Transform::new(gpu, conv, [gamma, beta, &mean, &rstd])? {
        Transform::Depthwise(pre, stride) if y_stats => {
            let (y, sp) =
                depthwise::depthwise_forward_stats(gpu, x, tex.as_deref(), w, stride, Some(pre))?;
            (y, Some(sp))
        }
        Transform::Depthwise(pre, stride) => {
            let y =
                depthwise::depthwise_forward_with(gpu, x, tex.as_deref(), w, stride, Some(pre))?;
            (y, None)
        }
        Transform::Pointwise(packed) => {
            let y = pointwise::pointwise_forward_with(gpu, x, tex.as_deref(), w, Some(&packed))?;
            (y, None)
        }
    };
    if let Some(t) = &tex {
        gpu.keep_only_texture(&x.buf, x.numel(), t);
    }
    Ok((y, mean, rstd, stats))
}

/// Gradients of `bn_relu6_conv_forward` for the upstream gradient dy: returns
/// `(dx, dgamma, dbeta, dw)`, dw only with `weight_grad` (frozen weights need none).
#[allow(clippy::too_many_arguments)]
pub fn bn_relu6_conv_backward(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    (mean, rstd): (&Tensor, &Tensor),
    w: &Tensor,
    conv: NextConv,
    dy: &Tensor,
    weight_grad: bool,
) -> Result<(Tensor, Tensor, Tensor, Option<Tensor>)> {
    let tex = shared_texture(gpu, x, w, conv)?;
    // The gradient with respect to the conv's input, relu6(bn(x)), and the conv's weights.
    let (da, dw) = match Transform::new(gpu, conv, [gamma, beta, mean, rstd])? {
        Transform::Depthwise(pre, stride) => {
            let x_tex = tex.as_deref();
            depthwise::depthwise_backward_with(
                gpu,
                x,
                x_tex,
                w,
                stride,
                dy,
                Some(pre),
                weight_grad,
            )?
        }
        Transform::Pointwise(packed) => {
            let x_tex = tex.as_deref();
            pointwise::pointwise_backward_with(gpu, x, x_tex, w, dy, Some(&packed), weight_grad)?
        }
    };
    let (dx, dgamma, dbeta) = batchnorm::batchnorm_act_train_backward_with(
        gpu,
        x,
        tex.as_deref(),
        gamma,
        beta,
        (mean, rstd),
        &da,
        BnAct::Relu6,
    )?;
    Ok((dx, dgamma, dbeta, dw))
}
