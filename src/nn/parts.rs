//! The gradient of a batch given in parts: one forward and backward per part, added up.
//!
//! Parts serve two ends: a batch whose tensors would be over a storage binding (the search's
//! supernet), and data parallelism (`dist`), where each rank runs its own parts of every batch
//! and the ranks' sums are added once more. Either way the result is the gradient of the whole
//! batch's mean loss, BN taking each part's own statistics.

use anyhow::{Context, Result};

use crate::autograd::{Gradients, Tape, Var};
use crate::gpu::{Gpu, Tensor};
use crate::ops::elementwise::{add_assign, scale};
use crate::ops::loss;

use super::params::ParamStore;

/// Where a process's parts sit in the whole batch.
#[derive(Clone, Copy, Debug)]
pub struct PartsOf {
    /// Images in the whole batch, over every rank: a part's loss gradient weighs its share.
    pub images: usize,
    /// The batch-wide index of the first part here: part j draws dropout from `seed + j`,
    /// whichever process runs it.
    pub first: usize,
}

/// What [`part_gradients`] returns, still on the device.
pub struct PartSums {
    /// Mean loss over this process's images (not the whole batch's).
    pub loss: Tensor,
    /// Correct predictions among this process's images.
    pub correct: Tensor,
    /// Gradient of the whole batch's mean loss, this process's share of it.
    pub grads: Gradients,
}

/// Forward (training mode) and backward of each part in turn, with cross-entropy smoothed by
/// `smoothing`; part p's loss gradient is weighed by its images over `of.images`. With more than
/// one part, the BN running statistics keep the first part's update only (the others are put
/// back), as the running statistics of a data-parallel run are those of rank 0's first part.
pub fn part_gradients(
    gpu: &Gpu,
    params: &ParamStore,
    parts: Vec<(Tensor, Tensor)>,
    of: PartsOf,
    smoothing: f32,
    seed: u32,
    mut forward: impl FnMut(&Tape, &Var) -> Result<Var>,
) -> Result<PartSums> {
    let here: usize = parts.iter().map(|(_, y)| y.numel()).sum();
    let several = parts.len() > 1;
    let mut running = FirstPartRunning::new(params);
    let mut total: Option<PartSums> = None;
    for (j, (x, y)) in parts.into_iter().enumerate() {
        running.begin_part(gpu, j);
        let n = y.numel() as f32;
        let tape = Tape::new(gpu, seed.wrapping_add((of.first + j) as u32));
        let xv = tape.constant(x);
        let logits = forward(&tape, &xv)?;
        drop(xv);
        let (l, dl) = loss::softmax_cross_entropy(gpu, logits.value(), &y, smoothing)?;
        let correct = loss::count_correct(gpu, logits.value(), &y)?;
        let grads = if several || of.images != y.numel() {
            tape.backward(&logits, scale(gpu, &dl, n / of.images as f32)?)?
        } else {
            tape.backward(&logits, dl)?
        };
        drop(logits);
        let l = if several {
            scale(gpu, &l, n / here as f32)?
        } else {
            l
        };
        total = Some(match total {
            None => PartSums {
                loss: l,
                correct,
                grads,
            },
            Some(mut t) => {
                add_assign(gpu, &t.loss, &l)?;
                add_assign(gpu, &t.correct, &correct)?;
                for (p, g) in grads.by_param {
                    match t.grads.by_param.iter().find(|(q, _)| *q == p) {
                        Some((_, acc)) => add_assign(gpu, acc, &g)?,
                        None => t.grads.by_param.push((p, g)),
                    }
                }
                t
            }
        });
    }
    running.end_batch(gpu)?;
    total.context("a step needs at least one part")
}

/// Keeps the BN running statistics as the first part of a batch leaves them: training-mode BN
/// updates them on every part, so they are copied aside before the second part and put back
/// after the last. A data-parallel run's running statistics are then rank 0's first part's
/// whether its parts run on one process or several.
pub struct FirstPartRunning<'p> {
    buffers: Vec<&'p Tensor>,
    kept: Option<Tensor>,
}

impl<'p> FirstPartRunning<'p> {
    pub fn new(params: &'p ParamStore) -> FirstPartRunning<'p> {
        FirstPartRunning {
            buffers: params.buffers(),
            kept: None,
        }
    }

    /// Call before part `j` of a batch runs.
    pub fn begin_part(&mut self, gpu: &Gpu, j: usize) {
        if j == 1 && !self.buffers.is_empty() {
            self.kept = Some(gpu.concat(&self.buffers));
        }
    }

    /// Call after the batch's last part.
    pub fn end_batch(&mut self, gpu: &Gpu) -> Result<()> {
        match self.kept.take() {
            Some(kept) => gpu.scatter(&kept, &self.buffers),
            None => Ok(()),
        }
    }
}
