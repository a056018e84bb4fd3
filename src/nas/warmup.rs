//! How the supernet's weights are warmed up before (and while) the architecture is learned.
//!
//! - `official`: every weight step runs a path drawn from softmax(alpha) (uniform during the
//!   warm-up, Zero included), from the first step, on the initialisation of DESIGN.md section 4.
//!   On CIFAR-10 and the synthetic set this stays at chance for hundreds of steps
//!   (`benches/NOTES.md`, "Issue 20").
//! - `grow` (default): residual candidates start as the identity (the last BN scale of every
//!   MBConv with a shortcut is 0, as Goyal et al. 2017 do for ResNets), and the first part of
//!   the warm-up trains one anchor candidate per layer: the path is drawn from softmax(alpha)
//!   as above, with every MBConv it draws replaced by the layer's anchor (so Zero keeps its
//!   probability and the blocks learn to be dropped). Then every other candidate is set to
//!   compute the anchor's function (`grow::grow_from_anchor`) and paths are drawn as in
//!   `official`.

use anyhow::{bail, Result};

use crate::gpu::Gpu;

use super::grow::{default_anchor, grow_from_anchor};
use super::space::Candidate;
use super::supernet::Supernet;

pub const WARMUPS: &[&str] = &["grow", "official"];

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Warmup {
    Official,
    /// The anchor path for this fraction of the warm-up's weight steps, then grown.
    Grow {
        anchor_fraction: f64,
    },
}

impl Warmup {
    pub fn parse(name: &str, anchor_fraction: f64) -> Result<Warmup> {
        if !(0.0..=1.0).contains(&anchor_fraction) {
            bail!("--anchor-fraction {anchor_fraction} is outside [0, 1]: it is the part of the warm-up spent on the anchor path");
        }
        match name {
            "official" => Ok(Warmup::Official),
            "grow" => Ok(Warmup::Grow { anchor_fraction }),
            other => bail!("unknown --warmup {other:?}; valid: {}", WARMUPS.join(", ")),
        }
    }

    /// What a run's flags record, so that `--resume` can compare.
    pub fn describe(&self) -> String {
        match self {
            Warmup::Official => "official".into(),
            Warmup::Grow { anchor_fraction } => format!("grow@{anchor_fraction}"),
        }
    }

    /// The weight step (counted from the search's first) at which the candidates are grown
    /// from the anchors, for a warm-up of `warmup_steps` steps; None for `official`.
    pub fn grow_step(&self, warmup_steps: usize) -> Option<usize> {
        match *self {
            Warmup::Official => None,
            Warmup::Grow { anchor_fraction } => {
                Some((anchor_fraction * warmup_steps as f64).round() as usize)
            }
        }
    }

    /// Sets up a fresh supernet for this warm-up (not on resume: the checkpoint holds it).
    pub fn init(&self, gpu: &Gpu, net: &Supernet) -> Result<()> {
        match self {
            Warmup::Official => Ok(()),
            Warmup::Grow { .. } => identity_residuals(gpu, net),
        }
    }

    /// The path of weight step `step`, given the one drawn from softmax(alpha).
    pub fn path(
        &self,
        net: &Supernet,
        drawn: Vec<usize>,
        step: usize,
        warmup_steps: usize,
    ) -> Vec<usize> {
        match self.grow_step(warmup_steps) {
            Some(g) if step < g => anchor_path(net, drawn),
            _ => drawn,
        }
    }

    /// Grows the candidates if `step` is the growing step. Returns whether it did.
    pub fn maybe_grow(
        &self,
        gpu: &Gpu,
        net: &Supernet,
        step: usize,
        warmup_steps: usize,
    ) -> Result<bool> {
        if self.grow_step(warmup_steps) != Some(step) {
            return Ok(false);
        }
        grow_from_anchor(gpu, net, &anchors(net)?)?;
        Ok(true)
    }
}

/// Each layer's anchor (its smallest MBConv).
pub fn anchors(net: &Supernet) -> Result<Vec<usize>> {
    net.space
        .layers
        .iter()
        .enumerate()
        .map(|(l, s)| match default_anchor(&s.candidates) {
            Some(a) => Ok(a),
            None => bail!("mixed layer {l} has no MBConv candidate to anchor on"),
        })
        .collect()
}

/// `drawn` with every MBConv replaced by its layer's anchor (Zero kept).
fn anchor_path(net: &Supernet, drawn: Vec<usize>) -> Vec<usize> {
    drawn
        .into_iter()
        .zip(&net.space.layers)
        .map(
            |(k, l)| match (l.candidates.get(k), default_anchor(&l.candidates)) {
                (Some(Candidate::MbConv { .. }), Some(a)) => a,
                _ => k,
            },
        )
        .collect()
}

/// Every MBConv candidate of a layer with a shortcut starts as the identity: its projection
/// BN's scale is 0 (gradients still reach it, so it grows as training needs).
pub fn identity_residuals(gpu: &Gpu, net: &Supernet) -> Result<()> {
    for layer in net.layers.iter().filter(|l| l.residual) {
        for op in layer.ops.iter().flatten() {
            let Some(bn) = &op.project.bn else {
                bail!("an MBConv projection without BN");
            };
            let g = &net.params.get(bn.gamma).value;
            gpu.write(&g.buf, &vec![0f32; g.numel()])?;
        }
    }
    Ok(())
}
