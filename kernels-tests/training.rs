//! Networks from net configs, training end to end, checkpoints and their bad input.

use std::path::{Path, PathBuf};

use proxyless::data::{synthetic, Augment};
use proxyless::nn::config::{BlockOp, NetConfig};
use proxyless::nn::optim::OptimizerKind;
use proxyless::nn::Network;
use proxyless::train::{self, DataSource, Quiet, RunDir, TrainConfig};

use crate::common::gpu;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("proxyless-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sgd() -> OptimizerKind {
    OptimizerKind::Sgd {
        momentum: 0.9,
        nesterov: true,
        weight_decay: 4e-5,
    }
}

/// Parameters counted from the config alone (weights, BN scale and shift, biases), to check
/// the network's own count against.
fn count_from_config(c: &NetConfig) -> usize {
    let conv = |i: usize, o: usize, k: usize, bn: bool| i * o * k * k + if bn { 2 * o } else { 0 };
    let mut n = conv(
        c.first_conv.in_channels,
        c.first_conv.out_channels,
        c.first_conv.kernel,
        c.first_conv.use_bn,
    );
    for b in &c.blocks {
        if let BlockOp::MbConv(m) = &b.op {
            let mid = m.mid_channels;
            let dw = if m.expand_ratio == 1 {
                m.in_channels
            } else {
                mid
            };
            if m.expand_ratio != 1 {
                n += conv(m.in_channels, mid, 1, true);
            }
            n += dw * m.kernel * m.kernel + 2 * dw;
            n += conv(dw, m.out_channels, 1, true);
        }
    }
    if let Some(f) = &c.feature_mix {
        n += conv(f.in_channels, f.out_channels, f.kernel, f.use_bn);
    }
    let l = &c.classifier;
    n + l.in_features * l.out_features + if l.bias { l.out_features } else { 0 }
}

#[test]
fn official_and_bundled_configs_load_with_consistent_counts() {
    let mut paths: Vec<PathBuf> = ["cifar-mb6k5", "cifar-small", "tiny"]
        .iter()
        .map(|n| repo(&format!("data/nets/{n}.config")))
        .collect();
    let official = repo("../shared/data/official");
    for n in ["proxyless_gpu", "proxyless_cpu", "proxyless_mobile"] {
        let p = official.join(format!("{n}.config"));
        if p.exists() {
            paths.push(p);
        }
    }
    for p in paths {
        let c = NetConfig::load(&p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
        let net = Network::new(gpu(), &c, 0).unwrap();
        let size = if c.first_conv.stride == 2 { 224 } else { 32 };
        let rows = net.layers(size);
        let table: usize = rows.iter().map(|r| r.params).sum();
        assert_eq!(table, net.params.trainable_count(), "{}", p.display());
        assert_eq!(table, count_from_config(&c), "{}", p.display());
        assert!(rows.iter().map(|r| r.macs).sum::<u64>() > 0);
        // The JSON written back parses to the same net.
        let again = NetConfig::parse(&c.to_json().to_string()).unwrap();
        assert_eq!(again, c, "{}: round trip", p.display());
    }
}

#[test]
fn bad_net_configs_name_what_is_wrong() {
    let text = std::fs::read_to_string(repo("data/nets/tiny.config")).unwrap();
    let dir = temp_dir("bad-configs");
    let cases = [
        (
            text.replacen("MBInvertedConvLayer", "FancyConvLayer", 1),
            "FancyConvLayer",
        ),
        (
            text.replacen("\"out_channels\": 8", "\"out_channels\": 9", 1),
            "do not chain",
        ),
        ("{ not json".to_string(), "not valid JSON"),
        (
            text.replacen(
                "\"kernel_size\": 3,\n        \"stride\": 1,\n        \"expand_ratio\"",
                "\"kernel_size\": 4,\n        \"stride\": 1,\n        \"expand_ratio\"",
                1,
            ),
            "kernel_size 4",
        ),
    ];
    for (i, (body, phrase)) in cases.iter().enumerate() {
        assert_ne!(body, &text, "case {i} changed nothing");
        let p = dir.join(format!("bad{i}.config"));
        std::fs::write(&p, body).unwrap();
        let err = format!("{:#}", NetConfig::load(&p).unwrap_err());
        assert!(
            err.contains(phrase) && err.contains(&format!("bad{i}.config")),
            "case {i}: {err}"
        );
    }
    let missing = format!(
        "{:#}",
        NetConfig::load(&dir.join("absent.config")).unwrap_err()
    );
    assert!(missing.contains("absent.config"), "{missing}");
    let _ = std::fs::remove_dir_all(dir);
}

fn small_source(n: usize, size: usize) -> DataSource {
    let train = synthetic(5, n, size);
    let test = synthetic(6, 200, size);
    DataSource::from_sets(
        "synthetic".into(),
        train,
        Some(test),
        Augment::CropFlip { pad: 2 },
        n / 5,
    )
    .unwrap()
}

fn config(epochs: usize, lr: f32) -> TrainConfig {
    TrainConfig {
        epochs,
        batch: 32,
        lr,
        warmup_epochs: 0,
        optimizer: sgd(),
        label_smoothing: 0.1,
        seed: 3,
        stop_after: None,
        parts: 1,
        group: Default::default(),
    }
}

/// The bar: a small net learns the synthetic set to at least 95% held-out accuracy;
/// the saved weights give the same accuracy through `eval`'s path.
#[test]
fn synthetic_training_reaches_95_percent_held_out() {
    let gpu = gpu();
    let c = NetConfig::load(&repo("data/nets/tiny.config")).unwrap();
    let net = Network::new(gpu, &c, 1).unwrap();
    let data = DataSource::open(None, 16, Some(1000), 0).unwrap();
    let out = temp_dir("synthetic95");
    let cfg = TrainConfig {
        epochs: 2,
        batch: 64,
        lr: 0.2,
        ..config(2, 0.2)
    };
    let s = train::train(
        gpu,
        &net,
        &data,
        &cfg,
        &RunDir(out.clone()),
        false,
        &mut Quiet,
    )
    .unwrap();
    let test = s.test_accuracy.unwrap();
    assert!(test >= 0.95, "held-out accuracy {test}");
    assert!(s.valid_accuracy.unwrap() >= 0.95);
    let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 2);
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["train_loss"].as_f64().unwrap().is_finite());
    }
    // Weights reload into a fresh net and evaluate the same.
    let fresh = Network::new(gpu, &NetConfig::load(&out.join("net.config")).unwrap(), 99).unwrap();
    train::load_weights(gpu, &fresh, &out.join("weights.safetensors")).unwrap();
    let (set, norm) = train::test_set(None, 16, 0, &out.join("weights.safetensors"), None).unwrap();
    let n = set.len();
    let (_, acc) = train::evaluate(
        gpu,
        &fresh,
        &std::sync::Arc::new(set),
        (0..n).collect(),
        norm,
        100,
    )
    .unwrap();
    assert!(
        (acc - test).abs() < 1e-9,
        "reloaded {acc} vs trained {test}"
    );
    let _ = std::fs::remove_dir_all(out);
}

/// `evaluate`'s loss is a mean per image: a batch size that does not divide the set (37 images
/// in batches of 36, the last batch one image) gives the loss of batches of one. The mean of
/// the batch means, which weighs that last image as much as the other 36, is far from it.
#[test]
fn evaluated_loss_is_a_mean_per_image() {
    let gpu = gpu();
    let c = NetConfig::load(&repo("data/nets/tiny.config")).unwrap();
    let net = Network::new(gpu, &c, 4).unwrap();
    // A little training, so that the images' losses differ (an untrained net's are all ln 10).
    let out = temp_dir("per-image-loss");
    let cfg = TrainConfig {
        batch: 64,
        ..config(1, 0.2)
    };
    train::train(
        gpu,
        &net,
        &small_source(640, 16),
        &cfg,
        &RunDir(out.clone()),
        false,
        &mut Quiet,
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(out);
    let set = std::sync::Arc::new(synthetic(9, 37, 16));
    let norm = proxyless::data::Normalize::of(&set);
    let eval = |indices: std::ops::Range<usize>, batch: usize| {
        train::evaluate(gpu, &net, &set, indices.collect(), norm, batch).unwrap()
    };
    let (one, acc_one) = eval(0..37, 1);
    let (most, acc_most) = eval(0..37, 36);
    assert!(
        ((most - one) / one).abs() < 1e-5,
        "batches of 36: {most}, of 1: {one}"
    );
    assert!((acc_most - acc_one).abs() < 1e-12);
    let (first, _) = eval(0..36, 36);
    let (last, _) = eval(36..37, 1);
    let of_batches = (first + last) / 2.0;
    assert!(
        ((of_batches - one) / one).abs() > 1e-3,
        "the set is too even to tell the means apart: {of_batches} against {one}"
    );
}

fn weights_of(path: &Path) -> Vec<(String, Vec<f32>)> {
    let (t, _) = proxyless::nn::params::load_safetensors(path).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = t.into_iter().map(|(k, (_, d))| (k, d)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Two epochs straight, or one epoch then `--resume` for the second: the same weights, bit for
/// bit (data order, augmentation and dropout are all seeded by epoch and step).
#[test]
fn resume_continues_bit_for_bit() {
    let gpu = gpu();
    let c = NetConfig::load(&repo("data/nets/tiny.config")).unwrap();
    let data = small_source(400, 12);
    let straight = temp_dir("straight");
    let net = Network::new(gpu, &c, 4).unwrap();
    train::train(
        gpu,
        &net,
        &data,
        &config(2, 0.1),
        &RunDir(straight.clone()),
        false,
        &mut Quiet,
    )
    .unwrap();

    // A run stopped after epoch 1 (as a killed run leaves it), continued in a fresh process's
    // worth of state: a net with other initial weights, restored from the checkpoint.
    let part = temp_dir("part");
    let net = Network::new(gpu, &c, 4).unwrap();
    let first = TrainConfig {
        stop_after: Some(1),
        ..config(2, 0.1)
    };
    train::train(
        gpu,
        &net,
        &data,
        &first,
        &RunDir(part.clone()),
        false,
        &mut Quiet,
    )
    .unwrap();
    let log = std::fs::read_to_string(part.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 1);
    let net = Network::new(gpu, &c, 77).unwrap();
    train::train(
        gpu,
        &net,
        &data,
        &config(2, 0.1),
        &RunDir(part.clone()),
        true,
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(
        weights_of(&part.join("weights.safetensors")),
        weights_of(&straight.join("weights.safetensors")),
        "the resumed run differs from the straight run"
    );
    let log = std::fs::read_to_string(part.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 2, "the resumed run appends to the log");
    for d in [straight, part] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A loss that becomes NaN or infinite stops training with a message, and the checkpoint of
/// the last good epoch stays as it was.
#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let gpu = gpu();
    let c = NetConfig::load(&repo("data/nets/tiny.config")).unwrap();
    let data = small_source(300, 12);
    let out = temp_dir("nan");
    let net = Network::new(gpu, &c, 2).unwrap();
    train::train(
        gpu,
        &net,
        &data,
        &config(1, 0.1),
        &RunDir(out.clone()),
        false,
        &mut Quiet,
    )
    .unwrap();
    let ck = out.join("checkpoint.safetensors");
    let before = std::fs::read(&ck).unwrap();
    let net = Network::new(gpu, &c, 2).unwrap();
    let err = train::train(
        gpu,
        &net,
        &data,
        &config(3, 1e30),
        &RunDir(out.clone()),
        true,
        &mut Quiet,
    )
    .expect_err("a learning rate of 1e30 must blow the loss up");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("loss became") && msg.contains("checkpoint.safetensors"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(&ck).unwrap(),
        before,
        "the good checkpoint was overwritten"
    );
    let _ = std::fs::remove_dir_all(out);
}

/// Weights whose names or shapes are not the net's are refused with the tensor named.
#[test]
fn weights_of_another_net_are_refused() {
    let gpu = gpu();
    let dir = temp_dir("weights");
    let tiny = Network::new(
        gpu,
        &NetConfig::load(&repo("data/nets/tiny.config")).unwrap(),
        0,
    )
    .unwrap();
    let small = Network::new(
        gpu,
        &NetConfig::load(&repo("data/nets/cifar-small.config")).unwrap(),
        0,
    )
    .unwrap();
    let p = dir.join("small.safetensors");
    train::save_weights(gpu, &small, &p, None).unwrap();
    let err = format!("{:#}", train::load_weights(gpu, &tiny, &p).unwrap_err());
    assert!(
        err.contains("small.safetensors") && err.contains("shape"),
        "{err}"
    );

    // A renamed tensor.
    let mut t = tiny.params.to_host(gpu).unwrap();
    t[0].0 = "first_conv.conv.weights".into();
    let q = dir.join("renamed.safetensors");
    proxyless::nn::params::save_safetensors(&q, &t, None).unwrap();
    let err = format!("{:#}", train::load_weights(gpu, &tiny, &q).unwrap_err());
    assert!(
        err.contains("renamed.safetensors") && err.contains("first_conv.conv.weight"),
        "{err}"
    );

    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"definitely not safetensors").unwrap();
    let err = format!("{:#}", train::load_weights(gpu, &tiny, &junk).unwrap_err());
    assert!(err.contains("junk.safetensors"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A state_dict as PyTorch saves it: every BN's I64 `num_batches_tracked` is ignored, any other
/// non-f32 tensor is refused by name; weights without normalisation metadata are refused by
/// `test_set` unless a normalisation is named (`--normalize`), and bad names are refused.
#[test]
fn pytorch_state_dicts_load_and_normalisation_must_be_known() {
    use proxyless::data::NormalizeChoice;
    use safetensors::tensor::{Dtype, TensorView};
    let gpu = gpu();
    let dir = temp_dir("state-dict");
    let tiny = Network::new(
        gpu,
        &NetConfig::load(&repo("data/nets/tiny.config")).unwrap(),
        5,
    )
    .unwrap();
    let host = tiny.params.to_host(gpu).unwrap();
    let count = 7i64.to_le_bytes();
    let write = |path: &Path, extra: &[String]| {
        let mut views: Vec<(String, TensorView)> = host
            .iter()
            .map(|(n, shape, d)| {
                let v = TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(d));
                (n.clone(), v.unwrap())
            })
            .collect();
        for name in extra {
            views.push((
                name.clone(),
                TensorView::new(Dtype::I64, vec![], &count).unwrap(),
            ));
        }
        std::fs::write(path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
    };
    let tracked: Vec<String> = host
        .iter()
        .filter_map(|(n, _, _)| n.strip_suffix(".running_mean"))
        .map(|p| format!("{p}.num_batches_tracked"))
        .collect();
    assert!(tracked.len() >= 3);
    let sd = dir.join("state_dict.safetensors");
    write(&sd, &tracked);
    let fresh = Network::new(gpu, &tiny.config, 9).unwrap();
    train::load_weights(gpu, &fresh, &sd).unwrap();
    assert_eq!(
        fresh.params.to_host(gpu).unwrap(),
        host,
        "loaded as written"
    );
    // Any other integer tensor is named.
    let bad = dir.join("int.safetensors");
    write(&bad, &["classifier.linear.step".to_string()]);
    let err = format!("{:#}", train::load_weights(gpu, &fresh, &bad).unwrap_err());
    assert!(
        err.contains("classifier.linear.step") && err.contains("I64"),
        "{err}"
    );
    // No normalisation metadata: refused, unless named.
    let err = format!("{:#}", train::test_set(None, 16, 0, &sd, None).unwrap_err());
    assert!(
        err.contains("state_dict.safetensors") && err.contains("--normalize"),
        "{err}"
    );
    let imagenet = NormalizeChoice::parse("imagenet").unwrap();
    let (_, n) = train::test_set(None, 16, 0, &sd, Some(imagenet)).unwrap();
    assert_eq!(n, proxyless::data::Normalize::IMAGENET);
    let (_, n) = train::test_set(None, 16, 0, &sd, Some(NormalizeChoice::Data)).unwrap();
    assert!(n.usable() && n != proxyless::data::Normalize::IMAGENET);
    let (_, n) = train::test_set(
        None,
        16,
        0,
        &sd,
        Some(NormalizeChoice::parse("0.5,0.25").unwrap()),
    )
    .unwrap();
    assert_eq!((n.mean, n.std), ([0.5; 3], [0.25; 3]));
    // Metadata that is there but unusable (written as str(tensor)) is refused by key.
    let mut meta = std::collections::HashMap::new();
    meta.insert(
        "normalize_mean".to_string(),
        "tensor([0.4850, 0.4560, 0.4060])".to_string(),
    );
    meta.insert(
        "normalize_std".to_string(),
        "[0.229, 0.224, 0.225]".to_string(),
    );
    let odd = dir.join("odd.safetensors");
    proxyless::nn::params::save_safetensors(&odd, &host, Some(meta)).unwrap();
    let err = format!(
        "{:#}",
        train::test_set(None, 16, 0, &odd, None).unwrap_err()
    );
    assert!(
        err.contains("normalize_mean") && err.contains("tensor(["),
        "{err}"
    );
    for bad in ["", "imagenette", "0.5", "0.5,0", "1,2,3", "a,b", "0.5,-1"] {
        assert!(
            NormalizeChoice::parse(bad).is_err(),
            "--normalize {bad:?} accepted"
        );
    }
    assert_eq!(
        NormalizeChoice::parse("0.1,0.2,0.3,0.4,0.5,0.6").unwrap(),
        NormalizeChoice::Fixed(proxyless::data::Normalize {
            mean: [0.1, 0.2, 0.3],
            std: [0.4, 0.5, 0.6]
        })
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A config without "bn" gets PyTorch's defaults (momentum 0.1, eps 1e-5), as the official
/// `build_from_config` leaves them.
#[test]
fn a_config_without_bn_gets_the_official_defaults() {
    let text = std::fs::read_to_string(repo("data/nets/tiny.config")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let given = NetConfig::parse(&text).unwrap();
    assert!(v.as_object_mut().unwrap().remove("bn").is_some());
    let c = NetConfig::parse(&v.to_string()).unwrap();
    assert_eq!((c.bn_momentum, c.bn_eps), (0.1, 1e-5));
    assert_ne!(given.bn_eps, c.bn_eps, "tiny.config gives its own eps");
}

/// `--decay all`: weight decay reaches BN scales and biases too (the official search's
/// `no_decay_keys` None); by default only conv and linear weights decay. One SGD step without
/// momentum and a zero gradient leaves w (1 - lr wd) where it decays, w where it does not.
#[test]
fn decay_all_reaches_bn_and_biases() {
    use proxyless::nn::optim::{Optimizer, OptimizerKind};
    let gpu = gpu();
    let net = Network::new(
        gpu,
        &NetConfig::load(&repo("data/nets/tiny.config")).unwrap(),
        2,
    )
    .unwrap();
    let kind = OptimizerKind::Sgd {
        momentum: 0.0,
        nesterov: false,
        weight_decay: 0.1,
    };
    let p = &net.params;
    let (gamma, weight) = (
        (0..p.params.len())
            .find(|&i| p.get(i).name.ends_with("bn.weight"))
            .unwrap(),
        (0..p.params.len())
            .find(|&i| p.get(i).name.ends_with("conv.weight"))
            .unwrap(),
    );
    for decay_all in [false, true] {
        let mut opt = Optimizer::new(kind, p);
        opt.decay_all = decay_all;
        let before = p.to_host(gpu).unwrap();
        let grads = proxyless::autograd::Gradients {
            by_param: [gamma, weight]
                .iter()
                .map(|&i| (i, gpu.zeros(&p.get(i).value.shape)))
                .collect(),
        };
        opt.step(gpu, p, &grads, 0.5).unwrap();
        let after = p.to_host(gpu).unwrap();
        for (i, decays) in [(gamma, decay_all), (weight, true)] {
            for (b, a) in before[i].2.iter().zip(&after[i].2) {
                let want = if decays { b * (1.0 - 0.05) } else { *b };
                assert!(
                    (a - want).abs() <= 1e-6 * b.abs().max(1.0),
                    "{}: {a} vs {want}",
                    before[i].0
                );
            }
        }
    }
}

/// A lost device (or memory exhausted: both reach a run as an error from the next sync) in the
/// middle of epoch 2, injected right after epoch 1's checkpoint: training ends with an error
/// naming the device failure and the last checkpoint, which is intact (byte for byte what a
/// run stopped after epoch 1 wrote), and `--resume` from it finishes the run.
#[test]
fn a_lost_device_ends_the_run_with_the_last_checkpoint_intact() {
    let gpu = proxyless::gpu::Gpu::new(&Default::default()).unwrap();
    let c = NetConfig::load(&repo("data/nets/tiny.config")).unwrap();
    let data = small_source(320, 16);
    let cfg = config(2, 0.1);
    let (lost, clean) = (temp_dir("lost-device"), temp_dir("lost-device-clean"));
    let net = Network::new(&gpu, &c, 1).unwrap();
    let Err(err) = train::train(
        &gpu,
        &net,
        &data,
        &cfg,
        &RunDir(lost.clone()),
        false,
        &mut crate::common::LoseDeviceAfterEpoch(&gpu, 3),
    ) else {
        panic!("the injected loss did not end the run");
    };
    let msg = format!("{err:#}");
    assert!(
        msg.contains("device lost") && msg.contains("1 epochs done") && msg.contains("--resume"),
        "{msg}"
    );
    let net = Network::new(&gpu, &c, 1).unwrap();
    let stop = TrainConfig {
        stop_after: Some(1),
        ..cfg.clone()
    };
    train::train(
        &gpu,
        &net,
        &data,
        &stop,
        &RunDir(clean.clone()),
        false,
        &mut Quiet,
    )
    .unwrap();
    let (a, b) = (
        std::fs::read(lost.join("checkpoint.safetensors")).unwrap(),
        std::fs::read(clean.join("checkpoint.safetensors")).unwrap(),
    );
    assert!(
        a == b,
        "the checkpoint left by the failure differs from epoch 1's"
    );
    let net = Network::new(&gpu, &c, 1).unwrap();
    let s = train::train(
        &gpu,
        &net,
        &data,
        &cfg,
        &RunDir(lost.clone()),
        true,
        &mut Quiet,
    )
    .unwrap();
    assert!(s.test_accuracy.is_some());
    for d in [lost, clean] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// `Gpu::concat` then `Gpu::scatter` gives every tensor back, of odd sizes, into tensors
/// poisoned with NaN (so an element left unwritten fails).
#[test]
fn concat_then_scatter_gives_every_tensor_back() {
    let gpu = gpu();
    let sizes = [1usize, 7, 33, 1000, 5];
    let values: Vec<Vec<f32>> = sizes
        .iter()
        .enumerate()
        .map(|(t, &n)| (0..n).map(|i| (t * 1000 + i) as f32 * 0.5 - 3.0).collect())
        .collect();
    let tensors: Vec<_> = values
        .iter()
        .map(|v| gpu.upload(v, &[v.len()]).unwrap())
        .collect();
    let refs: Vec<&proxyless::gpu::Tensor> = tensors.iter().collect();
    let packed = gpu.concat(&refs);
    assert_eq!(
        gpu.read_f32(&packed).unwrap(),
        values.concat(),
        "packed in order"
    );
    let targets: Vec<_> = values
        .iter()
        .map(|v| gpu.upload(&vec![f32::NAN; v.len()], &[v.len()]).unwrap())
        .collect();
    let target_refs: Vec<&proxyless::gpu::Tensor> = targets.iter().collect();
    gpu.scatter(&packed, &target_refs).unwrap();
    for (t, v) in targets.iter().zip(&values) {
        assert_eq!(&gpu.read_f32(t).unwrap(), v);
    }
    // More wanted than the packed tensor holds: an error, not a read past its end.
    let big = gpu.upload(&[0.0f32; 2000], &[2000]).unwrap();
    assert!(gpu.scatter(&packed, &[&big]).is_err());
}

/// A batch in parts updates the BN running statistics as its first part alone does (the rule
/// a data-parallel run keeps: rank 0's first part), while the gradient is the whole batch's.
#[test]
fn parts_keep_the_first_parts_running_statistics() {
    use proxyless::nn::parts::{part_gradients, PartsOf};
    let gpu = gpu();
    let c = NetConfig::load(&repo("data/nets/tiny.config")).unwrap();
    let data = synthetic(4, 12, 16);
    let upload = |rows: std::ops::Range<usize>| {
        let px = 16 * 16 * 3;
        let x: Vec<f32> = rows
            .clone()
            .flat_map(|i| data.image(i).iter().map(|&b| b as f32 / 127.5 - 1.0))
            .collect();
        let y: Vec<u32> = rows.clone().map(|i| data.labels[i] as u32).collect();
        assert_eq!(x.len(), rows.len() * px);
        (
            gpu.upload(&x, &[rows.len(), 16, 16, 3]).unwrap(),
            gpu.upload(&y, &[rows.len()]).unwrap(),
        )
    };
    let running = |net: &Network| -> Vec<f32> {
        gpu.read_many(&net.params.buffers())
            .unwrap()
            .into_iter()
            .flatten()
            .collect()
    };
    let of = PartsOf {
        images: 12,
        first: 0,
    };
    let two = Network::new(gpu, &c, 9).unwrap();
    let parts = vec![upload(0..5), upload(5..12)];
    part_gradients(gpu, &two.params, parts, of, 0.0, 0, |t, x| {
        two.forward(t, x, true)
    })
    .unwrap();
    let first = Network::new(gpu, &c, 9).unwrap();
    let before = running(&first);
    part_gradients(
        gpu,
        &first.params,
        vec![upload(0..5)],
        of,
        0.0,
        0,
        |t, x| first.forward(t, x, true),
    )
    .unwrap();
    let (got, want) = (running(&two), running(&first));
    assert_ne!(want, before, "the first part moved the running statistics");
    assert_eq!(got, want);
}

/// The largest activation of `cifar-mb6k5` (../shared/bench/WORKLOADS.md) at 32 x 32: the
/// second stage's expanded input, 24 channels x 6 at full resolution, before its first stride.
#[test]
fn largest_activation_is_the_widest_expansion_at_full_resolution() {
    let gpu = gpu();
    let c = NetConfig::load(&repo("data/nets/cifar-mb6k5.config")).unwrap();
    let net = Network::new(gpu, &c, 0).unwrap();
    assert_eq!(net.largest_activation_floats(32), 32 * 32 * 144);
    // tiny: the 8 -> 24 expansion before the first stride.
    let tiny = NetConfig::load(&repo("data/nets/tiny.config")).unwrap();
    let net = Network::new(gpu, &tiny, 0).unwrap();
    assert_eq!(net.largest_activation_floats(256), 256 * 256 * 24);
}

/// A batch whose activations would be over one storage binding (here 32 images of 256 x 256:
/// 6.3 MB an image in tiny's first expansion, 21 images in lavapipe's 128 MiB) is cut into
/// parts instead of failing, and evaluation runs in batches that fit.
#[test]
fn train_cuts_a_batch_over_a_storage_binding_into_parts() {
    let gpu = gpu();
    let c = NetConfig::load(&repo("data/nets/tiny.config")).unwrap();
    let net = Network::new(gpu, &c, 1).unwrap();
    let per_image = 4 * net.largest_activation_floats(256) as u64;
    let fits = (gpu.max_binding_bytes() / per_image) as usize;
    if fits >= 32 {
        eprintln!("skipped: this adapter's storage binding holds {fits} images of 256 x 256");
        return;
    }
    let train_set = synthetic(5, 40, 256);
    let data =
        DataSource::from_sets("synthetic".into(), train_set, None, Augment::None, 8).unwrap();
    let dir = temp_dir("cut-batches");
    let cfg = TrainConfig {
        epochs: 1,
        ..config(1, 0.05)
    };
    let s = train::train(
        gpu,
        &net,
        &data,
        &cfg,
        &RunDir(dir.clone()),
        false,
        &mut Quiet,
    )
    .unwrap();
    assert!(s.valid_accuracy.is_some());
    let log = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(record["parts"], 32usize.div_ceil(fits));
    assert!(record["train_loss"].as_f64().unwrap().is_finite());
    let _ = std::fs::remove_dir_all(dir);
}
