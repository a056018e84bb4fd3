//! What the optimizer step of `proxyless bench --workload step` costs alone: one SGD update
//! (momentum 0.9, Nesterov, wd 4e-5) of every parameter of `cifar-mb6k5`, with random
//! gradients, timed as the median of repeated runs (device synchronised), alternating the
//! per-tensor kernel and the multi-tensor one (`PROXYLESS_SGD=per-tensor|multi`).
//! `cargo run --release --example optim_time -- [REPS] [ROUNDS]`
use anyhow::Result;
use proxyless::autograd::Gradients;

use proxyless::gpu::{Gpu, GpuOptions};
use proxyless::nn::optim::{Optimizer, OptimizerKind};
use proxyless::nn::{NetConfig, Network};

fn main() -> Result<()> {
    // lavapipe's threads, before any other thread starts (`gpu::cpu_driver_threads`).
    if let Some(n) = proxyless::gpu::cpu_driver_threads() {
        std::env::set_var("LP_NUM_THREADS", n);
    }
    let args: Vec<String> = std::env::args().collect();
    let reps: usize = args.get(1).map_or(Ok(50), |s| s.parse())?;
    let rounds: usize = args.get(2).map_or(Ok(3), |s| s.parse())?;
    let gpu = Gpu::new(&GpuOptions::default())?;
    let net = Network::new(
        &gpu,
        &NetConfig::parse(include_str!("../../data/nets/cifar-mb6k5.config"))?,
        2019,
    )?;
    let mut opt = Optimizer::new(OptimizerKind::nesterov(4e-5), &net.params);
    let mut by_param = Vec::new();
    for (i, p) in net.params.params.iter().enumerate() {
        if p.trainable() {
            let g: Vec<f32> = (0..p.numel())
                .map(|j| ((j % 13) as f32 - 6.0) * 1e-3)
                .collect();
            by_param.push((i, gpu.upload(&g, &p.value.shape)?));
        }
    }
    let grads = Gradients { by_param };
    println!("{} tensors", grads.by_param.len());
    for _ in 0..rounds {
        for mode in ["per-tensor", "multi"] {
            proxyless::gpu::set_tuning(proxyless::gpu::Tuning {
                sgd_per_tensor: mode == "per-tensor",
                ..proxyless::gpu::tuning()
            });
            let t = gpu.time_median(3, reps, || opt.step(&gpu, &net.params, &grads, 1e-4))?;
            println!("{mode:>10}: {:.2} ms", t.as_secs_f64() * 1e3);
        }
    }
    Ok(())
}
