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
    params.params.iter().map(|p| p.value.device_bytes()).sum()
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

/// One SGD step of the logits `forward` records, twice; the peak of the second.
fn measure(
    gpu: &Gpu,
    mode: &str,
    params: &crate::nn::params::ParamStore,
    labels: &Tensor,
    forward: impl Fn(&Tape) -> Result<crate::autograd::Var>,
) -> Result<MemoryResult> {
    let mut opt = Optimizer::new(OptimizerKind::nesterov(4e-5), params);
    let mut grads = 0;
    let peak_bytes = peak(gpu, || {
        let tape = Tape::new(gpu, 0);
        let logits = forward(&tape)?;
        let (_l, dl) = loss::softmax_cross_entropy(gpu, logits.value(), labels, 0.1)?;
        let mut g = tape.backward(&logits, dl)?;
        drop(logits);
        // Gate leaves of the all-paths forward are not weights.
        g.by_param.retain(|(i, _)| *i < params.params.len());
        grads = grad_bytes(&g);
        opt.step(gpu, params, &g, 0.01)
    })?;
    Ok(MemoryResult {
        workload: "memory".into(),
        mode: mode.into(),
        peak_bytes,
        weight_bytes: params.bytes() + grads + opt.bytes(),
        adapter: gpu.adapter_name(),
        resident_bytes: resident(params),
    })
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
    let mut out = Vec::new();

    let upload = || gpu.upload(&xv, &[n, r, r, 3]);
    let standalone = Network::new(gpu, &space.derive(&choice)?, 0)?;
    out.push(measure(
        gpu,
        "standalone",
        &standalone.params,
        &labels,
        |tape| {
            let x = tape.constant(upload()?);
            standalone.forward(tape, &x, true)
        },
    )?);
    let net = Supernet::new(gpu, &space, 0)?;
    out.push(measure(gpu, "supernet", &net.params, &labels, |tape| {
        let x = tape.constant(upload()?);
        Ok(net.forward(tape, &x, &choice, true)?.0)
    })?);
    // All paths, weighted by the uniform distribution.
    let weights: Vec<Vec<f32>> = net
        .layers
        .iter()
        .map(|l| vec![1.0 / l.ops.len() as f32; l.ops.len()])
        .collect();
    out.push(measure(gpu, "all-paths", &net.params, &labels, |tape| {
        let x = tape.constant(upload()?);
        net.forward_all_paths(tape, &x, &weights)
    })?);
    Ok(out)
}
