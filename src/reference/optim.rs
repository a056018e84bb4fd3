//! Optimizer steps with PyTorch semantics (no dampening), updating the weights and their
//! state in place. All slices have the same length.

/// One SGD step with momentum and L2 weight decay:
///
/// `d = g + wd * w`,  `buf = momentum * buf + d`,
/// `step = d + momentum * buf` (Nesterov) or `buf` (plain),  `w -= lr * step`
///
/// `momentum_buf` starts at zeros; that makes the first step's `buf = d`, as in PyTorch.
pub fn sgd_step(
    w: &mut [f64],
    g: &[f64],
    momentum_buf: &mut [f64],
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    nesterov: bool,
) {
    let len = w.len();
    assert_eq!(
        g.len(),
        len,
        "sgd_step: g has {} elements, w has {len}",
        g.len()
    );
    assert_eq!(
        momentum_buf.len(),
        len,
        "sgd_step: momentum_buf has {} elements, w has {len}",
        momentum_buf.len()
    );
    for i in 0..len {
        let d = g[i] + weight_decay * w[i];
        momentum_buf[i] = momentum * momentum_buf[i] + d;
        let step = if nesterov {
            d + momentum * momentum_buf[i]
        } else {
            momentum_buf[i]
        };
        w[i] -= lr * step;
    }
}

/// One Adam step (`t` is the 1-based step count) with L2 weight decay folded into the gradient:
///
/// `d = g + wd * w`,  `m = b1 m + (1 - b1) d`,  `v = b2 v + (1 - b2) d^2`,
/// `w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`
///
/// `m` and `v` start at zeros.
// The argument list mirrors the GPU kernel's bindings one to one.
#[allow(clippy::too_many_arguments)]
pub fn adam_step(
    w: &mut [f64],
    g: &[f64],
    m: &mut [f64],
    v: &mut [f64],
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    t: u32,
) {
    let len = w.len();
    assert_eq!(
        g.len(),
        len,
        "adam_step: g has {} elements, w has {len}",
        g.len()
    );
    assert_eq!(
        m.len(),
        len,
        "adam_step: m has {} elements, w has {len}",
        m.len()
    );
    assert_eq!(
        v.len(),
        len,
        "adam_step: v has {} elements, w has {len}",
        v.len()
    );
    assert!(t >= 1, "adam_step: step count t starts at 1, got {t}");
    // The bias corrections undo the pull of the zero initial moments toward zero.
    let correction1 = 1.0 - beta1.powf(f64::from(t));
    let correction2 = 1.0 - beta2.powf(f64::from(t));
    for i in 0..len {
        let d = g[i] + weight_decay * w[i];
        m[i] = beta1 * m[i] + (1.0 - beta1) * d;
        v[i] = beta2 * v[i] + (1.0 - beta2) * d * d;
        let m_hat = m[i] / correction1;
        let v_hat = v[i] / correction2;
        w[i] -= lr * m_hat / (v_hat.sqrt() + eps);
    }
}
