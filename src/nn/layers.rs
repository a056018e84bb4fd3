//! Layers: conv (+ BN + ReLU6), the MBConv block, the linear classifier. Each holds the
//! indices of its parameters in the network's [`ParamStore`] and records its forward on a tape.

use anyhow::{Context, Result};

use crate::autograd::{BnArgs, Tape, Var};
use crate::gpu::Tensor;
use crate::ops;
use crate::ops::batchnorm::BnAct;
use crate::ops::bn_relu6_conv::NextConv;

use super::config::{Act, ConvSpec, MbConvSpec};
use super::params::{Init, ParamStore, Role};

/// Where layers find their parameters, and whether this is a training forward.
pub struct Ctx<'a, 'g> {
    pub tape: &'a Tape<'g>,
    pub params: &'a ParamStore,
    /// Training mode: BN uses batch statistics (and updates its running ones), dropout drops.
    pub train: bool,
    pub bn_momentum: f32,
    pub bn_eps: f32,
}

impl Ctx<'_, '_> {
    fn var(&self, index: usize) -> Var {
        let p = self.params.get(index);
        self.tape.param(index, &p.value, p.trainable())
    }
}

/// Adds parameters under a name prefix.
pub struct Builder<'a> {
    pub gpu: &'a crate::gpu::Gpu,
    pub rng: &'a mut rand::rngs::StdRng,
    pub store: &'a mut ParamStore,
}

/// BN with its four tensors.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    pub gamma: usize,
    pub beta: usize,
    pub running_mean: usize,
    pub running_var: usize,
}

impl BatchNorm {
    pub fn new(b: &mut Builder, prefix: &str, c: usize) -> Result<BatchNorm> {
        let mut add = |suffix: &str, role, v| {
            b.store.add(
                b.gpu,
                b.rng,
                format!("{prefix}.{suffix}"),
                vec![c],
                &[c],
                role,
                Init::Constant(v),
            )
        };
        Ok(BatchNorm {
            gamma: add("weight", Role::NoDecay, 1.0)?,
            beta: add("bias", Role::NoDecay, 0.0)?,
            running_mean: add("running_mean", Role::Buffer, 0.0)?,
            running_var: add("running_var", Role::Buffer, 1.0)?,
        })
    }

    pub fn forward(&self, ctx: &Ctx, x: &Var) -> Result<Var> {
        self.run(ctx, x, false)
    }

    /// BN then ReLU6, fused.
    pub fn forward_relu6(&self, ctx: &Ctx, x: &Var) -> Result<Var> {
        self.run(ctx, x, true)
    }

    fn run(&self, ctx: &Ctx, x: &Var, relu6: bool) -> Result<Var> {
        let act = if relu6 { BnAct::Relu6 } else { BnAct::Identity };
        self.with_args(ctx, |args| ctx.tape.batchnorm(x, args, act, ctx.train))
    }

    /// Calls `f` with this BN's parameters and running statistics as ops take them.
    fn with_args<T>(&self, ctx: &Ctx, f: impl FnOnce(&BnArgs) -> Result<T>) -> Result<T> {
        let (gamma, beta) = (ctx.var(self.gamma), ctx.var(self.beta));
        f(&BnArgs {
            gamma: &gamma,
            beta: &beta,
            running_mean: &ctx.params.get(self.running_mean).value,
            running_var: &ctx.params.get(self.running_var).value,
            momentum: ctx.bn_momentum,
            eps: ctx.bn_eps,
        })
    }
}

/// Whether training fuses an MBConv's BN + ReLU6 pairs into the convs that follow them
/// (default); `PROXYLESS_NO_FUSION=1` runs them as separate ops, for comparisons.
pub fn fuse_bn_into_convs() -> bool {
    !crate::gpu::tuning().no_fusion
}

/// Whether an MBConv's depthwise conv computes its output's batch statistics for the BN after
/// it (default); `PROXYLESS_BN_STATS=separate` leaves them to the BN's own pass, for
/// comparisons.
fn output_stats_in_depthwise() -> bool {
    !crate::gpu::tuning().bn_stats_separate
}

/// The three kinds of convolution the nets use, each with its own kernel family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKind {
    /// Dense k x k (the stem).
    Dense,
    /// 1 x 1.
    Pointwise,
    /// Depthwise k x k (groups = channels).
    Depthwise,
}

/// conv -> BN -> ReLU6 (each of the last two optional): `ConvLayer` and the three parts of
/// an MBConv.
#[derive(Clone, Debug)]
pub struct ConvBnAct {
    pub kind: ConvKind,
    pub weight: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub bn: Option<BatchNorm>,
    pub act: Act,
}

impl ConvBnAct {
    /// Parameters `{prefix}.conv.weight` and `{prefix}.bn.*`.
    // One argument per field of the official layer.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        b: &mut Builder,
        prefix: &str,
        kind: ConvKind,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        use_bn: bool,
        act: Act,
    ) -> Result<ConvBnAct> {
        let (shape, device): (Vec<usize>, Vec<usize>) = match kind {
            ConvKind::Dense => (
                vec![cout, cin, kernel, kernel],
                vec![cout, cin, kernel, kernel],
            ),
            ConvKind::Pointwise => (vec![cout, cin, 1, 1], vec![cout, cin]),
            ConvKind::Depthwise => (vec![cout, 1, kernel, kernel], vec![cout, kernel, kernel]),
        };
        let weight = b.store.add(
            b.gpu,
            b.rng,
            format!("{prefix}.conv.weight"),
            shape,
            &device,
            Role::Weight,
            Init::NormalFanOut(kernel * kernel * cout),
        )?;
        let bn = if use_bn {
            Some(BatchNorm::new(b, &format!("{prefix}.bn"), cout)?)
        } else {
            None
        };
        Ok(ConvBnAct {
            kind,
            weight,
            in_channels: cin,
            out_channels: cout,
            kernel,
            stride,
            bn,
            act,
        })
    }

    /// A `ConvLayer` of a net config: 1x1 stride 1 runs as a pointwise GEMM.
    pub fn from_spec(b: &mut Builder, prefix: &str, s: &ConvSpec) -> Result<ConvBnAct> {
        let kind = if s.kernel == 1 && s.stride == 1 {
            ConvKind::Pointwise
        } else {
            ConvKind::Dense
        };
        Self::new(
            b,
            prefix,
            kind,
            s.in_channels,
            s.out_channels,
            s.kernel,
            s.stride,
            s.use_bn,
            s.act,
        )
    }

    pub fn forward(&self, ctx: &Ctx, x: &Var) -> Result<Var> {
        let y = self.conv(ctx, x)?;
        self.bn_act(ctx, &y)
    }

    /// The convolution alone.
    fn conv(&self, ctx: &Ctx, x: &Var) -> Result<Var> {
        let w = ctx.var(self.weight);
        match self.kind {
            ConvKind::Dense => ctx.tape.conv2d(x, &w, self.stride),
            ConvKind::Pointwise => ctx.tape.pointwise(x, &w),
            ConvKind::Depthwise => ctx.tape.depthwise(x, &w, self.stride),
        }
    }

    /// BN and the activation after the convolution.
    fn bn_act(&self, ctx: &Ctx, y: &Var) -> Result<Var> {
        match (&self.bn, self.act) {
            // One kernel for the pair, forward and backward.
            (Some(bn), Act::Relu6) => bn.forward_relu6(ctx, y),
            (Some(bn), Act::None) => bn.forward(ctx, y),
            (None, Act::Relu6) => ctx.tape.relu6(y),
            (None, Act::None) => Ok(y.clone()),
        }
    }

    /// Output spatial size for an input of `size` (pad k/2).
    pub fn out_size(&self, size: usize) -> usize {
        (size + 2 * (self.kernel / 2) - self.kernel) / self.stride + 1
    }

    /// Multiply-accumulates as the official code counts them: in*out*k*k*Hout*Wout/groups.
    pub fn macs(&self, size: usize) -> u64 {
        let o = self.out_size(size) as u64;
        let groups = if self.kind == ConvKind::Depthwise {
            self.in_channels
        } else {
            1
        };
        (self.in_channels * self.out_channels * self.kernel * self.kernel / groups) as u64 * o * o
    }
}

/// The mobile inverted bottleneck: [1x1 expand, BN, ReLU6] (if expand != 1), depthwise k x k,
/// BN, ReLU6, 1x1 project, BN; the caller adds the shortcut.
#[derive(Clone, Debug)]
pub struct MbConv {
    pub spec: MbConvSpec,
    pub expand: Option<ConvBnAct>,
    pub depth: ConvBnAct,
    pub project: ConvBnAct,
}

impl MbConv {
    /// Parameters under `{prefix}.inverted_bottleneck`, `.depth_conv`, `.point_linear`.
    pub fn new(b: &mut Builder, prefix: &str, s: &MbConvSpec) -> Result<MbConv> {
        let mid = s.mid_channels;
        let expand = if s.expand_ratio != 1 {
            Some(ConvBnAct::new(
                b,
                &format!("{prefix}.inverted_bottleneck"),
                ConvKind::Pointwise,
                s.in_channels,
                mid,
                1,
                1,
                true,
                Act::Relu6,
            )?)
        } else {
            None
        };
        let dw_channels = if expand.is_some() { mid } else { s.in_channels };
        let depth = ConvBnAct::new(
            b,
            &format!("{prefix}.depth_conv"),
            ConvKind::Depthwise,
            dw_channels,
            dw_channels,
            s.kernel,
            s.stride,
            true,
            Act::Relu6,
        )?;
        let project = ConvBnAct::new(
            b,
            &format!("{prefix}.point_linear"),
            ConvKind::Pointwise,
            dw_channels,
            s.out_channels,
            1,
            1,
            true,
            Act::None,
        )?;
        Ok(MbConv {
            spec: s.clone(),
            expand,
            depth,
            project,
        })
    }

    pub fn forward(&self, ctx: &Ctx, x: &Var) -> Result<Var> {
        self.forward_maybe_residual(ctx, x, false)
    }

    /// `forward(x) + x`, for a block whose input and output shapes match: in training the
    /// projection's BN adds x in its own pass (`Tape::batchnorm_add`).
    pub fn forward_residual(&self, ctx: &Ctx, x: &Var) -> Result<Var> {
        self.forward_maybe_residual(ctx, x, true)
    }

    fn forward_maybe_residual(&self, ctx: &Ctx, x: &Var, residual: bool) -> Result<Var> {
        if !(ctx.train && fuse_bn_into_convs()) {
            let h = match &self.expand {
                Some(e) => e.forward(ctx, x)?,
                None => x.clone(),
            };
            let h = self.depth.forward(ctx, &h)?;
            let y = self.project.forward(ctx, &h)?;
            return if residual { ctx.tape.add(&y, x) } else { Ok(y) };
        }
        let p = self.fused_projection(ctx, x)?;
        match (&self.project.bn, residual) {
            (Some(bn), true) if self.project.act == Act::None => bn.with_args(ctx, |args| {
                ctx.tape.batchnorm_add(&p, args, BnAct::Identity, x)
            }),
            (_, true) => {
                let y = self.project.bn_act(ctx, &p)?;
                ctx.tape.add(&y, x)
            }
            (_, false) => self.project.bn_act(ctx, &p),
        }
    }

    /// The projection conv's output (before its BN) in training with fused convs.
    fn fused_projection(&self, ctx: &Ctx, x: &Var) -> Result<Var> {
        // Training: each BN + ReLU6 is applied by the next conv as it loads its input
        // (ops::bn_depthwise, ops::bn_pointwise), so the normalised tensors are never stored.
        // The depthwise conv also computes its output's batch statistics for the depthwise
        // BN, which then does not read that output for them.
        let (d, d_stats) = match &self.expand {
            Some(e) => {
                let pre = e.conv(ctx, x)?;
                let w = ctx.var(self.depth.weight);
                let bn = e.bn.as_ref().context("an MBConv's expand conv has BN")?;
                let conv = NextConv::Depthwise {
                    stride: self.depth.stride,
                };
                let chain = output_stats_in_depthwise();
                bn.with_args(ctx, |args| {
                    ctx.tape
                        .bn_relu6_conv_chained(&pre, None, args, &w, conv, chain)
                })?
            }
            None => (self.depth.conv(ctx, x)?, None),
        };
        let w = ctx.var(self.project.weight);
        let bn = self
            .depth
            .bn
            .as_ref()
            .context("an MBConv's depthwise conv has BN")?;
        bn.with_args(ctx, |args| {
            let (p, _) = ctx.tape.bn_relu6_conv_chained(
                &d,
                d_stats,
                args,
                &w,
                NextConv::Pointwise,
                false,
            )?;
            Ok(p)
        })
    }

    /// sum(forward(x) * dy) with training-mode BN, without keeping the output: a candidate's
    /// dL/dg in the architecture step. With fused convs and nothing recorded, the projection's
    /// BN is folded into the dot product (its batch statistics taken, and the running ones
    /// updated, as the forward would), so the block's output is never stored.
    pub fn output_dot(&self, ctx: &Ctx, x: &Var, dy: &Tensor) -> Result<Tensor> {
        let gpu = ctx.tape.gpu();
        let fold = ctx.train
            && fuse_bn_into_convs()
            && !ctx.tape.grad_enabled()
            && self.project.act == Act::None;
        let Some(bn) = self.project.bn.as_ref().filter(|_| fold) else {
            let y = self.forward(ctx, x)?;
            return ops::reduce::dot(gpu, y.value(), dy);
        };
        let p = self.fused_projection(ctx, x)?;
        bn.with_args(ctx, |args| {
            ctx.tape.timed(
                || "forward batchnorm statistics + dot",
                || {
                    let running = (args.running_mean, args.running_var);
                    let (mean, rstd) = ops::batchnorm::batchnorm_train_stats(
                        gpu,
                        p.value(),
                        None,
                        running,
                        args.momentum,
                        args.eps,
                    )?;
                    let affine = (args.gamma.value(), args.beta.value());
                    ops::reduce::batchnorm_dot(gpu, p.value(), affine, (&mean, &rstd), dy)
                },
            )
        })
    }

    pub fn macs(&self, size: usize) -> u64 {
        let e = self.expand.as_ref().map_or(0, |e| e.macs(size));
        e + self.depth.macs(size) + self.project.macs(self.depth.out_size(size))
    }

    pub fn out_size(&self, size: usize) -> usize {
        self.depth.out_size(size)
    }
}

/// `LinearLayer`: optional dropout, then x W^T + b.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: usize,
    pub bias: Option<usize>,
    pub in_features: usize,
    pub out_features: usize,
    pub dropout: f32,
}

impl Linear {
    pub fn new(
        b: &mut Builder,
        prefix: &str,
        fin: usize,
        fout: usize,
        bias: bool,
        dropout: f32,
    ) -> Result<Linear> {
        let bound = 1.0 / (fin as f32).sqrt();
        let weight = b.store.add(
            b.gpu,
            b.rng,
            format!("{prefix}.weight"),
            vec![fout, fin],
            &[fout, fin],
            Role::Weight,
            Init::Uniform(bound),
        )?;
        // The kernels always add a bias; a bias-free layer gets a frozen zero one that is
        // neither saved nor trained.
        let bias = if bias {
            Some(b.store.add(
                b.gpu,
                b.rng,
                format!("{prefix}.bias"),
                vec![fout],
                &[fout],
                Role::NoDecay,
                Init::Constant(0.0),
            )?)
        } else {
            None
        };
        Ok(Linear {
            weight,
            bias,
            in_features: fin,
            out_features: fout,
            dropout,
        })
    }

    pub fn forward(&self, ctx: &Ctx, x: &Var, zero_bias: &Var) -> Result<Var> {
        let x = if ctx.train && self.dropout > 0.0 {
            ctx.tape.dropout(x, self.dropout)?
        } else {
            x.clone()
        };
        let w = ctx.var(self.weight);
        let b = match self.bias {
            Some(i) => ctx.var(i),
            None => zero_bias.clone(),
        };
        ctx.tape.linear(&x, &w, &b)
    }

    pub fn macs(&self) -> u64 {
        (self.in_features * self.out_features) as u64
    }
}
