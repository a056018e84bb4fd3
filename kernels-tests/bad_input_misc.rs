//! Bad input: shapes and arguments that do not fit get an error naming the op.
//! Covers the smaller families: elementwise, pooling, linear, loss, dropout and optimizers.

use proxyless::gpu::Tensor;
use proxyless::ops::dropout::{dropout_backward, dropout_forward};
use proxyless::ops::elementwise::{add, add_assign, relu6_backward, relu6_forward, scale};
use proxyless::ops::linear::{linear_backward, linear_forward};
use proxyless::ops::loss::{count_correct, softmax_cross_entropy};
use proxyless::ops::optim::{adam_step, sgd_step, sgd_step_multi, SgdUpdate};
use proxyless::ops::pool::{global_avg_pool_backward, global_avg_pool_forward};

use crate::common::gpu;

use crate::common::{assert_err, zeros as t};

/// Labels tensor of `n` u32 words.
fn labels(values: &[u32]) -> Tensor {
    gpu()
        .upload(values, &[values.len()])
        .expect("upload labels")
}

#[test]
fn elementwise_rejects_bad_shapes() {
    let g = gpu();
    assert_err(
        relu6_forward(g, &t(&[0, 4])),
        "relu6_forward",
        "zero-sized x",
    );
    assert_err(
        relu6_backward(g, &t(&[2, 3]), &t(&[3, 2])),
        "relu6_backward",
        "dy shape differs",
    );
    assert_err(
        relu6_backward(g, &t(&[2, 0]), &t(&[2, 0])),
        "relu6_backward",
        "zero-sized x",
    );
    assert_err(add(g, &t(&[4]), &t(&[5])), "add", "lengths differ");
    assert_err(
        add(g, &t(&[2, 2]), &t(&[4])),
        "add",
        "same length, shapes differ",
    );
    assert_err(add(g, &t(&[0]), &t(&[0])), "add", "zero-sized");
    assert_err(
        add_assign(g, &t(&[4]), &t(&[2, 2])),
        "add_assign",
        "shapes differ",
    );
    let acc = t(&[8]);
    assert_err(add_assign(g, &acc, &acc), "add_assign", "acc aliases b");
    assert_err(scale(g, &t(&[3, 0, 2]), 2.0), "scale", "zero-sized x");
}

#[test]
fn pool_rejects_bad_shapes() {
    let g = gpu();
    let op = "global_avg_pool_forward";
    assert_err(global_avg_pool_forward(g, &t(&[2, 3, 4])), op, "rank 3");
    assert_err(global_avg_pool_forward(g, &t(&[1, 0, 2, 3])), op, "zero h");
    let op = "global_avg_pool_backward";
    assert_err(
        global_avg_pool_backward(g, &t(&[2, 4]), &[2, 3, 4]),
        op,
        "x shape rank 3",
    );
    assert_err(
        global_avg_pool_backward(g, &t(&[2, 5]), &[2, 3, 3, 4]),
        op,
        "dy channels differ",
    );
    assert_err(
        global_avg_pool_backward(g, &t(&[3, 4]), &[2, 3, 3, 4]),
        op,
        "dy batch differs",
    );
    assert_err(
        global_avg_pool_backward(g, &t(&[2, 4]), &[2, 0, 3, 4]),
        op,
        "zero h",
    );
}

#[test]
fn linear_rejects_bad_shapes() {
    let g = gpu();
    let op = "linear_forward";
    let (x, w, b) = (t(&[3, 7]), t(&[5, 7]), t(&[5]));
    assert_err(linear_forward(g, &t(&[3, 7, 1]), &w, &b), op, "x rank 3");
    assert_err(
        linear_forward(g, &x, &t(&[5, 8]), &b),
        op,
        "w takes 8 features",
    );
    assert_err(linear_forward(g, &x, &t(&[35]), &b), op, "w rank 1");
    assert_err(linear_forward(g, &x, &w, &t(&[4])), op, "bias of 4");
    assert_err(linear_forward(g, &x, &w, &t(&[5, 1])), op, "bias rank 2");
    assert_err(linear_forward(g, &t(&[0, 7]), &w, &b), op, "zero batch");
    assert_err(
        linear_forward(g, &t(&[3, 0]), &t(&[5, 0]), &b),
        op,
        "zero features",
    );
    let op = "linear_backward";
    assert_err(linear_backward(g, &x, &w, &t(&[3, 4])), op, "dy of 4");
    assert_err(linear_backward(g, &x, &w, &t(&[2, 5])), op, "dy batch 2");
    assert_err(
        linear_backward(g, &x, &t(&[5, 6]), &t(&[3, 5])),
        op,
        "w takes 6 features",
    );
}

#[test]
fn loss_rejects_bad_shapes_and_smoothing() {
    let g = gpu();
    let op = "softmax_cross_entropy";
    let z = t(&[3, 10]);
    let l = labels(&[1, 2, 3]);
    assert_err(
        softmax_cross_entropy(g, &t(&[30]), &l, 0.0),
        op,
        "logits rank 1",
    );
    assert_err(
        softmax_cross_entropy(g, &z, &labels(&[1, 2]), 0.0),
        op,
        "2 labels for 3 rows",
    );
    assert_err(
        softmax_cross_entropy(g, &t(&[3, 0]), &l, 0.0),
        op,
        "zero classes",
    );
    assert_err(
        softmax_cross_entropy(g, &t(&[0, 10]), &t(&[0]), 0.0),
        op,
        "zero rows",
    );
    for s in [1.5, -0.1, f32::NAN] {
        assert_err(
            softmax_cross_entropy(g, &z, &l, s),
            op,
            &format!("smoothing {s}"),
        );
    }
    let op = "count_correct";
    assert_err(count_correct(g, &t(&[3, 10, 1]), &l), op, "logits rank 3");
    assert_err(count_correct(g, &z, &labels(&[1, 2, 3, 4])), op, "4 labels");
    assert_err(count_correct(g, &z, &t(&[3, 1])), op, "labels rank 2");
}

/// A label >= k is a caller bug, but it must neither read out of bounds nor poison the loss.
#[test]
fn loss_clamps_out_of_range_labels() {
    let g = gpu();
    let z = g
        .upload(&[0.5f32, -1.0, 2.0, 0.25, 3.0, -2.0], &[2, 3])
        .expect("upload logits");
    let l = labels(&[3, 1_000_000]);
    let (loss, dz) = softmax_cross_entropy(g, &z, &l, 0.1).expect("loss");
    let loss = g.read_f32(&loss).expect("read loss");
    let dz = g.read_f32(&dz).expect("read dlogits");
    assert!(
        loss.iter().chain(&dz).all(|v| v.is_finite()),
        "{loss:?} {dz:?}"
    );
    let count = count_correct(g, &z, &l).expect("count");
    assert_eq!(g.read_f32(&count).expect("read count"), vec![0.0]);
}

#[test]
fn dropout_rejects_bad_arguments() {
    let g = gpu();
    let x = t(&[4, 5]);
    for p in [1.0, 1.5, -0.1, f32::NAN] {
        assert_err(
            dropout_forward(g, &x, p, 1),
            "dropout_forward",
            &format!("p {p}"),
        );
        assert_err(
            dropout_backward(g, &x, p, 1),
            "dropout_backward",
            &format!("p {p}"),
        );
    }
    assert_err(
        dropout_forward(g, &t(&[4, 0]), 0.5, 1),
        "dropout_forward",
        "zero-sized",
    );
    assert_err(
        dropout_backward(g, &t(&[0]), 0.5, 1),
        "dropout_backward",
        "zero-sized",
    );
}

#[test]
fn optimizers_reject_bad_arguments() {
    let g = gpu();
    let op = "sgd_step";
    let (w, gr, buf) = (t(&[7]), t(&[7]), t(&[7]));
    assert_err(
        sgd_step(g, &w, &t(&[8]), &buf, 0.1, 0.9, 0.0, false),
        op,
        "g of 8",
    );
    assert_err(
        sgd_step(g, &w, &gr, &t(&[7, 1]), 0.1, 0.9, 0.0, false),
        op,
        "momentum_buf shape",
    );
    assert_err(
        sgd_step(g, &w, &w, &buf, 0.1, 0.9, 0.0, false),
        op,
        "g aliases w",
    );
    assert_err(
        sgd_step(g, &w, &gr, &w, 0.1, 0.9, 0.0, true),
        op,
        "momentum_buf aliases w",
    );
    assert_err(
        sgd_step(g, &t(&[0]), &t(&[0]), &t(&[0]), 0.1, 0.9, 0.0, false),
        op,
        "zero-sized",
    );
    assert_err(
        sgd_step(g, &w, &gr, &buf, f32::NAN, 0.9, 0.0, false),
        op,
        "lr NaN",
    );
    let op = "sgd_step_multi";
    let (w4, g4, b4, w8, g8) = (t(&[4]), t(&[4]), t(&[4]), t(&[8]), t(&[8]));
    let update = |w, g, momentum_buf| SgdUpdate {
        w,
        g,
        momentum_buf,
        weight_decay: 0.0,
    };
    // The same weights in two updates would be bound twice, written by both.
    assert_err(
        sgd_step_multi(
            g,
            &[update(&w4, &g4, &b4), update(&w4, &g4, &b4)],
            0.1,
            0.9,
            false,
        ),
        op,
        "w in two updates",
    );
    assert_err(
        sgd_step_multi(
            g,
            &[update(&w4, &g4, &b4), update(&w8, &g8, &b4)],
            0.1,
            0.9,
            false,
        ),
        op,
        "momentum_buf of 4 for w of 8",
    );
    assert_err(
        sgd_step_multi(g, &[update(&w4, &w4, &b4)], 0.1, 0.9, false),
        op,
        "g aliases w",
    );
    assert_err(
        sgd_step_multi(g, &[update(&w4, &g4, &b4)], 0.1, f32::NAN, false),
        op,
        "momentum NaN",
    );
    let op = "adam_step";
    let (m, v) = (t(&[7]), t(&[7]));
    let adam = |w: &Tensor, g2: &Tensor, m: &Tensor, v: &Tensor, b1: f32, b2: f32, eps: f32, t| {
        adam_step(g, w, g2, m, v, 0.01, b1, b2, eps, 0.0, t)
    };
    assert_err(adam(&w, &gr, &m, &v, 0.9, 0.999, 1e-8, 0), op, "t = 0");
    assert_err(adam(&w, &gr, &m, &v, 1.0, 0.999, 1e-8, 1), op, "beta1 = 1");
    assert_err(adam(&w, &gr, &m, &v, 0.9, -0.1, 1e-8, 1), op, "beta2 < 0");
    assert_err(
        adam(&w, &gr, &m, &v, 0.9, 0.999, f32::INFINITY, 1),
        op,
        "eps infinite",
    );
    assert_err(
        adam(&w, &gr, &t(&[6]), &v, 0.9, 0.999, 1e-8, 1),
        op,
        "m of 6",
    );
    assert_err(
        adam(&w, &gr, &m, &m, 0.9, 0.999, 1e-8, 1),
        op,
        "v aliases m",
    );
    assert_err(
        adam(
            &t(&[2, 0]),
            &t(&[2, 0]),
            &t(&[2, 0]),
            &t(&[2, 0]),
            0.9,
            0.999,
            1e-8,
            1,
        ),
        op,
        "zero-sized",
    );
}
