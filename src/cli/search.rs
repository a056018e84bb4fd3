//! `proxyless search`: the architecture search; `proxyless latency`: latency tables.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use proxyless::dist::Group;
use proxyless::gpu::Gpu;
use proxyless::nas::arch::GateMode;
use proxyless::nas::latency::{net_latency, LatencyTable};
use proxyless::nas::measure::{measure_net, measure_table};
use proxyless::nas::space::SearchSpace;
use proxyless::nas::steps::{Costs, LossForm};
use proxyless::nas::supernet::Supernet;
use proxyless::nas::warmup::Warmup;
use proxyless::nn::{NetConfig, Network};
use proxyless::train::search::{search, ArchUpdate, LrSchedule, SearchConfig};
use proxyless::train::{DataSource, Observer, Quiet, RunDir};

use super::train::{say, Bar};
use super::values;

#[derive(clap::Args)]
pub struct Args {
    /// CIFAR-10 binary directory or image folder; without it, a short search on the built-in
    /// synthetic set.
    #[arg(long)]
    data: Option<PathBuf>,
    /// cifar (32 px) or imagenet (224 px).
    #[arg(long, default_value = "cifar")]
    space: String,
    /// Width multiplier (default 1, or 0.25 on the synthetic set to keep it short).
    #[arg(long, allow_hyphen_values = true, value_parser = values::real(0.0, 8.0, true))]
    width: Option<f64>,
    /// What the search trades against accuracy: latency (measured on this adapter, or --lut),
    /// flops, or none.
    #[arg(long, default_value = "latency")]
    objective: String,
    /// Target of the objective, in ms (latency) or millions of multiply-accumulates (flops).
    /// Default: 80% of the expected cost of the initial (uniform) distribution.
    #[arg(long, alias = "target-flops", allow_hyphen_values = true, value_parser = values::real(0.0, 1e9, true))]
    target_latency: Option<f64>,
    /// mul#log (CE * 0.2 (log E / log T)^0.3), add#linear (CE + 0.1 (E - T) / T) or add#hinge
    /// (CE + 0.1 max(0, E - T) / T: no pull below the target, which the other two keep pushing
    /// past; the one to use for a net that spends its latency budget). Default:
    /// mul#log (the official one), or add#linear on the synthetic set: there every candidate
    /// is accurate, and mul#log's pull on latency, which scales with CE, is lost in the noise
    /// of a few dozen architecture steps (benches/NOTES.md, issue 20).
    #[arg(long)]
    loss: Option<String>,
    /// gradient (through binary gates) or reinforce.
    #[arg(long, default_value = "gradient")]
    arch_update: String,
    /// Gate mode of the gradient update: full_v2 or two.
    #[arg(long, default_value = "full_v2")]
    mode: String,
    /// How the supernet is warmed up: grow (one anchor path per layer first, then every
    /// candidate grown from it; residual candidates start as the identity) or official (random
    /// paths from the first step, the reference code's warm-up).
    #[arg(long, default_value = "grow")]
    warmup: String,
    /// With --warmup grow: the part of the warm-up's weight steps spent on the anchor path.
    #[arg(long, default_value_t = 0.5, allow_hyphen_values = true, value_parser = values::real(0.0, 1.0, false))]
    anchor_fraction: f64,
    /// Epochs of weight steps only (alpha frozen).
    #[arg(long, default_value_t = 1, allow_hyphen_values = true, value_parser = values::count(0, values::MAX_COUNT))]
    warmup_epochs: usize,
    /// Joint epochs (weights and architecture; the first has no architecture step).
    #[arg(long, default_value_t = 3, allow_hyphen_values = true, value_parser = values::count(0, values::MAX_COUNT))]
    epochs: usize,
    #[arg(long, default_value_t = 64, allow_hyphen_values = true, value_parser = values::count(1, 65536))]
    batch: usize,
    /// Peak learning rate of the weights (cosine decay).
    #[arg(long, default_value_t = 0.05, allow_hyphen_values = true, value_parser = values::real32(0.0, 10.0, true))]
    lr: f32,
    #[arg(long, default_value_t = 4e-5, allow_hyphen_values = true, value_parser = values::real32(0.0, 1.0, false))]
    weight_decay: f32,
    /// Adam learning rate of the architecture logits (default 1e-3, the official value; 0.1 on
    /// the synthetic set, whose short search has too few architecture steps for 1e-3 to move
    /// the distribution).
    #[arg(long, allow_hyphen_values = true, value_parser = values::real(0.0, 10.0, true))]
    arch_lr: Option<f64>,
    /// An architecture step after every this many weight steps.
    #[arg(long, default_value_t = 5, allow_hyphen_values = true, value_parser = values::count(1, values::MAX_COUNT))]
    arch_every: usize,
    /// REINFORCE: architectures sampled per step, and the latency exponent of the reward.
    #[arg(long, default_value_t = 10, allow_hyphen_values = true, value_parser = values::count(1, 10000))]
    reinforce_samples: usize,
    #[arg(long, default_value_t = 0.1, allow_hyphen_values = true, value_parser = values::real(0.0, 10.0, false))]
    reinforce_exponent: f64,
    /// REINFORCE: valid images scored per update (default: --batch; official: 1000).
    #[arg(long, allow_hyphen_values = true, value_parser = values::count(1, 65536))]
    reinforce_batch: Option<usize>,
    /// REINFORCE: updates per epoch, spread evenly over its weight steps (default: one every
    /// --arch-every weight steps; official: 300).
    #[arg(long, allow_hyphen_values = true, value_parser = values::count(1, values::MAX_COUNT))]
    reinforce_updates: Option<usize>,
    /// The weights' learning rate: cosine (one cosine from --lr over all epochs) or official (a
    /// cosine from --lr to 0 over the warm-up, then one from --lr / 2 over the joint epochs; the
    /// reference run's 0.05 and 0.025).
    #[arg(long, default_value = "cosine")]
    lr_schedule: String,
    /// Weight decay on: weights (conv and linear weights only) or all (every parameter, BN and
    /// biases included: the official search's default).
    #[arg(long, default_value = "weights")]
    decay: String,
    /// Load this latency table instead of measuring one.
    #[arg(long)]
    lut: Option<PathBuf>,
    /// Batch at which latencies are measured.
    #[arg(long, default_value_t = 8, allow_hyphen_values = true, value_parser = values::count(1, 65536))]
    latency_batch: usize,
    /// Held-out images for the architecture steps (default: a tenth, at most 5000).
    #[arg(long, allow_hyphen_values = true, value_parser = values::count(1, values::MAX_COUNT))]
    valid: Option<usize>,
    /// Train on only this many of the training split's images (a random subset, the same for
    /// every run): for runs that must fit a time budget. Default: all (2560 on the synthetic
    /// set, so that the default search takes under 10 minutes on a CPU driver).
    #[arg(long, allow_hyphen_values = true, value_parser = values::count(1, values::MAX_COUNT))]
    train_images: Option<usize>,
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    resume: bool,
    /// Cut every batch into at least this many parts (as `train --parts`): under `mpirun -n K`
    /// the parts are dealt out over the ranks; one process with --parts K computes what K ranks
    /// do.
    #[arg(long, default_value_t = 1, allow_hyphen_values = true, value_parser = values::count(1, 65536))]
    parts: usize,
}

/// The synthetic search's defaults (see `--train-images`, `--arch-lr` and `--loss`).
const SYNTHETIC_TRAIN_IMAGES: usize = 2560;
const SYNTHETIC_ARCH_LR: f64 = 0.1;
const SYNTHETIC_LOSS: &str = "add#linear";

pub const OBJECTIVES: &[&str] = &["latency", "flops", "none"];
pub const UPDATES: &[&str] = &["gradient", "reinforce"];

pub fn run(gpu: &Gpu, a: Args, group: &Group) -> Result<()> {
    let mode = GateMode::parse(&a.mode)?;
    let lr_schedule = LrSchedule::parse(&a.lr_schedule)?;
    let decay_all = match a.decay.as_str() {
        "weights" => false,
        "all" => true,
        other => bail!("unknown --decay {other:?}; valid: weights, all"),
    };
    let warmup = Warmup::parse(&a.warmup, a.anchor_fraction)?;
    // The synthetic set is a demonstration that must stay short.
    let synthetic = a.data.is_none();
    let loss_name = a
        .loss
        .as_deref()
        .unwrap_or(if synthetic { SYNTHETIC_LOSS } else { "mul#log" });
    let form = LossForm::parse(loss_name)?;
    let update = match a.arch_update.as_str() {
        "gradient" => ArchUpdate::Gradient(mode),
        "reinforce" => ArchUpdate::Reinforce {
            samples: a.reinforce_samples,
            exponent: a.reinforce_exponent,
        },
        other => bail!(
            "unknown --arch-update {other:?}; valid: {}",
            UPDATES.join(", ")
        ),
    };
    if matches!(update, ArchUpdate::Gradient(_))
        && (a.reinforce_batch.is_some() || a.reinforce_updates.is_some())
    {
        bail!("--reinforce-batch and --reinforce-updates apply to --arch-update reinforce only");
    }
    if !OBJECTIVES.contains(&a.objective.as_str()) {
        bail!(
            "unknown --objective {:?}; valid: {}",
            a.objective,
            OBJECTIVES.join(", ")
        );
    }
    let width = a.width.unwrap_or(if a.data.is_none() { 0.25 } else { 1.0 });
    let probe = SearchSpace::new(&a.space, width, 10)?;
    let t = Instant::now();
    let mut data = DataSource::open(a.data.as_deref(), probe.resolution, a.valid, a.seed)?;
    let train_images = a
        .train_images
        .or(synthetic.then_some(SYNTHETIC_TRAIN_IMAGES));
    let arch_lr = a
        .arch_lr
        .unwrap_or(if synthetic { SYNTHETIC_ARCH_LR } else { 1e-3 });
    data.limit_train(train_images)?;
    let space = SearchSpace::new(&a.space, width, data.classes())?;
    say(group, format!(
        "data: {} ({} train, {} valid images, {} classes; {:.1} s); space {} at width {width}: {} mixed layers",
        data.name,
        data.train_indices.len(),
        data.valid_indices.len(),
        data.classes(),
        t.elapsed().as_secs_f64(),
        space.name,
        space.layers.len()
    ));
    let out = RunDir(a.out.clone());
    std::fs::create_dir_all(&out.0)
        .with_context(|| format!("cannot create output directory {}", out.0.display()))?;
    let costs = match a.objective.as_str() {
        "none" => None,
        "flops" => {
            let (fixed, per) = space.macs();
            Some(with_target(fixed, per, a.target_latency, form, "MMAC")?)
        }
        _ => {
            let table = match &a.lut {
                Some(p) => LatencyTable::load(p)?,
                // The table the run measured at its start: measuring again would bring new
                // noise and a new default target.
                None if a.resume => {
                    let path = out.0.join("latency.yaml");
                    LatencyTable::load(&path).with_context(|| {
                        format!(
                            "--resume reloads the latency table this search measured, {}; pass --lut FILE for another",
                            path.display()
                        )
                    })?
                }
                // Rank 0 measures; the others get its numbers below.
                None if !group.is_root() => LatencyTable::default(),
                None => {
                    let path = out.0.join("latency.yaml");
                    let t = latency_table(gpu, &space, a.latency_batch)?;
                    t.save(&path)?;
                    eprintln!("latency table ({}) written to {}", t.timing, path.display());
                    // The run goes on with the table as written (its numbers rounded to the
                    // file's digits), so that a resumed run, or one given --lut with this file,
                    // sees the same latencies to the bit.
                    LatencyTable::load(&path)?
                }
            };
            let (fixed, per) = shared_costs(group, &table, &space)?;
            Some(with_target(fixed, per, a.target_latency, form, "ms")?)
        }
    };
    if let Some(c) = &costs {
        say(
            group,
            format!(
                "objective {}: target {:.3} {} (cheapest net {:.3}, uniform expectation {:.3})",
                a.objective,
                c.target,
                c.unit,
                c.cheapest().1,
                uniform_expectation(c)
            ),
        );
    }
    let net = Supernet::new(gpu, &space, a.seed)?;
    let flags = vec![
        ("space".to_string(), a.space.clone()),
        ("width".to_string(), width.to_string()),
        ("objective".to_string(), a.objective.clone()),
        ("arch-update".to_string(), a.arch_update.clone()),
        ("mode".to_string(), a.mode.clone()),
        ("seed".to_string(), a.seed.to_string()),
        ("warmup".to_string(), warmup.describe()),
        ("batch".to_string(), a.batch.to_string()),
        (
            "train-images".to_string(),
            train_images.map_or("all".into(), |n| n.to_string()),
        ),
        ("epochs".to_string(), a.epochs.to_string()),
        ("warmup-epochs".to_string(), a.warmup_epochs.to_string()),
        ("lr".to_string(), a.lr.to_string()),
        ("weight-decay".to_string(), a.weight_decay.to_string()),
        ("arch-lr".to_string(), arch_lr.to_string()),
        ("arch-every".to_string(), a.arch_every.to_string()),
        ("loss".to_string(), loss_name.to_string()),
        ("valid".to_string(), data.valid_indices.len().to_string()),
        (
            "reinforce-samples".to_string(),
            a.reinforce_samples.to_string(),
        ),
        (
            "reinforce-exponent".to_string(),
            a.reinforce_exponent.to_string(),
        ),
        ("latency-batch".to_string(), a.latency_batch.to_string()),
        (
            "reinforce-batch".to_string(),
            a.reinforce_batch
                .map_or("default".into(), |n| n.to_string()),
        ),
        (
            "reinforce-updates".to_string(),
            a.reinforce_updates
                .map_or("default".into(), |n| n.to_string()),
        ),
        ("lr-schedule".to_string(), a.lr_schedule.clone()),
        ("decay".to_string(), a.decay.clone()),
        (
            "target-latency".to_string(),
            costs
                .as_ref()
                .map_or("none".into(), |c| format!("{:?}", c.target)),
        ),
        // The table's content, not its path: a run's costs are what it searched against.
        (
            "lut".to_string(),
            costs.as_ref().map_or("none".into(), |c| {
                format!(
                    "table {:016x}",
                    super::digest(&format!("{:?} {:?}", c.fixed, c.per_candidate))
                )
            }),
        ),
    ];
    let cfg = SearchConfig {
        warmup_epochs: a.warmup_epochs,
        warmup,
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        weight_decay: a.weight_decay,
        label_smoothing: 0.1,
        arch_lr,
        arch_every: a.arch_every,
        update,
        costs: costs.clone(),
        seed: a.seed,
        flags,
        lr_schedule,
        decay_all,
        reinforce_batch: a.reinforce_batch,
        reinforce_updates: a.reinforce_updates,
        parts: a.parts,
        group: group.clone(),
    };
    let mut bar = Bar::new();
    let observer: &mut dyn Observer = if group.is_root() {
        &mut bar
    } else {
        &mut Quiet
    };
    let r = search(gpu, &net, &data, &cfg, &out, a.resume, observer)?;
    if !group.is_root() {
        return Ok(());
    }
    let config = space.derive(&r.choice)?;
    let names = space.op_names(&r.choice);
    let mut summary = serde_json::json!({
        "choice": names,
        "valid_accuracy": r.valid_accuracy,
        "epoch_seconds": r.epoch_seconds,
    });
    if let Some(c) = &costs {
        summary["expected_cost"] = c.of(&r.choice).into();
        summary["cost_unit"] = c.unit.into();
        summary["target"] = c.target.into();
    }
    if a.objective == "latency" {
        let derived = Network::new(gpu, &config, 0)?;
        let measured = measure_net(gpu, &derived, a.latency_batch, space.resolution)?;
        summary["measured_ms"] = measured.into();
        summary["latency_batch"] = a.latency_batch.into();
        summary["latency_timing"] = proxyless::nas::measure::timing_source(gpu).into();
        summary["adapter"] = gpu.adapter_name().into();
    }
    proxyless::nn::params::write_atomic(
        &out.0.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    println!("derived net: {}", names.join(" "));
    println!(
        "valid accuracy {:.2}%; {}; written to {}",
        100.0 * r.valid_accuracy,
        match (&costs, summary.get("measured_ms")) {
            (Some(c), Some(m)) => format!(
                "expected latency {:.3} ms, measured {:.3} ms",
                c.of(&r.choice),
                m.as_f64().unwrap_or(f64::NAN)
            ),
            (Some(c), None) => format!("expected {:.3} {}", c.of(&r.choice), c.unit),
            _ => "no cost objective".into(),
        },
        out.0.display()
    );
    Ok(())
}

/// The table's fixed and per-candidate latencies, rank 0's on every rank: each rank may have
/// read its own copy of a file, and only rank 0 measures.
fn shared_costs(
    group: &Group,
    table: &LatencyTable,
    space: &SearchSpace,
) -> Result<(f64, Vec<Vec<f64>>)> {
    if group.ranks() == 1 {
        return Ok((table.fixed(space)?, table.per_candidate(space)?));
    }
    let (fixed, per) = if group.is_root() {
        (table.fixed(space)?, table.per_candidate(space)?)
    } else {
        let per = space
            .layers
            .iter()
            .map(|l| vec![0.0; l.candidates.len()])
            .collect();
        (0.0, per)
    };
    let mut flat: Vec<f64> = std::iter::once(fixed)
        .chain(per.iter().flatten().copied())
        .collect();
    group.broadcast_f64(&mut flat)?;
    let mut values = flat[1..].iter();
    let per = per
        .iter()
        .map(|l| {
            l.iter()
                .map(|_| values.next().copied().unwrap_or(0.0))
                .collect()
        })
        .collect();
    Ok((flat[0], per))
}

fn uniform_expectation(c: &Costs) -> f64 {
    let probs: Vec<Vec<f64>> = c
        .per_candidate
        .iter()
        .map(|l| vec![1.0 / l.len() as f64; l.len()])
        .collect();
    c.expected(&probs).0
}

fn with_target(
    fixed: f64,
    per: Vec<Vec<f64>>,
    target: Option<f64>,
    form: LossForm,
    unit: &'static str,
) -> Result<Costs> {
    let mut c = Costs {
        fixed,
        per_candidate: per,
        target: 0.0,
        form,
        unit,
    };
    let cheapest = c.cheapest().1;
    c.target = match target {
        Some(t) if t < cheapest => bail!(
            "the target {t} {unit} is below the smallest net this space can reach ({cheapest:.4} {unit}): raise it"
        ),
        Some(t) => t,
        None => (0.8 * uniform_expectation(&c)).max(cheapest),
    };
    Ok(c)
}

/// Measures a table for `space`, with a progress line.
fn latency_table(gpu: &Gpu, space: &SearchSpace, batch: usize) -> Result<LatencyTable> {
    let t = Instant::now();
    let table = measure_table(gpu, space, batch, |done, total| {
        eprint!("\rmeasuring latencies: {done}/{total}");
    })?;
    eprintln!(" ({:.0} s)", t.elapsed().as_secs_f64());
    Ok(table)
}

#[derive(clap::Args)]
pub struct LatencyArgs {
    /// Measure every op of this space: cifar or imagenet.
    #[arg(long)]
    space: Option<String>,
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true, value_parser = values::real(0.0, 8.0, true))]
    width: f64,
    #[arg(long, default_value_t = 10, allow_hyphen_values = true, value_parser = values::count(1, 100000))]
    classes: usize,
    /// Batch of the measurements.
    #[arg(long, default_value_t = 8, allow_hyphen_values = true, value_parser = values::count(1, 65536))]
    batch: usize,
    /// Where to write the measured table (YAML, the official key format).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A table to read instead (e.g. ../shared/data/official/mobile_trim.yaml).
    #[arg(long)]
    lut: Option<PathBuf>,
    /// With --lut: print the table-predicted latency of this net (repeat --net for several).
    #[arg(long)]
    net: Vec<PathBuf>,
    /// Also time each whole net on this adapter.
    #[arg(long)]
    measure: bool,
    /// With --measure: rounds over all the nets in turn, so that a slow spell of a shared
    /// machine hits every net alike; each net's figure is the median over the rounds.
    #[arg(long, default_value_t = 1, allow_hyphen_values = true, value_parser = values::count(1, 10000))]
    rounds: usize,
    /// Input resolution of --net (default: 224 for a stem of stride 2, else 32).
    #[arg(long, allow_hyphen_values = true, value_parser = values::count(8, 4096))]
    resolution: Option<usize>,
}

pub fn latency(gpu: &Gpu, a: LatencyArgs) -> Result<()> {
    match (&a.space, &a.lut) {
        (Some(space), None) => {
            let out = a
                .out
                .as_ref()
                .context("--out FILE.yaml is needed to write the measured table")?;
            let space = SearchSpace::new(space, a.width, a.classes)?;
            let table = latency_table(gpu, &space, a.batch)?;
            table.save(out)?;
            println!(
                "{} entries measured at batch {} on {} ({}): {}",
                table.entries.len(),
                a.batch,
                table.adapter,
                table.timing,
                out.display()
            );
            Ok(())
        }
        (None, Some(lut)) => {
            let table = LatencyTable::load(lut)?;
            if a.net.is_empty() {
                bail!("--lut needs --net NET.config to predict a latency");
            }
            if a.rounds == 0 {
                bail!("--rounds must be at least 1");
            }
            let mut nets = Vec::new();
            for path in &a.net {
                let config = NetConfig::load(path)?;
                let res = a
                    .resolution
                    .unwrap_or(if config.first_conv.stride == 2 { 224 } else { 32 });
                let predicted = net_latency(&table, &config, res).with_context(|| {
                    format!("{}: a key {} needs is missing", lut.display(), path.display())
                })?;
                println!("{}: predicted {predicted:.3} ms", path.display());
                nets.push((path, config, res));
            }
            if !a.measure {
                return Ok(());
            }
            let built = nets
                .iter()
                .map(|(_, c, _)| Network::new(gpu, c, 0))
                .collect::<Result<Vec<_>>>()?;
            let mut times = vec![Vec::new(); nets.len()];
            for _ in 0..a.rounds {
                for ((net, (_, _, res)), t) in built.iter().zip(&nets).zip(&mut times) {
                    t.push(measure_net(gpu, net, a.batch, *res)?);
                }
            }
            for ((path, _, _), mut t) in nets.iter().zip(times) {
                t.sort_by(f64::total_cmp);
                println!(
                    "{}: measured on {}: {:.3} ms at batch {} (median of {} rounds, {:.3} to {:.3})",
                    path.display(),
                    gpu.adapter_name(),
                    t[t.len() / 2],
                    a.batch,
                    t.len(),
                    t[0],
                    t[t.len() - 1]
                );
            }
            Ok(())
        }
        _ => bail!("give either --space S --out FILE.yaml (measure) or --lut FILE --net NET.config (predict)"),
    }
}
