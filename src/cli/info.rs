//! `proxyless info`: a net config's layer table, parameter and multiply-accumulate counts.

use std::path::PathBuf;

use anyhow::Result;

use super::values;
use proxyless::gpu::Gpu;
use proxyless::nn::{NetConfig, Network};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    net: PathBuf,
    /// Input resolution (square). Default: 224 for a stem of stride 2 (the ImageNet layout),
    /// else 32.
    #[arg(long, allow_hyphen_values = true, value_parser = values::count(8, 4096))]
    resolution: Option<usize>,
}

pub fn run(gpu: &Gpu, a: Args) -> Result<()> {
    let config = NetConfig::load(&a.net)?;
    let size = a.resolution.unwrap_or(if config.first_conv.stride == 2 {
        224
    } else {
        32
    });
    let net = Network::new(gpu, &config, 0)?;
    let rows = net.layers(size);
    println!("{} at {size}x{size}", a.net.display());
    println!(
        "{:<20} {:<24} {:>14} {:>14} {:>10} {:>12}",
        "layer", "type", "input", "output", "params", "MACs"
    );
    let dims = |d: [usize; 3]| format!("{}x{}x{}", d[0], d[1], d[2]);
    for r in &rows {
        println!(
            "{:<20} {:<24} {:>14} {:>14} {:>10} {:>12}",
            r.name,
            r.kind,
            dims(r.input),
            dims(r.output),
            r.params,
            r.macs
        );
    }
    let params: usize = rows.iter().map(|r| r.params).sum();
    let macs: u64 = rows.iter().map(|r| r.macs).sum();
    println!(
        "total: {params} parameters ({:.2} M), {macs} multiply-accumulates ({:.1} M)",
        params as f64 / 1e6,
        macs as f64 / 1e6
    );
    Ok(())
}
