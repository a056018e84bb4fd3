//! What a search epoch costs against a training epoch of the derived net, per step and like
//! against like: a weight step of the supernet on the derived net's path, an architecture
//! step (`full_v2`) with the distribution settled on that path, and a training step of the
//! derived net alone, in alternating rounds (median ms after a warm-up round). The
//! architecture step is also split into its forward + backward on the sampled path and the
//! recomputation of the other candidates for dL/dg.
//! `cargo run --release --example search_cost -- NET.config [WIDTH] [BATCH] [ROUNDS] [ARCH_EVERY]`
//! (`PROFILE=1`: the recomputation's ops, each timed alone, in the last round; `MODE=two`: the
//! architecture step in `two` mode; the split below it stays `full_v2`'s).
use std::time::Instant;

use anyhow::{bail, Result};
use proxyless::autograd::Tape;
use proxyless::dist::Group;
use proxyless::gpu::{Gpu, GpuOptions};
use proxyless::nas::arch::{ArchParams, GateMode};
use proxyless::nas::space::SearchSpace;
use proxyless::nas::steps::{arch_step_gradient, derive, weight_step};
use proxyless::nas::supernet::Supernet;
use proxyless::nn::config::NetConfig;
use proxyless::nn::optim::{Optimizer, OptimizerKind};
use proxyless::nn::params::seeded;
use proxyless::ops::loss;
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
    let Some(config) = args.get(1) else {
        bail!("usage: search_cost NET.config [WIDTH] [BATCH] [ROUNDS] [ARCH_EVERY]");
    };
    let width: f64 = args.get(2).map_or(Ok(0.25), |s| s.parse())?;
    let batch: usize = args.get(3).map_or(Ok(64), |s| s.parse())?;
    let rounds: usize = args.get(4).map_or(Ok(3), |s| s.parse())?;
    let every: f64 = args.get(5).map_or(Ok(5.0), |s| s.parse())?;
    // PROFILE=1: the last round's recomputation op by op (each timed alone, so slower).
    let profile = std::env::var_os("PROFILE").is_some();
    // MODE=two: the architecture step in `two` mode (one other candidate recomputed a layer).
    let mode = GateMode::parse(&std::env::var("MODE").unwrap_or("full_v2".into()))?;
    let mut op_times = Vec::new();
    let gpu = Gpu::new(&GpuOptions::default())?;
    let space = SearchSpace::new("cifar", width, 10)?;
    let net = Supernet::new(&gpu, &space, 0)?;
    let path = space.choice_of(&NetConfig::load(std::path::Path::new(config))?)?;
    let mut rng = seeded(0);
    let sizes: Vec<usize> = net.layers.iter().map(|l| l.ops.len()).collect();
    let mut arch = ArchParams::new(&sizes, 0.0, &mut rng);
    for (i, &k) in path.iter().enumerate() {
        arch.alpha[i] = vec![-30.0; sizes[i]];
        arch.alpha[i][k] = 0.0;
    }
    let alone = derive(&gpu, &net, &arch)?;
    let mut opt_super = Optimizer::new(OptimizerKind::nesterov(4e-5), &net.params);
    let mut opt_alone = Optimizer::new(OptimizerKind::nesterov(4e-5), &alone.params);
    let images: Vec<f32> = (0..batch * 32 * 32 * 3)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let labels: Vec<u32> = (0..batch).map(|_| rng.random_range(0..10)).collect();
    let y = gpu.upload(&labels, &[batch])?;
    let mut times: [Vec<f64>; 5] = Default::default();
    let names = [
        "weight step (derived path)",
        "architecture step",
        "  its forward + backward",
        "  its recomputed candidates",
        "training step (derived net)",
    ];
    for round in 0..rounds + 1 {
        for (which, t_list) in times.iter_mut().enumerate() {
            gpu.sync()?;
            let t = Instant::now();
            let x = gpu.upload(&images, &[batch, 32, 32, 3])?;
            match which {
                0 => {
                    weight_step(&gpu, &net, &mut opt_super, (x, &y), &path, 0.0, 0.1, 0)?;
                }
                1 => {
                    let y_arch = gpu.upload(&labels, &[batch])?;
                    arch_step_gradient(
                        &gpu,
                        &net,
                        &mut arch,
                        vec![(x, y_arch)],
                        (batch, &Group::solo()),
                        mode,
                        None,
                        &mut rng,
                    )?;
                }
                2 | 3 => {
                    let tape = Tape::new(&gpu, 0);
                    tape.freeze_params();
                    let xv = tape.constant(x);
                    let (logits, traces) = net.forward_from_leaf(&tape, &xv, &path)?;
                    let (_, dl) = loss::softmax_cross_entropy(&gpu, logits.value(), &y, 0.0)?;
                    let watch: Vec<_> = traces.iter().map(|t| &t.output).collect();
                    let (_, dys) = tape.backward_watching(&logits, dl, &watch)?;
                    if which == 3 {
                        gpu.sync()?;
                        let t3 = Instant::now();
                        let recompute = Tape::new(&gpu, 0);
                        let _no_grad = recompute.no_grad();
                        if profile && round == rounds {
                            recompute.enable_profile();
                        }
                        for (l, (tr, dy)) in traces.iter().zip(&dys).enumerate() {
                            let Some(dy) = dy else {
                                bail!("no dL/dy at layer {l}")
                            };
                            let others: Vec<usize> =
                                (0..sizes[l]).filter(|&j| j != path[l]).collect();
                            let s = net.gate_gradients(
                                &recompute,
                                l,
                                &tr.input.tensor(),
                                dy,
                                true,
                                &others,
                            )?;
                            drop(s);
                        }
                        gpu.sync()?;
                        if round > 0 {
                            t_list.push(t3.elapsed().as_secs_f64() * 1e3);
                        }
                        op_times = recompute.profile_report();
                        continue;
                    }
                }
                _ => {
                    train_step(&gpu, &alone, &mut opt_alone, x, &y, 0.0, 0.1, 0)?;
                }
            }
            gpu.sync()?;
            if round > 0 {
                t_list.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    let m: Vec<f64> = times.into_iter().map(median).collect();
    println!(
        "cifar width {width} batch {batch} on {}, {rounds} rounds, architecture step {mode:?}:",
        gpu.adapter_name()
    );
    for (n, v) in names.iter().zip(&m) {
        println!("{n:<30} {v:8.1} ms");
    }
    op_times.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (name, s, _, n) in &op_times {
        println!(
            "  recomputation op {name:<40} {:8.1} ms {n:4} calls",
            s * 1e3
        );
    }
    // The work itself: the recomputation's multiply-accumulates against the derived net's
    // forward (a training step is about three forwards).
    let (fixed, per) = space.macs();
    let forward: f64 = fixed + per.iter().zip(&path).map(|(c, &k)| c[k]).sum::<f64>();
    let recomputed: f64 = per
        .iter()
        .zip(&path)
        .map(|(c, &k)| c.iter().sum::<f64>() - c[k])
        .sum();
    println!(
        "MACs: derived net forward {forward:.1} M, recomputed candidates {recomputed:.1} M ({:.2} forwards)",
        recomputed / forward
    );
    let ratio = (every * m[0] + m[1]) / (every * m[4]);
    println!(
        "search epoch / training epoch (an architecture step every {every} weight steps): {ratio:.3}"
    );
    Ok(())
}
