//! `proxyless bench`: time workloads of shared/bench/WORKLOADS.md.

use anyhow::Result;

use super::values;
use proxyless::gpu::Gpu;
use proxyless::workloads::{describe, run as run_workload, WORKLOADS};

#[derive(clap::Args)]
pub struct Args {
    /// Workload to time (default: all of pw, dw5, dw3s2).
    #[arg(long)]
    workload: Option<String>,
    /// One JSON object per line: {"workload", "median_ms", "gflops", "adapter"}.
    #[arg(long)]
    json: bool,
    /// Timed repetitions (after 3 warm-ups); the median is reported.
    #[arg(long, default_value_t = 10, allow_hyphen_values = true, value_parser = values::count(1, 100000))]
    reps: usize,
}

pub fn run(gpu: &Gpu, args: Args) -> Result<()> {
    let names: Vec<&str> = match &args.workload {
        Some(w) => vec![w.as_str()],
        None => WORKLOADS.to_vec(),
    };
    for name in names {
        if name == "memory" {
            let rs = proxyless::workloads::memory::run(gpu, "cifar", 1.0, 32)?;
            let standalone = rs[0].peak_bytes as f64;
            for r in &rs {
                if args.json {
                    println!("{}", serde_json::to_string(r)?);
                } else {
                    println!(
                        "memory {:<11} peak {:>8.1} MiB  weights+grads+state {:>7.1} MiB  ({:.2}x standalone)",
                        r.mode,
                        r.peak_bytes as f64 / (1u64 << 20) as f64,
                        r.weight_bytes as f64 / (1u64 << 20) as f64,
                        r.peak_bytes as f64 / standalone
                    );
                }
            }
            continue;
        }
        let r = run_workload(gpu, name, args.reps.max(1))?;
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!("{}", describe(gpu, &r));
        }
    }
    Ok(())
}
