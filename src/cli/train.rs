//! `proxyless train`: train a net config from scratch; `proxyless eval`: test saved weights.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use super::values;
use proxyless::dist::Group;
use proxyless::gpu::Gpu;
use proxyless::nn::{NetConfig, Network};
use proxyless::train::{self, DataSource, Observer, Progress, Quiet, RunDir, TrainConfig};

#[derive(clap::Args)]
pub struct Args {
    /// Net config in the official ProxylessNASNets JSON format (e.g. data/nets/cifar-small.config).
    #[arg(long)]
    net: PathBuf,
    /// CIFAR-10 binary directory or image folder (DIR/<class>/*.png|jpg, or DIR/train + DIR/val);
    /// without it, the built-in synthetic set.
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 10, allow_hyphen_values = true, value_parser = values::count(1, values::MAX_COUNT))]
    epochs: usize,
    #[arg(long, default_value_t = 64, allow_hyphen_values = true, value_parser = values::count(1, 65536))]
    batch: usize,
    /// Peak learning rate (cosine decay to 0 after the warm-up).
    #[arg(long, default_value_t = 0.1, allow_hyphen_values = true, value_parser = values::real32(0.0, 10.0, true))]
    lr: f32,
    /// Epochs of linear learning-rate warm-up.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true, value_parser = values::count(0, values::MAX_COUNT))]
    warmup_epochs: usize,
    /// sgd (momentum 0.9) or adam.
    #[arg(long, default_value = "sgd")]
    optimizer: String,
    /// Weight decay of conv and linear weights (BN and biases are never decayed).
    #[arg(long, default_value_t = 4e-5, allow_hyphen_values = true, value_parser = values::real32(0.0, 1.0, false))]
    weight_decay: f32,
    /// Plain momentum instead of Nesterov.
    #[arg(long)]
    no_nesterov: bool,
    #[arg(long, default_value_t = 0.1, allow_hyphen_values = true, value_parser = values::real32(0.0, 0.99, false))]
    label_smoothing: f32,
    /// Train on the images as they are (no random crop or flip): for short runs.
    #[arg(long)]
    no_augment: bool,
    /// Images held out of the training set for per-epoch validation (default: a tenth of it,
    /// at most 5000: CIFAR-10's usual split).
    #[arg(long, allow_hyphen_values = true, value_parser = values::count(0, values::MAX_COUNT))]
    valid: Option<usize>,
    /// Train on only this many of the training split's images (a random subset, the same for
    /// every run): for runs that must fit a time budget.
    #[arg(long, allow_hyphen_values = true, value_parser = values::count(1, values::MAX_COUNT))]
    train_images: Option<usize>,
    /// Input resolution for image folders and the synthetic set (CIFAR is always 32).
    #[arg(long, default_value_t = 32, allow_hyphen_values = true, value_parser = values::count(8, 4096))]
    resolution: usize,
    /// Seed of the initial weights, the data order, augmentation and dropout.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    seed: u64,
    /// Output directory: log.jsonl, checkpoint.safetensors, weights.safetensors, net.config.
    #[arg(long)]
    out: PathBuf,
    /// Stop after this many epochs (of --epochs, whose schedule is kept); continue with --resume.
    #[arg(long, allow_hyphen_values = true, value_parser = values::count(1, values::MAX_COUNT))]
    stop_after: Option<usize>,
    /// Continue from OUT/checkpoint.safetensors.
    #[arg(long)]
    resume: bool,
    /// Cut every batch into this many parts run one after another, BN on each part's
    /// statistics, gradients added up (a large batch in little memory). Under `mpirun -n K` the
    /// parts are dealt out over the ranks (at least K); one process with --parts K computes
    /// what K ranks do.
    #[arg(long, default_value_t = 1, allow_hyphen_values = true, value_parser = values::count(1, 65536))]
    parts: usize,
}

/// The progress bar of long runs, and a line per finished epoch. When stderr is not a
/// terminal (a log file) the bar is hidden, so a plain line is printed every half minute.
pub struct Bar {
    bar: Option<ProgressBar>,
    epoch: usize,
    last_line: std::time::Instant,
}

/// Seconds between plain progress lines when no bar can be drawn.
const PLAIN_EVERY_S: u64 = 30;

impl Bar {
    pub fn new() -> Bar {
        Bar {
            bar: None,
            epoch: usize::MAX,
            last_line: std::time::Instant::now(),
        }
    }
}

impl Default for Bar {
    fn default() -> Bar {
        Bar::new()
    }
}

impl Observer for Bar {
    fn progress(&mut self, p: &Progress) {
        if self.bar.is_none() || self.epoch != p.epoch {
            if let Some(b) = self.bar.take() {
                b.finish_and_clear();
            }
            let b = ProgressBar::new(p.batches as u64);
            b.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_prefix(format!("{}/{}", p.epoch + 1, p.epochs));
            self.bar = Some(b);
            self.epoch = p.epoch;
        }
        if let Some(b) = &self.bar {
            let msg = format!(
                "loss {:.3} acc {:.1}% {:.0} img/s lr {:.4}",
                p.loss,
                100.0 * p.accuracy,
                p.images_per_s,
                p.lr
            );
            if b.is_hidden() && self.last_line.elapsed().as_secs() >= PLAIN_EVERY_S {
                self.last_line = std::time::Instant::now();
                eprintln!(
                    "epoch {}/{} batch {}/{}: {msg}",
                    p.epoch + 1,
                    p.epochs,
                    p.batch,
                    p.batches
                );
            }
            b.set_position(p.batch as u64);
            b.set_message(msg);
        }
    }

    fn epoch_done(&mut self, r: &serde_json::Value) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let pct = |k: &str| {
            r[k].as_f64()
                .map_or("-".into(), |v| format!("{:.2}%", 100.0 * v))
        };
        if let Some(layers) = r["layers"].as_array() {
            let ops: Vec<String> = layers
                .iter()
                .map(|l| {
                    format!(
                        "{}({:.2})",
                        l["op"].as_str().unwrap_or("?"),
                        l["p"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect();
            eprintln!(
                "epoch {}/{} ({}): train loss {:.4} acc {} | valid {} | expected {} {} | entropy {:.3} | {:.0} s\n  {}",
                r["epoch"],
                r["epochs"],
                r["phase"].as_str().unwrap_or(""),
                r["train_loss"].as_f64().unwrap_or(f64::NAN),
                pct("train_accuracy"),
                pct("valid_accuracy"),
                r["expected_cost"].as_f64().map_or("-".into(), |v| format!("{v:.3}")),
                r["cost_unit"].as_str().unwrap_or(""),
                r["mean_entropy"].as_f64().unwrap_or(f64::NAN),
                r["epoch_seconds"].as_f64().unwrap_or(0.0),
                ops.join(" ")
            );
            return;
        }
        eprintln!(
            "epoch {}/{}: train loss {:.4} acc {} | valid {} | test {} | {:.0} img/s, {:.0} s",
            r["epoch"],
            r["epochs"],
            r["train_loss"].as_f64().unwrap_or(f64::NAN),
            pct("train_accuracy"),
            pct("valid_accuracy"),
            pct("test_accuracy"),
            r["images_per_s"].as_f64().unwrap_or(0.0),
            r["epoch_seconds"].as_f64().unwrap_or(0.0),
        );
    }
}

pub fn run(gpu: &Gpu, a: Args, group: &Group) -> Result<()> {
    let config = NetConfig::load(&a.net)?;
    let t = Instant::now();
    let mut data = DataSource::open(a.data.as_deref(), a.resolution, a.valid, a.seed)?;
    data.limit_train(a.train_images)?;
    if a.no_augment {
        data.augment = proxyless::data::Augment::None;
    }
    say(
        group,
        format!(
            "data: {} ({} train, {} valid, {} test images, {} classes; loaded in {:.1} s)",
            data.name,
            data.train_indices.len(),
            data.valid_indices.len(),
            data.test.as_ref().map_or(0, |t| t.len()),
            data.classes(),
            t.elapsed().as_secs_f64()
        ),
    );
    check_classes(&config, data.classes(), &a.net)?;
    let net = Network::new(gpu, &config, a.seed)?;
    let cfg = TrainConfig {
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        warmup_epochs: a.warmup_epochs,
        optimizer: train::optimizer_kind(&a.optimizer, a.weight_decay, !a.no_nesterov)?,
        label_smoothing: a.label_smoothing,
        seed: a.seed,
        stop_after: a.stop_after,
        parts: a.parts,
        group: group.clone(),
    };
    let out = RunDir(a.out.clone());
    let mut bar = Bar::new();
    let observer: &mut dyn Observer = if group.is_root() {
        &mut bar
    } else {
        &mut Quiet
    };
    let s = train::train(gpu, &net, &data, &cfg, &out, a.resume, observer)?;
    if !group.is_root() {
        return Ok(());
    }
    let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v));
    println!(
        "done in {:.0} s: valid accuracy {}, test accuracy {}; {:.0} images/s; pool high-water {:.1} MiB; weights in {}",
        s.seconds,
        pct(s.valid_accuracy),
        pct(s.test_accuracy),
        s.images_per_s,
        s.pool_high_water as f64 / (1 << 20) as f64,
        out.weights().display()
    );
    Ok(())
}

/// Prints a line on rank 0 only (the others would repeat it).
pub fn say(group: &Group, line: String) {
    if group.is_root() {
        eprintln!("{line}");
    }
}

pub fn check_classes(config: &NetConfig, classes: usize, net: &std::path::Path) -> Result<()> {
    if config.classes() != classes {
        anyhow::bail!(
            "{}: the classifier has {} outputs but the data has {classes} classes: set the \
             classifier's out_features to {classes}",
            net.display(),
            config.classes()
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct EvalArgs {
    #[arg(long)]
    net: PathBuf,
    /// weights.safetensors written by `train`.
    #[arg(long)]
    weights: PathBuf,
    /// The data to test on: its test split (CIFAR test_batch.bin, DIR/val or DIR/test); an
    /// image folder without one is tested whole. Without it, the synthetic test set.
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 32, allow_hyphen_values = true, value_parser = values::count(8, 4096))]
    resolution: usize,
    #[arg(long, default_value_t = 200, allow_hyphen_values = true, value_parser = values::count(1, 65536))]
    batch: usize,
    /// Seed of the synthetic set (as given to `train`).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    seed: u64,
    /// Input normalisation for weights that carry none (a PyTorch state_dict): data (the
    /// training images' statistics), imagenet, MEAN,STD or m1,m2,m3,s1,s2,s3 on pixels in
    /// [0, 1]. Given, it overrides the weights' own.
    #[arg(long)]
    normalize: Option<String>,
    /// Also write every test image's logits, in file order, as a float32 .npy [images,
    /// classes], to compare with another implementation image by image.
    #[arg(long)]
    logits: Option<PathBuf>,
}

pub fn eval(gpu: &Gpu, a: EvalArgs) -> Result<()> {
    let choice = a
        .normalize
        .as_deref()
        .map(proxyless::data::NormalizeChoice::parse)
        .transpose()?;
    let config = NetConfig::load(&a.net)?;
    let net = Network::new(gpu, &config, 0)?;
    train::load_weights(gpu, &net, &a.weights)?;
    let (data, norm) =
        train::test_set(a.data.as_deref(), a.resolution, a.seed, &a.weights, choice)?;
    check_classes(&config, data.classes(), &a.net)?;
    let t = Instant::now();
    let n = data.len();
    let (loss, acc, logits) = train::evaluate_logits(
        gpu,
        &net,
        &std::sync::Arc::new(data),
        (0..n).collect(),
        norm,
        a.batch,
        a.logits.is_some(),
    )
    .context("evaluation failed")?;
    println!(
        "{n} images: accuracy {:.2}%, loss {loss:.6} ({:.1} s)",
        100.0 * acc,
        t.elapsed().as_secs_f64()
    );
    if let Some(p) = &a.logits {
        train::npy::write_npy_f32(p, &[n, config.classes()], &logits)?;
        println!("logits written to {}", p.display());
    }
    Ok(())
}
