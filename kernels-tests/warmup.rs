//! The supernet's warm-up (`nas::warmup`, `nas::grow`): growing every candidate from the
//! anchor keeps every path's function, residual candidates start as the identity, the anchor
//! phase's paths, and the grown supernet learning under random paths where the official
//! warm-up does not.

use std::sync::Arc;

use proxyless::autograd::Tape;
use proxyless::data::{synthetic, Augment, Loader, Normalize};
use proxyless::nas::arch::ArchParams;
use proxyless::nas::grow::{default_anchor, grow_from_anchor};
use proxyless::nas::space::{Candidate, SearchSpace};
use proxyless::nas::steps::weight_step;
use proxyless::nas::supernet::Supernet;
use proxyless::nas::warmup::{anchors, identity_residuals, Warmup};
use proxyless::nn::optim::{Optimizer, OptimizerKind};
use proxyless::nn::params::seeded;
use rand::{Rng, SeedableRng};

use crate::common::gpu;

/// Logits of `path` on `x` (training-mode BN, batch statistics).
fn logits(net: &Supernet, x: &[f32], n: usize, path: &[usize]) -> Vec<f32> {
    let gpu = gpu();
    let tape = Tape::new(gpu, 0);
    let _g = tape.no_grad();
    let xv = tape.constant(gpu.upload(x, &[n, 32, 32, 3]).unwrap());
    let (l, _) = net.forward(&tape, &xv, path, true).unwrap();
    gpu.read_f32(l.value()).unwrap()
}

fn rel(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(u, v)| ((u - v) as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    d / b.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt()
}

fn input(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n * 32 * 32 * 3)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect()
}

/// A path of random MBConvs (no Zero), different from the anchors in every layer.
fn other_mbconvs(net: &Supernet, anchor: &[usize], rng: &mut impl Rng) -> Vec<usize> {
    net.space
        .layers
        .iter()
        .zip(anchor)
        .map(|(l, &a)| loop {
            let k = rng.random_range(0..l.candidates.len());
            if k != a && matches!(l.candidates[k], Candidate::MbConv { .. }) {
                break k;
            }
        })
        .collect()
}

#[test]
fn growing_from_the_smallest_candidate_keeps_every_paths_function() {
    let space = SearchSpace::new("cifar", 0.25, 10).unwrap();
    let net = Supernet::new(gpu(), &space, 11).unwrap();
    let anchor = anchors(&net).unwrap();
    // The smallest candidate, 3x3_MBConv3, is every layer's anchor.
    assert!(anchor.iter().all(|&a| a == 0), "{anchor:?}");
    let x = input(3, 4);
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let paths: Vec<Vec<usize>> = (0..3)
        .map(|_| other_mbconvs(&net, &anchor, &mut rng))
        .collect();
    let reference = logits(&net, &x, 4, &anchor);
    for p in &paths {
        // Before growing, other candidates compute something else.
        let e = rel(&logits(&net, &x, 4, p), &reference);
        assert!(
            e > 0.1,
            "path {p:?} already equals the anchor path ({e:.2e})"
        );
    }
    let (set, inexact) = grow_from_anchor(gpu(), &net, &anchor).unwrap();
    assert_eq!(set, 21 * 5, "every MBConv but the anchor of 21 layers");
    assert_eq!(inexact, 0);
    let reference = logits(&net, &x, 4, &anchor);
    for p in &paths {
        let e = rel(&logits(&net, &x, 4, p), &reference);
        assert!(
            e < 1e-4,
            "path {p:?} after growing: relative difference {e:.2e}"
        );
    }
    // A larger anchor can only be cropped into the smaller candidates: counted as inexact.
    let (_, inexact) = grow_from_anchor(gpu(), &net, &[5; 21]).unwrap();
    assert_eq!(inexact, 21 * 5);
    // Bad input names what is wrong.
    let err = format!("{:#}", grow_from_anchor(gpu(), &net, &[0; 20]).unwrap_err());
    assert!(err.contains("20 anchors for 21"), "{err}");
    let zero = space.layers[1].candidates.len() - 1;
    assert_eq!(space.layers[1].candidates[zero], Candidate::Zero);
    let mut bad = vec![0; 21];
    bad[1] = zero;
    let err = format!("{:#}", grow_from_anchor(gpu(), &net, &bad).unwrap_err());
    assert!(err.contains("not an MBConv"), "{err}");
}

#[test]
fn residual_candidates_start_as_the_identity() {
    let space = SearchSpace::new("cifar", 0.25, 10).unwrap();
    let net = Supernet::new(gpu(), &space, 12).unwrap();
    let x = input(5, 3);
    // Zero on every layer that may skip, candidate 3 elsewhere; and candidate 3 everywhere.
    let skip: Vec<usize> = net
        .layers
        .iter()
        .map(|l| if l.residual { l.ops.len() - 1 } else { 3 })
        .collect();
    let full = vec![3; 21];
    let e = rel(&logits(&net, &x, 3, &full), &logits(&net, &x, 3, &skip));
    assert!(e > 0.1, "residual blocks already the identity ({e:.2e})");
    identity_residuals(gpu(), &net).unwrap();
    let e = rel(&logits(&net, &x, 3, &full), &logits(&net, &x, 3, &skip));
    assert!(e < 1e-5, "relative difference {e:.2e}");
}

#[test]
fn the_anchor_phase_replaces_drawn_mbconvs_and_keeps_zero() {
    let space = SearchSpace::new("cifar", 0.25, 10).unwrap();
    let net = Supernet::new(gpu(), &space, 13).unwrap();
    let w = Warmup::parse("grow", 0.25).unwrap();
    // 40 warm-up steps: grown at step 10.
    assert_eq!(w.grow_step(40), Some(10));
    assert_eq!(Warmup::parse("official", 0.25).unwrap().grow_step(40), None);
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let mut saw_zero = false;
    for _ in 0..20 {
        let drawn: Vec<usize> = net
            .layers
            .iter()
            .map(|l| rng.random_range(0..l.ops.len()))
            .collect();
        let early = w.path(&net, drawn.clone(), 9, 40);
        for (l, (&d, &e)) in drawn.iter().zip(&early).enumerate() {
            let c = &space.layers[l].candidates;
            if c[d] == Candidate::Zero {
                assert_eq!(e, d);
                saw_zero = true;
            } else {
                assert_eq!(Some(e), default_anchor(c));
            }
        }
        assert_eq!(w.path(&net, drawn.clone(), 10, 40), drawn);
    }
    assert!(saw_zero);
    for (name, f, what) in [
        ("grow", 1.5, "outside [0, 1]"),
        ("grow", -0.1, "outside [0, 1]"),
        ("random", 0.5, "grow, official"),
    ] {
        let err = format!("{:#}", Warmup::parse(name, f).unwrap_err());
        assert!(err.contains(what), "{name} {f}: {err}");
    }
}

/// Train accuracy over the last `tail` of `steps` weight steps on 1024 synthetic images,
/// batch 32, LR 0.05, with `warmup` over `steps` warm-up steps.
fn train_accuracy(warmup: Warmup, steps: usize, tail: usize) -> f64 {
    let gpu = gpu();
    let space = SearchSpace::new("cifar", 0.25, 10).unwrap();
    let net = Supernet::new(gpu, &space, 0).unwrap();
    warmup.init(gpu, &net).unwrap();
    let mut opt = Optimizer::new(OptimizerKind::nesterov(4e-5), &net.params);
    let data = Arc::new(synthetic(0, 1024, 32));
    let norm = Normalize::of(&data);
    let sizes: Vec<usize> = net.layers.iter().map(|l| l.ops.len()).collect();
    let arch = ArchParams::new(&sizes, 1e-3, &mut seeded(0));
    let mut rng = seeded(1);
    let (mut correct, mut seen) = (0.0, 0);
    let mut step = 0;
    for epoch in 0.. {
        let loader = Loader::new(
            data.clone(),
            (0..1024).collect(),
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
            warmup.maybe_grow(gpu, &net, step, steps).unwrap();
            let path = warmup.path(&net, arch.sample(&mut rng), step, steps);
            let x = gpu.upload(&b.images, &[b.n, 32, 32, 3]).unwrap();
            let y = gpu.upload(&b.labels, &[b.n]).unwrap();
            let (_, c) = weight_step(gpu, &net, &mut opt, (x, &y), &path, 0.05, 0.1, 0).unwrap();
            if step >= steps - tail {
                correct += gpu.read_f32(&c).unwrap()[0] as f64;
                seen += b.n;
            }
            step += 1;
            if step == steps {
                return correct / seen as f64;
            }
        }
    }
    unreachable!()
}

/// The point of the grow warm-up: after 40 anchor steps and 20 random-path steps the supernet
/// fits the synthetic set under random paths (measured: 0.9 and above), where the official
/// warm-up's random paths from the first step are still near chance (0.1).
#[test]
fn the_grown_supernet_learns_under_random_paths() {
    let grow = train_accuracy(
        Warmup::Grow {
            anchor_fraction: 40.0 / 60.0,
        },
        60,
        20,
    );
    let official = train_accuracy(Warmup::Official, 60, 20);
    assert!(
        grow > 0.6 && grow > official + 0.3,
        "train accuracy of the last 20 steps: grow {grow:.3}, official {official:.3}"
    );
}
