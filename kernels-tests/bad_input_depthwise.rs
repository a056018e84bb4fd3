//! Bad input: shapes that do not fit get an error naming the op and the shapes.
//! Covers the depthwise convolution (`ops::depthwise`).

use proxyless::ops::depthwise::{depthwise_backward, depthwise_forward};

use crate::common::gpu;

use crate::common::{assert_err, zeros as t};

/// (case, x shape, w shape, stride): every way the input, weight and stride can disagree.
fn bad_cases() -> Vec<(&'static str, Vec<usize>, Vec<usize>, usize)> {
    vec![
        ("input rank 3", vec![8, 8, 16], vec![16, 3, 3], 1),
        ("input rank 5", vec![1, 2, 8, 8, 16], vec![16, 3, 3], 1),
        ("zero batch", vec![0, 8, 8, 16], vec![16, 3, 3], 1),
        ("zero height", vec![2, 0, 8, 16], vec![16, 3, 3], 1),
        ("zero width", vec![2, 8, 0, 16], vec![16, 3, 3], 1),
        ("zero channels", vec![2, 8, 8, 0], vec![0, 3, 3], 1),
        ("weight rank 2", vec![2, 8, 8, 16], vec![16, 9], 1),
        ("weight rank 4", vec![2, 8, 8, 16], vec![16, 1, 3, 3], 1),
        (
            "weight channels differ",
            vec![2, 8, 8, 16],
            vec![8, 3, 3],
            1,
        ),
        ("weight not square", vec![2, 8, 8, 16], vec![16, 3, 5], 1),
        ("even kernel", vec![2, 8, 8, 16], vec![16, 4, 4], 1),
        ("kernel 1", vec![2, 8, 8, 16], vec![16, 1, 1], 1),
        ("kernel 9", vec![2, 8, 8, 16], vec![16, 9, 9], 1),
        ("zero-sized weight", vec![2, 8, 8, 16], vec![16, 0, 0], 1),
        ("stride 0", vec![2, 8, 8, 16], vec![16, 3, 3], 0),
        ("stride 3", vec![2, 8, 8, 16], vec![16, 3, 3], 3),
        ("odd channels, stride 4", vec![1, 5, 5, 3], vec![3, 5, 5], 4),
    ]
}

#[test]
fn depthwise_forward_rejects_bad_shapes() {
    let op = "depthwise_forward";
    for (case, xs, ws, stride) in bad_cases() {
        assert_err(depthwise_forward(gpu(), &t(&xs), &t(&ws), stride), op, case);
    }
}

#[test]
fn depthwise_backward_rejects_bad_shapes() {
    let op = "depthwise_backward";
    for (case, xs, ws, stride) in bad_cases() {
        // A dy of the right element count where the shapes allow one, so only the case's
        // own defect is wrong.
        let dy = t(&xs);
        assert_err(
            depthwise_backward(gpu(), &t(&xs), &t(&ws), stride, &dy),
            op,
            case,
        );
    }
    let x = t(&[2, 9, 9, 16]);
    let w = t(&[16, 3, 3]);
    let dy_cases: Vec<(&str, Vec<usize>, usize)> = vec![
        ("dy of stride 1 given for stride 2", vec![2, 9, 9, 16], 2),
        ("dy of stride 2 given for stride 1", vec![2, 5, 5, 16], 1),
        ("dy channels differ", vec![2, 9, 9, 8], 1),
        ("dy batch differs", vec![1, 9, 9, 16], 1),
        ("dy rank 3", vec![9, 9, 16], 1),
        ("dy zero-sized", vec![2, 0, 9, 16], 1),
    ];
    for (case, dys, stride) in dy_cases {
        assert_err(
            depthwise_backward(gpu(), &x, &w, stride, &t(&dys)),
            op,
            case,
        );
    }
}

#[test]
fn depthwise_accepts_good_shapes() {
    // The same launchers accept every k and stride of the network (no dispatch errors).
    let g = gpu();
    for (k, stride) in [(3, 1), (5, 2)] {
        let x = t(&[1, 5, 6, 8]);
        let w = t(&[8, k, k]);
        let y = depthwise_forward(g, &x, &w, stride).expect("forward");
        let ho = (5 - 1) / stride + 1;
        let wo = (6 - 1) / stride + 1;
        assert_eq!(y.shape, vec![1, ho, wo, 8]);
        let (dx, dw) = depthwise_backward(g, &x, &w, stride, &y).expect("backward");
        assert_eq!(dx.shape, x.shape);
        assert_eq!(dw.shape, w.shape);
    }
    g.sync().expect("no device error");
}
