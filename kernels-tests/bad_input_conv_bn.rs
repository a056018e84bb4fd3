//! Bad input: shapes that do not fit get an error naming the op and the shapes.
//! Covers the full convolution (`ops::conv`) and batch normalisation (`ops::batchnorm`).

use proxyless::gpu::Tensor;
use proxyless::ops::batchnorm::{
    batchnorm_eval_forward, batchnorm_train_backward, batchnorm_train_forward,
    batchnorm_train_stats_from, StatsPartials,
};
use proxyless::ops::bn_relu6_conv::{bn_relu6_conv_forward_chained, NextConv};
use proxyless::ops::conv::{conv2d_backward, conv2d_backward_weight, conv2d_forward};

use crate::common::gpu;

use crate::common::{assert_err, zeros as t};

#[test]
fn conv_forward_rejects_bad_shapes() {
    let op = "conv2d_forward";
    let x = t(&[2, 8, 8, 3]);
    let w = t(&[16, 3, 3, 3]);
    let cases: Vec<(&str, Tensor, Tensor, usize)> = vec![
        ("input rank 3", t(&[8, 8, 3]), t(&[16, 3, 3, 3]), 1),
        ("weight rank 3", t(&[2, 8, 8, 3]), t(&[16, 3, 3]), 1),
        (
            "weight takes 4 channels",
            t(&[2, 8, 8, 3]),
            t(&[16, 4, 3, 3]),
            1,
        ),
        ("non-square kernel", t(&[2, 8, 8, 3]), t(&[16, 3, 3, 5]), 1),
        ("even kernel", t(&[2, 8, 8, 3]), t(&[16, 3, 2, 2]), 1),
        ("zero batch", t(&[0, 8, 8, 3]), t(&[16, 3, 3, 3]), 1),
        ("zero height", t(&[2, 0, 8, 3]), t(&[16, 3, 3, 3]), 1),
        (
            "zero output channels",
            t(&[2, 8, 8, 3]),
            t(&[0, 3, 3, 3]),
            1,
        ),
        ("zero-sized kernel", t(&[2, 8, 8, 3]), t(&[16, 3, 0, 0]), 1),
    ];
    for (case, x, w, s) in &cases {
        assert_err(conv2d_forward(gpu(), x, w, *s), op, case);
    }
    assert_err(conv2d_forward(gpu(), &x, &w, 0), op, "stride 0");
    // The good shapes pass, so the failures above are the shapes' doing.
    assert!(conv2d_forward(gpu(), &x, &w, 2).is_ok());
}

#[test]
fn conv_backward_rejects_bad_shapes() {
    let op = "conv2d_backward";
    let x = t(&[2, 7, 5, 3]);
    let w = t(&[16, 3, 3, 3]);
    let good_dy = t(&[2, 4, 3, 16]);
    let bad_dys = [
        ("dy of the stride-1 output", t(&[2, 7, 5, 16])),
        ("dy with the wrong channels", t(&[2, 4, 3, 8])),
        ("dy with the wrong batch", t(&[1, 4, 3, 16])),
        ("dy rank 3", t(&[4, 3, 16])),
    ];
    for (case, dy) in &bad_dys {
        assert_err(conv2d_backward(gpu(), &x, &w, 2, dy), op, case);
    }
    assert_err(
        conv2d_backward(gpu(), &x, &t(&[16, 5, 3, 3]), 2, &good_dy),
        op,
        "weight takes 5 channels",
    );
    assert_err(
        conv2d_backward(gpu(), &x, &t(&[16, 3, 4, 4]), 2, &good_dy),
        op,
        "even kernel",
    );
    assert_err(
        conv2d_backward(gpu(), &t(&[2, 7, 5]), &w, 2, &good_dy),
        op,
        "input rank 3",
    );
    assert_err(conv2d_backward(gpu(), &x, &w, 0, &good_dy), op, "stride 0");
    assert!(conv2d_backward(gpu(), &x, &w, 2, &good_dy).is_ok());

    let op = "conv2d_backward_weight";
    for (case, dy) in &bad_dys {
        assert_err(conv2d_backward_weight(gpu(), &x, &w, 2, dy), op, case);
    }
    assert_err(
        conv2d_backward_weight(gpu(), &x, &t(&[16, 3, 1, 3]), 2, &good_dy),
        op,
        "non-square kernel",
    );
    assert_err(
        conv2d_backward_weight(gpu(), &x, &w, 0, &good_dy),
        op,
        "stride 0",
    );
    assert!(conv2d_backward_weight(gpu(), &x, &w, 2, &good_dy).is_ok());
}

#[test]
fn batchnorm_forward_rejects_bad_shapes() {
    let train = "batchnorm_train_forward";
    let eval = "batchnorm_eval_forward";
    let x = t(&[2, 4, 4, 24]);
    let c = t(&[24]);
    let (g, b, rm, rv) = (t(&[24]), t(&[24]), t(&[24]), t(&[24]));
    let bad_x = [
        ("rank 1 input", t(&[24])),
        ("zero batch", t(&[0, 4, 4, 24])),
        ("zero channels", t(&[2, 4, 4, 0])),
    ];
    for (case, bx) in &bad_x {
        assert_err(
            batchnorm_train_forward(gpu(), bx, &g, &b, &rm, &rv, 0.1, 1e-3),
            train,
            case,
        );
        assert_err(
            batchnorm_eval_forward(gpu(), bx, &g, &b, &rm, &rv, 1e-3),
            eval,
            case,
        );
    }
    let wrong = t(&[16]);
    let wrong2 = t(&[24, 1]);
    for (case, i, p) in [
        ("gamma [16]", 0, &wrong),
        ("beta [16]", 1, &wrong),
        ("running_mean [16]", 2, &wrong),
        ("running_var [24, 1]", 3, &wrong2),
    ] {
        let mut args = [&g, &b, &rm, &rv];
        args[i] = p;
        let [g1, b1, m1, v1] = args;
        assert_err(
            batchnorm_train_forward(gpu(), &x, g1, b1, m1, v1, 0.1, 1e-3),
            train,
            case,
        );
        assert_err(
            batchnorm_eval_forward(gpu(), &x, g1, b1, m1, v1, 1e-3),
            eval,
            case,
        );
    }
    for (case, momentum, eps) in [
        ("eps 0", 0.1, 0.0),
        ("negative eps", 0.1, -1e-3),
        ("NaN eps", 0.1, f32::NAN),
        ("momentum 1.5", 1.5, 1e-3),
        ("negative momentum", -0.1, 1e-3),
        ("NaN momentum", f32::NAN, 1e-3),
    ] {
        assert_err(
            batchnorm_train_forward(gpu(), &x, &g, &b, &rm, &rv, momentum, eps),
            train,
            case,
        );
    }
    assert_err(
        batchnorm_eval_forward(gpu(), &x, &g, &b, &rm, &rv, 0.0),
        eval,
        "eps 0",
    );
    assert_err(
        batchnorm_train_forward(gpu(), &x, &g, &b, &c, &c, 0.1, 1e-3),
        train,
        "one tensor as both running statistics",
    );
    assert!(batchnorm_train_forward(gpu(), &x, &g, &b, &rm, &rv, 0.1, 1e-3).is_ok());
    assert!(batchnorm_eval_forward(gpu(), &x, &g, &b, &rm, &rv, 1e-3).is_ok());
}

#[test]
fn batchnorm_backward_rejects_bad_shapes() {
    let op = "batchnorm_train_backward";
    let x = t(&[3, 40]);
    let (g, mean, rstd) = (t(&[40]), t(&[40]), t(&[40]));
    let dy = t(&[3, 40]);
    let short = t(&[39]);
    assert_err(
        batchnorm_train_backward(gpu(), &x, &g, &mean, &rstd, &t(&[3, 39])),
        op,
        "dy [3, 39]",
    );
    assert_err(
        batchnorm_train_backward(gpu(), &x, &g, &mean, &rstd, &t(&[1, 3, 40])),
        op,
        "dy of another rank",
    );
    assert_err(
        batchnorm_train_backward(gpu(), &x, &short, &mean, &rstd, &dy),
        op,
        "gamma [39]",
    );
    assert_err(
        batchnorm_train_backward(gpu(), &x, &g, &short, &rstd, &dy),
        op,
        "mean [39]",
    );
    assert_err(
        batchnorm_train_backward(gpu(), &x, &g, &mean, &short, &dy),
        op,
        "rstd [39]",
    );
    assert_err(
        batchnorm_train_backward(gpu(), &t(&[40]), &g, &mean, &rstd, &t(&[40])),
        op,
        "rank 1 input",
    );
    assert_err(
        batchnorm_train_backward(gpu(), &t(&[0, 40]), &g, &mean, &rstd, &t(&[0, 40])),
        op,
        "zero rows",
    );
    assert!(batchnorm_train_backward(gpu(), &x, &g, &mean, &rstd, &dy).is_ok());
}

#[test]
fn batchnorm_statistics_from_partials_reject_bad_input() {
    let g = gpu();
    let op = "batchnorm_train_stats_from";
    let (rm, rv) = (t(&[4]), t(&[4]));
    let partials = |slices: usize, floats: usize, m: usize| StatsPartials {
        part: t(&[floats]).buf,
        slices,
        c: 4,
        m,
    };
    // Three rows of 2 slices x 4 channels need 24 floats.
    assert_err(
        batchnorm_train_stats_from(g, &partials(2, 23, 6), (&rm, &rv), 0.1, 1e-5),
        op,
        "partials too small",
    );
    assert_err(
        batchnorm_train_stats_from(g, &partials(0, 24, 6), (&rm, &rv), 0.1, 1e-5),
        op,
        "no slices",
    );
    assert_err(
        batchnorm_train_stats_from(g, &partials(2, 24, 6), (&rm, &t(&[5])), 0.1, 1e-5),
        op,
        "running_var of 5",
    );
    assert_err(
        batchnorm_train_stats_from(g, &partials(2, 24, 6), (&rm, &rm), 0.1, 1e-5),
        op,
        "running statistics aliased",
    );
    assert_err(
        batchnorm_train_stats_from(g, &partials(2, 24, 6), (&rm, &rv), 1.5, 1e-5),
        op,
        "momentum 1.5",
    );
    // A chained op refuses statistics that do not describe its input.
    let x = t(&[1, 2, 2, 4]);
    let (gamma, beta, w) = (t(&[4]), t(&[4]), t(&[4, 3, 3]));
    let stats = partials(2, 24, 6);
    assert_err(
        bn_relu6_conv_forward_chained(
            g,
            &x,
            Some(&stats),
            (&gamma, &beta, (&rm, &rv), 0.1, 1e-5),
            &w,
            NextConv::Depthwise { stride: 1 },
            false,
        ),
        "bn_relu6_conv_forward",
        "statistics of 6 rows for 4",
    );
}
