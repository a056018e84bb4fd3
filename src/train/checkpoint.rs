//! Training checkpoints: weights, optimizer state and progress in one safetensors file,
//! written atomically so a crash never leaves a torn checkpoint.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::gpu::Gpu;
use crate::nn::optim::Optimizer;
use crate::nn::params::{load_safetensors, save_safetensors};
use crate::nn::Network;

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Checkpoint {
    pub epochs_done: usize,
    pub step: usize,
    pub seed: u64,
}

const FIRST: &str = "optimizer.first.";
const SECOND: &str = "optimizer.second.";

pub fn save_checkpoint(
    gpu: &Gpu,
    path: &Path,
    net: &Network,
    opt: &Optimizer,
    ck: &Checkpoint,
) -> Result<()> {
    let mut tensors = net.params.to_host(gpu)?;
    for (i, p) in net.params.params.iter().enumerate() {
        for (prefix, state) in [(FIRST, &opt.first[i]), (SECOND, &opt.second[i])] {
            if let Some(t) = state {
                tensors.push((
                    format!("{prefix}{}", p.name),
                    p.shape.clone(),
                    gpu.read_f32(t)?,
                ));
            }
        }
    }
    let meta = HashMap::from([
        ("epochs_done".to_string(), ck.epochs_done.to_string()),
        ("step".to_string(), ck.step.to_string()),
        ("seed".to_string(), ck.seed.to_string()),
        (
            "optimizer_steps".to_string(),
            serde_json::to_string(&opt.steps)?,
        ),
        ("net".to_string(), net.config.to_json().to_string()),
    ]);
    save_safetensors(path, &tensors, Some(meta))
}

/// Restores weights and optimizer state into `net` and `opt`; the net must be the one the
/// checkpoint was made with.
pub fn load_checkpoint(
    gpu: &Gpu,
    path: &Path,
    net: &Network,
    opt: &mut Optimizer,
) -> Result<Checkpoint> {
    if !path.exists() {
        bail!(
            "--resume: no checkpoint at {} (start without --resume, or point --out at the run to continue)",
            path.display()
        );
    }
    let (mut tensors, meta) = load_safetensors(path)?;
    let f = path.display();
    let get = |k: &str| -> Result<&String> {
        meta.get(k)
            .with_context(|| format!("{f}: not a training checkpoint (no {k:?} in its metadata)"))
    };
    let parse = |k: &str| -> Result<u64> {
        get(k)?
            .parse()
            .with_context(|| format!("{f}: metadata {k:?} is not a number"))
    };
    let ck = Checkpoint {
        epochs_done: parse("epochs_done")? as usize,
        step: parse("step")? as usize,
        seed: parse("seed")?,
    };
    let steps: Vec<u32> = serde_json::from_str(get("optimizer_steps")?)
        .with_context(|| format!("{f}: bad optimizer_steps"))?;
    if steps.len() != net.params.params.len() {
        bail!(
            "{f}: the checkpoint is of a net with {} tensors, this net has {}",
            steps.len(),
            net.params.params.len()
        );
    }
    for (i, p) in net.params.params.iter().enumerate() {
        for (prefix, slot) in [(FIRST, &mut opt.first[i]), (SECOND, &mut opt.second[i])] {
            if let Some((shape, data)) = tensors.remove(&format!("{prefix}{}", p.name)) {
                if shape != p.shape {
                    bail!(
                        "{f}: optimizer state of {} has shape {shape:?}, want {:?}",
                        p.name,
                        p.shape
                    );
                }
                *slot = Some(gpu.upload(&data, &p.value.shape)?);
            } else {
                *slot = None;
            }
        }
    }
    opt.steps = steps;
    net.params.load_from(gpu, &tensors, path)?;
    Ok(ck)
}
