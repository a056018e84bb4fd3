//! The memory workloads of WORKLOADS.md: the pool's live-byte high-water mark of one training
//! step of the same sampled net as an ordinary network (`standalone`), as the supernet with
//! one path (`supernet`) and with every path computed and weighted (`all-paths`).

use anyhow::Result;
use serde::Serialize;

use crate::autograd::Tape;
use crate::gpu::{Gpu, Tensor};
use crate::nas::space::{Candidate, SearchSpace};
use crate::nas::supernet::Supernet;
use crate::nn::optim::{Optimizer, OptimizerKind};
use crate::nn::Network;
use crate::ops::loss;

#[derive(Clone, Debug, Serialize)]
pub struct MemoryResult {
    pub workload: String,
    pub mode: String,
    pub peak_bytes: u64,
    pub weight_bytes: u64,
    pub adapter: String,
    /// Pool bytes (bucket sizes) of the parameters alone: what stays resident between steps.
    #[serde(skip)]
    pub resident_bytes: u64,
}

fn resident(params: &crate::nn::params::ParamStore) -> u64 {
    params.params.iter().map(|p| p.value.raw().size()).sum()
}

/// Runs `step` twice (the first warms the pool and allocates optimizer state) and returns
/// the high-water mark of the second.
fn peak(gpu: &Gpu, mut step: impl FnMut() -> Result<()>) -> Result<u64> {
    step()?;
    gpu.sync()?;
    gpu.reset_high_water();
    step()?;
    gpu.sync()?;
    Ok(gpu.pool_stats().high_water_bytes)
}

fn batch(gpu: &Gpu, n: usize, size: usize, classes: usize) -> Result<(Vec<f32>, Tensor)> {
    let x: Vec<f32> = (0..n * size * size * 3)
        .map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0)
        .collect();
    let y: Vec<u32> = (0..n as u32).map(|i| i % classes as u32).collect();
    Ok((x, gpu.upload(&y, &[n])?))
}

fn grad_bytes(g: &crate::autograd::Gradients) -> u64 {
    g.by_param.iter().map(|(_, t)| t.bytes()).sum()
}

/// The three modes for the `space` at `width`, batch `n`, sampled path: MBConv k5 e6 at every
/// layer (the `cifar-mb6k5` net for the cifar space at width 1).
pub fn run(gpu: &Gpu, space_name: &str, width: f64, n: usize) -> Result<Vec<MemoryResult>> {
    let space = SearchSpace::new(space_name, width, 10)?;
    let k5e6 = Candidate::MbConv {
        kernel: 5,
        expand: 6,
    };
    let choice: Vec<usize> = space
        .layers
        .iter()
        .map(|l| l.candidates.iter().position(|c| *c == k5e6).unwrap_or(0))
        .collect();
    let r = space.resolution;
    let (xv, labels) = batch(gpu, n, r, space.classes)?;
    let sgd = OptimizerKind::nesterov(4e-5);
    let adapter = gpu.adapter_name();
    let mut out = Vec::new();

    // Standalone: the derived net trained as an ordinary network.
    {
        let net = Network::new(gpu, &space.derive(&choice)?, 0)?;
        let mut opt = Optimizer::new(sgd, &net.params);
        let mut grads = 0;
        let p = peak(gpu, || {
            let tape = Tape::new(gpu, 0);
            let x = tape.constant(gpu.upload(&xv, &[n, r, r, 3])?);
            let logits = net.forward(&tape, &x, true)?;
            drop(x);
            let (_l, dl) = loss::softmax_cross_entropy(gpu, logits.value(), &labels, 0.1)?;
            let g = tape.backward(&logits, dl)?;
            drop(logits);
            grads = grad_bytes(&g);
            opt.step(gpu, &net.params, &g, 0.01)
        })?;
        out.push(MemoryResult {
            workload: "memory".into(),
            mode: "standalone".into(),
            peak_bytes: p,
            weight_bytes: net.params.bytes() + grads + opt.bytes(),
            adapter: adapter.clone(),
            resident_bytes: resident(&net.params),
        });
    }
    // Supernet, one sampled path.
    let net = Supernet::new(gpu, &space, 0)?;
    {
        let mut opt = Optimizer::new(sgd, &net.params);
        let mut grads = 0;
        let p = peak(gpu, || {
            let tape = Tape::new(gpu, 0);
            let x = tape.constant(gpu.upload(&xv, &[n, r, r, 3])?);
            let (logits, traces) = net.forward(&tape, &x, &choice, true)?;
            drop((x, traces));
            let (_l, dl) = loss::softmax_cross_entropy(gpu, logits.value(), &labels, 0.1)?;
            let g = tape.backward(&logits, dl)?;
            drop(logits);
            grads = grad_bytes(&g);
            opt.step(gpu, &net.params, &g, 0.01)
        })?;
        out.push(MemoryResult {
            workload: "memory".into(),
            mode: "supernet".into(),
            peak_bytes: p,
            weight_bytes: net.params.bytes() + grads + opt.bytes(),
            adapter: adapter.clone(),
            resident_bytes: resident(&net.params),
        });
    }
    // All paths, weighted by the uniform distribution.
    {
        let mut opt = Optimizer::new(sgd, &net.params);
        let mut grads = 0;
        let weights: Vec<Vec<f32>> = net
            .layers
            .iter()
            .map(|l| vec![1.0 / l.ops.len() as f32; l.ops.len()])
            .collect();
        let p = peak(gpu, || {
            let tape = Tape::new(gpu, 0);
            let x = tape.constant(gpu.upload(&xv, &[n, r, r, 3])?);
            let logits = net.forward_all_paths(&tape, &x, &weights)?;
            drop(x);
            let (_l, dl) = loss::softmax_cross_entropy(gpu, logits.value(), &labels, 0.1)?;
            let mut g = tape.backward(&logits, dl)?;
            drop(logits);
            // The gates are not weights.
            g.by_param.retain(|(i, _)| *i < net.params.params.len());
            grads = grad_bytes(&g);
            opt.step(gpu, &net.params, &g, 0.01)
        })?;
        out.push(MemoryResult {
            workload: "memory".into(),
            mode: "all-paths".into(),
            peak_bytes: p,
            weight_bytes: net.params.bytes() + grads + opt.bytes(),
            adapter,
            resident_bytes: resident(&net.params),
        });
    }
    Ok(out)
}
