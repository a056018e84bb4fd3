//! The NAS layer: search spaces, the architecture gradient through binary gates, the `two`
//! rescale, latency tables and the expected-latency gradient.

use std::path::Path;
use std::rc::Rc;

use proxyless::autograd::Tape;
use proxyless::nas::arch::{softmax, softmax_backward, ArchParams};
use proxyless::nas::latency::{candidate_key, expected_latency, LatencyTable, Stat};
use proxyless::nas::space::{Candidate, SearchSpace};
use proxyless::nas::supernet::Supernet;
use proxyless::nn::layers::Ctx;
use proxyless::nn::NetConfig;
use rand::{Rng, SeedableRng};

use crate::common::gpu;

#[test]
fn cifar_space_has_21_layers_and_derives_the_benchmark_net() {
    let s = SearchSpace::new("cifar", 1.0, 10).unwrap();
    assert_eq!(s.layers.len(), 21);
    let zeros = s
        .layers
        .iter()
        .filter(|l| l.candidates.contains(&Candidate::Zero))
        .count();
    // Every stage's blocks after its first, except the single-block last stage and the first
    // block of stage 1 (16 -> 24, stride 1 but widening).
    assert_eq!(zeros, 15);
    let k5e6 = s.layers[0]
        .candidates
        .iter()
        .position(|c| {
            *c == Candidate::MbConv {
                kernel: 5,
                expand: 6,
            }
        })
        .unwrap();
    let derived = s.derive(&[k5e6; 21]).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/nets/cifar-mb6k5.config");
    assert_eq!(derived, NetConfig::load(&path).unwrap());
    let err = format!("{:#}", SearchSpace::new("mnist", 1.0, 10).unwrap_err());
    assert!(err.contains("cifar") && err.contains("imagenet"), "{err}");
    // Width 0.5 halves (to multiples of 8) every stage.
    let half = SearchSpace::new("imagenet", 0.5, 1000).unwrap();
    assert_eq!(half.first_conv.out_channels, 16);
    assert_eq!(half.layers[20].out_channels, 160);
    assert_eq!(half.feature_mix.out_channels, 1280);
}

/// dL/dg from our autograd (y = x + sum_j g_j o_j(x) at the one-hot g, gates as leaves) equals
/// the supernet's recomputed sum(o_j * dL/dy); times the softmax Jacobian diag(p) - p p^T it
/// is the full_v2 architecture gradient.
#[test]
fn full_v2_gate_gradient_matches_autograd_through_the_gates() {
    let gpu = gpu();
    let space = SearchSpace::new("cifar", 0.25, 10).unwrap();
    let net = Supernet::new(gpu, &space, 7).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let layer = 2; // stride 1, 8 -> 8 channels at width 0.25: residual, with Zero
    let l = &net.layers[layer];
    assert!(l.residual && l.ops.len() == 7);
    let spec = &space.layers[layer];
    let (n, s, c) = (2, spec.input_size, spec.in_channels);
    let xv: Vec<f32> = (0..n * s * s * c)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let target: Vec<f32> = (0..n * s * s * c)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let active = 3;

    // Autograd through explicit gates: y = x + sum_j g_j o_j(x), L = sum(y * target).
    let tape = Tape::new(gpu, 0);
    let x = tape.constant(gpu.upload(&xv, &[n, s, s, c]).unwrap());
    let ctx = Ctx {
        tape: &tape,
        params: &net.params,
        train: true,
        bn_momentum: 0.1,
        bn_eps: 1e-3,
    };
    let mut gates = Vec::new();
    let mut outs = Vec::new();
    for (j, op) in l.ops.iter().enumerate() {
        let Some(op) = op else { continue };
        let g = if j == active { 1.0f32 } else { 0.0 };
        let gt = Rc::new(gpu.upload(&[g], &[1]).unwrap());
        gates.push((tape.param(1000 + j, &gt, true), g));
        outs.push(op.forward(&ctx, &x).unwrap());
    }
    let mixed = tape.gated_sum(&gates, &outs).unwrap();
    let y = tape.add(&mixed, &x).unwrap();
    let dy = gpu.upload(&target, &[n, s, s, c]).unwrap();
    let grads = tape.backward(&y, dy).unwrap();
    let mut autograd = vec![0.0f64; l.ops.len()];
    for (index, g) in &grads.by_param {
        if *index >= 1000 {
            autograd[index - 1000] = gpu.read_f32(g).unwrap()[0] as f64;
        }
    }

    // The supernet's path: dL/dy is `target`; every candidate recomputed.
    let xt = Rc::new(gpu.upload(&xv, &[n, s, s, c]).unwrap());
    let dy = gpu.upload(&target, &[n, s, s, c]).unwrap();
    let recompute = Tape::new(gpu, 0);
    // A recording tape is refused: the recomputation must keep nothing.
    assert!(net
        .gate_gradients(&recompute, layer, &xt, &dy, true, &[0])
        .is_err());
    let _no_grad = recompute.no_grad();
    let ours: Vec<f64> = net
        .gate_gradients(&recompute, layer, &xt, &dy, true, &[0, 1, 2, 3, 4, 5, 6])
        .unwrap()
        .into_iter()
        .map(|t| t.map_or(0.0, |t| gpu.read_f32(&t).unwrap()[0] as f64))
        .collect();
    let diff: f64 = ours
        .iter()
        .zip(&autograd)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = autograd.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!(
        norm > 0.0 && diff / norm < 1e-6,
        "dL/dg {ours:?} vs autograd {autograd:?}"
    );

    // Times the Jacobian, written out as a matrix.
    let alpha: Vec<f64> = (0..7).map(|_| rng.random_range(-1.0..1.0)).collect();
    let p = softmax(&alpha);
    let by_matrix: Vec<f64> = (0..7)
        .map(|i| {
            (0..7)
                .map(|j| autograd[j] * (if i == j { p[i] } else { 0.0 } - p[i] * p[j]))
                .sum()
        })
        .collect();
    let ours = softmax_backward(&p, &ours);
    let diff: f64 = ours
        .iter()
        .zip(&by_matrix)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = by_matrix.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!(diff / norm < 1e-6, "{ours:?} vs {by_matrix:?}");
}

/// A `two`-mode Adam step followed by the rescale leaves every unsampled op's probability
/// unchanged, and moves the pair.
#[test]
fn two_mode_rescale_keeps_unsampled_probabilities() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut arch = ArchParams::new(&[7, 6, 7], 0.05, &mut rng);
    for l in 0..3 {
        for v in arch.alpha[l].iter_mut() {
            *v = rng.random_range(-2.0..2.0);
        }
    }
    for step in 0..20 {
        let before = arch.probs();
        let l = step % 3;
        let n = arch.alpha[l].len();
        let pair = (step % n, (step * 3 + 1) % n);
        let pair = if pair.0 == pair.1 {
            (pair.0, (pair.1 + 1) % n)
        } else {
            pair
        };
        let mut g: Vec<Vec<f64>> = arch.alpha.iter().map(|a| vec![0.0; a.len()]).collect();
        g[l][pair.0] = rng.random_range(-1.0..1.0);
        g[l][pair.1] = rng.random_range(-1.0..1.0);
        let old = (arch.alpha[l][pair.0], arch.alpha[l][pair.1]);
        arch.adam_step(&g);
        arch.rescale_pair(l, pair, old);
        let after = arch.probs();
        for (ll, (b, a)) in before.iter().zip(&after).enumerate() {
            for k in 0..b.len() {
                if ll == l && (k == pair.0 || k == pair.1) {
                    continue;
                }
                assert!(
                    (a[k] - b[k]).abs() <= 1e-6 * b[k].max(1e-12),
                    "layer {ll} op {k}: {} -> {}",
                    b[k],
                    a[k]
                );
            }
        }
        assert!(
            (after[l][pair.0] - before[l][pair.0]).abs() > 0.0,
            "the pair moved"
        );
    }
}

/// dE/dalpha of the expected latency against central differences.
#[test]
fn expected_latency_gradient_matches_finite_differences() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let lat: Vec<Vec<f64>> = (0..4)
        .map(|_| (0..7).map(|_| rng.random_range(0.0..3.0)).collect())
        .collect();
    let alpha: Vec<Vec<f64>> = (0..4)
        .map(|_| (0..7).map(|_| rng.random_range(-1.0..1.0)).collect())
        .collect();
    let e_of = |a: &Vec<Vec<f64>>| {
        let p: Vec<Vec<f64>> = a.iter().map(|x| softmax(x)).collect();
        expected_latency(1.5, &lat, &p).0
    };
    let p: Vec<Vec<f64>> = alpha.iter().map(|x| softmax(x)).collect();
    let (_, grad) = expected_latency(1.5, &lat, &p);
    let h = 1e-6;
    for l in 0..4 {
        for i in 0..7 {
            let mut up = alpha.clone();
            up[l][i] += h;
            let mut down = alpha.clone();
            down[l][i] -= h;
            let fd = (e_of(&up) - e_of(&down)) / (2.0 * h);
            assert!(
                (fd - grad[l][i]).abs() < 1e-7,
                "layer {l} op {i}: {fd} vs {}",
                grad[l][i]
            );
        }
    }
}

#[test]
fn latency_tables_round_trip_and_the_official_one_loads() {
    let space = SearchSpace::new("cifar", 1.0, 10).unwrap();
    let mut t = LatencyTable {
        adapter: "test adapter".into(),
        driver: "d 1".into(),
        batch: 8,
        timing: "timestamp queries".into(),
        ..Default::default()
    };
    for l in &space.layers {
        for &c in &l.candidates {
            if let Some(k) = candidate_key(l, c) {
                t.entries.insert(
                    k,
                    Stat {
                        count: 10,
                        mean: 0.25,
                        var: 0.01,
                    },
                );
            }
        }
    }
    let again = LatencyTable::parse(&t.to_yaml(), "test").unwrap();
    assert_eq!(again, t);
    let lat = again.per_candidate(&space).unwrap();
    assert_eq!(lat.len(), 21);
    let err = format!("{:#}", again.fixed(&space).unwrap_err());
    assert!(err.contains("Conv-input:32x32x3-output:32x32x32"), "{err}");

    let official =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/official/mobile_trim.yaml");
    if official.exists() {
        let t = LatencyTable::load(&official).unwrap();
        let imagenet = SearchSpace::new("imagenet", 1.0, 1000).unwrap();
        assert!(t.fixed(&imagenet).unwrap() > 0.0);
        let lat = t.per_candidate(&imagenet).unwrap();
        assert!(lat.iter().flatten().all(|v| v.is_finite() && *v >= 0.0));
    }
}

/// After the supernet has trained on other random paths, a weight step on path A does exactly
/// what a step of the derived standalone net (inherited weights) does, and leaves every
/// candidate off the path untouched. `PROXYLESS_CHURN` sets the number of churn steps.
#[test]
fn supernet_path_step_matches_the_derived_standalone_net() {
    use proxyless::nas::steps::{derive, weight_step};
    use proxyless::nn::optim::{Optimizer, OptimizerKind};
    let gpu = gpu();
    let space = SearchSpace::new("cifar", 0.25, 10).unwrap();
    let net = Supernet::new(gpu, &space, 3).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let batch = |rng: &mut rand::rngs::StdRng, n: usize| {
        let x: Vec<f32> = (0..n * 32 * 32 * 3)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let y: Vec<u32> = (0..n).map(|_| rng.random_range(0..10)).collect();
        (
            gpu.upload(&x, &[n, 32, 32, 3]).unwrap(),
            gpu.upload(&y, &[n]).unwrap(),
        )
    };
    let churn: usize = std::env::var("PROXYLESS_CHURN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut opt = Optimizer::new(OptimizerKind::nesterov(4e-5), &net.params);
    for step in 0..churn {
        let path: Vec<usize> = (0..21).map(|_| rng.random_range(0..6)).collect();
        let (x, y) = batch(&mut rng, 4);
        weight_step(gpu, &net, &mut opt, (x, &y), &path, 0.05, 0.1, step as u32).unwrap();
    }
    let path: Vec<usize> = (0..21).map(|_| rng.random_range(0..6)).collect();
    let mut arch = ArchParams::new(&[7; 21], 1e-3, &mut rng);
    for (i, l) in net.layers.iter().enumerate() {
        arch.alpha[i] = vec![0.0; l.ops.len()];
        arch.alpha[i][path[i]] = 10.0;
    }
    let standalone = derive(gpu, &net, &arch).unwrap();
    let read_all = |store: &proxyless::nn::params::ParamStore| -> Vec<Vec<f32>> {
        store
            .params
            .iter()
            .map(|p| gpu.read_f32(&p.value).unwrap())
            .collect()
    };
    let before = read_all(&net.params);

    let (x, y) = batch(&mut rng, 3);
    let x2 = gpu
        .upload(&gpu.read_f32(&x).unwrap(), &[3, 32, 32, 3])
        .unwrap();
    let mut fresh = Optimizer::new(OptimizerKind::nesterov(4e-5), &net.params);
    let (l_super, _) = weight_step(gpu, &net, &mut fresh, (x, &y), &path, 0.05, 0.1, 9).unwrap();
    let mut opt_alone = Optimizer::new(OptimizerKind::nesterov(4e-5), &standalone.params);
    let out = proxyless::train::train_step(gpu, &standalone, &mut opt_alone, x2, &y, 0.05, 0.1, 9)
        .unwrap();
    let (a, b) = (
        gpu.read_f32(&l_super).unwrap()[0],
        gpu.read_f32(&out.loss).unwrap()[0],
    );
    assert!((a - b).abs() <= 1e-5 * b.abs(), "loss {a} vs {b}");

    // The supernet's path weights after the step equal the standalone net's.
    let stepped = derive(gpu, &net, &arch).unwrap();
    for (p, q) in stepped.params.params.iter().zip(&standalone.params.params) {
        let (u, v) = (
            gpu.read_f32(&p.value).unwrap(),
            gpu.read_f32(&q.value).unwrap(),
        );
        let diff: f64 = u
            .iter()
            .zip(&v)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let norm: f64 = v.iter().map(|b| (*b as f64).powi(2)).sum();
        assert!(
            diff.sqrt() <= 1e-5 * norm.sqrt().max(1e-6),
            "{}: supernet and standalone differ after the step",
            p.name
        );
    }
    // Candidates off the path are untouched.
    let after = read_all(&net.params);
    for (i, l) in net.layers.iter().enumerate() {
        for k in 0..l.ops.len() {
            if k == path[i] {
                continue;
            }
            for p in net.candidate_params(i, k) {
                assert_eq!(
                    before[p], after[p],
                    "{} changed though it is off the path",
                    net.params.params[p].name
                );
            }
        }
    }
}

/// Validation of a supernet path uses each batch's BN statistics and leaves the running ones
/// untouched; its logits equal a training-mode forward's.
#[test]
fn batch_statistics_forward_leaves_running_statistics_alone() {
    let gpu = gpu();
    let space = SearchSpace::new("cifar", 0.25, 10).unwrap();
    let net = Supernet::new(gpu, &space, 5).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let xv: Vec<f32> = (0..3 * 32 * 32 * 3)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let path: Vec<usize> = net
        .layers
        .iter()
        .map(|l| rng.random_range(0..l.ops.len()))
        .collect();
    let running = |net: &Supernet| -> Vec<Vec<f32>> {
        net.params
            .params
            .iter()
            .filter(|p| p.name.contains("running"))
            .map(|p| gpu.read_f32(&p.value).unwrap())
            .collect()
    };
    let before = running(&net);
    let tape = Tape::new(gpu, 0);
    let _g = tape.no_grad();
    let x = tape.constant(gpu.upload(&xv, &[3, 32, 32, 3]).unwrap());
    let a = gpu
        .read_f32(net.forward_batch_stats(&tape, &x, &path).unwrap().value())
        .unwrap();
    assert!(before == running(&net), "running statistics changed");
    let (b, _) = net.forward(&tape, &x, &path, true).unwrap();
    let b = gpu.read_f32(b.value()).unwrap();
    assert!(
        before != running(&net),
        "a training forward should move them"
    );
    let diff: f32 = a
        .iter()
        .zip(&b)
        .map(|(u, v)| (u - v).powi(2))
        .sum::<f32>()
        .sqrt();
    let norm: f32 = b.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!(diff <= 1e-5 * norm, "{a:?} vs {b:?}");
}

/// The architecture step takes the active candidate's dL/dg from the forward it already ran
/// (y, or y - x with a shortcut); that equals recomputing the candidate, on a layer with and
/// one without a shortcut.
#[test]
fn active_gate_gradient_equals_recomputing_the_candidate() {
    let gpu = gpu();
    let space = SearchSpace::new("cifar", 0.25, 10).unwrap();
    let net = Supernet::new(gpu, &space, 11).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let n = 3;
    let xv: Vec<f32> = (0..n * 32 * 32 * 3)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let path: Vec<usize> = (0..21).map(|_| rng.random_range(0..6)).collect();
    let tape = Tape::new(gpu, 0);
    tape.freeze_params();
    let x = tape.constant(gpu.upload(&xv, &[n, 32, 32, 3]).unwrap());
    let (_, traces) = net.forward_from_leaf(&tape, &x, &path).unwrap();
    for l in [2, 4] {
        assert_eq!(net.layers[l].residual, l == 2);
        let shape = traces[l].output.value().shape.clone();
        let dyv: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let dy = gpu.upload(&dyv, &shape).unwrap();
        let k = path[l];
        let reused = net
            .active_gate_gradient(gpu, l, k, &traces[l], &dy)
            .unwrap()
            .unwrap();
        let recompute = Tape::new(gpu, 0);
        let _no_grad = recompute.no_grad();
        let recomputed = net
            .gate_gradients(&recompute, l, &traces[l].input.tensor(), &dy, true, &[k])
            .unwrap()
            .swap_remove(k)
            .unwrap();
        let (a, b) = (
            gpu.read_f32(&reused).unwrap()[0] as f64,
            gpu.read_f32(&recomputed).unwrap()[0] as f64,
        );
        assert!(
            b != 0.0 && (a - b).abs() <= 1e-5 * b.abs(),
            "layer {l}: {a} vs {b}"
        );
    }
}

/// With frozen weights the backward skips every weight-gradient product (pointwise,
/// depthwise, the fused BN + ReLU6 convs); dL/dy at each mixed layer is the same as with
/// trainable weights, and no weight gradient comes back.
#[test]
fn frozen_weights_give_the_same_layer_gradients_without_weight_gradients() {
    let gpu = gpu();
    let space = SearchSpace::new("cifar", 0.25, 10).unwrap();
    let net = Supernet::new(gpu, &space, 12).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let n = 3;
    let xv: Vec<f32> = (0..n * 32 * 32 * 3)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let labels: Vec<u32> = (0..n).map(|_| rng.random_range(0..10)).collect();
    let y = gpu.upload(&labels, &[n]).unwrap();
    // Every MBConv kind, and a Zero, on the path.
    let path: Vec<usize> = (0..21).map(|l| l % net.layers[l].ops.len()).collect();
    let run = |frozen: bool| {
        let tape = Tape::new(gpu, 0);
        if frozen {
            tape.freeze_params();
        }
        let x = tape.constant(gpu.upload(&xv, &[n, 32, 32, 3]).unwrap());
        let (logits, traces) = net.forward_from_leaf(&tape, &x, &path).unwrap();
        let (_, dl) =
            proxyless::ops::loss::softmax_cross_entropy(gpu, logits.value(), &y, 0.0).unwrap();
        let watch: Vec<_> = traces.iter().map(|t| &t.output).collect();
        let (grads, dys) = tape.backward_watching(&logits, dl, &watch).unwrap();
        let dys: Vec<Vec<f32>> = dys
            .iter()
            .map(|d| gpu.read_f32(d.as_ref().unwrap()).unwrap())
            .collect();
        (grads.by_param.len(), dys)
    };
    let (weights_trainable, trainable) = run(false);
    let (weights_frozen, frozen) = run(true);
    assert!(weights_trainable > 0);
    assert_eq!(weights_frozen, 0, "frozen weights got gradients");
    for (l, (a, b)) in trainable.iter().zip(&frozen).enumerate() {
        assert!(a.iter().any(|v| *v != 0.0), "layer {l}: dL/dy is zero");
        assert_eq!(a, b, "layer {l}: dL/dy differs with frozen weights");
    }
}

/// `sample_near` draws nets inside the latency window, different ones for different seeds,
/// also for targets far from the uniform draw's mean; bad targets and tolerances are refused.
#[test]
fn random_nets_are_drawn_inside_the_latency_window() {
    use proxyless::nas::sample::sample_near;
    use proxyless::nas::steps::{Costs, LossForm};
    let space = SearchSpace::new("cifar", 0.25, 10).unwrap();
    // Costs like a table's: kernel * expand per MBConv, Zero free, a fixed part.
    let per = crate::search::kernel_expand_costs(&space, 0.1);
    let costs = Costs {
        fixed: 3.0,
        per_candidate: per,
        target: 0.0,
        form: LossForm::AddLinear { l: 0.0 },
        unit: "ms",
    };
    let cheapest = costs.cheapest().1;
    let dearest = costs.of(&costs.dearest());
    assert!(cheapest < 10.0 && dearest > 80.0, "{cheapest} {dearest}");
    for (target, tol) in [(12.0, 0.05), (30.0, 0.05), (75.0, 0.02), (30.0, 0.005)] {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..4 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let (choice, cost) = sample_near(&costs, target, tol, &mut rng).unwrap();
            assert!(
                (cost - target).abs() <= tol * target + 1e-9,
                "target {target} +-{tol}: {cost}"
            );
            assert!((costs.of(&choice) - cost).abs() < 1e-9);
            seen.insert(choice);
        }
        assert_eq!(seen.len(), 4, "target {target}: seeds gave the same net");
    }
    // Deterministic for a seed.
    let draw = |seed| {
        sample_near(
            &costs,
            30.0,
            0.05,
            &mut rand::rngs::StdRng::seed_from_u64(seed),
        )
    };
    assert_eq!(draw(9).unwrap(), draw(9).unwrap());
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for (target, tol, what) in [
        (1.0, 0.05, "its nets cost"),
        (1000.0, 0.05, "its nets cost"),
        (-3.0, 0.05, "positive"),
        (f64::NAN, 0.05, "positive"),
        (30.0, 0.0, "(0, 1)"),
        (30.0, 1.5, "(0, 1)"),
        (30.0, f64::NAN, "(0, 1)"),
        // Every cost is a multiple of 0.1 ms over 3.0: no net lies in 30.01-30.09.
        (30.05, 0.001, "widen the tolerance"),
    ] {
        let err = format!(
            "{:#}",
            sample_near(&costs, target, tol, &mut rng).unwrap_err()
        );
        assert!(err.contains(what), "{target} {tol}: {err}");
    }
}

/// A batch in parts (where one part would be over a storage binding): the update applied is
/// -lr times the parts' gradients of their mean losses weighed by their shares (3/8 and 5/8),
/// each computed on its own; the reported loss is the share-weighed mean and the count the sum.
/// And the parts a space needs: the cifar space at width 0.25 fits any batch here; the imagenet
/// space at width 1 needs parts of at most 27 images under 128 MiB.
#[test]
fn a_weight_step_in_parts_applies_the_weighed_gradients() {
    use proxyless::nas::steps::weight_step_parts;
    use proxyless::nn::optim::{Optimizer, OptimizerKind};
    use proxyless::ops::loss;
    let gpu = gpu();
    let space = SearchSpace::new("cifar", 0.25, 10).unwrap();
    let path: Vec<usize> = space
        .layers
        .iter()
        .map(|l| l.candidates.len() / 2)
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let batch = |n: usize, rng: &mut rand::rngs::StdRng| {
        let x: Vec<f32> = (0..n * 32 * 32 * 3)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let y: Vec<u32> = (0..n).map(|_| rng.random_range(0..10)).collect();
        (x, y)
    };
    let (a, b) = (batch(3, &mut rng), batch(5, &mut rng));
    let up = |(x, y): &(Vec<f32>, Vec<u32>)| {
        let n = y.len();
        (
            gpu.upload(x, &[n, 32, 32, 3]).unwrap(),
            gpu.upload(y, &[n]).unwrap(),
        )
    };
    // Each part's gradient on its own, on a copy of the same net.
    let reference = Supernet::new(gpu, &space, 4).unwrap();
    let mut want: std::collections::HashMap<usize, Vec<f64>> = Default::default();
    let (mut want_loss, mut want_correct) = (0.0, 0.0);
    for (part, share) in [(&a, 3.0 / 8.0), (&b, 5.0 / 8.0)] {
        let (x, y) = up(part);
        let tape = Tape::new(gpu, 0);
        let xv = tape.constant(x);
        let (logits, _) = reference.forward(&tape, &xv, &path, true).unwrap();
        let (l, dl) = loss::softmax_cross_entropy(gpu, logits.value(), &y, 0.1).unwrap();
        let c = loss::count_correct(gpu, logits.value(), &y).unwrap();
        want_loss += share * gpu.read_f32(&l).unwrap()[0] as f64;
        want_correct += gpu.read_f32(&c).unwrap()[0] as f64;
        for (p, g) in tape.backward(&logits, dl).unwrap().by_param {
            let g = gpu.read_f32(&g).unwrap();
            let acc = want.entry(p).or_insert_with(|| vec![0.0; g.len()]);
            for (w, v) in acc.iter_mut().zip(g) {
                *w += share * v as f64;
            }
        }
    }
    let net = Supernet::new(gpu, &space, 4).unwrap();
    let before = net.params.to_host(gpu).unwrap();
    let sgd = OptimizerKind::Sgd {
        momentum: 0.0,
        nesterov: false,
        weight_decay: 0.0,
    };
    let mut opt = Optimizer::new(sgd, &net.params);
    let lr = 0.5;
    let of = proxyless::nn::parts::PartsOf {
        images: 8,
        first: 0,
    };
    let solo = proxyless::dist::Group::solo();
    let parts = vec![up(&a), up(&b)];
    let (l, c) =
        weight_step_parts(gpu, &net, &mut opt, parts, of, &solo, &path, lr, 0.1, 0).unwrap();
    let after = net.params.to_host(gpu).unwrap();
    assert!(!want.is_empty());
    // Over all parameters together (some gradients are ~1e-7, zero but for rounding: the
    // projection BN's bias before the next block's BN).
    let (mut all_got, mut all_want) = (Vec::new(), Vec::new());
    for (p, g) in &want {
        for (w0, w1) in before[*p].2.iter().zip(&after[*p].2) {
            all_got.push((*w0 as f64 - *w1 as f64) / lr as f64);
        }
        all_want.extend_from_slice(g);
    }
    let err = proxyless::reference::rel_error(&all_got, &all_want);
    assert!(
        err < 1e-4,
        "relative error {err} over {} values",
        all_want.len()
    );
    let loss = gpu.read_f32(&l).unwrap()[0] as f64;
    assert!(
        (loss - want_loss).abs() < 1e-5 * want_loss,
        "{loss} vs {want_loss}"
    );
    assert_eq!(gpu.read_f32(&c).unwrap()[0] as f64, want_correct);
    let most = 128u64 << 20;
    assert!(space.samples_per_binding(most) >= 256);
    let imagenet = SearchSpace::new("imagenet", 1.0, 1000).unwrap();
    assert_eq!(imagenet.samples_per_binding(most), 27);
}
