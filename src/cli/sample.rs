//! `proxyless sample`: a random architecture of a space near a given latency (the random-search
//! baseline), written as a net config.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::values;
use proxyless::gpu::GpuOptions;
use proxyless::nas::latency::LatencyTable;
use proxyless::nas::measure::measure_net;
use proxyless::nas::sample::sample_near;
use proxyless::nas::space::SearchSpace;
use proxyless::nas::steps::{Costs, LossForm};
use proxyless::nn::Network;

#[derive(clap::Args)]
pub struct Args {
    /// The space to draw from: cifar or imagenet.
    #[arg(long, default_value = "cifar")]
    space: String,
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true, value_parser = values::real(0.0, 8.0, true))]
    width: f64,
    #[arg(long, default_value_t = 10, allow_hyphen_values = true, value_parser = values::count(1, 100000))]
    classes: usize,
    /// Target latency in ms (of the table's unit and batch).
    #[arg(long, allow_hyphen_values = true, value_parser = values::real(0.0, 1e9, true))]
    latency: f64,
    /// The latency table the latency is predicted from (e.g. a search's latency.yaml).
    #[arg(long)]
    lut: PathBuf,
    /// Relative window around --latency: 0.05 draws a net within +-5%.
    #[arg(long, default_value_t = 0.05, allow_hyphen_values = true, value_parser = values::real(0.0, 1.0, true))]
    tolerance: f64,
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    seed: u64,
    /// Where to write the net config.
    #[arg(long)]
    out: PathBuf,
    /// Also time the drawn net on this adapter, at this batch (the table's batch, usually 8).
    #[arg(long, allow_hyphen_values = true, value_parser = values::count(1, 65536))]
    measure_batch: Option<usize>,
}

pub fn run(opts: &GpuOptions, a: Args) -> Result<()> {
    let space = SearchSpace::new(&a.space, a.width, a.classes)?;
    let table = LatencyTable::load(&a.lut)?;
    let costs = Costs {
        fixed: table
            .fixed(&space)
            .with_context(|| format!("{} does not cover this space", a.lut.display()))?,
        per_candidate: table
            .per_candidate(&space)
            .with_context(|| format!("{} does not cover this space", a.lut.display()))?,
        target: a.latency,
        // Only the costs are used here.
        form: LossForm::AddLinear { l: 0.0 },
        unit: "ms",
    };
    let mut rng = proxyless::nn::params::seeded(a.seed);
    let (choice, predicted) = sample_near(&costs, a.latency, a.tolerance, &mut rng)?;
    let config = space.derive(&choice)?;
    proxyless::nn::params::write_atomic(
        &a.out,
        serde_json::to_string_pretty(&config.to_json())?.as_bytes(),
    )?;
    let names = space.op_names(&choice);
    println!("sampled net: {}", names.join(" "));
    println!(
        "predicted {predicted:.3} ms (target {:.3} ms +-{:.1}%); written to {}",
        a.latency,
        100.0 * a.tolerance,
        a.out.display()
    );
    if let Some(batch) = a.measure_batch {
        let gpu = &super::open(opts)?;
        let net = Network::new(gpu, &config, 0)?;
        let m = measure_net(gpu, &net, batch, space.resolution)?;
        println!(
            "measured on {}: {m:.3} ms at batch {batch}",
            gpu.adapter_name()
        );
    }
    Ok(())
}
