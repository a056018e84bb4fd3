//! Does the supernet learn the synthetic set in warm-up? Weight steps on 2000 synthetic images
//! (batch 32) with a path that is fixed (`fixedN`: candidate N everywhere), alternating
//! (`alternate`: candidates 0 and 3 on alternate steps), uniformly random over the six MBConvs
//! (`mbconv`), random on the residual layers only (`resonly`), two fixed mixed paths in turn
//! (`twopaths`), switching only layer 10 (`one`) or drawn from the architecture distribution (`random`, Zero included).
//! `cargo run --release --example supernet_probe -- MODE [LR] [WIDTH] [EPOCHS]`; `TRIM=1`
//! returns every pooled buffer to the device after each step (fresh memory every step).
use anyhow::Result;
use proxyless::data::{synthetic, Augment, Loader, Normalize};
use proxyless::gpu::{Gpu, GpuOptions};
use proxyless::nas::arch::ArchParams;
use proxyless::nas::space::SearchSpace;
use proxyless::nas::steps::weight_step;
use proxyless::nas::supernet::Supernet;
use proxyless::nn::optim::{Optimizer, OptimizerKind};
use proxyless::nn::params::seeded;
use std::sync::Arc;

fn main() -> Result<()> {
    // lavapipe's threads, before any other thread starts (`gpu::cpu_driver_threads`).
    if let Some(n) = proxyless::gpu::cpu_driver_threads() {
        std::env::set_var("LP_NUM_THREADS", n);
    }
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("fixed3", String::as_str);
    let random = mode == "random";
    let lr: f32 = args.get(2).map_or(Ok(0.05), |s| s.parse())?;
    let width: f64 = args.get(3).map_or(Ok(0.25), |s| s.parse())?;
    let gpu = Gpu::new(&GpuOptions::default())?;
    let space = SearchSpace::new("cifar", width, 10)?;
    let net = Supernet::new(&gpu, &space, 0)?;
    if std::env::var_os("ZERO_GAMMA").is_some() {
        // Residual candidates start as the identity: their last BN scale is 0.
        for l in net.layers.iter().filter(|l| l.residual) {
            for op in l.ops.iter().flatten() {
                let bn = op.project.bn.as_ref().expect("project has BN");
                let g = &net.params.get(bn.gamma).value;
                gpu.write(&g.buf, &vec![0f32; g.numel()])?;
            }
        }
    }
    let mut opt = Optimizer::new(OptimizerKind::nesterov(4e-5), &net.params);
    // `CIFAR=DIR`: CIFAR-10's first 10,000 training images (data_batch_1), as the official
    // peer's warmup_probe.py; else 2000 synthetic images.
    let data = Arc::new(match std::env::var_os("CIFAR") {
        Some(dir) => {
            let mut d =
                proxyless::data::load_cifar(dir.as_ref(), proxyless::data::CifarSplit::Train)?;
            d.labels.truncate(10_000);
            d.images.truncate(10_000 * d.image_bytes());
            d
        }
        None => synthetic(0, 2000, 32),
    });
    let images = data.len();
    // `STEPS=N`: stop after N steps.
    let max_steps: usize = std::env::var("STEPS").map_or(Ok(usize::MAX), |s| s.parse())?;
    let norm = Normalize::of(&data);
    let arch = ArchParams::new(
        &net.layers.iter().map(|l| l.ops.len()).collect::<Vec<_>>(),
        1e-3,
        &mut seeded(0),
    );
    let mut rng = seeded(1);
    let which: usize = args
        .get(1)
        .and_then(|s| s.strip_prefix("fixed"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let fixed: Vec<usize> = vec![which; 21];
    // `grow:N`: the anchor path (candidate 0, Zero at 1/7 on residual layers) for N steps,
    // then every candidate grown from it and paths drawn from the (uniform) distribution.
    let grow_at: Option<usize> = mode.strip_prefix("grow:").and_then(|s| s.parse().ok());
    let epochs: u64 = args.get(4).map_or(Ok(1), |s| s.parse())?;
    let (mut ls, mut cs, mut n) = (0.0, 0.0, 0);
    let mut i = 0usize;
    for epoch in 0..epochs {
        let loader = Loader::new(
            data.clone(),
            (0..images).collect(),
            32,
            true,
            true,
            Augment::None,
            norm,
            0,
            epoch,
            proxyless::data::Shard::whole(),
        );
        for b in loader {
            let x = gpu.upload(&b.images, &[b.n, 32, 32, 3])?;
            let y = gpu.upload(&b.labels, &[b.n])?;
            if grow_at == Some(i) {
                let r = proxyless::nas::grow::grow_from_anchor(&gpu, &net, &[0; 21])?;
                println!("grown at step {i}: {r:?}");
            }
            let active = if let Some(g) = grow_at {
                use rand::Rng;
                if i < g {
                    (0..21)
                        .map(|l| {
                            if net.layers[l].residual && rng.random_range(0..7) == 6 {
                                6
                            } else {
                                0
                            }
                        })
                        .collect()
                } else {
                    arch.sample(&mut rng)
                }
            } else if random {
                arch.sample(&mut rng)
            } else if mode == "mbconv" {
                use rand::Rng;
                (0..21).map(|_| rng.random_range(0..6)).collect()
            } else if mode == "resonly" {
                // Random MBConv on residual layers; the others fixed to candidate 3.
                use rand::Rng;
                (0..21)
                    .map(|l| {
                        if net.layers[l].residual {
                            rng.random_range(0..6)
                        } else {
                            3
                        }
                    })
                    .collect()
            } else if mode == "twopaths" {
                // Two fixed random paths, alternating.
                let a: Vec<usize> = (0..21).map(|l| (l * 7 + 1) % 6).collect();
                let b: Vec<usize> = (0..21).map(|l| (l * 5 + 4) % 6).collect();
                if i.is_multiple_of(2) {
                    a
                } else {
                    b
                }
            } else if mode == "one" {
                // Only layer 10 switches (between candidates 0 and 3).
                let mut p = vec![3; 21];
                p[10] = if i.is_multiple_of(2) { 0 } else { 3 };
                p
            } else if mode == "alternate" {
                vec![if i.is_multiple_of(2) { 0 } else { 3 }; 21]
            } else {
                fixed.clone()
            };
            // `LR_WARMUP=N`: the learning rate rises linearly over the first N steps.
            let lr_now = match std::env::var("LR_WARMUP")
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
            {
                Some(w) if i < w => lr * (i + 1) as f32 / w as f32,
                _ => lr,
            };
            let (l, c) = weight_step(&gpu, &net, &mut opt, (x, &y), &active, lr_now, 0.1, 0)?;
            if std::env::var_os("TRIM").is_some() {
                gpu.sync()?;
                gpu.trim_pool();
            }
            ls += gpu.read_f32(&l)?[0] as f64;
            cs += gpu.read_f32(&c)?[0] as f64;
            n += b.n;
            if (i + 1).is_multiple_of(20) {
                println!(
                    "step {}: loss {:.3} acc {:.3}",
                    i + 1,
                    ls / 20.0,
                    cs / n as f64
                );
                ls = 0.0;
                cs = 0.0;
                n = 0;
            }
            i += 1;
            if i >= max_steps {
                return Ok(());
            }
        }
    }
    Ok(())
}
