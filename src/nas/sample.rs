//! Random architectures near a given cost: the random-search baseline every NAS result owes.
//!
//! Drawing an op uniformly per layer gives nets whose cost clusters around the uniform mean,
//! so a target far from it would almost never be hit. Instead the draw is a random walk on
//! architectures: start from a uniform draw, change one layer's op at a time (a uniformly drawn
//! layer and op) keeping every change that brings the cost closer to the window
//! `[T (1 - tol), T (1 + tol)]`, until inside; then keep walking inside the window, accepting
//! any change that stays in it. The proposal is symmetric, so the walk's stationary
//! distribution is uniform over the window's architectures that it can reach; after
//! `mixing` moves per layer the net no longer resembles the way in.

use anyhow::{bail, Result};
use rand::Rng;

use super::steps::Costs;

/// How many proposals the walk makes, per layer, to reach the window before giving up.
const APPROACH_PER_LAYER: usize = 20_000;
/// Proposals per layer made inside the window.
const MIXING_PER_LAYER: usize = 200;

/// An architecture (an op index per layer) whose cost lies within `tolerance` (relative) of
/// `target`, and its cost.
pub fn sample_near(
    costs: &Costs,
    target: f64,
    tolerance: f64,
    rng: &mut impl Rng,
) -> Result<(Vec<usize>, f64)> {
    let unit = costs.unit;
    if !(target.is_finite() && target > 0.0) {
        bail!("the target cost must be a positive number (got {target})");
    }
    if !(tolerance.is_finite() && tolerance > 0.0 && tolerance < 1.0) {
        bail!("the tolerance is relative and must lie in (0, 1) (got {tolerance}); 0.05 is 5%");
    }
    let layers = costs.per_candidate.len();
    if layers == 0 || costs.per_candidate.iter().any(Vec::is_empty) {
        bail!("the cost table has a layer without candidates");
    }
    let (lo, hi) = (target * (1.0 - tolerance), target * (1.0 + tolerance));
    let (_, cheapest) = costs.cheapest();
    let dearest = costs.of(&costs.dearest());
    if cheapest > hi || dearest < lo {
        bail!(
            "no net of this space costs {target:.4} {unit} +-{:.1}%: its nets cost {cheapest:.4} to {dearest:.4} {unit}",
            100.0 * tolerance
        );
    }
    let distance = |c: f64| (lo - c).max(c - hi).max(0.0);
    let mut choice: Vec<usize> = costs
        .per_candidate
        .iter()
        .map(|c| rng.random_range(0..c.len()))
        .collect();
    let mut cost = costs.of(&choice);
    let mut tries = 0;
    while distance(cost) > 0.0 {
        tries += 1;
        if tries > APPROACH_PER_LAYER * layers {
            bail!(
                "no net within {:.1}% of {target:.4} {unit} was found (the closest costs {cost:.4}): the window may hold no net; widen the tolerance",
                100.0 * tolerance
            );
        }
        let (l, k) = propose(costs, rng);
        let next = cost - costs.per_candidate[l][choice[l]] + costs.per_candidate[l][k];
        if distance(next) < distance(cost) {
            choice[l] = k;
            cost = next;
        }
    }
    for _ in 0..MIXING_PER_LAYER * layers {
        let (l, k) = propose(costs, rng);
        let next = cost - costs.per_candidate[l][choice[l]] + costs.per_candidate[l][k];
        if distance(next) == 0.0 {
            choice[l] = k;
            cost = next;
        }
    }
    // Summed afresh: the running sum may have drifted by rounding.
    let cost = costs.of(&choice);
    Ok((choice, cost))
}

/// A uniformly drawn layer and op.
fn propose(costs: &Costs, rng: &mut impl Rng) -> (usize, usize) {
    let l = rng.random_range(0..costs.per_candidate.len());
    (l, rng.random_range(0..costs.per_candidate[l].len()))
}
