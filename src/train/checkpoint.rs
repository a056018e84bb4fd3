//! Checkpoints: parameters, optimizer state and progress in one safetensors file (progress and
//! anything else as string metadata), written atomically so a crash never leaves a torn
//! checkpoint. Training and search both use them.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::gpu::Gpu;
use crate::nn::optim::Optimizer;
use crate::nn::params::{load_safetensors, save_safetensors, ParamStore};
use crate::nn::Network;

/// Where a training run stands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Checkpoint {
    pub epochs_done: usize,
    pub step: usize,
    pub seed: u64,
    /// The parts each batch was cut into (ranks x `--parts`), which BN's statistics follow.
    pub parts: usize,
}

const FIRST: &str = "optimizer.first.";
const SECOND: &str = "optimizer.second.";

/// Writes `params`, the optimizer's state and `meta` (plus the optimizer's step counts).
pub fn save_state(
    gpu: &Gpu,
    path: &Path,
    params: &ParamStore,
    opt: &Optimizer,
    mut meta: HashMap<String, String>,
) -> Result<()> {
    let mut tensors = params.to_host(gpu)?;
    for (i, p) in params.params.iter().enumerate() {
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
    meta.insert(
        "optimizer_steps".to_string(),
        serde_json::to_string(&opt.steps)?,
    );
    save_safetensors(path, &tensors, Some(meta))
}

/// Restores what [`save_state`] wrote into `params` and `opt` (same parameters by name and
/// shape) and returns the metadata.
pub fn load_state(
    gpu: &Gpu,
    path: &Path,
    params: &ParamStore,
    opt: &mut Optimizer,
) -> Result<HashMap<String, String>> {
    if !path.exists() {
        bail!(
            "--resume: no checkpoint at {} (start without --resume, or point --out at the run to continue)",
            path.display()
        );
    }
    let (mut tensors, meta) = load_safetensors(path)?;
    let f = path.display();
    let steps: Vec<u32> =
        serde_json::from_str(meta.get("optimizer_steps").with_context(|| {
            format!("{f}: not a checkpoint (no optimizer_steps in its metadata)")
        })?)
        .with_context(|| format!("{f}: bad optimizer_steps"))?;
    if steps.len() != params.params.len() {
        bail!(
            "{f}: the checkpoint is of a net with {} tensors, this one has {}",
            steps.len(),
            params.params.len()
        );
    }
    for (i, p) in params.params.iter().enumerate() {
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
    params.load_from(gpu, &tensors, path)?;
    Ok(meta)
}

/// A number from checkpoint metadata, with an error naming the file and key.
pub fn meta_number(meta: &HashMap<String, String>, key: &str, path: &Path) -> Result<u64> {
    meta.get(key)
        .with_context(|| {
            format!(
                "{}: not a checkpoint of this kind (no {key:?} in its metadata)",
                path.display()
            )
        })?
        .parse()
        .with_context(|| format!("{}: metadata {key:?} is not a number", path.display()))
}

pub fn save_checkpoint(
    gpu: &Gpu,
    path: &Path,
    net: &Network,
    opt: &Optimizer,
    ck: &Checkpoint,
) -> Result<()> {
    let meta = HashMap::from([
        ("epochs_done".to_string(), ck.epochs_done.to_string()),
        ("step".to_string(), ck.step.to_string()),
        ("seed".to_string(), ck.seed.to_string()),
        ("parts".to_string(), ck.parts.to_string()),
        ("net".to_string(), net.config.to_json().to_string()),
    ]);
    save_state(gpu, path, &net.params, opt, meta)
}

/// Restores weights and optimizer state into `net` and `opt`; the net must be the one the
/// checkpoint was made with.
pub fn load_checkpoint(
    gpu: &Gpu,
    path: &Path,
    net: &Network,
    opt: &mut Optimizer,
) -> Result<Checkpoint> {
    let meta = load_state(gpu, path, &net.params, opt)?;
    Ok(Checkpoint {
        epochs_done: meta_number(&meta, "epochs_done", path)? as usize,
        step: meta_number(&meta, "step", path)? as usize,
        seed: meta_number(&meta, "seed", path)?,
        // Checkpoints from before data parallelism cut no batch.
        parts: match meta.get("parts") {
            Some(_) => meta_number(&meta, "parts", path)? as usize,
            None => 1,
        },
    })
}

/// `e`, from a run that had started, with what is left: the last checkpoint (intact, since it
/// is written atomically) and how many epochs it holds, or that there is none yet.
pub(crate) fn stopped(e: anyhow::Error, path: &Path) -> anyhow::Error {
    let held = load_safetensors(path)
        .ok()
        .and_then(|(_, meta)| meta.get("epochs_done").cloned());
    match held {
        Some(n) => e.context(format!(
            "stopped; the last checkpoint, {} ({n} epochs done), is intact: --resume continues from it",
            path.display()
        )),
        None => e.context(format!(
            "stopped before the first checkpoint ({} not written): start again",
            path.display()
        )),
    }
}
