//! A search run from Rust: the `cifar` space at width 0.25 on a small synthetic set, latency
//! costs from a table measured here, one warm-up epoch and three joint ones, then the derived
//! net and its predicted latency, as `proxyless search` does in short.
//! `cargo run --release --example run_search`.
use anyhow::Result;
use proxyless::gpu::{Gpu, GpuOptions};
use proxyless::nas::arch::GateMode;
use proxyless::nas::measure::measure_table;
use proxyless::nas::space::SearchSpace;
use proxyless::nas::steps::{Costs, LossForm};
use proxyless::nas::supernet::Supernet;
use proxyless::nas::warmup::Warmup;
use proxyless::train::search::{search, ArchUpdate, LrSchedule, SearchConfig};
use proxyless::train::{DataSource, Quiet, RunDir};

fn main() -> Result<()> {
    // lavapipe's threads, before any other thread starts (`gpu::cpu_driver_threads`).
    if let Some(n) = proxyless::gpu::cpu_driver_threads() {
        std::env::set_var("LP_NUM_THREADS", n);
    }
    let gpu = Gpu::new(&GpuOptions::default())?;
    let space = SearchSpace::new("cifar", 0.25, 10)?;
    let mut data = DataSource::open(None, space.resolution, Some(256), 0)?;
    data.limit_train(Some(1024))?;
    // Every candidate timed on this adapter at batch 8.
    let table = measure_table(&gpu, &space, 8, |_, _| {})?;
    let mut costs = Costs {
        fixed: table.fixed(&space)?,
        per_candidate: table.per_candidate(&space)?,
        target: 0.0,
        form: LossForm::parse("add#hinge")?,
        unit: "ms",
    };
    // A target a fifth above the cheapest net.
    costs.target = costs.cheapest().1 * 1.2;
    let cfg = SearchConfig {
        warmup_epochs: 1,
        warmup: Warmup::parse("grow", 0.5)?,
        epochs: 3,
        batch: 64,
        lr: 0.05,
        weight_decay: 4e-5,
        label_smoothing: 0.1,
        arch_lr: 0.1,
        arch_every: 2,
        update: ArchUpdate::Gradient(GateMode::FullV2),
        costs: Some(costs.clone()),
        seed: 0,
        flags: vec![],
        lr_schedule: LrSchedule::Cosine,
        decay_all: false,
        reinforce_batch: None,
        reinforce_updates: None,
        parts: 1,
        group: Default::default(),
    };
    let net = Supernet::new(&gpu, &space, 0)?;
    let out = RunDir(std::env::temp_dir().join("proxyless-example-search"));
    let r = search(&gpu, &net, &data, &cfg, &out, false, &mut Quiet)?;
    let names = space.op_names(&r.choice);
    println!("derived net: {}", names.join(" "));
    println!(
        "valid accuracy {:.2}%, predicted latency {:.2} ms (target {:.2}); plots and net.config in {}",
        100.0 * r.valid_accuracy,
        costs.of(&r.choice),
        costs.target,
        out.0.display()
    );
    Ok(())
}
