//! Autograd and networks: every parameter gradient of whole nets (single MBConv blocks with
//! and without shortcut, stride 1 and 2, and a tiny full net) against central finite
//! differences of an f64 CPU forward built from `proxyless::reference`; and the tape's memory
//! contract (after backward only parameters and gradients are live).

use std::collections::HashMap;

use proxyless::autograd::Tape;
use proxyless::gpu::{Gpu, GpuOptions};
use proxyless::nn::config::Act;
use proxyless::nn::layers::{ConvBnAct, ConvKind};
use proxyless::nn::network::Block;
use proxyless::nn::{NetConfig, Network};
use proxyless::reference as r;
use rand::{Rng, SeedableRng};

use crate::common::gpu;

type Weights = HashMap<String, Vec<f64>>;

/// Official-format JSON of a net: stem, the given blocks, optional feature mix, classifier.
fn net_json(
    stem_stride: usize,
    stem_out: usize,
    blocks: &[(usize, usize, usize, usize, usize, &str)],
    mix: Option<usize>,
    dropout: f64,
) -> String {
    let conv = |i: usize, o: usize, k: usize, s: usize| {
        format!(
            r#"{{"name":"ConvLayer","kernel_size":{k},"stride":{s},"dilation":1,"groups":1,"bias":false,
            "has_shuffle":false,"in_channels":{i},"out_channels":{o},"use_bn":true,"act_func":"relu6",
            "dropout_rate":0,"ops_order":"weight_bn_act"}}"#
        )
    };
    let mut c = stem_out;
    let mut bs = Vec::new();
    for &(cin, cout, k, s, e, kind) in blocks {
        let shortcut = if kind == "id" || kind == "zero" {
            format!(r#"{{"name":"IdentityLayer","in_channels":{cin},"out_channels":{cout}}}"#)
        } else {
            "null".into()
        };
        let op = if kind == "zero" {
            format!(r#"{{"name":"ZeroLayer","stride":{s}}}"#)
        } else {
            format!(
                r#"{{"name":"MBInvertedConvLayer","in_channels":{cin},"out_channels":{cout},"kernel_size":{k},"stride":{s},"expand_ratio":{e}}}"#
            )
        };
        bs.push(format!(
            r#"{{"name":"MobileInvertedResidualBlock","mobile_inverted_conv":{op},"shortcut":{shortcut}}}"#
        ));
        c = cout;
    }
    let (mix_json, feat) = match mix {
        Some(m) => (conv(c, m, 1, 1), m),
        None => ("null".into(), c),
    };
    format!(
        r#"{{"name":"ProxylessNASNets","bn":{{"momentum":0.1,"eps":0.001}},
        "first_conv":{},"feature_mix_layer":{mix_json},
        "classifier":{{"name":"LinearLayer","in_features":{feat},"out_features":5,"bias":true,"dropout_rate":{dropout}}},
        "blocks":[{}]}}"#,
        conv(3, stem_out, 3, stem_stride),
        bs.join(",")
    )
}

/// An activation and its NHWC shape.
struct Act4 {
    x: Vec<f64>,
    s: [usize; 4],
}

fn ref_conv(c: &ConvBnAct, w: &Weights, net: &Network, a: Act4, eps: f64) -> Act4 {
    let name = |i: usize| net.params.get(i).name.clone();
    let wv = &w[&name(c.weight)];
    let (mut y, s) = match c.kind {
        ConvKind::Dense => {
            r::conv::conv2d_forward(&a.x, a.s, wv, c.out_channels, c.kernel, c.stride)
        }
        ConvKind::Depthwise => r::depthwise::depthwise_forward(&a.x, a.s, wv, c.kernel, c.stride),
        ConvKind::Pointwise => {
            let m = a.s[0] * a.s[1] * a.s[2];
            let y = r::pointwise::pointwise_forward(&a.x, m, a.s[3], wv, c.out_channels);
            (y, [a.s[0], a.s[1], a.s[2], c.out_channels])
        }
    };
    if let Some(bn) = &c.bn {
        let m = s[0] * s[1] * s[2];
        y = r::batchnorm::batchnorm_train_forward(
            &y,
            m,
            s[3],
            &w[&name(bn.gamma)],
            &w[&name(bn.beta)],
            eps,
        )
        .0;
    }
    if c.act == Act::Relu6 {
        y = r::activation::relu6_forward(&y);
    }
    Act4 { x: y, s }
}

/// The f64 training-mode forward of `net` with weights `w`; returns the logits.
fn ref_forward(
    net: &Network,
    w: &Weights,
    x: &[f64],
    xs: [usize; 4],
    dropout_seed: u32,
) -> Vec<f64> {
    let eps = net.config.bn_eps as f64;
    let mut h = ref_conv(
        &net.first_conv,
        w,
        net,
        Act4 {
            x: x.to_vec(),
            s: xs,
        },
        eps,
    );
    for b in &net.blocks {
        if let Block::MbConv { op, shortcut } = b {
            let input = Act4 {
                x: h.x.clone(),
                s: h.s,
            };
            let mut y = match &op.expand {
                Some(e) => ref_conv(e, w, net, input, eps),
                None => input,
            };
            y = ref_conv(&op.depth, w, net, y, eps);
            y = ref_conv(&op.project, w, net, y, eps);
            if *shortcut {
                y.x = r::elementwise::add_forward(&y.x, &h.x);
            }
            h = y;
        }
    }
    if let Some(f) = &net.feature_mix {
        h = ref_conv(f, w, net, h, eps);
    }
    let mut pooled = r::pool::global_avg_pool_forward(&h.x, h.s);
    let c = &net.classifier;
    if c.dropout > 0.0 {
        pooled = r::dropout::dropout_forward(&pooled, c.dropout, dropout_seed);
    }
    let name = |i: usize| net.params.get(i).name.clone();
    r::linear::linear_forward(
        &pooled,
        h.s[0],
        c.in_features,
        &w[&name(c.weight)],
        &w[&name(c.bias.unwrap())],
        c.out_features,
    )
}

/// GPU gradients of the mean CE loss (smoothing 0.1) of every trainable parameter vs central
/// differences of the f64 forward; asserts the relative error of the whole gradient and of
/// each parameter (with a floor for gradients that are zero in exact arithmetic, such as a
/// BN shift followed by another BN).
fn check_gradients(config_json: &str, n: usize, size: usize, seed: u64) {
    let gpu = gpu();
    let config = NetConfig::parse(config_json).expect("test config parses");
    let net = Network::new(gpu, &config, seed).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let xs = [n, size, size, 3];
    let x: Vec<f64> = r::random_vec(&mut rng, n * size * size * 3, -1.0, 1.0);
    let labels: Vec<u32> = (0..n).map(|_| rng.random_range(0..5)).collect();
    let tape_seed = 77u32;

    let tape = Tape::new(gpu, tape_seed);
    let xv = tape.constant(
        gpu.upload(&x.iter().map(|&v| v as f32).collect::<Vec<_>>(), &xs)
            .unwrap(),
    );
    let lab = gpu.upload(&labels, &[n]).unwrap();
    let logits = net.forward(&tape, &xv, true).unwrap();
    let (_, dl) =
        proxyless::ops::loss::softmax_cross_entropy(gpu, logits.value(), &lab, 0.1).unwrap();
    let grads = tape.backward(&logits, dl).unwrap();
    let gpu_grads: HashMap<usize, Vec<f64>> = grads
        .by_param
        .iter()
        .map(|(i, g)| {
            (
                *i,
                gpu.read_f32(g).unwrap().iter().map(|&v| v as f64).collect(),
            )
        })
        .collect();

    let mut w: Weights = net
        .params
        .to_host(gpu)
        .unwrap()
        .into_iter()
        .map(|(name, _, v)| (name, v.iter().map(|&f| f as f64).collect()))
        .collect();
    let loss = |w: &Weights| {
        let z = ref_forward(&net, w, &x, xs, tape_seed);
        r::loss::softmax_cross_entropy(&z, n, 5, &labels, 0.1).0
    };
    let h = 1e-6;
    let (mut all_g, mut all_fd) = (Vec::new(), Vec::new());
    let mut per_param = Vec::new();
    for (i, p) in net.params.params.iter().enumerate() {
        if !p.trainable() {
            assert!(
                !gpu_grads.contains_key(&i),
                "{} is a buffer but got a gradient",
                p.name
            );
            continue;
        }
        let g = gpu_grads
            .get(&i)
            .unwrap_or_else(|| panic!("no gradient for {}", p.name));
        let mut fd = Vec::with_capacity(g.len());
        for j in 0..g.len() {
            let orig = w[&p.name][j];
            w.get_mut(&p.name).unwrap()[j] = orig + h;
            let up = loss(&w);
            w.get_mut(&p.name).unwrap()[j] = orig - h;
            let down = loss(&w);
            w.get_mut(&p.name).unwrap()[j] = orig;
            fd.push((up - down) / (2.0 * h));
        }
        per_param.push((p.name.clone(), g.clone(), fd.clone()));
        all_g.extend_from_slice(g);
        all_fd.extend(fd);
    }
    let total = r::rel_error(&all_g, &all_fd);
    let rms = (all_fd.iter().map(|v| v * v).sum::<f64>() / all_fd.len() as f64).sqrt();
    let mut report = Vec::new();
    let mut worst: f64 = 0.0;
    for (name, g, fd) in &per_param {
        let diff = g
            .iter()
            .zip(fd)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm = fd.iter().map(|v| v * v).sum::<f64>().sqrt();
        let floor = 1e-2 * rms * (fd.len() as f64).sqrt();
        let e = diff / norm.max(floor);
        worst = worst.max(e);
        report.push(format!("{name}: rel {e:.2e} (|fd| {norm:.2e})"));
    }
    eprintln!(
        "gradient check: whole {total:.2e}, worst parameter {worst:.2e}, {} values",
        all_g.len()
    );
    assert!(
        total < 1e-4 && worst < 1e-3,
        "gradient mismatch: whole {total:.2e}, worst parameter {worst:.2e}\n{}",
        report.join("\n")
    );
}

#[test]
fn mbconv_stride1_with_shortcut_gradients() {
    let j = net_json(1, 4, &[(4, 4, 3, 1, 3, "id")], None, 0.0);
    check_gradients(&j, 3, 5, 11);
}

#[test]
fn mbconv_stride1_without_shortcut_gradients() {
    let j = net_json(1, 4, &[(4, 6, 5, 1, 6, "none")], None, 0.0);
    check_gradients(&j, 2, 5, 12);
}

#[test]
fn mbconv_stride2_odd_input_gradients() {
    let j = net_json(1, 4, &[(4, 8, 7, 2, 3, "none")], None, 0.0);
    check_gradients(&j, 2, 7, 13);
}

#[test]
fn tiny_network_gradients() {
    // Stem of stride 2, an expand-1 block, a residual block, a skipped (zero) block, a stride-2
    // block, feature mix and a classifier with dropout; batch 1 has a BN over few rows.
    let j = net_json(
        2,
        4,
        &[
            (4, 4, 3, 1, 1, "none"),
            (4, 4, 5, 1, 3, "id"),
            (4, 4, 3, 1, 3, "zero"),
            (4, 8, 3, 2, 6, "none"),
        ],
        Some(12),
        0.25,
    );
    check_gradients(&j, 2, 9, 14);
}

/// After backward only parameters, buffers and gradients are live: every activation the tape
/// saved went back to the pool. Then the optimizer state is added, and nothing else.
#[test]
fn backward_frees_every_saved_activation() {
    let gpu = Gpu::new(&GpuOptions::default()).expect("a wgpu adapter");
    let j = net_json(
        1,
        8,
        &[
            (8, 8, 3, 1, 1, "none"),
            (8, 12, 5, 2, 6, "none"),
            (12, 12, 3, 1, 3, "id"),
        ],
        Some(16),
        0.2,
    );
    let config = NetConfig::parse(&j).unwrap();
    let net = Network::new(&gpu, &config, 3).unwrap();
    let mut opt = proxyless::nn::optim::Optimizer::new(
        proxyless::nn::optim::OptimizerKind::Sgd {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 4e-5,
        },
        &net.params,
    );
    gpu.sync().unwrap();
    let resident = gpu.pool_stats().live_bytes;
    for _step in 0..2 {
        let (n, s) = (4, 9);
        let tape = Tape::new(&gpu, 5);
        let x = tape.constant(
            gpu.upload(&vec![0.3f32; n * s * s * 3], &[n, s, s, 3])
                .unwrap(),
        );
        let lab = gpu.upload(&[0u32, 1, 2, 3], &[n]).unwrap();
        let logits = net.forward(&tape, &x, true).unwrap();
        assert!(tape.recorded() > 0);
        let (loss, dl) =
            proxyless::ops::loss::softmax_cross_entropy(&gpu, logits.value(), &lab, 0.1).unwrap();
        let grads = tape.backward(&logits, dl).unwrap();
        assert_eq!(tape.recorded(), 0, "the tape is empty after backward");
        drop((x, logits, loss, lab));
        gpu.sync().unwrap();
        let grad_bytes: u64 = grads.by_param.iter().map(|(_, g)| g.device_bytes()).sum();
        let trainable = net.params.params.iter().filter(|p| p.trainable()).count();
        assert_eq!(
            grads.by_param.len(),
            trainable,
            "every trainable tensor got a gradient"
        );
        let state_before = opt
            .first
            .iter()
            .flatten()
            .map(|t| t.device_bytes())
            .sum::<u64>();
        // Weights keep the texture copies the products made of them until the step writes
        // them (`Gpu::to_texture`); activations keep none.
        let stats = gpu.pool_stats();
        assert_eq!(
            stats.live_bytes - stats.texture_bytes,
            resident + state_before + grad_bytes,
            "after backward: parameters + optimizer state + gradients only"
        );
        // A texture is at least one row of 1024 texels (16 KiB).
        let bound = resident + 16384 * net.params.params.len() as u64;
        assert!(
            stats.texture_bytes <= bound,
            "after backward: {} bytes of textures for {resident} bytes of parameters",
            stats.texture_bytes
        );
        opt.step(&gpu, &net.params, &grads, 0.01).unwrap();
        drop(grads);
        gpu.sync().unwrap();
        let state: u64 = opt.first.iter().flatten().map(|t| t.device_bytes()).sum();
        assert_eq!(
            gpu.pool_stats().live_bytes,
            resident + state,
            "after the step (no texture left: the step wrote every weight)"
        );
    }
}

/// Under no_grad nothing is recorded or saved, and a frozen parameter gets no gradient and is
/// not touched by the optimizer (no decay, no momentum).
#[test]
fn no_grad_records_nothing_and_unused_parameters_are_skipped() {
    let gpu = gpu();
    let j = net_json(1, 4, &[(4, 4, 3, 1, 3, "id")], None, 0.0);
    let net = Network::new(gpu, &NetConfig::parse(&j).unwrap(), 9).unwrap();
    let tape = Tape::new(gpu, 1);
    let x = gpu
        .upload(&vec![0.5f32; 2 * 5 * 5 * 3], &[2, 5, 5, 3])
        .unwrap();
    {
        let _g = tape.no_grad();
        let x = tape.constant(x);
        let logits = net.forward(&tape, &x, true).unwrap();
        assert_eq!(logits.shape(), &[2, 5]);
        assert_eq!(tape.recorded(), 0);
    }
    // An optimizer given gradients for one parameter only changes that one.
    let mut opt = proxyless::nn::optim::Optimizer::new(
        proxyless::nn::optim::OptimizerKind::Sgd {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.1,
        },
        &net.params,
    );
    let before = net.params.to_host(gpu).unwrap();
    let target = net.classifier.weight;
    let g = gpu
        .upload(
            &vec![1.0f32; net.params.get(target).numel()],
            &net.params.get(target).value.shape,
        )
        .unwrap();
    let grads = proxyless::autograd::Gradients {
        by_param: vec![(target, g)],
    };
    opt.step(gpu, &net.params, &grads, 0.1).unwrap();
    let after = net.params.to_host(gpu).unwrap();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        if i == target {
            assert_ne!(b.2, a.2, "the trained parameter moved");
        } else {
            assert_eq!(b.2, a.2, "{} has no gradient and must not move", b.0);
            assert!(opt.first[i].is_none(), "{} got optimizer state", b.0);
        }
    }
}

/// The fused training ops (BN + ReLU6 applied by the next conv as it loads its input) give
/// the unfused ops' forward, running statistics and gradients (x, gamma, beta and w).
/// Depthwise: a texture-path shape (stride 2, odd input) and a storage-buffer one (c = 6).
/// Pointwise: a fused shape and one whose pixel count is off the vec4 kernel (the tape then
/// runs the two ops separately).
#[test]
fn fused_bn_relu6_convs_match_the_separate_ops() {
    use proxyless::autograd::BnArgs;
    use proxyless::ops::batchnorm::BnAct;
    use proxyless::ops::bn_relu6_conv::NextConv;
    use std::rc::Rc;
    let gpu = gpu();
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    // (n, h, c, k, stride, cout): k == 0 is a pointwise conv c -> cout.
    let cases = [
        (2usize, 9usize, 16usize, 5usize, 2usize, 0usize),
        (3, 6, 6, 3, 1, 0),
        (2, 6, 24, 0, 1, 16),
        (3, 3, 8, 0, 1, 12),
    ];
    for &(n, h, c, k, s, cout) in &cases {
        let mut rand_vec = |len: usize, lo: f32, hi: f32| -> Vec<f32> {
            (0..len).map(|_| rng.random_range(lo..hi)).collect()
        };
        let xs = rand_vec(n * h * h * c, -2.0, 2.0);
        let gs = rand_vec(c, 0.5, 8.0);
        let bs = rand_vec(c, -1.0, 1.0);
        let (wshape, yc) = if k == 0 {
            (vec![cout, c], cout)
        } else {
            (vec![c, k, k], c)
        };
        let ws = rand_vec(wshape.iter().product(), -1.0, 1.0);
        let ho = (h - 1) / s + 1;
        let dys = rand_vec(n * ho * ho * yc, -1.0, 1.0);
        let run = |fused: bool| {
            let up = |v: &[f32], shape: &[usize]| Rc::new(gpu.upload(v, shape).unwrap());
            let (x, gamma, beta, w) = (
                up(&xs, &[n, h, h, c]),
                up(&gs, &[c]),
                up(&bs, &[c]),
                up(&ws, &wshape),
            );
            let (rm, rv) = (gpu.zeros(&[c]), gpu.upload(&vec![1.0f32; c], &[c]).unwrap());
            let tape = Tape::new(gpu, 1);
            let (xv, gv, bv, wv) = (
                tape.param(0, &x, true),
                tape.param(1, &gamma, true),
                tape.param(2, &beta, true),
                tape.param(3, &w, true),
            );
            let args = BnArgs {
                gamma: &gv,
                beta: &bv,
                running_mean: &rm,
                running_var: &rv,
                momentum: 0.1,
                eps: 1e-3,
            };
            let y = match (fused, k) {
                (true, 0) => tape
                    .bn_relu6_conv(&xv, &args, &wv, NextConv::Pointwise)
                    .unwrap(),
                (true, _) => tape
                    .bn_relu6_conv(&xv, &args, &wv, NextConv::Depthwise { stride: s })
                    .unwrap(),
                (false, _) => {
                    let a = tape.batchnorm(&xv, &args, BnAct::Relu6, true).unwrap();
                    if k == 0 {
                        tape.pointwise(&a, &wv).unwrap()
                    } else {
                        tape.depthwise(&a, &wv, s).unwrap()
                    }
                }
            };
            let yh = gpu.read_f32(y.value()).unwrap();
            let grads = tape
                .backward(&y, gpu.upload(&dys, &[n, ho, ho, yc]).unwrap())
                .unwrap();
            let mut out = vec![yh, gpu.read_f32(&rm).unwrap(), gpu.read_f32(&rv).unwrap()];
            for i in 0..4 {
                let g = grads
                    .by_param
                    .iter()
                    .find(|(p, _)| *p == i)
                    .expect("a gradient");
                out.push(gpu.read_f32(&g.1).unwrap());
            }
            out
        };
        let (fused, separate) = (run(true), run(false));
        let names = [
            "y",
            "running_mean",
            "running_var",
            "dx",
            "dgamma",
            "dbeta",
            "dw",
        ];
        for ((name, a), b) in names.iter().zip(&fused).zip(&separate) {
            let a64: Vec<f64> = a.iter().map(|&v| v as f64).collect();
            let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
            let e = r::rel_error(&a64, &b64);
            assert!(
                e < 1e-5,
                "c={c} k={k} s={s} cout={cout}: {name} differs by {e:e}"
            );
        }
    }
}
