//! What data parallelism costs a step: the gradient exchange of `dist::Group::sum_tensors`
//! (pack on the device and read to the host, all-reduce, write back and unpack), timed per
//! stage, for the gradients of three nets; and, run alone, one training step of each, the
//! compute the exchange is weighed against (docs/SCALING.md).
//!
//! `mpirun -n K target/release/examples/exchange_time [REPS]` (built with `--features mpi`):
//! the exchange on K ranks, medians over REPS (default 20) after 3 warm-ups.
//! `target/release/examples/exchange_time [REPS]` alone: the training steps.
use anyhow::Result;

use proxyless::gpu::{Gpu, GpuOptions, Tensor};
use proxyless::nas::space::SearchSpace;
use proxyless::nn::optim::{Optimizer, OptimizerKind};
use proxyless::nn::{NetConfig, Network};

/// (name, net, batch of the timed step, resolution).
fn nets() -> Result<Vec<(String, NetConfig, usize, usize)>> {
    let mut v = vec![(
        "cifar-mb6k5".to_string(),
        NetConfig::parse(include_str!("../../data/nets/cifar-mb6k5.config"))?,
        32,
        32,
    )];
    for (space, batch) in [("cifar", 32), ("imagenet", 8)] {
        let s = SearchSpace::new(space, 1.0, if space == "cifar" { 10 } else { 1000 })?;
        // A search step's gradient is its path's: from the smallest path (3x3_MBConv3,
        // candidate 0, in every mixed layer) to the largest (7x7_MBConv6, candidate 5).
        for (k, op) in [(0, "3x3_MBConv3"), (5, "7x7_MBConv6")] {
            v.push((
                format!("{space} space, width 1.0, every layer {op}"),
                s.derive(&vec![k; s.layers.len()])?,
                batch,
                s.resolution,
            ));
        }
    }
    Ok(v)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    if let Some(n) = proxyless::gpu::cpu_driver_threads() {
        std::env::set_var("LP_NUM_THREADS", n);
    }
    let reps: usize = std::env::args().nth(1).map_or(Ok(20), |s| s.parse())?;
    #[cfg(feature = "mpi")]
    let (group, local) = proxyless::dist::from_mpi()?;
    #[cfg(not(feature = "mpi"))]
    let (group, local) = (proxyless::dist::Group::solo(), 0);
    let gpu = Gpu::new(&GpuOptions {
        nth_best: local,
        ..Default::default()
    })?;
    if group.is_root() {
        println!("adapter {}, {} ranks", gpu.adapter_name(), group.ranks());
    }
    for (name, config, batch, resolution) in nets()? {
        let net = Network::new(&gpu, &config, 1)?;
        let grads: Vec<&Tensor> = net
            .params
            .params
            .iter()
            .filter(|p| p.trainable())
            .map(|p| &*p.value)
            .collect();
        let floats: usize = grads.iter().map(|t| t.numel()).sum();
        if group.ranks() == 1 {
            step_time(&gpu, &net, &name, floats, batch, resolution, reps)?;
            continue;
        }
        let mut stages: [Vec<f64>; 4] = Default::default();
        for rep in 0..reps + 3 {
            group.sum_tensors(&gpu, &grads)?;
            gpu.sync()?;
            let s = group.take_stats();
            if rep >= 3 {
                for (v, d) in stages
                    .iter_mut()
                    .zip([s.to_host, s.wait, s.reduce, s.to_device])
                {
                    v.push(d.as_secs_f64() * 1e3);
                }
            }
        }
        let [to_host, wait, reduce, to_device] = stages.map(median);
        if group.is_root() {
            println!(
                "{name}: {} tensors, {floats} floats ({:.2} MB); per exchange, ms: to host {to_host:.3}, wait {wait:.3}, all-reduce {reduce:.3}, to device {to_device:.3}; all-reduce {:.2} GB/s of gradient",
                grads.len(),
                floats as f64 * 4e-6,
                floats as f64 * 4e-6 / reduce,
            );
        }
    }
    Ok(())
}

/// One SGD step of `net` at `batch` (median of `reps` after 3 warm-ups, device synchronised).
fn step_time(
    gpu: &Gpu,
    net: &Network,
    name: &str,
    floats: usize,
    batch: usize,
    resolution: usize,
    reps: usize,
) -> Result<()> {
    let mut opt = Optimizer::new(OptimizerKind::nesterov(4e-5), &net.params);
    let pixels: Vec<f32> = (0..batch * resolution * resolution * 3)
        .map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0)
        .collect();
    let classes = net.config.classes() as u32;
    let labels: Vec<u32> = (0..batch as u32).map(|i| (i * 7) % classes).collect();
    let labels = gpu.upload(&labels, &[batch])?;
    let t = gpu.time_median(3, reps, || {
        let x = gpu.upload(&pixels, &[batch, resolution, resolution, 3])?;
        proxyless::train::train_step(gpu, net, &mut opt, x, &labels, 0.01, 0.0, 0)?;
        Ok(())
    })?;
    println!(
        "{name}: {floats} gradient floats ({:.2} MB); step at batch {batch}: {:.1} ms",
        floats as f64 * 4e-6,
        t.as_secs_f64() * 1e3
    );
    Ok(())
}
