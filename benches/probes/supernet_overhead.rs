//! What the supernet's machinery costs a weight step: the same path trained as a supernet path
//! (every candidate's weights resident, the path chosen per step) and as the derived standalone
//! net, in alternating rounds, median ms per step after warm-up.
//! `cargo run --release --example supernet_overhead -- [WIDTH] [BATCH] [ROUNDS] [NET.config]`:
//! the path is read from a searched `net.config` when given, else drawn at random (seed 0).
use std::time::Instant;

use anyhow::Result;
use proxyless::gpu::{Gpu, GpuOptions};
use proxyless::nas::arch::ArchParams;
use proxyless::nas::space::SearchSpace;
use proxyless::nas::steps::{derive, weight_step};
use proxyless::nas::supernet::Supernet;
use proxyless::nn::config::NetConfig;
use proxyless::nn::optim::{Optimizer, OptimizerKind};
use proxyless::nn::params::seeded;
use proxyless::train::train_step;
use rand::Rng;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    // lavapipe's threads, before any other thread starts (`gpu::cpu_driver_threads`).
    if let Some(n) = proxyless::gpu::cpu_driver_threads() {
        std::env::set_var("LP_NUM_THREADS", n);
    }
    let args: Vec<String> = std::env::args().collect();
    let width: f64 = args.get(1).map_or(Ok(0.5), |s| s.parse())?;
    let batch: usize = args.get(2).map_or(Ok(64), |s| s.parse())?;
    let rounds: usize = args.get(3).map_or(Ok(5), |s| s.parse())?;
    let gpu = Gpu::new(&GpuOptions::default())?;
    let space = SearchSpace::new("cifar", width, 10)?;
    let net = Supernet::new(&gpu, &space, 0)?;
    let mut rng = seeded(0);
    let path: Vec<usize> = match args.get(4) {
        Some(p) => space.choice_of(&NetConfig::load(std::path::Path::new(p))?)?,
        None => (0..space.layers.len())
            .map(|_| rng.random_range(0..6))
            .collect(),
    };
    let mut arch = ArchParams::new(&vec![7; space.layers.len()], 1e-3, &mut rng);
    for (i, l) in net.layers.iter().enumerate() {
        arch.alpha[i] = vec![0.0; l.ops.len()];
        arch.alpha[i][path[i]] = 1.0;
    }
    let alone = derive(&gpu, &net, &arch)?;
    let mut opt_super = Optimizer::new(OptimizerKind::nesterov(4e-5), &net.params);
    let mut opt_alone = Optimizer::new(OptimizerKind::nesterov(4e-5), &alone.params);
    let images: Vec<f32> = (0..batch * 32 * 32 * 3)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let labels: Vec<u32> = (0..batch).map(|_| rng.random_range(0..10)).collect();
    let y = gpu.upload(&labels, &[batch])?;
    let (mut t_super, mut t_alone) = (Vec::new(), Vec::new());
    for round in 0..rounds + 1 {
        for supernet in [true, false] {
            gpu.sync()?;
            let t = Instant::now();
            for _ in 0..3 {
                let x = gpu.upload(&images, &[batch, 32, 32, 3])?;
                if supernet {
                    weight_step(&gpu, &net, &mut opt_super, (x, &y), &path, 0.01, 0.1, 0)?;
                } else {
                    train_step(&gpu, &alone, &mut opt_alone, x, &y, 0.01, 0.1, 0)?;
                }
            }
            gpu.sync()?;
            let ms = t.elapsed().as_secs_f64() * 1e3 / 3.0;
            if round > 0 {
                (if supernet { &mut t_super } else { &mut t_alone }).push(ms);
            }
        }
    }
    let (s, a) = (median(t_super), median(t_alone));
    println!(
        "cifar width {width} batch {batch} on {}: supernet path {s:.1} ms/step, standalone {a:.1} ms/step, ratio {:.3}",
        gpu.adapter_name(),
        s / a
    );
    Ok(())
}
