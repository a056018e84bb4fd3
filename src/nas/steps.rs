//! One step of each kind the search takes: a weight step on a sampled path, an architecture
//! step (gradient through binary gates, or REINFORCE) with a latency-aware loss, and the derived
//! net with inherited weights. The loop that runs them is `train::search`.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;

use crate::autograd::Tape;
use crate::dist::Group;
use crate::gpu::{Gpu, Tensor};
use crate::nn::optim::Optimizer;
use crate::nn::parts::{part_gradients, FirstPartRunning, PartsOf};
use crate::nn::Network;
use crate::ops::loss;

use super::arch::{sample, sample_two, softmax, softmax_backward, ArchParams, GateMode};
use super::latency::expected_latency;
use super::supernet::Supernet;

/// How the expected cost enters the architecture loss (DESIGN.md section 5).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LossForm {
    /// CE * a * (log E / log T)^b.
    MulLog { a: f64, b: f64 },
    /// CE + l * (E - T) / T.
    AddLinear { l: f64 },
    /// CE + l * max(0, E - T) / T: no pull on the cost once under the target, so that CE
    /// alone spends the budget left (the two forms above push the cost down at any E).
    AddHinge { l: f64 },
}

pub const LOSS_FORMS: &[&str] = &["mul#log", "add#linear", "add#hinge"];

impl LossForm {
    pub fn parse(s: &str) -> Result<LossForm> {
        match s {
            "mul#log" => Ok(LossForm::MulLog { a: 0.2, b: 0.3 }),
            "add#linear" => Ok(LossForm::AddLinear { l: 0.1 }),
            "add#hinge" => Ok(LossForm::AddHinge { l: 0.1 }),
            other => bail!(
                "unknown loss form {other:?}; valid: {}",
                LOSS_FORMS.join(", ")
            ),
        }
    }

    /// The loss and its derivatives in CE and in E.
    pub fn value(&self, ce: f64, e: f64, target: f64) -> Result<(f64, f64, f64)> {
        match *self {
            LossForm::MulLog { a, b } => {
                if e <= 1.0 || target <= 1.0 {
                    bail!(
                        "mul#log needs an expected cost and a target above 1 (got {e:.4} and {target:.4}): \
                         use --loss add#linear, or a larger --latency-batch"
                    );
                }
                let r = e.ln() / target.ln();
                let f = a * r.powf(b);
                let df_de = a * b * r.powf(b - 1.0) / (e * target.ln());
                Ok((ce * f, f, ce * df_de))
            }
            LossForm::AddLinear { l } => Ok((ce + l * (e - target) / target, 1.0, l / target)),
            LossForm::AddHinge { l } if e > target => {
                Ok((ce + l * (e - target) / target, 1.0, l / target))
            }
            LossForm::AddHinge { .. } => Ok((ce, 1.0, 0.0)),
        }
    }
}

/// The cost the search trades against accuracy: per candidate and fixed.
#[derive(Clone, Debug)]
pub struct Costs {
    pub fixed: f64,
    pub per_candidate: Vec<Vec<f64>>,
    pub target: f64,
    pub form: LossForm,
    /// "ms" or "MMAC".
    pub unit: &'static str,
}

impl Costs {
    pub fn expected(&self, probs: &[Vec<f64>]) -> (f64, Vec<Vec<f64>>) {
        expected_latency(self.fixed, &self.per_candidate, probs)
    }

    /// Refuses, before any training, a loss form this table and target cannot take: `mul#log`
    /// takes log E / log T, so the cheapest net's cost (the least E can be) and the target
    /// must both be above 1 in the table's unit.
    pub fn check(&self) -> Result<()> {
        if let LossForm::MulLog { .. } = self.form {
            let least = self.cheapest().1;
            if least <= 1.0 || self.target <= 1.0 {
                bail!(
                    "--loss mul#log needs costs above 1 {unit}: the cheapest net costs {least:.4} {unit} and the target is {target:.4} {unit}, \
                     where log E / log T has no use; use --loss add#hinge or add#linear, or measure a larger --latency-batch",
                    unit = self.unit,
                    target = self.target
                );
            }
        }
        Ok(())
    }

    /// Cost of one architecture.
    pub fn of(&self, choice: &[usize]) -> f64 {
        self.fixed
            + self
                .per_candidate
                .iter()
                .zip(choice)
                .map(|(c, &k)| c[k])
                .sum::<f64>()
    }

    /// The cheapest architecture and its cost.
    pub fn cheapest(&self) -> (Vec<usize>, f64) {
        let choice = self.extreme(|v, best| v < best);
        let cost = self.of(&choice);
        (choice, cost)
    }

    /// The most costly architecture.
    pub fn dearest(&self) -> Vec<usize> {
        self.extreme(|v, best| v > best)
    }

    /// Per layer, the first op that no other op beats by `better`.
    fn extreme(&self, better: impl Fn(f64, f64) -> bool) -> Vec<usize> {
        self.per_candidate
            .iter()
            .map(|c| {
                let mut best = 0;
                for (i, &v) in c.iter().enumerate() {
                    if better(v, c[best]) {
                        best = i;
                    }
                }
                best
            })
            .collect()
    }
}

/// What an architecture step saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct ArchStepInfo {
    pub ce: f64,
    /// The expected cost in the loss (over the sampled pairs in `two` mode).
    pub expected: f64,
    pub accuracy: f64,
}

/// One weight step on the path `active` (only its candidates get gradients and updates).
#[allow(clippy::too_many_arguments)]
pub fn weight_step(
    gpu: &Gpu,
    net: &Supernet,
    opt: &mut Optimizer,
    (x, y): (Tensor, &Tensor),
    active: &[usize],
    lr: f32,
    smoothing: f32,
    seed: u32,
) -> Result<(Tensor, Tensor)> {
    let tape = Tape::new(gpu, seed);
    let xv = tape.constant(x);
    let (logits, traces) = net.forward(&tape, &xv, active, true)?;
    drop((xv, traces));
    let (l, dl) = loss::softmax_cross_entropy(gpu, logits.value(), y, smoothing)?;
    let correct = loss::count_correct(gpu, logits.value(), y)?;
    let grads = tape.backward(&logits, dl)?;
    drop(logits);
    opt.step(gpu, &net.params, &grads, lr)?;
    Ok((l, correct))
}

/// [`weight_step`] on a batch given in parts (`nn::parts`): where one part's tensors would be
/// over a storage binding, and on each rank of a data-parallel run (`group`), whose gradients
/// are summed before the update. Returns the mean loss and the correct count of the images here.
#[allow(clippy::too_many_arguments)]
pub fn weight_step_parts(
    gpu: &Gpu,
    net: &Supernet,
    opt: &mut Optimizer,
    parts: Vec<(Tensor, Tensor)>,
    of: PartsOf,
    group: &Group,
    active: &[usize],
    lr: f32,
    smoothing: f32,
    seed: u32,
) -> Result<(Tensor, Tensor)> {
    let sums = part_gradients(gpu, &net.params, parts, of, smoothing, seed, |tape, x| {
        Ok(net.forward(tape, x, active, true)?.0)
    })?;
    let grads: Vec<&Tensor> = sums.grads.by_param.iter().map(|(_, g)| g).collect();
    group.sum_tensors(gpu, &grads)?;
    opt.step(gpu, &net.params, &sums.grads, lr)?;
    Ok((sums.loss, sums.correct))
}

/// The distribution the latency term of an architecture step is taken over: every op's
/// probability in `full_v2`; in `two` mode the sampled pair's, renormalised over the two
/// (official `MixedEdge.current_prob_over_ops`), and 0 for the other ops. Fed to
/// `expected_latency`, the gradient p_k (LAT_k - E_layer) is then exact for either softmax and 0
/// off the pair, so the rescale after the step keeps every other op's probability, and two
/// candidates of equal latency are not pushed apart by the latency term.
pub fn latency_probs(
    alpha: &[Vec<f64>],
    probs: &[Vec<f64>],
    involved: &[Vec<usize>],
    mode: GateMode,
) -> Vec<Vec<f64>> {
    match mode {
        GateMode::FullV2 => probs.to_vec(),
        GateMode::Two => alpha
            .iter()
            .zip(involved)
            .map(|(a, inv)| {
                let mut p = vec![0.0; a.len()];
                let pair = softmax(&[a[inv[0]], a[inv[1]]]);
                p[inv[0]] = pair[0];
                p[inv[1]] = pair[1];
                p
            })
            .collect(),
    }
}

/// One part of an architecture step's batch: its mean CE, its count of correct predictions and
/// dL/dg of every involved candidate (0 elsewhere), with `active` on the path.
fn gate_sums(
    gpu: &Gpu,
    net: &Supernet,
    (x, y): (Tensor, &Tensor),
    active: &[usize],
    involved: &[Vec<usize>],
) -> Result<(f64, f64, Vec<Vec<f64>>)> {
    let tape = Tape::new(gpu, 0);
    tape.freeze_params();
    let xv = tape.constant(x);
    let (logits, traces) = net.forward_from_leaf(&tape, &xv, active)?;
    let (ce_t, dl) = loss::softmax_cross_entropy(gpu, logits.value(), y, 0.0)?;
    let correct = loss::count_correct(gpu, logits.value(), y)?;
    let watch: Vec<&crate::autograd::Var> = traces.iter().map(|t| &t.output).collect();
    let (_, dys) = tape.backward_watching(&logits, dl, &watch)?;
    drop(logits);
    // dL/dg for the involved candidates of every layer, summed on the device, read at once.
    // The recomputed candidates need their outputs only: nothing is recorded.
    let recompute = Tape::new(gpu, 0);
    let _no_grad = recompute.no_grad();
    let mut sums = Vec::new();
    for (l, (t, dy)) in traces.iter().zip(&dys).enumerate() {
        let Some(dy) = dy else {
            bail!("no gradient reached mixed layer {l}");
        };
        // The active candidate's output is already here (y, or y - x with the shortcut):
        // only the others are recomputed.
        let k = active[l];
        let others: Vec<usize> = involved[l].iter().copied().filter(|&j| j != k).collect();
        let mut s = net.gate_gradients(&recompute, l, &t.input.tensor(), dy, true, &others)?;
        if involved[l].contains(&k) {
            s[k] = net.active_gate_gradient(gpu, l, k, t, dy)?;
        }
        sums.push(s);
    }
    drop((traces, dys));
    // One readback for the loss, the count and every gate sum.
    let mut wanted: Vec<&Tensor> = vec![&ce_t, &correct];
    wanted.extend(sums.iter().flatten().flatten());
    let values = gpu.read_many(&wanted)?;
    let mut next = values[2..].iter();
    let mut dg: Vec<Vec<f64>> = Vec::new();
    for s in &sums {
        let mut v = Vec::new();
        for t in s {
            v.push(match t {
                Some(_) => next.next().map_or(0.0, |x| x[0] as f64),
                None => 0.0,
            });
        }
        dg.push(v);
    }
    Ok((values[0][0] as f64, values[1][0] as f64, dg))
}

/// One gradient architecture step on a validation batch, given in parts (weights frozen, BN on
/// batch statistics, plain CE), then Adam on alpha (and the rescale in `two` mode).
#[allow(clippy::too_many_arguments)]
pub fn arch_step_gradient(
    gpu: &Gpu,
    net: &Supernet,
    arch: &mut ArchParams,
    parts: Vec<(Tensor, Tensor)>,
    (of, group): (usize, &Group),
    mode: GateMode,
    costs: Option<&Costs>,
    rng: &mut StdRng,
) -> Result<ArchStepInfo> {
    let probs = arch.probs();
    // Active op per layer, and the candidates whose gate gradient is needed.
    let mut active = Vec::new();
    let mut involved: Vec<Vec<usize>> = Vec::new();
    for (l, p) in probs.iter().enumerate() {
        match mode {
            GateMode::FullV2 => {
                active.push(sample(p, rng));
                involved.push((0..p.len()).collect());
            }
            GateMode::Two => {
                let (a, b) = sample_two(p, rng);
                let p2 = softmax(&[arch.alpha[l][a], arch.alpha[l][b]]);
                active.push(if sample(&p2, rng) == 0 { a } else { b });
                involved.push(vec![a, b]);
            }
        }
    }
    // The batch in parts (several where one part's tensors would be over a storage binding, and
    // over the ranks of a data-parallel run): each part's loss, count and gate sums, weighed by
    // its share of the `of` images, add up to the batch's (BN takes each part's statistics).
    // Every rank drew the same path from the same generator.
    let mut sums = vec![0.0; 2 + probs.iter().map(Vec::len).sum::<usize>()];
    let mut running = FirstPartRunning::new(&net.params);
    for (j, (x, y)) in parts.into_iter().enumerate() {
        running.begin_part(gpu, j);
        let share = y.numel() as f64 / of as f64;
        let (part_ce, correct, part_dg) = gate_sums(gpu, net, (x, &y), &active, &involved)?;
        sums[0] += share * part_ce;
        sums[1] += correct;
        for (d, p) in sums[2..].iter_mut().zip(part_dg.iter().flatten()) {
            *d += share * p;
        }
    }
    running.end_batch(gpu)?;
    group.sum_f64(&mut sums)?;
    let (ce, accuracy) = (sums[0], sums[1] / of as f64);
    let mut flat = sums[2..].iter();
    let dg: Vec<Vec<f64>> = probs
        .iter()
        .map(|p| {
            p.iter()
                .map(|_| flat.next().copied().unwrap_or(0.0))
                .collect()
        })
        .collect();
    // CE's gradient in alpha through the softmax (of all ops, or of the pair).
    let mut grad: Vec<Vec<f64>> = probs.iter().map(|p| vec![0.0; p.len()]).collect();
    for (l, inv) in involved.iter().enumerate() {
        match mode {
            GateMode::FullV2 => grad[l] = softmax_backward(&probs[l], &dg[l]),
            GateMode::Two => {
                let (a, b) = (inv[0], inv[1]);
                let p2 = softmax(&[arch.alpha[l][a], arch.alpha[l][b]]);
                let g2 = softmax_backward(&p2, &[dg[l][a], dg[l][b]]);
                grad[l][a] = g2[0];
                grad[l][b] = g2[1];
            }
        }
    }
    let mut expected = 0.0;
    if let Some(c) = costs {
        let (e, de) = c.expected(&latency_probs(&arch.alpha, &probs, &involved, mode));
        expected = e;
        let (_, dce, dexp) = c.form.value(ce, e, c.target)?;
        for l in 0..grad.len() {
            for k in 0..grad[l].len() {
                grad[l][k] = dce * grad[l][k] + dexp * de[l][k];
            }
        }
    }
    let old: Vec<(f64, f64)> = involved
        .iter()
        .enumerate()
        .map(|(l, inv)| {
            (
                arch.alpha[l][inv[0]],
                arch.alpha[l][inv[inv.len().min(2) - 1]],
            )
        })
        .collect();
    arch.adam_step(&grad);
    if mode == GateMode::Two {
        for (l, inv) in involved.iter().enumerate() {
            arch.rescale_pair(l, (inv[0], inv[1]), old[l]);
        }
    }
    Ok(ArchStepInfo {
        ce,
        expected,
        accuracy,
    })
}

/// REINFORCE state: the moving baseline of the reward.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Baseline(pub Option<f64>);

/// One REINFORCE step: `samples` architectures scored on the same batch without gradients
/// (given in parts, BN on each part's statistics; over `group`'s ranks, each with its parts of
/// the `of` images), reward acc * (T / cost)^w (acc alone without costs), baseline b <- b + 0.99 (mean R - b),
/// gradient -(1/M) sum (R_m - b) grad log p(m), Adam.
#[allow(clippy::too_many_arguments)]
pub fn arch_step_reinforce(
    gpu: &Gpu,
    net: &Supernet,
    arch: &mut ArchParams,
    parts: Vec<(Tensor, Tensor)>,
    (of, group): (usize, &Group),
    samples: usize,
    exponent: f64,
    costs: Option<&Costs>,
    baseline: &mut Baseline,
    rng: &mut StdRng,
) -> Result<ArchStepInfo> {
    let probs = arch.probs();
    let n = of;
    let parts: Vec<(std::rc::Rc<Tensor>, Tensor)> = parts
        .into_iter()
        .map(|(x, y)| (std::rc::Rc::new(x), y))
        .collect();
    let mut scored = Vec::new();
    for _ in 0..samples.max(1) {
        let choice: Vec<usize> = probs.iter().map(|p| sample(p, rng)).collect();
        let mut correct: Option<Tensor> = None;
        let mut running = FirstPartRunning::new(&net.params);
        for (j, (x, y)) in parts.iter().enumerate() {
            running.begin_part(gpu, j);
            let tape = Tape::new(gpu, 0);
            let _g = tape.no_grad();
            let xv = tape.constant_shared(x);
            let (logits, _) = net.forward(&tape, &xv, &choice, true)?;
            let c = loss::count_correct(gpu, logits.value(), y)?;
            match &correct {
                Some(total) => crate::ops::elementwise::add_assign(gpu, total, &c)?,
                None => correct = Some(c),
            }
        }
        running.end_batch(gpu)?;
        scored.push((
            choice,
            correct.context("a REINFORCE step needs at least one part")?,
        ));
    }
    // Correct counts of this rank's images, summed over the ranks (who scored the same choices).
    let mut counts: Vec<f64> = gpu
        .read_many(&scored.iter().map(|(_, c)| c).collect::<Vec<_>>())?
        .iter()
        .map(|c| c[0] as f64)
        .collect();
    group.sum_f64(&mut counts)?;
    let mut rewards = Vec::new();
    let mut mean_acc = 0.0;
    for ((choice, _), count) in scored.iter().zip(&counts) {
        let acc = count / n as f64;
        mean_acc += acc / scored.len() as f64;
        let r = match costs {
            Some(c) => acc * (c.target / c.of(choice)).powf(exponent),
            None => acc,
        };
        rewards.push(r);
    }
    let mean_r = rewards.iter().sum::<f64>() / rewards.len() as f64;
    let b = match baseline.0 {
        None => mean_r,
        Some(b) => b + 0.99 * (mean_r - b),
    };
    baseline.0 = Some(b);
    let mut grad: Vec<Vec<f64>> = probs.iter().map(|p| vec![0.0; p.len()]).collect();
    let m = scored.len() as f64;
    for ((choice, _), r) in scored.iter().zip(&rewards) {
        for (l, &k) in choice.iter().enumerate() {
            for (i, g) in grad[l].iter_mut().enumerate() {
                let dlogp = if i == k { 1.0 } else { 0.0 } - probs[l][i];
                *g -= (r - b) * dlogp / m;
            }
        }
    }
    arch.adam_step(&grad);
    Ok(ArchStepInfo {
        ce: f64::NAN,
        expected: costs.map_or(0.0, |c| c.expected(&probs).0),
        accuracy: mean_acc,
    })
}

/// The derived net (argmax per layer) with the weights of the chosen candidates.
pub fn derive(gpu: &Gpu, net: &Supernet, arch: &ArchParams) -> Result<Network> {
    let choice = arch.argmax();
    let config = net.space.derive(&choice)?;
    let derived = Network::new(gpu, &config, 0)?;
    let by_name: HashMap<&str, usize> = net
        .params
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    for p in &derived.params.params {
        let source = supernet_name(&p.name, &choice);
        let i = *by_name
            .get(source.as_str())
            .with_context(|| format!("derive: the supernet has no {source} for {}", p.name))?;
        gpu.copy(&net.params.params[i].value.buf, &p.value.buf)?;
    }
    Ok(derived)
}

/// The supernet's name of a derived net's tensor: block i > 0 is mixed layer i - 1, whose
/// chosen candidate holds the weights.
fn supernet_name(name: &str, choice: &[usize]) -> String {
    let Some(rest) = name.strip_prefix("blocks.") else {
        return name.to_string();
    };
    let Some((i, tail)) = rest.split_once('.') else {
        return name.to_string();
    };
    match i.parse::<usize>() {
        Ok(i) if i > 0 && i <= choice.len() => {
            let tail = tail.strip_prefix("mobile_inverted_conv.").unwrap_or(tail);
            format!(
                "blocks.{i}.mobile_inverted_conv.candidate_ops.{}.{tail}",
                choice[i - 1]
            )
        }
        _ => name.to_string(),
    }
}
