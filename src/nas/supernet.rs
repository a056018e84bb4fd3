//! The over-parameterised network: every mixed layer holds all of its candidates' weights, but a
//! forward runs only the active candidate of each layer (binary gates), so activations are
//! those of one ordinary network.

use std::rc::Rc;

use anyhow::{bail, Result};

use crate::autograd::{Tape, Var};
use crate::gpu::{Gpu, Tensor};
use crate::nn::layers::{Builder, ConvBnAct, Ctx, Linear, MbConv};
use crate::nn::params::{seeded, ParamStore};
use crate::ops;

use super::space::{Candidate, SearchSpace};

/// One mixed layer: a block per candidate (None for Zero).
pub struct MixedLayer {
    pub ops: Vec<Option<MbConv>>,
    pub residual: bool,
}

pub struct Supernet {
    pub space: SearchSpace,
    pub params: ParamStore,
    pub first_conv: ConvBnAct,
    pub first_block: MbConv,
    pub layers: Vec<MixedLayer>,
    pub feature_mix: ConvBnAct,
    pub classifier: Linear,
    zero_bias: Rc<Tensor>,
}

/// What the forward of a mixed layer saw, for the architecture gradient: its input and its
/// output (input + candidate output for residual layers).
pub struct LayerTrace {
    pub input: Var,
    pub output: Var,
}

impl Supernet {
    /// Parameters under the official supernet names:
    /// `blocks.{1 + i}.mobile_inverted_conv.candidate_ops.{j}.…` for candidate j of mixed layer i.
    pub fn new(gpu: &Gpu, space: &SearchSpace, seed: u64) -> Result<Supernet> {
        let mut rng = seeded(seed);
        let mut store = ParamStore::default();
        let mut b = Builder {
            gpu,
            rng: &mut rng,
            store: &mut store,
        };
        let first_conv = ConvBnAct::from_spec(&mut b, "first_conv", &space.first_conv)?;
        let first_block = MbConv::new(&mut b, "blocks.0.mobile_inverted_conv", &space.first_block)?;
        let mut layers = Vec::new();
        for (i, l) in space.layers.iter().enumerate() {
            let mut ops = Vec::new();
            for (j, c) in l.candidates.iter().enumerate() {
                ops.push(match *c {
                    Candidate::MbConv { kernel, expand } => Some(MbConv::new(
                        &mut b,
                        &format!("blocks.{}.mobile_inverted_conv.candidate_ops.{j}", i + 1),
                        &l.mbconv(kernel, expand),
                    )?),
                    Candidate::Zero => None,
                });
            }
            layers.push(MixedLayer {
                ops,
                residual: l.residual(),
            });
        }
        let feature_mix = ConvBnAct::from_spec(&mut b, "feature_mix_layer", &space.feature_mix)?;
        let c = &space.classifier;
        let classifier = Linear::new(
            &mut b,
            "classifier.linear",
            c.in_features,
            c.out_features,
            c.bias,
            c.dropout,
        )?;
        let zero_bias = Rc::new(gpu.upload(&vec![0f32; c.out_features], &[c.out_features])?);
        Ok(Supernet {
            space: space.clone(),
            params: store,
            first_conv,
            first_block,
            layers,
            feature_mix,
            classifier,
            zero_bias,
        })
    }

    fn ctx<'a, 'g>(&'a self, tape: &'a Tape<'g>, train: bool) -> Ctx<'a, 'g> {
        Ctx {
            tape,
            params: &self.params,
            train,
            bn_momentum: 0.1,
            bn_eps: 1e-3,
        }
    }

    /// Logits with BN on each batch's own statistics, leaving the running statistics as they
    /// are: how a supernet path is validated (as the official code does), since a candidate's
    /// running statistics mix the inputs of every path that ran before it.
    pub fn forward_batch_stats(&self, tape: &Tape, x: &Var, active: &[usize]) -> Result<Var> {
        // Training mode would also drop out; the spaces' classifiers have no dropout.
        if self.classifier.dropout > 0.0 {
            bail!(
                "forward_batch_stats: the classifier has dropout, which validation must not apply"
            );
        }
        let mut ctx = self.ctx(tape, true);
        ctx.bn_momentum = 0.0;
        Ok(self.run_with(&ctx, x, active, false)?.0)
    }

    /// Logits for images `x` with candidate `active[i]` at mixed layer i; nothing of the other
    /// candidates runs. Also the input and output of every mixed layer.
    pub fn forward(
        &self,
        tape: &Tape,
        x: &Var,
        active: &[usize],
        train: bool,
    ) -> Result<(Var, Vec<LayerTrace>)> {
        self.run(tape, x, active, train, false)
    }

    /// The architecture step's forward (training-mode BN): the first mixed layer's input is
    /// made a value that needs a gradient, so that with frozen weights the tape still records
    /// every mixed layer and dL/dy reaches each of them.
    pub fn forward_from_leaf(
        &self,
        tape: &Tape,
        x: &Var,
        active: &[usize],
    ) -> Result<(Var, Vec<LayerTrace>)> {
        self.run(tape, x, active, true, true)
    }

    fn run(
        &self,
        tape: &Tape,
        x: &Var,
        active: &[usize],
        train: bool,
        leaf: bool,
    ) -> Result<(Var, Vec<LayerTrace>)> {
        self.run_with(&self.ctx(tape, train), x, active, leaf)
    }

    fn run_with(
        &self,
        ctx: &Ctx,
        x: &Var,
        active: &[usize],
        leaf: bool,
    ) -> Result<(Var, Vec<LayerTrace>)> {
        if active.len() != self.layers.len() {
            bail!(
                "{} active ops for {} mixed layers",
                active.len(),
                self.layers.len()
            );
        }
        let tape = ctx.tape;
        let h = self.first_conv.forward(ctx, x)?;
        let mut h = self.first_block.forward(ctx, &h)?;
        if leaf {
            h = tape.requiring_grad(&h);
        }
        let mut traces = Vec::with_capacity(self.layers.len());
        for (layer, &k) in self.layers.iter().zip(active) {
            let y = self.layer_output(ctx, layer, k, &h)?;
            if ctx.train && !leaf && !std::ptr::eq(y.value(), h.value()) {
                // Only the expand conv's weight gradient reads the layer input now (a Zero
                // candidate passes it on as the output; the architecture step's gate
                // gradients read it again from the trace).
                tape.texture_only(&h);
            }
            traces.push(LayerTrace {
                input: h,
                output: y.clone(),
            });
            h = y;
        }
        let h = self.feature_mix.forward(ctx, &h)?;
        let pooled = tape.global_avg_pool(&h)?;
        let zero = tape.constant_shared(&self.zero_bias);
        Ok((self.classifier.forward(ctx, &pooled, &zero)?, traces))
    }

    /// The all-paths (DARTS-style) forward: every candidate of every mixed layer runs and the
    /// outputs are summed with `weights[i][k]` (Zero contributes nothing), each weight a gate
    /// leaf so that a backward reaches every candidate. For the memory comparison.
    pub fn forward_all_paths(&self, tape: &Tape, x: &Var, weights: &[Vec<f32>]) -> Result<Var> {
        let ctx = self.ctx(tape, true);
        let h = self.first_conv.forward(&ctx, x)?;
        let mut h = self.first_block.forward(&ctx, &h)?;
        for (layer, w) in self.layers.iter().zip(weights) {
            let mut gates = Vec::new();
            let mut outs = Vec::new();
            for (k, op) in layer.ops.iter().enumerate() {
                if let Some(op) = op {
                    let g = Rc::new(tape.gpu().upload(&[w[k]], &[1])?);
                    gates.push((tape.param(usize::MAX - k, &g, true), w[k]));
                    outs.push(op.forward(&ctx, &h)?);
                }
            }
            let mixed = tape.gated_sum(&gates, &outs)?;
            let out = if layer.residual {
                tape.add(&mixed, &h)?
            } else {
                mixed
            };
            // Only the candidates' expand weight gradients read the layer input now.
            tape.texture_only(&h);
            h = out;
        }
        let h = self.feature_mix.forward(&ctx, &h)?;
        let pooled = tape.global_avg_pool(&h)?;
        let zero = tape.constant_shared(&self.zero_bias);
        self.classifier.forward(&ctx, &pooled, &zero)
    }

    /// Output of mixed layer `layer` with candidate `k` on input `x`.
    fn layer_output(&self, ctx: &Ctx, layer: &MixedLayer, k: usize, x: &Var) -> Result<Var> {
        let Some(slot) = layer.ops.get(k) else {
            bail!(
                "candidate {k} out of range ({} candidates)",
                layer.ops.len()
            );
        };
        Ok(match (slot, layer.residual) {
            (Some(op), true) => op.forward_residual(ctx, x)?,
            (Some(op), false) => op.forward(ctx, x)?,
            (None, _) => x.clone(),
        })
    }

    /// dL/dg_k = sum(o_k(x) * dL/dy) for every candidate k of mixed layer `i`, each o_k
    /// recomputed on `tape`, which must record nothing (`Tape::no_grad`), so only one
    /// candidate's activations exist at a time and none is kept; only the candidates in
    /// `involved`, None for the others and for Zero (whose output is 0). The sums stay on the
    /// device, one `[1]` tensor each.
    pub fn gate_gradients(
        &self,
        tape: &Tape,
        i: usize,
        x: &Rc<Tensor>,
        dy: &Tensor,
        train_bn: bool,
        involved: &[usize],
    ) -> Result<Vec<Option<Tensor>>> {
        if tape.grad_enabled() {
            bail!(
                "gate_gradients: the tape records (use Tape::no_grad): nothing needs a tape here"
            );
        }
        let ctx = self.ctx(tape, train_bn);
        let xv = tape.constant_shared(x);
        let mut out = Vec::new();
        for (k, op) in self.layers[i].ops.iter().enumerate() {
            out.push(match op {
                Some(op) if involved.contains(&k) => Some(op.output_dot(&ctx, &xv, dy)?),
                _ => None,
            });
        }
        Ok(out)
    }

    /// dL/dg of mixed layer `i`'s active candidate `k` from what its forward left: o_k is the
    /// layer's output, less its input where there is a shortcut, so nothing is recomputed.
    /// None for Zero (o = 0).
    pub fn active_gate_gradient(
        &self,
        gpu: &Gpu,
        i: usize,
        k: usize,
        trace: &LayerTrace,
        dy: &Tensor,
    ) -> Result<Option<Tensor>> {
        let layer = &self.layers[i];
        match layer.ops.get(k) {
            None => bail!(
                "candidate {k} out of range ({} candidates)",
                layer.ops.len()
            ),
            Some(None) => Ok(None),
            Some(Some(_)) => {
                let y = trace.output.value();
                Ok(Some(if layer.residual {
                    let minus_x = ops::elementwise::scale(gpu, trace.input.value(), -1.0)?;
                    let o = ops::elementwise::add(gpu, y, &minus_x)?;
                    ops::reduce::dot(gpu, &o, dy)?
                } else {
                    ops::reduce::dot(gpu, y, dy)?
                }))
            }
        }
    }

    /// The candidate tensors of mixed layer `i`'s candidate `k` (their parameter indices).
    pub fn candidate_params(&self, i: usize, k: usize) -> Vec<usize> {
        let Some(Some(op)) = self.layers.get(i).and_then(|l| l.ops.get(k)) else {
            return Vec::new();
        };
        let mut v = Vec::new();
        for c in [op.expand.as_ref(), Some(&op.depth), Some(&op.project)]
            .into_iter()
            .flatten()
        {
            v.push(c.weight);
            if let Some(bn) = &c.bn {
                v.extend([bn.gamma, bn.beta, bn.running_mean, bn.running_var]);
            }
        }
        v
    }
}
