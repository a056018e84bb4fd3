//! Every reference backward against central finite differences, plus hand-computed checks
//! of the optimizer steps, the running-statistics update and the dropout mask.
//!
//! For an op `y = f(inputs)` the scalar probed is `L = sum(y * r)` for a fixed random `r`, so
//! the analytic gradient of an input is its backward fed `dy = r`. Each gradient is compared
//! with `(L(x + h e_i) - L(x - h e_i)) / 2h` on up to `SAMPLES` indices.

use proxyless::reference::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Finite-difference step; in f64 the truncation error (~h^2) and the rounding error
/// (~1e-16 / h) are both far below the tolerance.
const H: f64 = 1e-5;
/// Largest accepted relative error between analytic and numeric gradients.
const TOL: f64 = 1e-6;
/// Indices checked per tensor.
const SAMPLES: usize = 30;

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Uniform values in (-1, 1).
fn uniform(rng: &mut StdRng, len: usize) -> Vec<f64> {
    random_vec(rng, len, -1.0, 1.0)
}

/// Checks `analytic`, the claimed gradient of `loss` at `x`, against central differences on
/// up to `SAMPLES` randomly chosen indices.
fn check_grad(
    what: &str,
    x: &[f64],
    analytic: &[f64],
    loss: impl Fn(&[f64]) -> f64,
    rng: &mut StdRng,
) {
    assert_eq!(x.len(), analytic.len(), "{what}: gradient length");
    let indices: Vec<usize> = if x.len() <= SAMPLES {
        (0..x.len()).collect()
    } else {
        rand::seq::index::sample(rng, x.len(), SAMPLES).into_vec()
    };
    let mut probe = x.to_vec();
    let mut numeric = Vec::with_capacity(indices.len());
    let mut picked = Vec::with_capacity(indices.len());
    for &i in &indices {
        probe[i] = x[i] + H;
        let up = loss(&probe);
        probe[i] = x[i] - H;
        let down = loss(&probe);
        probe[i] = x[i];
        numeric.push((up - down) / (2.0 * H));
        picked.push(analytic[i]);
    }
    let err = rel_error(&picked, &numeric);
    assert!(
        err < TOL,
        "{what}: relative error {err:e}\nanalytic {picked:?}\nnumeric  {numeric:?}"
    );
}

fn check_conv2d(xs: [usize; 4], cout: usize, k: usize, stride: usize, seed: u64) {
    let mut rng = rng(seed);
    let cin = xs[3];
    let x = uniform(&mut rng, xs.iter().product());
    let w = uniform(&mut rng, cout * cin * k * k);
    let (y, ys) = conv2d_forward(&x, xs, &w, cout, k, stride);
    assert_eq!(y.len(), ys.iter().product::<usize>());
    let r = uniform(&mut rng, y.len());
    let (dx, dw) = conv2d_backward(&x, xs, &w, cout, k, stride, &r);
    let what = format!("conv2d {xs:?} cout={cout} k={k} s={stride}");
    check_grad(
        &format!("{what} dx"),
        &x,
        &dx,
        |xp| dot(&conv2d_forward(xp, xs, &w, cout, k, stride).0, &r),
        &mut rng,
    );
    check_grad(
        &format!("{what} dw"),
        &w,
        &dw,
        |wp| dot(&conv2d_forward(&x, xs, wp, cout, k, stride).0, &r),
        &mut rng,
    );
}

#[test]
fn conv2d_gradients() {
    check_conv2d([2, 7, 5, 3], 4, 3, 1, 1);
    check_conv2d([2, 7, 5, 3], 4, 3, 2, 2);
    check_conv2d([1, 7, 5, 3], 2, 5, 1, 3);
    check_conv2d([1, 9, 6, 2], 3, 5, 2, 4);
}

#[test]
fn conv_output_sizes() {
    assert_eq!(conv_out_hw(7, 5, 3, 1), (7, 5));
    assert_eq!(conv_out_hw(7, 5, 3, 2), (4, 3));
    assert_eq!(conv_out_hw(224, 224, 3, 2), (112, 112));
    assert_eq!(conv_out_hw(7, 5, 7, 2), (4, 3));
}

#[test]
fn conv2d_with_k1_is_pointwise() {
    let mut rng = rng(5);
    let xs = [2, 5, 3, 4];
    let cout = 6;
    let x = uniform(&mut rng, xs.iter().product());
    let w = uniform(&mut rng, cout * xs[3]);
    let (y, ys) = conv2d_forward(&x, xs, &w, cout, 1, 1);
    assert_eq!(ys, [2, 5, 3, cout]);
    let m = xs[0] * xs[1] * xs[2];
    let expected = pointwise_forward(&x, m, xs[3], &w, cout);
    assert!(rel_error(&y, &expected) < 1e-14);
}

#[test]
fn pointwise_gradients() {
    let mut rng = rng(10);
    let (m, cin, cout) = (13, 7, 5);
    let x = uniform(&mut rng, m * cin);
    let w = uniform(&mut rng, cout * cin);
    let r = uniform(&mut rng, m * cout);
    let (dx, dw) = pointwise_backward(&x, m, cin, &w, cout, &r);
    check_grad(
        "pointwise dx",
        &x,
        &dx,
        |xp| dot(&pointwise_forward(xp, m, cin, &w, cout), &r),
        &mut rng,
    );
    check_grad(
        "pointwise dw",
        &w,
        &dw,
        |wp| dot(&pointwise_forward(&x, m, cin, wp, cout), &r),
        &mut rng,
    );
}

#[test]
fn depthwise_gradients() {
    let mut seed = 20;
    for xs in [[2, 7, 5, 3], [1, 9, 7, 1], [1, 5, 3, 2]] {
        for k in [3, 5, 7] {
            for stride in [1, 2] {
                seed += 1;
                let mut rng = rng(seed);
                let x = uniform(&mut rng, xs.iter().product());
                let w = uniform(&mut rng, xs[3] * k * k);
                let (y, ys) = depthwise_forward(&x, xs, &w, k, stride);
                assert_eq!(y.len(), ys.iter().product::<usize>());
                let r = uniform(&mut rng, y.len());
                let (dx, dw) = depthwise_backward(&x, xs, &w, k, stride, &r);
                let what = format!("depthwise {xs:?} k={k} s={stride}");
                check_grad(
                    &format!("{what} dx"),
                    &x,
                    &dx,
                    |xp| dot(&depthwise_forward(xp, xs, &w, k, stride).0, &r),
                    &mut rng,
                );
                check_grad(
                    &format!("{what} dw"),
                    &w,
                    &dw,
                    |wp| dot(&depthwise_forward(&x, xs, wp, k, stride).0, &r),
                    &mut rng,
                );
            }
        }
    }
}

#[test]
fn batchnorm_train_gradients() {
    let mut rng = rng(40);
    let (m, c, eps) = (24, 5, 1e-5);
    let x = uniform(&mut rng, m * c);
    let gamma = uniform(&mut rng, c);
    let beta = uniform(&mut rng, c);
    let r = uniform(&mut rng, m * c);
    let loss = |x: &[f64], gamma: &[f64], beta: &[f64]| {
        dot(&batchnorm_train_forward(x, m, c, gamma, beta, eps).0, &r)
    };
    let (dx, dgamma, dbeta) = batchnorm_train_backward(&x, m, c, &gamma, eps, &r);
    check_grad(
        "batchnorm dx",
        &x,
        &dx,
        |xp| loss(xp, &gamma, &beta),
        &mut rng,
    );
    check_grad(
        "batchnorm dgamma",
        &gamma,
        &dgamma,
        |gp| loss(&x, gp, &beta),
        &mut rng,
    );
    check_grad(
        "batchnorm dbeta",
        &beta,
        &dbeta,
        |bp| loss(&x, &gamma, bp),
        &mut rng,
    );
}

#[test]
fn batchnorm_eval_with_batch_stats_matches_train() {
    let mut rng = rng(41);
    let (m, c, eps) = (10, 3, 1e-5);
    let x = uniform(&mut rng, m * c);
    let gamma = uniform(&mut rng, c);
    let beta = uniform(&mut rng, c);
    let (y, mean, var) = batchnorm_train_forward(&x, m, c, &gamma, &beta, eps);
    let y_eval = batchnorm_eval_forward(&x, m, c, &gamma, &beta, &mean, &var, eps);
    assert!(rel_error(&y_eval, &y) < 1e-14);
}

#[test]
fn batchnorm_running_update_by_hand() {
    // m = 4, momentum = 0.1; the running variance takes the unbiased var = biased * 4/3:
    //   channel 0: mean 2,  var 3   -> unbiased 4
    //              rm = 0.9 * 0 + 0.1 * 2    = 0.2
    //              rv = 0.9 * 1 + 0.1 * 4    = 1.3
    //   channel 1: mean -1, var 0.5 -> unbiased 2/3
    //              rm = 0.9 * 1 + 0.1 * (-1) = 0.8
    //              rv = 0.9 * 2 + 0.1 * 2/3  = 1.8 + 1/15 = 28/15
    let mut rm = [0.0, 1.0];
    let mut rv = [1.0, 2.0];
    batchnorm_update_running(&mut rm, &mut rv, &[2.0, -1.0], &[3.0, 0.5], 4, 0.1);
    assert!(rel_error(&rm, &[0.2, 0.8]) < 1e-14, "{rm:?}");
    assert!(rel_error(&rv, &[1.3, 28.0 / 15.0]) < 1e-14, "{rv:?}");

    // m = 1 has no unbiased variance; the biased one is used: rv = 0.9 * 1 + 0.1 * 3 = 1.2.
    let mut rm = [0.0];
    let mut rv = [1.0];
    batchnorm_update_running(&mut rm, &mut rv, &[2.0], &[3.0], 1, 0.1);
    assert!(rel_error(&rm, &[0.2]) < 1e-14, "{rm:?}");
    assert!(rel_error(&rv, &[1.2]) < 1e-14, "{rv:?}");
}

#[test]
fn relu6_gradients() {
    let mut rng = rng(50);
    // Scaled to (-2, 8) to cover both flat regions; values within 1e-3 of a kink are
    // redrawn, since the finite difference would straddle it.
    let x: Vec<f64> = (0..200)
        .map(|_| loop {
            let v: f64 = rng.random_range(-2.0..8.0);
            if v.abs() > 1e-3 && (v - 6.0).abs() > 1e-3 {
                break v;
            }
        })
        .collect();
    let r = uniform(&mut rng, x.len());
    let dx = relu6_backward(&x, &r);
    check_grad(
        "relu6 dx",
        &x,
        &dx,
        |xp| dot(&relu6_forward(xp), &r),
        &mut rng,
    );
    assert_eq!(relu6_forward(&[-1.0, 0.5, 7.0]), [0.0, 0.5, 6.0]);
}

#[test]
fn global_avg_pool_gradients() {
    let mut rng = rng(60);
    let xs = [2, 5, 3, 4];
    let x = uniform(&mut rng, xs.iter().product());
    let r = uniform(&mut rng, xs[0] * xs[3]);
    let dx = global_avg_pool_backward(&r, xs);
    check_grad(
        "global_avg_pool dx",
        &x,
        &dx,
        |xp| dot(&global_avg_pool_forward(xp, xs), &r),
        &mut rng,
    );
}

#[test]
fn linear_gradients() {
    let mut rng = rng(70);
    let (n, fin, fout) = (3, 7, 5);
    let x = uniform(&mut rng, n * fin);
    let w = uniform(&mut rng, fout * fin);
    let b = uniform(&mut rng, fout);
    let r = uniform(&mut rng, n * fout);
    let loss = |x: &[f64], w: &[f64], b: &[f64]| dot(&linear_forward(x, n, fin, w, b, fout), &r);
    let (dx, dw, db) = linear_backward(&x, n, fin, &w, fout, &r);
    check_grad("linear dx", &x, &dx, |xp| loss(xp, &w, &b), &mut rng);
    check_grad("linear dw", &w, &dw, |wp| loss(&x, wp, &b), &mut rng);
    check_grad("linear db", &b, &db, |bp| loss(&x, &w, bp), &mut rng);
}

#[test]
fn softmax_cross_entropy_gradients() {
    let (n, classes) = (4, 7);
    for (seed, smoothing) in [(80, 0.1), (81, 0.0)] {
        let mut rng = rng(seed);
        let logits = uniform(&mut rng, n * classes);
        let labels: Vec<u32> = (0..n)
            .map(|_| rng.random_range(0..classes as u32))
            .collect();
        let (_, dlogits) = softmax_cross_entropy(&logits, n, classes, &labels, smoothing);
        check_grad(
            &format!("softmax_cross_entropy smoothing={smoothing} dlogits"),
            &logits,
            &dlogits,
            |zp| softmax_cross_entropy(zp, n, classes, &labels, smoothing).0,
            &mut rng,
        );
        // Both softmax and q sum to 1 per row, so each row of (softmax - q) / n sums to 0.
        for row in dlogits.chunks_exact(classes) {
            assert!(sum(row).abs() < 1e-15, "dlogits row sums to {}", sum(row));
        }
    }
}

#[test]
fn softmax_cross_entropy_by_hand() {
    // Two equal logits: softmax = (1/2, 1/2), so the loss is ln 2 for any smoothing, and with
    // smoothing 0.1 the target is (0.95, 0.05), giving dlogits = (-0.45, 0.45).
    let (loss, dlogits) = softmax_cross_entropy(&[3.0, 3.0], 1, 2, &[0], 0.1);
    assert!((loss - std::f64::consts::LN_2).abs() < 1e-15, "{loss}");
    assert!(rel_error(&dlogits, &[-0.45, 0.45]) < 1e-15, "{dlogits:?}");
    // Huge logits must not overflow: the max is subtracted before exponentiating.
    let (loss, _) = softmax_cross_entropy(&[1000.0, 1000.0], 1, 2, &[1], 0.0);
    assert!((loss - std::f64::consts::LN_2).abs() < 1e-12, "{loss}");
}

#[test]
fn count_correct_first_max_wins() {
    let logits = [
        0.1, 0.9, 0.0, // argmax 1
        0.5, 0.5, 0.2, // tie, first wins: 0
        0.3, 0.3, 0.3, // tie, first wins: 0
    ];
    assert_eq!(count_correct(&logits, 3, 3, &[1, 0, 0]), 3);
    assert_eq!(count_correct(&logits, 3, 3, &[1, 1, 2]), 1);
}

#[test]
fn dropout_gradients() {
    let mut rng = rng(90);
    let (p, seed) = (0.3, 1234);
    let x = uniform(&mut rng, 100);
    let r = uniform(&mut rng, x.len());
    let dx = dropout_backward(&r, p, seed);
    check_grad(
        "dropout dx",
        &x,
        &dx,
        |xp| dot(&dropout_forward(xp, p, seed), &r),
        &mut rng,
    );
}

#[test]
fn dropout_mask_rate_and_determinism() {
    let (p, seed) = (0.2, 42);
    let n = 100_000;
    let kept = (0..n).filter(|&i| dropout_keep(seed, i, p)).count();
    let rate = kept as f64 / n as f64;
    assert!((rate - 0.8).abs() < 0.03, "kept fraction {rate}");

    let x = vec![1.0; 1000];
    let y = dropout_forward(&x, p, seed);
    assert_eq!(y, dropout_forward(&x, p, seed));
    assert_ne!(y, dropout_forward(&x, p, seed + 1));
    // Kept elements are scaled by 1 / (1 - p) so the expectation is unchanged.
    let scale = 1.0 / (1.0 - f64::from(p));
    assert!(y.iter().all(|&v| v == 0.0 || v == scale));

    // Hash values computed independently (Python, masking to 32 bits); the WGSL shader must
    // produce the same numbers.
    assert_eq!(dropout_hash(0, 0), 129708002);
    assert_eq!(dropout_hash(1, 0), 756304197);
    assert_eq!(dropout_hash(0, 1), 2831084092);
    assert_eq!(dropout_hash(12345, 678), 1742764095);
    assert_eq!(dropout_hash(0xDEADBEEF, 4_000_000_000), 547814866);
}

#[test]
fn sgd_by_hand() {
    // lr 0.1, momentum 0.9, weight decay 0.01, w0 = 1, g = 0.5 on both steps.
    // Plain:
    //   step 1: d = 0.5 + 0.01*1 = 0.51, buf = 0.51, w = 1 - 0.051 = 0.949
    //   step 2: d = 0.5 + 0.00949 = 0.50949, buf = 0.9*0.51 + 0.50949 = 0.96849,
    //           w = 0.949 - 0.096849 = 0.852151
    // Nesterov:
    //   step 1: d = 0.51, buf = 0.51, step = 0.51 + 0.9*0.51 = 0.969, w = 1 - 0.0969 = 0.9031
    //   step 2: d = 0.5 + 0.009031 = 0.509031, buf = 0.459 + 0.509031 = 0.968031,
    //           step = 0.509031 + 0.9*0.968031 = 1.3802589, w = 0.9031 - 0.13802589 = 0.76507411
    for (nesterov, w1, w2, buf2) in [
        (false, 0.949, 0.852151, 0.96849),
        (true, 0.9031, 0.76507411, 0.968031),
    ] {
        let mut w = [1.0];
        let mut buf = [0.0];
        sgd_step(&mut w, &[0.5], &mut buf, 0.1, 0.9, 0.01, nesterov);
        assert!(
            (w[0] - w1).abs() < 1e-14,
            "nesterov={nesterov} step 1: w = {}",
            w[0]
        );
        sgd_step(&mut w, &[0.5], &mut buf, 0.1, 0.9, 0.01, nesterov);
        assert!(
            (w[0] - w2).abs() < 1e-14,
            "nesterov={nesterov} step 2: w = {}",
            w[0]
        );
        assert!(
            (buf[0] - buf2).abs() < 1e-14,
            "nesterov={nesterov}: buf = {}",
            buf[0]
        );
    }
}

#[test]
fn adam_by_hand() {
    // lr 0.1, beta1 0.5, beta2 0.75, eps 0.4, weight decay 0.1, w0 = 1 (values picked so the
    // square roots come out exact).
    //   step 1 (g = 0.5):    d = 0.5 + 0.1*1 = 0.6, m = 0.5*0.6 = 0.3, v = 0.25*0.36 = 0.09,
    //                        mhat = 0.3/0.5 = 0.6, vhat = 0.09/0.25 = 0.36,
    //                        w = 1 - 0.1 * 0.6/(0.6 + 0.4) = 0.94
    //   step 2 (g = -0.694): d = -0.694 + 0.094 = -0.6, m = 0.15 - 0.3 = -0.15,
    //                        v = 0.75*0.09 + 0.25*0.36 = 0.1575,
    //                        mhat = -0.15/(1 - 0.25) = -0.2, vhat = 0.1575/(1 - 0.5625) = 0.36,
    //                        w = 0.94 - 0.1 * (-0.2)/(0.6 + 0.4) = 0.96
    let (lr, b1, b2, eps, wd) = (0.1, 0.5, 0.75, 0.4, 0.1);
    let mut w = [1.0];
    let mut m = [0.0];
    let mut v = [0.0];
    adam_step(&mut w, &[0.5], &mut m, &mut v, lr, b1, b2, eps, wd, 1);
    assert!((w[0] - 0.94).abs() < 1e-14, "step 1: w = {}", w[0]);
    assert!((m[0] - 0.3).abs() < 1e-14, "step 1: m = {}", m[0]);
    assert!((v[0] - 0.09).abs() < 1e-14, "step 1: v = {}", v[0]);
    adam_step(&mut w, &[-0.694], &mut m, &mut v, lr, b1, b2, eps, wd, 2);
    assert!((w[0] - 0.96).abs() < 1e-14, "step 2: w = {}", w[0]);
    assert!((m[0] + 0.15).abs() < 1e-14, "step 2: m = {}", m[0]);
    assert!((v[0] - 0.1575).abs() < 1e-14, "step 2: v = {}", v[0]);
}

#[test]
fn rel_error_edge_cases() {
    assert_eq!(rel_error(&[3.0, 4.0], &[0.0, 0.0]), 5.0);
    assert_eq!(rel_error(&[1.0], &[1.0, 2.0]), f64::INFINITY);
    assert_eq!(rel_error(&[f64::NAN], &[1.0]), f64::INFINITY);
    assert!((rel_error(&[1.0, 1.0], &[1.0, 0.0]) - 1.0).abs() < 1e-15);
}
