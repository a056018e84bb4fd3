//! `proxyless bench`: time workloads of shared/bench/WORKLOADS.md.

use anyhow::Result;

use proxyless::bench::{describe, run as run_workload, WORKLOADS};
use proxyless::gpu::Gpu;

#[derive(clap::Args)]
pub struct Args {
    /// Workload to time (default: all of pw, dw5, dw3s2).
    #[arg(long)]
    workload: Option<String>,
    /// One JSON object per line: {"workload", "median_ms", "gflops", "adapter"}.
    #[arg(long)]
    json: bool,
    /// Timed repetitions (after 3 warm-ups); the median is reported.
    #[arg(long, default_value_t = 10)]
    reps: usize,
}

pub fn run(gpu: &Gpu, args: Args) -> Result<()> {
    let names: Vec<&str> = match &args.workload {
        Some(w) => vec![w.as_str()],
        None => WORKLOADS.to_vec(),
    };
    for name in names {
        let r = run_workload(gpu, name, args.reps.max(1))?;
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!("{}", describe(gpu, &r));
        }
    }
    Ok(())
}
