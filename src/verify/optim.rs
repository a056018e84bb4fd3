//! Optimizer steps against the reference: three steps with a fresh random gradient each,
//! comparing the weights and the optimizer state (momentum buffer, Adam's m and v) after every
//! step. Lengths 1 and 7 (scalar tail only / vec4 body plus tail), 1000 and 100003.
//! Learning rates are large enough that the update is a sizeable part of the weights.
//! On the short lengths a norm-relative error is one element's relative error, which
//! cancellation near zero would blow up by chance; there the weights start in (4, 6) and the
//! gradients are positive, so weights, momenta and moments stay well away from zero.

use anyhow::Result;

use super::{f64s, Checker};
use crate::ops;
use crate::reference::{adam_step, sgd_step};

const LENGTHS: &[usize] = &[1, 7, 1000, 100_003];
const STEPS: u32 = 3;

/// Lengths up to this get the cancellation-free inputs.
const SHORT: usize = 7;

fn initial_weights(c: &mut Checker, len: usize) -> Vec<f32> {
    if len <= SHORT {
        c.random_in(len, 4.0, 6.0)
    } else {
        c.random(len)
    }
}

fn gradient(c: &mut Checker, len: usize) -> Vec<f32> {
    if len <= SHORT {
        c.random_in(len, 0.25, 1.0)
    } else {
        c.random(len)
    }
}

/// (lr, momentum, weight decay, nesterov).
const SGD: &[(f32, f32, f32, bool)] = &[
    (0.3, 0.9, 0.01, false),
    (0.3, 0.9, 0.01, true),
    (0.2, 0.0, 0.0, false),
];

/// (lr, beta1, beta2, eps, weight decay); beta1 = 0 is the architecture optimiser's.
const ADAM: &[(f32, f32, f32, f32, f32)] =
    &[(0.1, 0.9, 0.999, 1e-8, 0.01), (0.1, 0.0, 0.999, 1e-8, 0.0)];

fn sgd(c: &mut Checker, len: usize) -> Result<()> {
    for &(lr, momentum, wd, nesterov) in SGD {
        let wv = initial_weights(c, len);
        let w = c.upload(&wv, &[len])?;
        let buf = c.gpu.zeros(&[len]);
        let mut w_ref = f64s(&wv);
        let mut buf_ref = vec![0.0; len];
        for t in 1..=STEPS {
            let gv = gradient(c, len);
            let g = c.upload(&gv, &[len])?;
            ops::optim::sgd_step(c.gpu, &w, &g, &buf, lr, momentum, wd, nesterov)?;
            sgd_step(
                &mut w_ref,
                &f64s(&gv),
                &mut buf_ref,
                f64::from(lr),
                f64::from(momentum),
                f64::from(wd),
                nesterov,
            );
            let name =
                format!("[{len}] lr {lr} momentum {momentum} wd {wd} nesterov {nesterov} step {t}");
            c.compare("sgd_step", name.clone(), "w", &w, &w_ref)?;
            c.compare("sgd_step", name, "momentum_buf", &buf, &buf_ref)?;
        }
    }
    Ok(())
}

fn adam(c: &mut Checker, len: usize) -> Result<()> {
    for &(lr, beta1, beta2, eps, wd) in ADAM {
        let wv = initial_weights(c, len);
        let w = c.upload(&wv, &[len])?;
        let m = c.gpu.zeros(&[len]);
        let v = c.gpu.zeros(&[len]);
        let mut w_ref = f64s(&wv);
        let mut m_ref = vec![0.0; len];
        let mut v_ref = vec![0.0; len];
        for t in 1..=STEPS {
            let gv = gradient(c, len);
            let g = c.upload(&gv, &[len])?;
            ops::optim::adam_step(c.gpu, &w, &g, &m, &v, lr, beta1, beta2, eps, wd, t)?;
            adam_step(
                &mut w_ref,
                &f64s(&gv),
                &mut m_ref,
                &mut v_ref,
                f64::from(lr),
                f64::from(beta1),
                f64::from(beta2),
                f64::from(eps),
                f64::from(wd),
                t,
            );
            let name = format!("[{len}] lr {lr} betas ({beta1}, {beta2}) wd {wd} step {t}");
            c.compare("adam_step", name.clone(), "w", &w, &w_ref)?;
            c.compare("adam_step", name.clone(), "m", &m, &m_ref)?;
            c.compare("adam_step", name, "v", &v, &v_ref)?;
        }
    }
    Ok(())
}

/// Lengths of the tensors of one multi-tensor SGD step: more small ones than one dispatch
/// takes (8), one at the batching limit (4096), one past it and one off a multiple of 4 (each
/// updated alone).
const MULTI_LENGTHS: &[usize] = &[4, 8, 12, 64, 1000, 4096, 4100, 7, 16, 20, 24, 28, 36];

/// `sgd_step_multi` over tensors of `MULTI_LENGTHS`, weight decay on every other one.
fn sgd_multi(c: &mut Checker) -> Result<()> {
    for &(lr, momentum, wd, nesterov) in SGD {
        let mut state = Vec::new();
        for (i, &len) in MULTI_LENGTHS.iter().enumerate() {
            // Few elements: weights away from zero, as for the short lengths above.
            let wv = if len < 64 {
                c.random_in(len, 4.0, 6.0)
            } else {
                c.random(len)
            };
            let w = c.upload(&wv, &[len])?;
            let buf = c.gpu.zeros(&[len]);
            let decay = if i % 2 == 0 { wd } else { 0.0 };
            state.push((w, buf, decay, f64s(&wv), vec![0.0; len]));
        }
        for t in 1..=STEPS {
            let mut grads = Vec::new();
            for (_, _, _, w_ref, _) in &state {
                let len = w_ref.len();
                let gv = if len < 64 {
                    c.random_in(len, 0.25, 1.0)
                } else {
                    c.random(len)
                };
                grads.push((c.upload(&gv, &[len])?, gv));
            }
            let updates: Vec<ops::optim::SgdUpdate> = state
                .iter()
                .zip(&grads)
                .map(|((w, buf, decay, _, _), (g, _))| ops::optim::SgdUpdate {
                    w,
                    g,
                    momentum_buf: buf,
                    weight_decay: *decay,
                })
                .collect();
            ops::optim::sgd_step_multi(c.gpu, &updates, lr, momentum, nesterov)?;
            for ((w, buf, decay, w_ref, buf_ref), (_, gv)) in state.iter_mut().zip(&grads) {
                sgd_step(
                    w_ref,
                    &f64s(gv),
                    buf_ref,
                    f64::from(lr),
                    f64::from(momentum),
                    f64::from(*decay),
                    nesterov,
                );
                let name = format!(
                    "multi [{}] lr {lr} momentum {momentum} wd {decay} nesterov {nesterov} step {t}",
                    w_ref.len()
                );
                c.compare("sgd_step_multi", name.clone(), "w", w, w_ref)?;
                c.compare("sgd_step_multi", name, "momentum_buf", buf, buf_ref)?;
            }
        }
    }
    Ok(())
}

pub fn run(c: &mut Checker) -> Result<()> {
    for &len in LENGTHS {
        sgd(c, len)?;
        adam(c, len)?;
    }
    sgd_multi(c)
}
