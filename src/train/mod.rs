//! Training a net from scratch, and evaluating it: the step, the epoch loop with validation,
//! logs and atomic checkpoints. Sits above `nn` and `data`; the command line adds progress
//! display on top through [`Observer`].

mod checkpoint;
mod evaluate;
pub mod npy;
pub mod plot;
pub mod search;
mod source;
mod weights;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::autograd::Tape;
use crate::data::Batch;
use crate::dist::Group;
use crate::gpu::{Gpu, Tensor};
use crate::nn::optim::{CosineSchedule, Optimizer, OptimizerKind};
use crate::nn::parts::{part_gradients, PartsOf};
use crate::nn::Network;
use crate::ops::{elementwise, loss};

pub use checkpoint::{
    load_checkpoint, load_state, meta_number, save_checkpoint, save_state, Checkpoint,
};
pub(crate) use evaluate::dealt;
pub use evaluate::{evaluate, evaluate_logits, evaluate_shared, test_set};
pub use source::DataSource;
pub use weights::{load_weights, save_weights, stored_normalization};

/// Hyperparameters of a training run.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub warmup_epochs: usize,
    pub optimizer: OptimizerKind,
    pub label_smoothing: f32,
    pub seed: u64,
    /// Stop once this many epochs are done (the schedule stays that of `epochs`), to run a
    /// long training in parts with `--resume`.
    pub stop_after: Option<usize>,
    /// Cut each batch into at least this many parts, run one after another (or spread over the
    /// ranks), BN on each part's statistics: a run with `parts` K on one process computes what
    /// K ranks do.
    pub parts: usize,
    /// The ranks sharing each batch (`Group::solo()` for one process).
    pub group: Group,
}

/// What one step returns, still on the device (read back only when shown).
pub struct StepOutput {
    pub loss: Tensor,
    pub correct: Tensor,
}

/// Uploads a batch: images `[n, h, w, 3]`, labels `[n]`.
pub fn upload_batch(gpu: &Gpu, b: &crate::data::Batch) -> Result<(Tensor, Tensor)> {
    let x = gpu.upload(&b.images, &[b.n, b.height, b.width, 3])?;
    let y = gpu.upload(&b.labels, &[b.n])?;
    Ok((x, y))
}

/// One SGD/Adam step on a batch: forward in training mode, cross-entropy, backward, update.
// The step's inputs and hyperparameters, one argument each.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    gpu: &Gpu,
    net: &Network,
    opt: &mut Optimizer,
    images: Tensor,
    labels: &Tensor,
    lr: f32,
    smoothing: f32,
    seed: u32,
) -> Result<StepOutput> {
    let tape = Tape::new(gpu, seed);
    let x = tape.constant(images);
    let logits = net.forward(&tape, &x, true)?;
    drop(x);
    let (loss, dlogits) = loss::softmax_cross_entropy(gpu, logits.value(), labels, smoothing)?;
    let correct = loss::count_correct(gpu, logits.value(), labels)?;
    let grads = tape.backward(&logits, dlogits)?;
    drop(logits);
    opt.step(gpu, &net.params, &grads, lr)?;
    Ok(StepOutput { loss, correct })
}

/// [`train_step`] on this process's parts of a batch (`nn::parts`), the gradients summed over
/// `group`'s ranks before the update. Returns the mean loss and correct count of the images
/// here.
#[allow(clippy::too_many_arguments)]
pub fn train_step_parts(
    gpu: &Gpu,
    net: &Network,
    opt: &mut Optimizer,
    parts: Vec<(Tensor, Tensor)>,
    of: PartsOf,
    group: &Group,
    lr: f32,
    smoothing: f32,
    seed: u32,
) -> Result<StepOutput> {
    let sums = part_gradients(gpu, &net.params, parts, of, smoothing, seed, |tape, x| {
        net.forward(tape, x, true)
    })?;
    let grads: Vec<&Tensor> = sums.grads.by_param.iter().map(|(_, g)| g).collect();
    group.sum_tensors(gpu, &grads)?;
    opt.step(gpu, &net.params, &sums.grads, lr)?;
    Ok(StepOutput {
        loss: sums.loss,
        correct: sums.correct,
    })
}

/// A batch's parts (`Batch::parts`) on the device, in row order.
pub(crate) fn upload_parts(gpu: &Gpu, b: &Batch) -> Result<Vec<(Tensor, Tensor)>> {
    let pixels = b.height * b.width * 3;
    let mut start = 0;
    b.parts
        .iter()
        .map(|&n| {
            let (s, e) = (start, start + n);
            start = e;
            let x = gpu.upload(
                &b.images[s * pixels..e * pixels],
                &[n, b.height, b.width, 3],
            )?;
            let y = gpu.upload(&b.labels[s..e], &[n])?;
            Ok((x, y))
        })
        .collect()
}

/// Refuses batches too small for their parts: a part needs images for its BN statistics.
pub(crate) fn check_parts(batch: usize, parts: usize, group: &Group, flag: &str) -> Result<()> {
    if batch < parts {
        bail!(
            "{flag} {batch} cannot be cut into {parts} parts ({} ranks, --parts): raise {flag} or lower --parts",
            group.ranks()
        );
    }
    Ok(())
}

/// Makes every rank hold rank 0's BN running statistics (each rank updated its own from its
/// parts), before an evaluation or a checkpoint.
pub(crate) fn share_running_stats(
    gpu: &Gpu,
    params: &crate::nn::params::ParamStore,
    group: &Group,
) -> Result<()> {
    group.broadcast_tensors(gpu, &params.buffers())
}

/// Gives every rank rank 0's parameters (at the start of a run: the ranks then agree whatever
/// their initialisation did).
pub(crate) fn share_params(
    gpu: &Gpu,
    params: &crate::nn::params::ParamStore,
    group: &Group,
) -> Result<()> {
    let all: Vec<&Tensor> = params.params.iter().map(|p| &*p.value).collect();
    group.broadcast_tensors(gpu, &all)
}

/// The dropout seed of global step `step`: a resumed run draws the same masks.
pub(crate) fn step_seed(seed: u64, step: usize) -> u32 {
    (seed as u32) ^ (step as u32).wrapping_mul(0x85EB_CA6B)
}

/// Where a run is, for progress and error messages.
pub(crate) struct Position {
    pub epoch: usize,
    pub epochs: usize,
    pub batch: usize,
    pub batches: usize,
    pub step: usize,
    pub lr: f32,
}

/// Sums of loss and correct predictions kept on the device, so a step needs no readback.
pub(crate) struct Totals {
    /// Batch mean losses, each weighed by its batch's size over `unit`.
    loss: Tensor,
    correct: Tensor,
    images: usize,
    /// The first batch's size: batches of it (all but a short last one) are added as they
    /// are, with no scaling dispatch.
    unit: Option<usize>,
    /// Ranks whose images this process's stand for in the progress rate (each has as many).
    ranks: usize,
}

impl Totals {
    pub(crate) fn new(gpu: &Gpu) -> Totals {
        Totals {
            loss: gpu.zeros(&[1]),
            correct: gpu.zeros(&[1]),
            images: 0,
            unit: None,
            ranks: 1,
        }
    }

    /// Totals of one rank of `ranks`, whose progress shows the rate of all of them.
    pub(crate) fn of_ranks(mut self, ranks: usize) -> Totals {
        self.ranks = ranks.max(1);
        self
    }

    /// Adds a batch of `n` images: its mean loss weighs `n`, so a short last batch counts
    /// for its images only.
    pub(crate) fn add(&mut self, gpu: &Gpu, s: &StepOutput, n: usize) -> Result<()> {
        let unit = *self.unit.get_or_insert(n);
        if n == unit {
            elementwise::add_assign(gpu, &self.loss, &s.loss)?;
        } else {
            let weighed = elementwise::scale(gpu, &s.loss, n as f32 / unit as f32)?;
            elementwise::add_assign(gpu, &self.loss, &weighed)?;
        }
        elementwise::add_assign(gpu, &self.correct, &s.correct)?;
        self.images += n;
        Ok(())
    }

    /// Reads the running loss and accuracy, stops the run on a non-finite loss and shows
    /// progress.
    pub(crate) fn report(
        &self,
        gpu: &Gpu,
        observer: &mut dyn Observer,
        at: &Position,
        epoch_start: Instant,
    ) -> Result<()> {
        let (loss, accuracy) = self.read(gpu)?;
        if !loss.is_finite() {
            // The caller adds where the last good checkpoint is (`checkpoint::stopped`).
            bail!(
                "the training loss became {loss} in epoch {} (step {}): lower --lr",
                at.epoch + 1,
                at.step,
            );
        }
        observer.progress(&Progress {
            epoch: at.epoch,
            epochs: at.epochs,
            batch: at.batch,
            batches: at.batches,
            loss,
            accuracy,
            images_per_s: (self.images * self.ranks) as f64 / epoch_start.elapsed().as_secs_f64(),
            lr: at.lr,
        });
        Ok(())
    }

    /// (mean loss per image, accuracy) over every rank's images.
    pub(crate) fn read_all(&self, gpu: &Gpu, group: &Group) -> Result<(f64, f64)> {
        let (loss, accuracy) = self.read(gpu)?;
        let n = self.images as f64;
        let mut sums = [loss * n, accuracy * n, n];
        group.sum_f64(&mut sums)?;
        Ok((sums[0] / sums[2].max(1.0), sums[1] / sums[2].max(1.0)))
    }

    /// (mean loss per image, accuracy) of this process's images.
    pub(crate) fn read(&self, gpu: &Gpu) -> Result<(f64, f64)> {
        let v = gpu.read_many(&[&self.loss, &self.correct])?;
        let (l, c) = (v[0][0] as f64, v[1][0] as f64);
        let images = self.images.max(1) as f64;
        Ok((l * self.unit.unwrap_or(1) as f64 / images, c / images))
    }
}

/// Progress of a run, for display.
#[derive(Clone, Debug)]
pub struct Progress {
    pub epoch: usize,
    pub epochs: usize,
    pub batch: usize,
    pub batches: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub images_per_s: f64,
    pub lr: f32,
}

/// Hooks for the caller: progress within an epoch and a line per finished epoch.
pub trait Observer {
    fn progress(&mut self, _p: &Progress) {}
    fn epoch_done(&mut self, _record: &serde_json::Value) {}
}

/// Observes nothing (tests).
pub struct Quiet;
impl Observer for Quiet {}

/// Where a run writes: `log.jsonl`, `checkpoint.safetensors`, `weights.safetensors`,
/// `net.config`.
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn log(&self) -> PathBuf {
        self.0.join("log.jsonl")
    }
    pub fn checkpoint(&self) -> PathBuf {
        self.0.join("checkpoint.safetensors")
    }
    pub fn weights(&self) -> PathBuf {
        self.0.join("weights.safetensors")
    }
    pub fn net_config(&self) -> PathBuf {
        self.0.join("net.config")
    }
}

/// The result of a run: the final epoch's record.
#[derive(Clone, Debug)]
pub struct Summary {
    pub valid_accuracy: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub train_accuracy: f64,
    pub seconds: f64,
    pub images_per_s: f64,
    pub pool_high_water: u64,
}

/// Seconds between readbacks of the running loss: often enough to show progress and to catch
/// a NaN early, rare enough not to stall a real GPU's pipeline.
const READ_EVERY_S: f64 = 0.5;

/// Trains `net` for `cfg.epochs` on `data`, writing into `out`. With `resume`, continues from
/// `out/checkpoint.safetensors`. A checkpoint is written (atomically) after every epoch; a
/// non-finite loss stops the run with an error and leaves the last good checkpoint alone.
/// An error once training has begun (a lost device, memory exhausted, a non-finite loss) names
/// the last checkpoint and the epochs it holds.
pub fn train(
    gpu: &Gpu,
    net: &Network,
    data: &DataSource,
    cfg: &TrainConfig,
    out: &RunDir,
    resume: bool,
    observer: &mut dyn Observer,
) -> Result<Summary> {
    let mut started = false;
    train_epochs(gpu, net, data, cfg, out, resume, observer, &mut started).map_err(|e| {
        if started {
            checkpoint::stopped(e, &out.checkpoint())
        } else {
            e
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn train_epochs(
    gpu: &Gpu,
    net: &Network,
    data: &DataSource,
    cfg: &TrainConfig,
    out: &RunDir,
    resume: bool,
    observer: &mut dyn Observer,
    started: &mut bool,
) -> Result<Summary> {
    if cfg.epochs == 0 || cfg.batch == 0 {
        bail!("--epochs and --batch must be at least 1");
    }
    let group = &cfg.group;
    let root = group.is_root();
    // Images a part may hold so that no tensor is over one storage binding: a larger batch is
    // cut into more parts (BN then on each part), and evaluation runs in batches of at most it.
    let size = data.train.height;
    let per_image = 4 * net.largest_activation_floats(size) as u64;
    let part = ((gpu.max_binding_bytes() / per_image.max(1)) as usize).max(1);
    let shard = group.shard(cfg.parts.max(cfg.batch.div_ceil(part)));
    check_parts(cfg.batch, shard.parts, group, "--batch")?;
    if root && part < cfg.batch {
        eprintln!(
            "batches split into parts of at most {part} images (storage-binding limit {} MiB); BN takes each part's statistics",
            gpu.max_binding_bytes() >> 20
        );
    }
    let eval_batch = cfg.batch.max(100).min(part);
    std::fs::create_dir_all(&out.0)
        .with_context(|| format!("cannot create output directory {}", out.0.display()))?;
    let mut opt = Optimizer::new(cfg.optimizer, &net.params);
    let mut start_epoch = 0;
    let mut step = 0usize;
    if resume {
        let ck = load_checkpoint(gpu, &out.checkpoint(), net, &mut opt)?;
        group.check_same("checkpoint", || file_digest(&out.checkpoint()))?;
        start_epoch = ck.epochs_done;
        step = ck.step;
        if ck.seed != cfg.seed {
            bail!(
                "{}: the checkpoint was made with --seed {}, this run has {}; resume with the same seed",
                out.checkpoint().display(),
                ck.seed,
                cfg.seed
            );
        }
        if ck.parts != shard.parts {
            bail!(
                "{}: the checkpoint was made with batches cut into {} parts (ranks x --parts), this run cuts them into {}; resume with as many ranks and --parts",
                out.checkpoint().display(),
                ck.parts,
                shard.parts
            );
        }
        if root {
            keep_lines(&out.log(), start_epoch)?;
        }
    } else if root {
        // A fresh run starts a fresh log.
        let _ = std::fs::remove_file(out.log());
    }
    share_params(gpu, &net.params, group)?;
    if root {
        crate::nn::params::write_atomic(
            &out.net_config(),
            serde_json::to_string_pretty(&net.config.to_json())?.as_bytes(),
        )?;
    }
    let per_epoch = data.batches_per_epoch(cfg.batch)?;
    let schedule = CosineSchedule {
        base: cfg.lr,
        warmup: cfg.warmup_epochs * per_epoch,
        total: cfg.epochs * per_epoch,
    };
    let mut summary = None;
    let run_start = Instant::now();
    let end = cfg.stop_after.unwrap_or(cfg.epochs).min(cfg.epochs);
    for epoch in start_epoch..end {
        *started = true;
        let t0 = Instant::now();
        gpu.reset_high_water();
        let loader = data.train_loader(cfg.batch, cfg.seed, epoch as u64, shard);
        let batches = loader.batches();
        let mut totals = Totals::new(gpu).of_ranks(group.ranks());
        let mut last_read = Instant::now();
        let mut lr = cfg.lr;
        group.take_stats();
        for (i, b) in loader.enumerate() {
            lr = schedule.lr(step);
            let parts = upload_parts(gpu, &b)?;
            let of = PartsOf {
                images: b.of,
                first: shard.first,
            };
            let seed = step_seed(cfg.seed, step);
            let s = train_step_parts(
                gpu,
                net,
                &mut opt,
                parts,
                of,
                group,
                lr,
                cfg.label_smoothing,
                seed,
            )?;
            totals.add(gpu, &s, b.n)?;
            step += 1;
            // Rank 0 shows its own images' running figures; the epoch's line has every rank's.
            let due = last_read.elapsed().as_secs_f64() >= READ_EVERY_S || i + 1 == batches;
            if root && due {
                last_read = Instant::now();
                let at = Position {
                    epoch,
                    epochs: cfg.epochs,
                    batch: i + 1,
                    batches,
                    step,
                    lr,
                };
                totals.report(gpu, observer, &at, t0)?;
            }
        }
        gpu.sync()?;
        let train_seconds = t0.elapsed().as_secs_f64();
        let exchange = group.take_stats();
        let (train_loss, train_acc) = totals.read_all(gpu, group)?;
        let high_water = gpu.pool_stats().high_water_bytes;
        share_running_stats(gpu, &net.params, group)?;
        let valid = if data.valid_indices.is_empty() {
            None
        } else {
            Some(evaluate_shared(
                gpu,
                net,
                &data.train,
                data.valid_indices.clone(),
                data.norm,
                eval_batch,
                group,
            )?)
        };
        let last = epoch + 1 == cfg.epochs;
        let test = match (&data.test, last) {
            (Some(t), true) => Some(evaluate_shared(
                gpu,
                net,
                t,
                (0..t.len()).collect(),
                data.norm,
                eval_batch,
                group,
            )?),
            _ => None,
        };
        let ips = (batches * cfg.batch) as f64 / train_seconds;
        let summary_now = Summary {
            valid_accuracy: valid.map(|v| v.1),
            test_accuracy: test.map(|v| v.1),
            train_accuracy: train_acc,
            seconds: run_start.elapsed().as_secs_f64(),
            images_per_s: ips,
            pool_high_water: high_water,
        };
        if !root {
            summary = Some(summary_now);
            continue;
        }
        let record = json!({
            "epoch": epoch + 1,
            "epochs": cfg.epochs,
            "step": step,
            "lr": lr,
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            "valid_loss": valid.map(|v| v.0),
            "valid_accuracy": valid.map(|v| v.1),
            "test_loss": test.map(|v| v.0),
            "test_accuracy": test.map(|v| v.1),
            "images_per_s": ips,
            "epoch_seconds": train_seconds,
            "elapsed_seconds": run_start.elapsed().as_secs_f64(),
            "pool_high_water_bytes": high_water,
            "ranks": group.ranks(),
            "parts": shard.parts,
            "gradient_exchange": (group.ranks() > 1).then(|| exchange.per_exchange_ms()),
        });
        // The line and the weights first, the checkpoint last: a kill in between redoes the
        // epoch on resume (see `keep_lines`), and a finished run's weights are its last epoch's.
        append_line(&out.log(), &record)?;
        save_weights(gpu, net, &out.weights(), Some(data.norm))?;
        save_checkpoint(
            gpu,
            &out.checkpoint(),
            net,
            &opt,
            &Checkpoint {
                epochs_done: epoch + 1,
                step,
                seed: cfg.seed,
                parts: shard.parts,
            },
        )?;
        observer.epoch_done(&record);
        summary = Some(summary_now);
    }
    summary.with_context(|| {
        format!(
            "nothing to do: the checkpoint in {} has already done all {} epochs (raise --epochs)",
            out.0.display(),
            cfg.epochs
        )
    })
}

/// The fingerprint of a file's bytes: do the ranks read the same checkpoint?
pub(crate) fn file_digest(path: &Path) -> Result<u64> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(crate::dist::fnv1a(&bytes))
}

/// Cuts a per-epoch log to its first `n` complete lines (those of the epochs the checkpoint
/// holds): a run killed after writing an epoch's line but before its checkpoint redoes that
/// epoch on resume, and would otherwise log it twice. A missing file is left missing.
pub(crate) fn keep_lines(path: &Path, n: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .take(n)
        .collect();
    if kept.len() != text.len() {
        crate::nn::params::write_atomic(path, kept.as_bytes())?;
    }
    Ok(())
}

pub(crate) fn append_line(path: &Path, v: &serde_json::Value) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(f, "{v}").with_context(|| format!("cannot write {}", path.display()))?;
    f.sync_data().ok();
    Ok(())
}

/// Default training hyperparameters for an optimizer name.
pub fn optimizer_kind(name: &str, weight_decay: f32, nesterov: bool) -> Result<OptimizerKind> {
    match name {
        "sgd" => Ok(OptimizerKind::Sgd {
            momentum: 0.9,
            nesterov,
            weight_decay,
        }),
        "adam" => Ok(OptimizerKind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }),
        other => bail!("unknown optimizer {other:?}: use sgd or adam"),
    }
}
