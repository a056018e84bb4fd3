//! The search end to end on small synthetic data: a latency weight strong enough to dominate
//! ends on the cheapest net; outputs, resume checks and bad input of the command line.

use std::path::PathBuf;

use proxyless::data::{synthetic, Augment};
use proxyless::nas::arch::softmax;
use proxyless::nas::arch::GateMode;
use proxyless::nas::latency::expected_latency;
use proxyless::nas::space::{Candidate, SearchSpace};
use proxyless::nas::steps::{latency_probs, Costs, LossForm};
use proxyless::nas::supernet::Supernet;
use proxyless::nas::warmup::Warmup;
use proxyless::nn::{NetConfig, Network};
use proxyless::train::search::{search, spread_updates, ArchUpdate, LrSchedule, SearchConfig};
use proxyless::train::{self, DataSource, Quiet, RunDir};

use crate::common::{gpu, proxyless};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("proxyless-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `scale` * kernel * expand per MBConv, Zero free: costs shaped like a latency table's.
pub fn kernel_expand_costs(space: &SearchSpace, scale: f64) -> Vec<Vec<f64>> {
    space
        .layers
        .iter()
        .map(|l| {
            l.candidates
                .iter()
                .map(|c| match c {
                    Candidate::MbConv { kernel, expand } => (kernel * expand) as f64 * scale,
                    Candidate::Zero => 0.0,
                })
                .collect()
        })
        .collect()
}

/// Cost kernel * expand per MBConv (Zero 0): the cheapest net takes Zero where it may and
/// 3x3_MBConv3 elsewhere.
fn toy_costs(space: &SearchSpace, form: LossForm) -> Costs {
    let per = kernel_expand_costs(space, 1.0);
    let mut c = Costs {
        fixed: 10.0,
        per_candidate: per,
        target: 0.0,
        form,
        unit: "ms",
    };
    c.target = c.cheapest().1 * 1.01;
    c
}

fn config(update: ArchUpdate, costs: Option<Costs>, flags: Vec<(String, String)>) -> SearchConfig {
    SearchConfig {
        warmup_epochs: 0,
        warmup: Warmup::Official,
        epochs: 3,
        batch: 16,
        lr: 0.05,
        weight_decay: 4e-5,
        label_smoothing: 0.1,
        arch_lr: 0.3,
        arch_every: 1,
        update,
        costs,
        seed: 1,
        flags,
        lr_schedule: LrSchedule::Cosine,
        decay_all: false,
        reinforce_batch: None,
        reinforce_updates: None,
        parts: 1,
        group: Default::default(),
    }
}

fn source() -> DataSource {
    let train = synthetic(3, 96, 32);
    DataSource::from_sets("synthetic".into(), train, None, Augment::None, 32).unwrap()
}

/// `two` mode's latency term is the pair's expected latency with the probabilities renormalised
/// over the two (official `current_prob_over_ops`): its gradient matches central differences of
/// that expectation in every alpha (0 off the pair), and a pair of equal latency gets none.
#[test]
fn two_mode_latency_term_is_over_the_pair() {
    let lat = vec![
        vec![1.3, 2.9, 0.4, 3.3, 2.2, 0.0, 1.7],
        vec![0.8, 0.8, 2.5, 1.1, 0.6],
    ];
    let alpha = vec![
        vec![0.3, -0.7, 1.1, 0.2, -0.4, 0.9, -1.3],
        vec![-0.2, 0.5, 0.1, -0.9, 0.6],
    ];
    // Layer 0: a pair of different latency; layer 1: a pair of equal latency (0.8, 0.8).
    let pairs = vec![vec![5, 2], vec![1, 0]];
    let probs: Vec<Vec<f64>> = alpha.iter().map(|a| softmax(a)).collect();
    let e_pair = |alpha: &[Vec<f64>]| -> f64 {
        let mut e = 0.7;
        for ((a, l), p) in alpha.iter().zip(&lat).zip(&pairs) {
            let q = softmax(&[a[p[0]], a[p[1]]]);
            e += q[0] * l[p[0]] + q[1] * l[p[1]];
        }
        e
    };
    let q = latency_probs(&alpha, &probs, &pairs, GateMode::Two);
    let (e, de) = expected_latency(0.7, &lat, &q);
    assert!(
        (e - e_pair(&alpha)).abs() < 1e-12,
        "{e} against {}",
        e_pair(&alpha)
    );
    let h = 1e-5;
    for l in 0..alpha.len() {
        for k in 0..alpha[l].len() {
            let mut up = alpha.clone();
            up[l][k] += h;
            let mut down = alpha.clone();
            down[l][k] -= h;
            let fd = (e_pair(&up) - e_pair(&down)) / (2.0 * h);
            assert!(
                (de[l][k] - fd).abs() < 1e-8,
                "layer {l} op {k}: {} against finite differences {fd}",
                de[l][k]
            );
            if !pairs[l].contains(&k) {
                assert_eq!(de[l][k], 0.0, "layer {l} op {k} is off the pair");
            }
        }
    }
    assert!(de[0][5].abs() > 1e-3 && de[0][2].abs() > 1e-3);
    assert_eq!(
        (de[1][0], de[1][1]),
        (0.0, 0.0),
        "equal latency, pushed apart"
    );
    // Over the full softmax (`full_v2`) the same equal-latency ops do move.
    let (_, full) = expected_latency(
        0.7,
        &lat,
        &latency_probs(&alpha, &probs, &pairs, GateMode::FullV2),
    );
    assert!(full[1][0].abs() > 1e-3 && full[1][1].abs() > 1e-3);
}

/// `--lr-schedule official`: a cosine from lr to 0 over the warm-up, then one from lr / 2 over
/// the joint steps; `cosine` is one cosine over all. REINFORCE updates spread over an epoch as
/// the official `get_split_list` does, and a count the epoch cannot hold is refused.
#[test]
fn official_schedule_and_reinforce_spread() {
    let (warm, total) = (40, 100);
    let official = LrSchedule::Official;
    assert_eq!(official.lr(0.05, 0, warm, total), 0.05);
    assert!(official.lr(0.05, warm - 1, warm, total) < 0.001);
    assert_eq!(official.lr(0.05, warm, warm, total), 0.025);
    let mid = official.lr(0.05, warm + 30, warm, total);
    assert!((mid - 0.0125).abs() < 1e-6, "{mid}");
    assert!(official.lr(0.05, total - 1, warm, total) < 0.0001);
    let cosine = LrSchedule::Cosine;
    assert_eq!(cosine.lr(0.05, 0, warm, total), 0.05);
    assert!((cosine.lr(0.05, 50, warm, total) - 0.025).abs() < 1e-6);
    assert!(LrSchedule::parse("step").is_err());
    assert_eq!(spread_updates(10, 3).unwrap(), vec![3, 6, 9]);
    assert_eq!(spread_updates(11, 3).unwrap(), vec![3, 7, 10]);
    assert_eq!(spread_updates(5, 5).unwrap(), vec![0, 1, 2, 3, 4]);
    assert_eq!(spread_updates(7, 1).unwrap(), vec![6]);
    for bad in [0, 6] {
        let err = spread_updates(5, bad).unwrap_err().to_string();
        assert!(err.contains("--reinforce-updates"), "{err}");
    }
}

#[test]
fn a_dominant_latency_term_ends_on_the_cheapest_net() {
    let gpu = gpu();
    let space = SearchSpace::new("cifar", 0.25, 10).unwrap();
    let net = Supernet::new(gpu, &space, 2).unwrap();
    let data = source();
    let costs = toy_costs(&space, LossForm::AddLinear { l: 1000.0 });
    let (cheapest, _) = costs.cheapest();
    let out = temp_dir("search-cheapest");
    let cfg = config(ArchUpdate::Gradient(GateMode::FullV2), Some(costs), vec![]);
    let r = search(
        gpu,
        &net,
        &data,
        &cfg,
        &RunDir(out.clone()),
        false,
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(r.choice, cheapest, "probabilities: {:?}", r.arch.probs());
    // The outputs: a loadable net and its inherited weights, the history, the plots.
    let config = NetConfig::load(&out.join("net.config")).unwrap();
    assert_eq!(config, space.derive(&cheapest).unwrap());
    let derived = Network::new(gpu, &config, 5).unwrap();
    train::load_weights(gpu, &derived, &out.join("weights.safetensors")).unwrap();
    for f in [
        "log.jsonl",
        "arch_history.jsonl",
        "checkpoint.safetensors",
        "arch_probs.png",
        "curves.png",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let history = std::fs::read_to_string(out.join("arch_history.jsonl")).unwrap();
    assert_eq!(history.lines().count(), 3);
    let _ = std::fs::remove_dir_all(out);
}

/// add#hinge pulls the cost down above the target only; add#linear pulls at any cost. Checked
/// on the values and against central differences of the loss in E.
#[test]
fn the_hinge_loss_stops_pulling_under_the_target() {
    let (ce, t) = (1.7, 30.0);
    let hinge = LossForm::parse("add#hinge").unwrap();
    let linear = LossForm::parse("add#linear").unwrap();
    for e in [12.0, 29.0, 31.0, 45.0] {
        let (v, dce, de) = hinge.value(ce, e, t).unwrap();
        let (lv, _, lde) = linear.value(ce, e, t).unwrap();
        assert!(lde > 0.0, "add#linear pulls at E = {e}");
        if e < t {
            assert_eq!((v, de), (ce, 0.0), "no pull under the target at E = {e}");
        } else {
            assert!(
                (v - lv).abs() < 1e-12 && (de - lde).abs() < 1e-12,
                "E = {e}"
            );
        }
        let h = 1e-4;
        let fd = (hinge.value(ce, e + h, t).unwrap().0 - hinge.value(ce, e - h, t).unwrap().0)
            / (2.0 * h);
        assert!((fd - de).abs() < 1e-6, "dL/dE at {e}: {de} vs {fd}");
        let fd = (hinge.value(ce + h, e, t).unwrap().0 - hinge.value(ce - h, e, t).unwrap().0)
            / (2.0 * h);
        assert!((fd - dce).abs() < 1e-6, "dL/dCE at {e}: {dce} vs {fd}");
    }
}

/// `mul#log` with costs under 1 in the table's unit (a fast device at small width) is refused
/// before the warm-up starts (not at the first architecture step after it), naming the flags
/// to change, and nothing is written.
#[test]
fn mul_log_preconditions_are_checked_before_any_training() {
    let gpu = gpu();
    let space = SearchSpace::new("cifar", 0.25, 3).unwrap();
    let net = Supernet::new(gpu, &space, 0).unwrap();
    let mut costs = toy_costs(&space, LossForm::parse("mul#log").unwrap());
    costs.check().expect("costs above 1");
    costs.fixed = 0.01;
    costs.per_candidate = costs
        .per_candidate
        .iter()
        .map(|c| c.iter().map(|v| v * 1e-3).collect())
        .collect();
    costs.target = costs.cheapest().1 * 1.5;
    let mut cfg = config(ArchUpdate::Gradient(GateMode::FullV2), Some(costs), vec![]);
    cfg.warmup_epochs = 1;
    let out = temp_dir("search-mullog");
    let err = search(
        gpu,
        &net,
        &source(),
        &cfg,
        &RunDir(out.clone()),
        false,
        &mut Quiet,
    )
    .err()
    .expect("refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("mul#log")
            && msg.contains("--loss add#hinge")
            && msg.contains("--latency-batch"),
        "{msg}"
    );
    assert!(!out.join("log.jsonl").exists() && !RunDir(out.clone()).checkpoint().exists());
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn two_mode_and_reinforce_run_and_resume_checks_flags() {
    let gpu = gpu();
    let space = SearchSpace::new("cifar", 0.25, 10).unwrap();
    let data = source();
    let costs = toy_costs(&space, LossForm::MulLog { a: 0.2, b: 0.3 });
    for (name, update) in [
        ("two", ArchUpdate::Gradient(GateMode::Two)),
        (
            "reinforce",
            ArchUpdate::Reinforce {
                samples: 3,
                exponent: 0.1,
            },
        ),
    ] {
        let out = temp_dir(&format!("search-{name}"));
        let net = Supernet::new(gpu, &space, 2).unwrap();
        let flags = vec![("mode".to_string(), name.to_string())];
        // REINFORCE with the official options: 3 updates an epoch on 24-image batches.
        let reinforce = matches!(update, ArchUpdate::Reinforce { .. });
        let cfg = SearchConfig {
            epochs: 2,
            reinforce_batch: reinforce.then_some(24),
            reinforce_updates: reinforce.then_some(3),
            ..config(update, Some(costs.clone()), flags)
        };
        let r = search(
            gpu,
            &net,
            &data,
            &cfg,
            &RunDir(out.clone()),
            false,
            &mut Quiet,
        )
        .unwrap();
        assert_eq!(r.choice.len(), 21);
        // One epoch with architecture steps, of 4 weight steps: one after each (arch_every
        // 1), or the 3 REINFORCE updates asked for.
        assert_eq!(r.arch.t, if reinforce { 3 } else { 4 }, "{name}");
        // Resuming with another flag value names the flag.
        let other = SearchConfig {
            epochs: 3,
            flags: vec![("mode".to_string(), "other".to_string())],
            ..cfg.clone()
        };
        let err = search(
            gpu,
            &net,
            &data,
            &other,
            &RunDir(out.clone()),
            true,
            &mut Quiet,
        )
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
        assert!(err.contains("--mode") && err.contains(name), "{err}");
        let _ = std::fs::remove_dir_all(out);
    }
}

#[test]
fn search_bad_input_names_what_is_wrong() {
    let out = temp_dir("search-bad");
    let o = out.to_string_lossy().into_owned();
    for (flag, value, listed) in [
        ("--space", "mnist", "imagenet"),
        ("--mode", "three", "full_v2"),
        ("--objective", "speed", "flops"),
        ("--arch-update", "evolution", "reinforce"),
        ("--loss", "mul#sqrt", "add#hinge"),
    ] {
        let (ok, _, err) = proxyless(&["search", flag, value, "--out", &o]);
        assert!(
            !ok && err.contains(value) && err.contains(listed),
            "{flag}: {err}"
        );
    }
    // A target no net of the space can reach.
    let (ok, _, err) = proxyless(&[
        "search",
        "--objective",
        "flops",
        "--target-latency",
        "0.001",
        "--out",
        &o,
    ]);
    assert!(!ok && err.contains("below the smallest net"), "{err}");
    // A table without the entries of this space.
    let lut = out.join("partial.yaml");
    std::fs::write(
        &lut,
        "Conv-input:1x1x3-output:1x1x8:\n  count: 1\n  mean: 1.0\n  var: 0.0\n",
    )
    .unwrap();
    let (ok, _, err) = proxyless(&["search", "--lut", &lut.to_string_lossy(), "--out", &o]);
    assert!(!ok && err.contains("no entry Conv-input:32x32x3"), "{err}");
    let _ = std::fs::remove_dir_all(out);
}

/// Binary gates keep memory at the level of one network: the supernet's one-path step peaks
/// within 10% of the same net trained alone plus the other candidates' resident weights; the
/// all-paths step, which keeps every candidate's activations, peaks higher.
#[test]
fn one_path_memory_stays_at_one_network() {
    // A private device: other tests' buffers would move this pool's counters.
    let gpu = proxyless::gpu::Gpu::new(&Default::default()).expect("a wgpu adapter");
    let r = proxyless::workloads::memory::run(&gpu, "cifar", 0.25, 4).unwrap();
    let (standalone, supernet, all) = (&r[0], &r[1], &r[2]);
    let others = supernet.resident_bytes - standalone.resident_bytes;
    assert!(
        supernet.peak_bytes as f64 <= 1.1 * standalone.peak_bytes as f64 + others as f64,
        "supernet {} > 1.1 x standalone {} + other candidates {}",
        supernet.peak_bytes,
        standalone.peak_bytes,
        others
    );
    let activations =
        |m: &proxyless::workloads::memory::MemoryResult| m.peak_bytes - m.resident_bytes;
    assert!(
        activations(all) as f64 > 2.0 * activations(supernet) as f64,
        "all-paths {} vs one path {}",
        activations(all),
        activations(supernet)
    );
}

/// The search, too, ends on a lost device with an error naming its last checkpoint, intact,
/// and `--resume` from it finishes the search.
#[test]
fn a_lost_device_ends_the_search_with_the_last_checkpoint_intact() {
    let gpu = proxyless::gpu::Gpu::new(&Default::default()).unwrap();
    let space = SearchSpace::new("cifar", 0.25, 3).unwrap();
    let costs = toy_costs(&space, LossForm::parse("add#linear").unwrap());
    let cfg = config(ArchUpdate::Gradient(GateMode::Two), Some(costs), vec![]);
    let out = temp_dir("search-lost");
    let net = Supernet::new(&gpu, &space, 0).unwrap();
    let err = search(
        &gpu,
        &net,
        &source(),
        &cfg,
        &RunDir(out.clone()),
        false,
        &mut crate::common::LoseDeviceAfterEpoch(&gpu, 2),
    )
    .err()
    .expect("the injected loss ends the search");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("device lost") && msg.contains("1 epochs done"),
        "{msg}"
    );
    let net = Supernet::new(&gpu, &space, 0).unwrap();
    let r = search(
        &gpu,
        &net,
        &source(),
        &cfg,
        &RunDir(out.clone()),
        true,
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(r.choice.len(), 21);
    let _ = std::fs::remove_dir_all(out);
}
