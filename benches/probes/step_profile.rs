//! Where a training step's time goes: every op timed alone (device synchronised around it),
//! summed over a step of a net config, with the cores it kept busy (CPU time of all threads
//! over wall time), then the unprofiled step for comparison.
//! `cargo run --release --example step_profile -- data/nets/cifar-small.config 64 [res]`

use anyhow::{Context, Result};
use proxyless::autograd::Tape;
use proxyless::gpu::{Gpu, GpuOptions};
use proxyless::nn::optim::{Optimizer, OptimizerKind};
use proxyless::nn::{NetConfig, Network};
use proxyless::ops::loss;

fn main() -> Result<()> {
    // lavapipe's threads, before any other thread starts (`gpu::cpu_driver_threads`).
    if let Some(n) = proxyless::gpu::cpu_driver_threads() {
        std::env::set_var("LP_NUM_THREADS", n);
    }
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .context("usage: step_profile NET.config [BATCH] [RES]")?;
    let batch: usize = args.get(2).map_or(Ok(64), |s| s.parse())?;
    let res: usize = args.get(3).map_or(Ok(32), |s| s.parse())?;
    let gpu = Gpu::new(&GpuOptions::default())?;
    let net = Network::new(&gpu, &NetConfig::load(std::path::Path::new(path))?, 1)?;
    let mut opt = Optimizer::new(OptimizerKind::nesterov(4e-5), &net.params);
    let xs: Vec<f32> = (0..batch * res * res * 3)
        .map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0)
        .collect();
    let ys: Vec<u32> = (0..batch).map(|i| (i % 10) as u32).collect();
    let labels = gpu.upload(&ys, &[batch])?;
    let mut step = |profile: bool| -> Result<Vec<(String, f64, f64, usize)>> {
        let tape = Tape::new(&gpu, 1);
        if profile {
            tape.enable_profile();
        }
        let x = tape.constant(gpu.upload(&xs, &[batch, res, res, 3])?);
        let logits = net.forward(&tape, &x, true)?;
        let (_l, dl) = loss::softmax_cross_entropy(&gpu, logits.value(), &labels, 0.1)?;
        let grads = tape.backward(&logits, dl)?;
        opt.step(&gpu, &net.params, &grads, 0.01)?;
        gpu.sync()?;
        Ok(tape.profile_report())
    };
    step(false)?;
    let mut report = step(true)?;
    report.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = report.iter().map(|r| r.1).sum();
    let total_cpu: f64 = report.iter().map(|r| r.2).sum();
    // cores = CPU time of all threads over wall time: how many cores the op kept busy.
    for (name, s, cpu, n) in &report {
        println!(
            "{name:<28} {:>8.2} ms {:>4} calls {:>5.1}%  cores {:.2}",
            s * 1e3,
            n,
            100.0 * s / total,
            cpu / s
        );
    }
    println!(
        "ops: {:.1} ms wall, {:.1} ms CPU ({:.2} cores)",
        total * 1e3,
        total_cpu * 1e3,
        total_cpu / total
    );
    // The same step again with every dispatch and texture copy timed alone, by kernel
    // variant (STEP_KERNELS=N prints the N slowest; 0 skips this part).
    let top: usize = std::env::var("STEP_KERNELS").map_or(Ok(30), |s| s.parse())?;
    if top > 0 {
        gpu.profile_kernels();
        step(false)?;
        let kernels = gpu.kernel_profile_report();
        let ktotal: f64 = kernels.iter().map(|k| k.1).sum();
        for (name, s, n) in kernels.iter().take(top) {
            let short: String = name.chars().take(100).collect();
            println!(
                "{:>8.2} ms {:>4} calls {:>5.1}%  {short}",
                s * 1e3,
                n,
                100.0 * s / ktotal
            );
        }
        println!(
            "kernels: {:.1} ms in {} dispatches and copies",
            ktotal * 1e3,
            kernels.iter().map(|k| k.2).sum::<usize>()
        );
    }
    let t = gpu.time_median(2, 5, || step(false).map(|_| ()))?;
    println!(
        "profiled ops sum {:.1} ms; plain step median {:.1} ms = {:.1} img/s",
        total * 1e3,
        t.as_secs_f64() * 1e3,
        batch as f64 / t.as_secs_f64()
    );
    Ok(())
}
