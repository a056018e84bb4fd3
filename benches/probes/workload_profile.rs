//! Where a benchmark workload's time goes, kernel by kernel: runs `proxyless bench`'s workload
//! (pw, dw5, dw3s2, mbconv, step) with every dispatch and texture copy timed alone (device
//! synchronised around each), and prints the kernels per run of the workload, slowest first.
//! The synchronisation adds about 0.1-0.3 ms a dispatch, so small kernels read high.
//! `cargo run --release --example workload_profile -- mbconv [REPS]`
use anyhow::{Context, Result};
use proxyless::gpu::{Gpu, GpuOptions};

fn main() -> Result<()> {
    // lavapipe's threads, before any other thread starts (`gpu::cpu_driver_threads`).
    if let Some(n) = proxyless::gpu::cpu_driver_threads() {
        std::env::set_var("LP_NUM_THREADS", n);
    }
    let args: Vec<String> = std::env::args().collect();
    let workload = args
        .get(1)
        .context("usage: workload_profile WORKLOAD [REPS]")?;
    let reps: usize = args.get(2).map_or(Ok(5), |s| s.parse())?;
    let gpu = Gpu::new(&GpuOptions::default())?;
    let plain = proxyless::workloads::run(&gpu, workload, reps)?;
    gpu.profile_kernels();
    proxyless::workloads::run(&gpu, workload, reps)?;
    let rows = gpu.kernel_profile_report();
    // workloads::run makes warm-up and measuring runs: scale the sums to one run by the calls of
    // the most frequent kernel is fragile, so count runs from the benchmark's own structure.
    let runs = runs_of(workload, reps) as f64;
    let total: f64 = rows.iter().map(|r| r.1).sum::<f64>() / runs;
    for (name, s, calls) in rows {
        let short: String = name.chars().take(90).collect();
        println!(
            "{:9.2} ms {:6.1} calls {:5.1}%  {short}",
            s / runs * 1e3,
            calls as f64 / runs,
            100.0 * s / runs / total
        );
    }
    println!(
        "kernels {:.1} ms a run (profiled); unprofiled median {:.1} ms",
        total * 1e3,
        plain.median_ms
    );
    Ok(())
}

/// Runs of the workload's body in one `workloads::run`: 3 warm-ups and `reps` timed, plus the
/// two of the memory high-water measurement for mbconv and step.
fn runs_of(workload: &str, reps: usize) -> usize {
    3 + reps.max(1)
        + if matches!(workload, "mbconv" | "step") {
            2
        } else {
            0
        }
}
