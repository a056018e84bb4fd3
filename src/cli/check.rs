//! `proxyless check`: every kernel against the f64 CPU reference on the chosen adapter, as a
//! table; exits non-zero when any output is over tolerance.

use anyhow::{bail, Result};

use proxyless::gpu::Gpu;
use proxyless::verify::{families, run_family, TOLERANCE};

#[derive(clap::Args)]
pub struct Args {
    /// Only this kernel family (conv, pointwise, depthwise, batchnorm, ...).
    #[arg(long)]
    family: Option<String>,
    /// Seed of the random inputs (default: from the clock, printed).
    #[arg(long, allow_hyphen_values = true)]
    seed: Option<u64>,
}

pub fn run(gpu: &Gpu, args: Args) -> Result<()> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let names: Vec<&str> = families().iter().map(|f| f.name).collect();
    let chosen: Vec<&str> = match &args.family {
        Some(f) if names.contains(&f.as_str()) => vec![f.as_str()],
        Some(f) => bail!("unknown kernel family {f:?}; valid: {}", names.join(", ")),
        None => names.clone(),
    };
    println!(
        "seed {seed}, tolerance {TOLERANCE:e} (relative, ||out - ref|| / ||ref||), profile {}{}",
        gpu.profile().name(),
        if gpu.cpu_like() {
            " (CPU adapter decisions)"
        } else {
            " (GPU decisions: buffer operands, no aliasing)"
        }
    );
    println!(
        "{:<14} {:<44} {:<8} {:>10}  result",
        "kernel", "shape", "output", "rel error"
    );
    let (mut total, mut failed) = (0, 0);
    for name in chosen {
        // A family that cannot run (a kernel the driver rejects, a device error) is one
        // failure in the table; the other families still run.
        let outcomes = match run_family(gpu, name, seed) {
            Ok(o) => o,
            Err(e) => {
                total += 1;
                failed += 1;
                println!(
                    "{name:<14} {:<44} {:<8} {:>10}  FAIL: {e:#}",
                    "(family did not run)", "-", "-"
                );
                continue;
            }
        };
        for o in outcomes {
            total += 1;
            let verdict = if o.pass() { "pass" } else { "FAIL" };
            if !o.pass() {
                failed += 1;
            }
            println!(
                "{:<14} {:<44} {:<8} {:>10.2e}  {verdict}",
                o.kernel, o.shape, o.output, o.rel_error
            );
        }
    }
    println!("{} passed, {} failed", total - failed, failed);
    if failed > 0 {
        bail!(
            "{failed} of {total} kernel outputs are over tolerance on {}",
            gpu.adapter_name()
        );
    }
    Ok(())
}
