//! The differentiable ops: each forward records a [`Node`] saving what its backward needs.

use std::rc::Rc;

use anyhow::Result;

use crate::gpu::{Gpu, Tensor};
use crate::ops::batchnorm::{BnAct, StatsPartials};
use crate::ops::bn_relu6_conv::NextConv;
use crate::ops::{
    batchnorm, bn_relu6_conv, conv, depthwise, dropout, elementwise, linear, pointwise, pool,
    reduce,
};

use super::tape::{Source, Tape, Var};

/// A recorded op: the id of its output, the ids of its inputs and its saved tensors.
pub(super) enum Node {
    Conv {
        out: usize,
        x: Var,
        w: Var,
        stride: usize,
    },
    Pointwise {
        out: usize,
        x: Var,
        w: Var,
    },
    Depthwise {
        out: usize,
        x: Var,
        w: Var,
        stride: usize,
    },
    /// BN with its activation fused (identity or ReLU6): the backward recomputes the
    /// activation's mask from x, so only x is saved, never the output.
    BatchNorm {
        out: usize,
        x: Var,
        gamma: Var,
        beta: Var,
        mean: Tensor,
        rstd: Tensor,
        act: BnAct,
        /// A residual branch added to the output in the same pass (`Tape::batchnorm_add`):
        /// it receives dy itself, as an `Add`'s inputs do.
        skip: Option<usize>,
    },
    /// Training BN + ReLU6 + the conv that reads its output, in one op
    /// (`ops::bn_relu6_conv`): saves x (the BN input), never the normalised tensor.
    BnRelu6Conv {
        out: usize,
        x: Var,
        gamma: Var,
        beta: Var,
        mean: Tensor,
        rstd: Tensor,
        w: Var,
        conv: NextConv,
    },
    /// Saves its output: 0 < y < 6 exactly where 0 < x < 6, and the output is usually saved
    /// anyway by the conv that reads it, so the input can go back to the pool at once.
    Relu6 {
        out: usize,
        x: usize,
        y: Rc<Tensor>,
    },
    Add {
        out: usize,
        a: usize,
        b: usize,
    },
    /// y = sum_j g_j o_j with the gate values known on the host (binary gates, or weights of
    /// an all-paths step); saves the candidate outputs for dL/dg_j = sum(o_j * dy).
    GatedSum {
        out: usize,
        gates: Vec<(Var, f32)>,
        outputs: Vec<Var>,
    },
    GlobalAvgPool {
        out: usize,
        x: usize,
        shape: Vec<usize>,
    },
    Linear {
        out: usize,
        x: Var,
        w: Var,
        b: usize,
    },
    Dropout {
        out: usize,
        x: usize,
        p: f32,
        seed: u32,
    },
}

/// Input gradients of one node: (input id, gradient).
type InputGrads = Vec<(usize, Rc<Tensor>)>;

impl Node {
    pub(super) fn output(&self) -> usize {
        match self {
            Node::Conv { out, .. }
            | Node::Pointwise { out, .. }
            | Node::Depthwise { out, .. }
            | Node::BatchNorm { out, .. }
            | Node::BnRelu6Conv { out, .. }
            | Node::Relu6 { out, .. }
            | Node::Add { out, .. }
            | Node::GatedSum { out, .. }
            | Node::GlobalAvgPool { out, .. }
            | Node::Linear { out, .. }
            | Node::Dropout { out, .. } => *out,
        }
    }

    pub(super) fn name(&self) -> String {
        match self {
            Node::Pointwise { x, w, .. } => format!("pointwise {:?}x{:?}", x.shape(), w.shape()),
            _ => self.kind().to_string(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Node::Conv { .. } => "conv2d",
            Node::Pointwise { .. } => "pointwise",
            Node::Depthwise { .. } => "depthwise",
            Node::BatchNorm { .. } => "batchnorm",
            Node::BnRelu6Conv { conv, .. } => match conv {
                NextConv::Depthwise { .. } => "bn_relu6_depthwise",
                NextConv::Pointwise => "bn_relu6_pointwise",
            },
            Node::Relu6 { .. } => "relu6",
            Node::Add { .. } => "add",
            Node::GatedSum { .. } => "gated_sum",
            Node::GlobalAvgPool { .. } => "global_avg_pool",
            Node::Linear { .. } => "linear",
            Node::Dropout { .. } => "dropout",
        }
    }

    /// Gradients for the inputs that need one.
    pub(super) fn backward(
        &self,
        gpu: &Gpu,
        dy: &Rc<Tensor>,
        sources: &[Source],
    ) -> Result<InputGrads> {
        let needs = |id: usize| matches!(sources[id], Source::Param(_) | Source::Computed);
        let mut g = InputGrads::new();
        let mut push = |id: usize, t: Tensor| {
            if needs(id) {
                g.push((id, Rc::new(t)));
            }
        };
        match self {
            Node::Conv { x, w, stride, .. } => {
                if needs(x.id) {
                    let (dx, dw) = conv::conv2d_backward(gpu, &x.value, &w.value, *stride, dy)?;
                    push(x.id, dx);
                    push(w.id, dw);
                } else {
                    let dw = conv::conv2d_backward_weight(gpu, &x.value, &w.value, *stride, dy)?;
                    push(w.id, dw);
                }
            }
            // Frozen weights (architecture steps) get no weight-gradient products.
            Node::Pointwise { x, w, .. } => {
                let (xv, wv) = (&x.value, &w.value);
                let (dx, dw) =
                    pointwise::pointwise_backward_with(gpu, xv, None, wv, dy, None, needs(w.id))?;
                push(x.id, dx);
                if let Some(dw) = dw {
                    push(w.id, dw);
                }
            }
            Node::Depthwise { x, w, stride, .. } => {
                let (xv, wv, s) = (&x.value, &w.value, *stride);
                let (dx, dw) = depthwise::depthwise_backward_with(
                    gpu,
                    xv,
                    None,
                    wv,
                    s,
                    dy,
                    None,
                    needs(w.id),
                )?;
                push(x.id, dx);
                if let Some(dw) = dw {
                    push(w.id, dw);
                }
            }
            Node::BatchNorm {
                x,
                gamma,
                beta,
                mean,
                rstd,
                act,
                skip,
                ..
            } => {
                let (dx, dgamma, dbeta) = batchnorm::batchnorm_act_train_backward(
                    gpu,
                    &x.value,
                    &gamma.value,
                    &beta.value,
                    (mean, rstd),
                    dy,
                    *act,
                )?;
                push(x.id, dx);
                push(gamma.id, dgamma);
                push(beta.id, dbeta);
                if let Some(id) = *skip {
                    if needs(id) {
                        g.push((id, Rc::clone(dy)));
                    }
                }
            }
            Node::BnRelu6Conv {
                x,
                gamma,
                beta,
                mean,
                rstd,
                w,
                conv,
                ..
            } => {
                let (dx, dgamma, dbeta, dw) = bn_relu6_conv::bn_relu6_conv_backward(
                    gpu,
                    &x.value,
                    &gamma.value,
                    &beta.value,
                    (mean, rstd),
                    &w.value,
                    *conv,
                    dy,
                    needs(w.id),
                )?;
                push(x.id, dx);
                push(gamma.id, dgamma);
                push(beta.id, dbeta);
                if let Some(dw) = dw {
                    push(w.id, dw);
                }
            }
            Node::Relu6 { x, y, .. } => push(*x, elementwise::relu6_backward(gpu, y, dy)?),
            Node::Add { a, b, .. } => {
                // Both inputs receive dy itself; accumulation never writes in place.
                for id in [*a, *b] {
                    if needs(id) {
                        g.push((id, Rc::clone(dy)));
                    }
                }
            }
            Node::GatedSum { gates, outputs, .. } => {
                for ((g, value), o) in gates.iter().zip(outputs) {
                    push(g.id, reduce::dot(gpu, &o.value, dy)?);
                    push(o.id, elementwise::scale(gpu, dy, *value)?);
                }
            }
            Node::GlobalAvgPool { x, shape, .. } => {
                push(*x, pool::global_avg_pool_backward(gpu, dy, shape)?)
            }
            Node::Linear { x, w, b, .. } => {
                let (dx, dw, db) = linear::linear_backward(gpu, &x.value, &w.value, dy)?;
                push(x.id, dx);
                push(w.id, dw);
                push(*b, db);
            }
            Node::Dropout { x, p, seed, .. } => {
                push(*x, dropout::dropout_backward(gpu, dy, *p, *seed)?)
            }
        }
        Ok(g)
    }
}

/// Batch-norm parameters and running statistics, as the op needs them.
pub struct BnArgs<'a> {
    pub gamma: &'a Var,
    pub beta: &'a Var,
    pub running_mean: &'a Tensor,
    pub running_var: &'a Tensor,
    pub momentum: f32,
    pub eps: f32,
}

impl Tape<'_> {
    /// Dense convolution (the stem and other `ConvLayer`s with k > 1): x NHWC, w OIHW, pad k/2.
    pub fn conv2d(&self, x: &Var, w: &Var, stride: usize) -> Result<Var> {
        let y = self.timed(
            || "forward conv2d",
            || conv::conv2d_forward(self.gpu, &x.value, &w.value, stride),
        )?;
        Ok(self.output(y, &[x, w], |out, _| Node::Conv {
            out,
            x: x.clone(),
            w: w.clone(),
            stride,
        }))
    }

    /// 1x1 convolution, w `[cout, cin]`.
    pub fn pointwise(&self, x: &Var, w: &Var) -> Result<Var> {
        let name = || format!("forward pointwise {:?}x{:?}", x.shape(), w.shape());
        let y = self.timed(name, || {
            pointwise::pointwise_forward(self.gpu, &x.value, &w.value)
        })?;
        Ok(self.output(y, &[x, w], |out, _| Node::Pointwise {
            out,
            x: x.clone(),
            w: w.clone(),
        }))
    }

    /// Depthwise k x k convolution, w `[c, k, k]`, pad k/2.
    pub fn depthwise(&self, x: &Var, w: &Var, stride: usize) -> Result<Var> {
        let y = self.timed(
            || "forward depthwise",
            || depthwise::depthwise_forward(self.gpu, &x.value, &w.value, stride),
        )?;
        Ok(self.output(y, &[x, w], |out, _| Node::Depthwise {
            out,
            x: x.clone(),
            w: w.clone(),
            stride,
        }))
    }

    /// Batch norm over the channels (last axis), then `act` in the same pass. `train` uses
    /// batch statistics and updates the running ones; otherwise the running statistics
    /// normalise.
    pub fn batchnorm(&self, x: &Var, bn: &BnArgs, act: BnAct, train: bool) -> Result<Var> {
        let running = (bn.running_mean, bn.running_var);
        let (gamma, beta) = (&bn.gamma.value, &bn.beta.value);
        let name = || format!("forward batchnorm {act:?}");
        if !train {
            let y = self.timed(name, || {
                batchnorm::batchnorm_act_eval_forward(
                    self.gpu, &x.value, gamma, beta, running, bn.eps, act,
                )
            })?;
            // Eval-mode BN is not differentiated here (nothing trains through running
            // statistics).
            return Ok(self.push_value(Rc::new(y), Source::Detached));
        }
        self.batchnorm_train(x, bn, act, None)
    }

    /// Training-mode `batchnorm` with a residual branch added in the same pass:
    /// act(bn(x)) + skip, for an MBConv whose input and output shapes match. Same values and
    /// gradients as `batchnorm` then `add`, without the pass over the normalised tensor.
    pub fn batchnorm_add(&self, x: &Var, bn: &BnArgs, act: BnAct, skip: &Var) -> Result<Var> {
        self.batchnorm_train(x, bn, act, Some(skip))
    }

    fn batchnorm_train(&self, x: &Var, bn: &BnArgs, act: BnAct, skip: Option<&Var>) -> Result<Var> {
        let running = (bn.running_mean, bn.running_var);
        let (gamma, beta) = (&bn.gamma.value, &bn.beta.value);
        let (m, e) = (bn.momentum, bn.eps);
        let (y, mean, rstd) = self.timed(
            || {
                format!(
                    "forward batchnorm {act:?}{}",
                    if skip.is_some() { " + add" } else { "" }
                )
            },
            || match skip {
                Some(s) => batchnorm::batchnorm_act_train_forward_add(
                    self.gpu, &x.value, gamma, beta, running, m, e, act, &s.value,
                ),
                None => batchnorm::batchnorm_act_train_forward(
                    self.gpu, &x.value, gamma, beta, running, m, e, act,
                ),
            },
        )?;
        let mut inputs = vec![x, bn.gamma, bn.beta];
        inputs.extend(skip);
        Ok(self.output(y, &inputs, |out, _| Node::BatchNorm {
            out,
            x: x.clone(),
            gamma: bn.gamma.clone(),
            beta: bn.beta.clone(),
            mean,
            rstd,
            act,
            skip: skip.map(|s| s.id),
        }))
    }

    /// Training-mode BN (batch statistics, running statistics updated) + ReLU6 + the conv
    /// that reads its output, as one op where `ops::bn_relu6_conv::fusable` (the normalised
    /// tensor is then neither stored nor saved); otherwise the ops separately. Same values and
    /// gradients either way.
    pub fn bn_relu6_conv(&self, x: &Var, bn: &BnArgs, w: &Var, conv: NextConv) -> Result<Var> {
        Ok(self.bn_relu6_conv_chained(x, None, bn, w, conv, false)?.0)
    }

    /// `bn_relu6_conv` in a chain of them (an MBConv's depthwise then its projection): the
    /// conv computes its output's batch statistics in partial form where asked (`y_stats`) and
    /// able (`ops::bn_relu6_conv::bn_relu6_conv_forward_chained`), and the next op's BN takes
    /// them as `x_stats` instead of reading its input for them.
    pub fn bn_relu6_conv_chained(
        &self,
        x: &Var,
        x_stats: Option<StatsPartials>,
        bn: &BnArgs,
        w: &Var,
        conv: NextConv,
        y_stats: bool,
    ) -> Result<(Var, Option<StatsPartials>)> {
        if !bn_relu6_conv::fusable(self.gpu, &x.value, &w.value, conv)? {
            let a = self.batchnorm(x, bn, BnAct::Relu6, true)?;
            let y = match conv {
                NextConv::Depthwise { stride } => self.depthwise(&a, w, stride),
                NextConv::Pointwise => self.pointwise(&a, w),
            }?;
            return Ok((y, None));
        }
        let name = match conv {
            NextConv::Depthwise { .. } => "forward bn_relu6_depthwise",
            NextConv::Pointwise => "forward bn_relu6_pointwise",
        };
        let (y, mean, rstd, stats) = self.timed(
            || name,
            || {
                let params = (
                    &*bn.gamma.value,
                    &*bn.beta.value,
                    (bn.running_mean, bn.running_var),
                    bn.momentum,
                    bn.eps,
                );
                bn_relu6_conv::bn_relu6_conv_forward_chained(
                    self.gpu,
                    &x.value,
                    x_stats.as_ref(),
                    params,
                    &w.value,
                    conv,
                    y_stats,
                )
            },
        )?;
        let y = self.output(y, &[x, bn.gamma, bn.beta, w], |out, _| Node::BnRelu6Conv {
            out,
            x: x.clone(),
            gamma: bn.gamma.clone(),
            beta: bn.beta.clone(),
            mean,
            rstd,
            w: w.clone(),
            conv,
        });
        Ok((y, stats))
    }

    pub fn relu6(&self, x: &Var) -> Result<Var> {
        let y = self.timed(
            || "forward relu6",
            || elementwise::relu6_forward(self.gpu, &x.value),
        )?;
        Ok(self.output(y, &[x], |out, y| Node::Relu6 { out, x: x.id, y }))
    }

    pub fn add(&self, a: &Var, b: &Var) -> Result<Var> {
        let y = self.timed(
            || "forward add",
            || elementwise::add(self.gpu, &a.value, &b.value),
        )?;
        Ok(self.output(y, &[a, b], |out, _| Node::Add {
            out,
            a: a.id,
            b: b.id,
        }))
    }

    /// y = sum_j g_j o_j: `gates` are `[1]` tensors (leaves, to get dL/dg_j) with their
    /// values on the host; `outputs` all of one shape.
    pub fn gated_sum(&self, gates: &[(Var, f32)], outputs: &[Var]) -> Result<Var> {
        anyhow::ensure!(
            !outputs.is_empty() && gates.len() == outputs.len(),
            "gated_sum: {} gates for {} outputs",
            gates.len(),
            outputs.len()
        );
        let y = elementwise::scale(self.gpu, &outputs[0].value, gates[0].1)?;
        for ((_, g), o) in gates.iter().zip(outputs).skip(1) {
            let term = elementwise::scale(self.gpu, &o.value, *g)?;
            elementwise::add_assign(self.gpu, &y, &term)?;
        }
        let mut inputs: Vec<&Var> = gates.iter().map(|(v, _)| v).collect();
        inputs.extend(outputs.iter());
        Ok(self.output(y, &inputs, |out, _| Node::GatedSum {
            out,
            gates: gates.to_vec(),
            outputs: outputs.to_vec(),
        }))
    }

    /// `[n, h, w, c]` -> `[n, c]`.
    pub fn global_avg_pool(&self, x: &Var) -> Result<Var> {
        let y = self.timed(
            || "forward global_avg_pool",
            || pool::global_avg_pool_forward(self.gpu, &x.value),
        )?;
        Ok(self.output(y, &[x], |out, _| Node::GlobalAvgPool {
            out,
            x: x.id,
            shape: x.value.shape.clone(),
        }))
    }

    /// x `[n, in]`, w `[out, in]`, b `[out]`.
    pub fn linear(&self, x: &Var, w: &Var, b: &Var) -> Result<Var> {
        let y = self.timed(
            || "forward linear",
            || linear::linear_forward(self.gpu, &x.value, &w.value, &b.value),
        )?;
        Ok(self.output(y, &[x, w, b], |out, _| Node::Linear {
            out,
            x: x.clone(),
            w: w.clone(),
            b: b.id,
        }))
    }

    /// Inverted dropout with a mask hashed from the tape's seed and a per-op counter.
    pub fn dropout(&self, x: &Var, p: f32) -> Result<Var> {
        let seed = self.seed.get();
        self.seed.set(seed.wrapping_add(0x9E37_79B9));
        let y = self.timed(
            || "forward dropout",
            || dropout::dropout_forward(self.gpu, &x.value, p, seed),
        )?;
        Ok(self.output(y, &[x], |out, _| Node::Dropout {
            out,
            x: x.id,
            p,
            seed,
        }))
    }
}
