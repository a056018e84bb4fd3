//! The network workloads: one MBConv block forward + backward, and one SGD step of the fixed
//! net `cifar-mb6k5` (WORKLOADS.md). They run through the autograd tape and the `nn` layers,
//! exactly as training does.

use std::rc::Rc;

use anyhow::Result;
use rand::rngs::StdRng;

use crate::autograd::Tape;
use crate::gpu::Gpu;
use crate::nn::config::MbConvSpec;
use crate::nn::layers::{Builder, Ctx, MbConv};
use crate::nn::optim::{Optimizer, OptimizerKind};
use crate::nn::params::{seeded, ParamStore};
use crate::nn::{NetConfig, Network};
use crate::ops;

use super::{tensor, BenchResult};

/// The pool's high-water mark over one run of `f`, after a first run has warmed the pool.
fn high_water_of_one_run(gpu: &Gpu, mut f: impl FnMut() -> Result<()>) -> Result<u64> {
    f()?;
    gpu.sync()?;
    gpu.reset_high_water();
    f()?;
    gpu.sync()?;
    Ok(gpu.pool_stats().high_water_bytes)
}

/// The fixed network of WORKLOADS.md, in the official format.
pub const CIFAR_MB6K5: &str = include_str!("../../data/nets/cifar-mb6k5.config");

/// x [32,40,16,16]: 1x1 40->240, BN, ReLU6, dw 5x5, BN, ReLU6, 1x1 240->40, BN, + x; BN in
/// training mode; backward from a random dy to dx and every parameter gradient.
pub fn mbconv(gpu: &Gpu, rng: &mut StdRng, reps: usize) -> Result<BenchResult> {
    let mut store = ParamStore::default();
    let mut init = seeded(2019);
    let spec = MbConvSpec {
        in_channels: 40,
        out_channels: 40,
        kernel: 5,
        stride: 1,
        expand_ratio: 6,
        mid_channels: 240,
    };
    let block = MbConv::new(
        &mut Builder {
            gpu,
            rng: &mut init,
            store: &mut store,
        },
        "block",
        &spec,
    )?;
    let x = Rc::new(tensor(gpu, rng, &[32, 16, 16, 40], 1.0)?);
    let dy_host = tensor(gpu, rng, &[32, 16, 16, 40], 1.0)?;
    let x_index = store.params.len();
    let run = || -> Result<()> {
        // In training x and the weights are new every step: no texture copy carries over.
        gpu.mark_written(&[&x]);
        for p in &store.params {
            gpu.mark_written(&[&p.value]);
        }
        let tape = Tape::new(gpu, 0);
        let xv = tape.param(x_index, &x, true);
        let ctx = Ctx {
            tape: &tape,
            params: &store,
            train: true,
            bn_momentum: 0.1,
            bn_eps: 1e-3,
        };
        let y = block.forward(&ctx, &xv)?;
        let y = tape.add(&y, &xv)?;
        let dy = gpu.empty(&dy_host.shape);
        gpu.copy(&dy_host.buf, &dy.buf)?;
        let _grads = tape.backward(&y, dy)?;
        Ok(())
    };
    let high_water = high_water_of_one_run(gpu, run)?;
    let t = gpu.time_median(3, reps, run)?;
    let m = 32.0 * 16.0 * 16.0;
    let macs = m * 40.0 * 240.0 * 2.0 + m * 240.0 * 25.0;
    let secs = t.as_secs_f64();
    Ok(BenchResult {
        workload: "mbconv".into(),
        median_ms: secs * 1e3,
        gflops: 3.0 * 2.0 * macs / secs / 1e9,
        adapter: gpu.adapter_name(),
        // Activations written and read back: 12 tensors of the block's size, roughly.
        bytes_moved: 4.0 * m * (40.0 * 6.0 + 240.0 * 12.0),
        images_per_s: None,
        pool_high_water_bytes: Some(high_water),
    })
}

/// One SGD step (momentum 0.9, Nesterov, wd 4e-5, label smoothing 0) of `cifar-mb6k5` on a
/// batch of 32 random images: upload, forward, cross-entropy, backward, update.
pub fn step(gpu: &Gpu, rng: &mut StdRng, reps: usize) -> Result<BenchResult> {
    let config = NetConfig::parse(CIFAR_MB6K5)?;
    let net = Network::new(gpu, &config, 2019)?;
    let mut opt = Optimizer::new(OptimizerKind::nesterov(4e-5), &net.params);
    let batch = 32;
    let images = tensor(gpu, rng, &[batch, 32, 32, 3], 1.0)?;
    let labels: Vec<u32> = (0..batch as u32).map(|i| (i * 7) % 10).collect();
    let labels = gpu.upload(&labels, &[batch])?;
    let mut run = || -> Result<()> {
        let x = gpu.empty(&images.shape);
        gpu.copy(&images.buf, &x.buf)?;
        let tape = Tape::new(gpu, 0);
        let xv = tape.constant(x);
        let logits = net.forward(&tape, &xv, true)?;
        drop(xv);
        let (_loss, dlogits) = ops::loss::softmax_cross_entropy(gpu, logits.value(), &labels, 0.0)?;
        let grads = tape.backward(&logits, dlogits)?;
        drop(logits);
        opt.step(gpu, &net.params, &grads, 0.01)
    };
    let high_water = high_water_of_one_run(gpu, &mut run)?;
    let t = gpu.time_median(3, reps, &mut run)?;
    let secs = t.as_secs_f64();
    let macs: u64 = net.layers(32).iter().map(|r| r.macs).sum();
    Ok(BenchResult {
        workload: "step".into(),
        median_ms: secs * 1e3,
        gflops: 3.0 * 2.0 * macs as f64 * batch as f64 / secs / 1e9,
        adapter: gpu.adapter_name(),
        bytes_moved: 0.0,
        images_per_s: Some(batch as f64 / secs),
        pool_high_water_bytes: Some(high_water),
    })
}
