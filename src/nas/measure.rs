//! Measuring a latency table on the current adapter: every candidate of every mixed layer and
//! the fixed layers, each timed alone at its input shape (inference: BN on running
//! statistics), median of repeats after warm-up, the device synchronised around each run.
//! The time is the device's own (timestamp queries: from the first kernel's start to the last
//! one's end, without the host's encoding and submission) where the adapter has them, else the
//! wall clock around the synchronised run; the table records which (`timing_source`).

use std::time::Duration;

use anyhow::Result;

use crate::autograd::Tape;
use crate::gpu::Gpu;
use crate::nn::layers::{Builder, ConvBnAct, Ctx, Linear, MbConv};
use crate::nn::params::{seeded, ParamStore};
use crate::nn::Network;

use super::latency::{self, LatencyTable, Stat};
use super::space::{Candidate, SearchSpace};

/// Repeats of each measurement (after `WARMUP`).
pub const REPS: usize = 10;
const WARMUP: usize = 3;

/// How `stat` times on `gpu`: "timestamp queries" or "wall clock".
pub fn timing_source(gpu: &Gpu) -> &'static str {
    if gpu.has_timestamps() {
        "timestamp queries"
    } else {
        "wall clock"
    }
}

/// Times `f` and returns its statistics in ms.
fn stat(gpu: &Gpu, mut f: impl FnMut() -> Result<()>) -> Result<Stat> {
    for _ in 0..WARMUP {
        f()?;
    }
    gpu.sync()?;
    let mut times = Vec::with_capacity(REPS);
    for _ in 0..REPS {
        let t0 = std::time::Instant::now();
        let on_device = gpu.time_on_device(&mut f)?;
        gpu.sync()?;
        times.push(on_device.unwrap_or_else(|| t0.elapsed()));
    }
    times.sort();
    let ms: Vec<f64> = times
        .iter()
        .map(|d: &Duration| d.as_secs_f64() * 1e3)
        .collect();
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    let var = ms.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / ms.len() as f64;
    // The median, robust to the odd slow run of a shared machine, stands as the mean.
    Ok(Stat {
        count: ms.len(),
        mean: ms[ms.len() / 2],
        var,
    })
}

fn random_input(gpu: &Gpu, shape: &[usize], seed: u64) -> Result<crate::gpu::Tensor> {
    use rand::Rng;
    let mut rng = seeded(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    gpu.upload(&v, shape)
}

/// Measures every entry `space` needs at batch `batch`; `progress(done, total)` after each.
pub fn measure_table(
    gpu: &Gpu,
    space: &SearchSpace,
    batch: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<LatencyTable> {
    let mut table = LatencyTable {
        adapter: gpu.adapter_name(),
        driver: format!("{} {}", gpu.info.driver, gpu.info.driver_info),
        batch,
        timing: timing_source(gpu).to_string(),
        ..Default::default()
    };
    let mut store = ParamStore::default();
    let mut rng = seeded(1);
    let mut b = Builder {
        gpu,
        rng: &mut rng,
        store: &mut store,
    };
    // Every distinct op once: (key, what to build, input shape).
    enum Op {
        Conv(ConvBnAct),
        Block(Box<MbConv>),
        Logits(Linear),
    }
    let mut ops: Vec<(String, Op, [usize; 4])> = Vec::new();
    let r = space.resolution;
    let s0 = r.div_ceil(space.first_conv.stride);
    ops.push((
        latency::stem_key(space),
        Op::Conv(ConvBnAct::from_spec(&mut b, "stem", &space.first_conv)?),
        [batch, r, r, 3],
    ));
    ops.push((
        latency::first_block_key(space),
        Op::Block(Box::new(MbConv::new(&mut b, "first", &space.first_block)?)),
        [batch, s0, s0, space.first_block.in_channels],
    ));
    for (i, l) in space.layers.iter().enumerate() {
        for &c in &l.candidates {
            let (Some(key), Candidate::MbConv { kernel, expand }) =
                (latency::candidate_key(l, c), c)
            else {
                continue;
            };
            if ops.iter().any(|(k, _, _)| *k == key) {
                continue;
            }
            let block = MbConv::new(&mut b, &format!("l{i}"), &l.mbconv(kernel, expand))?;
            ops.push((
                key,
                Op::Block(Box::new(block)),
                [batch, l.input_size, l.input_size, l.in_channels],
            ));
        }
    }
    let last = space.layers.last().map_or(s0, |l| l.output_size());
    ops.push((
        latency::feature_mix_key(space),
        Op::Conv(ConvBnAct::from_spec(&mut b, "mix", &space.feature_mix)?),
        [batch, last, last, space.feature_mix.in_channels],
    ));
    let c = &space.classifier;
    ops.push((
        latency::logits_key(space),
        Op::Logits(Linear::new(
            &mut b,
            "logits",
            c.in_features,
            c.out_features,
            true,
            0.0,
        )?),
        [batch, last, last, c.in_features],
    ));
    let zero_bias = std::rc::Rc::new(gpu.upload(&vec![0f32; c.out_features], &[c.out_features])?);
    let total = ops.len();
    for (done, (key, op, shape)) in ops.iter().enumerate() {
        let x = std::rc::Rc::new(random_input(gpu, shape, done as u64)?);
        let st = stat(gpu, || {
            let tape = Tape::new(gpu, 0);
            let _g = tape.no_grad();
            let ctx = Ctx {
                tape: &tape,
                params: &store,
                train: false,
                bn_momentum: 0.1,
                bn_eps: 1e-3,
            };
            let xv = tape.constant_shared(&x);
            let _y = match op {
                Op::Conv(c) => c.forward(&ctx, &xv)?,
                Op::Block(m) => {
                    let y = m.forward(&ctx, &xv)?;
                    if key.ends_with("idskip:1") {
                        tape.add(&y, &xv)?
                    } else {
                        y
                    }
                }
                Op::Logits(l) => {
                    let pooled = tape.global_avg_pool(&xv)?;
                    let zero = tape.constant_shared(&zero_bias);
                    l.forward(&ctx, &pooled, &zero)?
                }
            };
            Ok(())
        })?;
        table.entries.insert(key.clone(), st);
        progress(done + 1, total);
    }
    Ok(table)
}

/// Median inference time (ms) of a whole net at `batch` x `resolution`.
pub fn measure_net(gpu: &Gpu, net: &Network, batch: usize, resolution: usize) -> Result<f64> {
    let x = std::rc::Rc::new(random_input(
        gpu,
        &[
            batch,
            resolution,
            resolution,
            net.config.first_conv.in_channels,
        ],
        9,
    )?);
    let st = stat(gpu, || {
        let tape = Tape::new(gpu, 0);
        let _g = tape.no_grad();
        let xv = tape.constant_shared(&x);
        net.forward(&tape, &xv, false)?;
        Ok(())
    })?;
    Ok(st.mean)
}
