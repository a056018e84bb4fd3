//! Architecture parameters: logits alpha per mixed layer, their softmax, binary-gate sampling,
//! the gradient through the gates (modes `full_v2` and `two`) and Adam with the `two`-mode
//! rescale. A few hundred numbers: kept on the host in f64.

use anyhow::{bail, Result};
use rand::Rng;

use crate::nn::params::normal;

pub fn softmax(a: &[f64]) -> Vec<f64> {
    let m = a.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = a.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// Index drawn from the distribution `p`.
pub fn sample(p: &[f64], rng: &mut impl Rng) -> usize {
    let u: f64 = rng.random();
    let mut acc = 0.0;
    for (i, pi) in p.iter().enumerate() {
        acc += pi;
        if u < acc {
            return i;
        }
    }
    p.len() - 1
}

/// Two distinct indices drawn without replacement from `p`.
pub fn sample_two(p: &[f64], rng: &mut impl Rng) -> (usize, usize) {
    let a = sample(p, rng);
    let rest: Vec<f64> = p
        .iter()
        .enumerate()
        .map(|(i, &v)| if i == a { 0.0 } else { v })
        .collect();
    let s: f64 = rest.iter().sum();
    let b = if s > 0.0 {
        sample(&rest.iter().map(|v| v / s).collect::<Vec<_>>(), rng)
    } else {
        (a + 1) % p.len()
    };
    (a, b)
}

/// dL/dalpha from dL/dg through the softmax: dalpha_i = sum_j dg_j p_j (delta_ij - p_i).
pub fn softmax_backward(p: &[f64], dg: &[f64]) -> Vec<f64> {
    let s: f64 = p.iter().zip(dg).map(|(pj, gj)| pj * gj).sum();
    p.iter().zip(dg).map(|(pi, gi)| pi * (gi - s)).collect()
}

/// How the gates are sampled in an architecture step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateMode {
    /// One op active; every candidate's dL/dg recomputed; gradient over all of alpha.
    FullV2,
    /// Two ops sampled; re-softmax over the pair, one active; gradient over the pair only,
    /// then the rescale that keeps every other op's probability.
    Two,
}

pub const MODES: &[&str] = &["full_v2", "two"];

impl GateMode {
    pub fn parse(s: &str) -> Result<GateMode> {
        match s {
            "full_v2" => Ok(GateMode::FullV2),
            "two" => Ok(GateMode::Two),
            other => bail!("unknown mode {other:?}; valid: {}", MODES.join(", ")),
        }
    }
}

/// The logits with their Adam state (betas (0, 0.999), eps 1e-8, no weight decay by default).
#[derive(Clone, Debug, PartialEq)]
pub struct ArchParams {
    pub alpha: Vec<Vec<f64>>,
    pub m: Vec<Vec<f64>>,
    pub v: Vec<Vec<f64>>,
    pub t: u64,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl ArchParams {
    /// alpha ~ N(0, 1e-3) for layers of `sizes` candidates.
    pub fn new(sizes: &[usize], lr: f64, rng: &mut impl Rng) -> ArchParams {
        let alpha: Vec<Vec<f64>> = sizes
            .iter()
            .map(|&n| (0..n).map(|_| 1e-3 * normal(rng)).collect())
            .collect();
        let zeros: Vec<Vec<f64>> = sizes.iter().map(|&n| vec![0.0; n]).collect();
        ArchParams {
            alpha,
            m: zeros.clone(),
            v: zeros,
            t: 0,
            lr,
            beta1: 0.0,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    pub fn probs(&self) -> Vec<Vec<f64>> {
        self.alpha.iter().map(|a| softmax(a)).collect()
    }

    /// One op per layer drawn from p.
    pub fn sample(&self, rng: &mut impl Rng) -> Vec<usize> {
        self.probs().iter().map(|p| sample(p, rng)).collect()
    }

    /// The most likely op per layer (the derived net).
    pub fn argmax(&self) -> Vec<usize> {
        self.alpha
            .iter()
            .map(|a| {
                a.iter()
                    .enumerate()
                    .fold(
                        (0, f64::NEG_INFINITY),
                        |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                    )
                    .0
            })
            .collect()
    }

    /// Mean entropy of the layers' distributions (nats).
    pub fn mean_entropy(&self) -> f64 {
        let p = self.probs();
        let h: f64 = p
            .iter()
            .map(|p| {
                -p.iter()
                    .filter(|&&v| v > 0.0)
                    .map(|v| v * v.ln())
                    .sum::<f64>()
            })
            .sum();
        h / p.len().max(1) as f64
    }

    /// One Adam step with gradient `g` (same shape as alpha). Entries with zero gradient do
    /// not move (beta1 = 0 makes the first moment the gradient itself).
    pub fn adam_step(&mut self, g: &[Vec<f64>]) {
        self.t += 1;
        let t = self.t as i32;
        let c1 = 1.0 - self.beta1.powi(t);
        let c2 = 1.0 - self.beta2.powi(t);
        for (l, gl) in g.iter().enumerate() {
            for (i, &gi) in gl.iter().enumerate() {
                let m = &mut self.m[l][i];
                let v = &mut self.v[l][i];
                *m = self.beta1 * *m + (1.0 - self.beta1) * gi;
                *v = self.beta2 * *v + (1.0 - self.beta2) * gi * gi;
                self.alpha[l][i] -= self.lr * (*m / c1) / ((*v / c2).sqrt() + self.eps);
            }
        }
    }

    /// After a `two`-mode step on layer `l`'s pair: subtract
    /// log(sum_pair exp(new) / sum_pair exp(old)) from both, so the pair's total probability,
    /// and with it every other op's, is what it was.
    pub fn rescale_pair(&mut self, l: usize, pair: (usize, usize), old: (f64, f64)) {
        let a = &mut self.alpha[l];
        let new = (a[pair.0], a[pair.1]);
        let lse = |x: f64, y: f64| {
            let m = x.max(y);
            m + ((x - m).exp() + (y - m).exp()).ln()
        };
        let offset = lse(new.0, new.1) - lse(old.0, old.1);
        a[pair.0] -= offset;
        a[pair.1] -= offset;
    }
}
