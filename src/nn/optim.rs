//! Optimizers over a [`ParamStore`] (the update kernels of `ops::optim`) and learning-rate
//! schedules.

use anyhow::{bail, Result};

use crate::autograd::Gradients;
use crate::gpu::{Gpu, Tensor};
use crate::ops::optim::{adam_step, sgd_step_multi, SgdUpdate};

use super::params::{ParamStore, Role};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerKind {
    /// SGD with momentum, optional Nesterov, weight decay on conv and linear weights only.
    Sgd {
        momentum: f32,
        nesterov: bool,
        weight_decay: f32,
    },
    Adam {
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    },
}

impl OptimizerKind {
    /// SGD, momentum 0.9, Nesterov: the paper's weight optimizer.
    pub fn nesterov(weight_decay: f32) -> OptimizerKind {
        OptimizerKind::Sgd {
            momentum: 0.9,
            nesterov: true,
            weight_decay,
        }
    }
}

/// Optimizer state per parameter, allocated at a parameter's first update and reused after,
/// so steps allocate nothing. A parameter without a gradient in a step is left alone: no
/// decay, no momentum, no Adam moment update (how unsampled paths stay untouched).
pub struct Optimizer {
    pub kind: OptimizerKind,
    /// Momentum buffer (SGD) or first moment (Adam), per parameter.
    pub first: Vec<Option<Tensor>>,
    /// Second moment (Adam).
    pub second: Vec<Option<Tensor>>,
    /// Updates applied to each parameter (Adam's bias correction counts per parameter).
    pub steps: Vec<u32>,
    /// Weight decay on every trained parameter (the official search's `no_decay_keys` None),
    /// not only on conv and linear weights.
    pub decay_all: bool,
}

impl Optimizer {
    pub fn new(kind: OptimizerKind, params: &ParamStore) -> Optimizer {
        let n = params.params.len();
        Optimizer {
            kind,
            first: (0..n).map(|_| None).collect(),
            second: (0..n).map(|_| None).collect(),
            steps: vec![0; n],
            decay_all: false,
        }
    }

    /// Applies one update with learning rate `lr` to every parameter in `grads`.
    pub fn step(
        &mut self,
        gpu: &Gpu,
        params: &ParamStore,
        grads: &Gradients,
        lr: f32,
    ) -> Result<()> {
        // Checked and given their state before any is updated, so an error leaves the
        // parameters as they were.
        for (index, _) in &grads.by_param {
            let p = params.get(*index);
            if p.role == Role::Buffer {
                bail!("optimizer: {} is a buffer and cannot be trained", p.name);
            }
            self.first[*index].get_or_insert_with(|| gpu.zeros(&p.value.shape));
            if matches!(self.kind, OptimizerKind::Adam { .. }) {
                self.second[*index].get_or_insert_with(|| gpu.zeros(&p.value.shape));
            }
        }
        for (index, _) in &grads.by_param {
            self.steps[*index] += 1;
        }
        // Weight decay on conv and linear weights only, unless on all.
        let decay_all = self.decay_all;
        let decay = |index: usize, wd: f32| {
            if decay_all || params.get(index).role == Role::Weight {
                wd
            } else {
                0.0
            }
        };
        match self.kind {
            OptimizerKind::Sgd {
                momentum,
                nesterov,
                weight_decay,
            } => {
                let mut updates = Vec::with_capacity(grads.by_param.len());
                for (index, g) in &grads.by_param {
                    updates.push(SgdUpdate {
                        w: &params.get(*index).value,
                        g,
                        momentum_buf: state(&self.first[*index])?,
                        weight_decay: decay(*index, weight_decay),
                    });
                }
                sgd_step_multi(gpu, &updates, lr, momentum, nesterov)
            }
            OptimizerKind::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                for (index, g) in &grads.by_param {
                    let (first, second) =
                        (state(&self.first[*index])?, state(&self.second[*index])?);
                    let wd = decay(*index, weight_decay);
                    let t = self.steps[*index];
                    let w = &params.get(*index).value;
                    adam_step(gpu, w, g, first, second, lr, beta1, beta2, eps, wd, t)?;
                }
                Ok(())
            }
        }
    }

    /// Bytes of optimizer state held.
    pub fn bytes(&self) -> u64 {
        self.first
            .iter()
            .chain(&self.second)
            .flatten()
            .map(Tensor::bytes)
            .sum()
    }
}

/// A parameter's optimizer state, allocated by `Optimizer::step` before it is read.
fn state(slot: &Option<Tensor>) -> Result<&Tensor> {
    slot.as_ref()
        .ok_or_else(|| anyhow::anyhow!("optimizer: state missing after allocation"))
}

/// Cosine decay from `base` to 0 over `total` steps after a linear warm-up of `warmup` steps
/// (from base/warmup up to base).
#[derive(Clone, Copy, Debug)]
pub struct CosineSchedule {
    pub base: f32,
    pub warmup: usize,
    pub total: usize,
}

impl CosineSchedule {
    pub fn lr(&self, step: usize) -> f32 {
        if step < self.warmup {
            return self.base * (step + 1) as f32 / self.warmup as f32;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let t = ((step - self.warmup) as f64 / span as f64).min(1.0);
        (0.5 * f64::from(self.base) * (1.0 + (std::f64::consts::PI * t).cos())) as f32
    }
}
