//! GPU kernels against the f64 CPU reference, on fresh random inputs, with every output
//! allocation poisoned with NaN so an unwritten element fails. Shared by `kernels-tests/` and
//! `proxyless check` (so users can verify the kernels on their own driver).

mod batchnorm;
mod conv;
mod depthwise;
mod dropout;
mod elementwise;
mod fused;
mod linear;
mod loss;
mod optim;
mod pointwise;
mod pool;
mod reduce;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::gpu::{without_subgroups, Gpu, PoisonScope, Tensor};
use crate::reference::rel_error;

/// Largest accepted ||out - ref|| / ||ref|| for an f32 kernel.
pub const TOLERANCE: f64 = 1e-4;

/// One compared output of one kernel on one shape.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub kernel: String,
    pub shape: String,
    pub output: &'static str,
    pub rel_error: f64,
}

impl Outcome {
    pub fn pass(&self) -> bool {
        self.rel_error < TOLERANCE
    }
}

/// A kernel family's comparisons.
pub struct Family {
    pub name: &'static str,
    pub run: fn(&mut Checker) -> Result<()>,
}

/// Every family, in the order of the layers of a network.
pub fn families() -> Vec<Family> {
    macro_rules! family {
        ($name:ident) => {
            Family {
                name: stringify!($name),
                run: $name::run,
            }
        };
    }
    vec![
        family!(conv),
        family!(pointwise),
        family!(depthwise),
        family!(batchnorm),
        family!(fused),
        family!(elementwise),
        family!(pool),
        family!(linear),
        family!(loss),
        family!(dropout),
        family!(optim),
        family!(reduce),
    ]
}

/// Runs one family (by name) and returns its outcomes.
pub fn run_family(gpu: &Gpu, name: &str, seed: u64) -> Result<Vec<Outcome>> {
    let fam = families()
        .into_iter()
        .find(|f| f.name == name)
        .ok_or_else(|| anyhow::anyhow!("unknown kernel family {name:?}"))?;
    let mut c = Checker::new(gpu, seed);
    (fam.run)(&mut c)?;
    Ok(c.outcomes)
}

/// State of a verification run: the device, a seeded RNG and the outcomes so far.
pub struct Checker<'a> {
    pub gpu: &'a Gpu,
    pub rng: StdRng,
    pub outcomes: Vec<Outcome>,
    _poison: PoisonScope<'a>,
}

impl<'a> Checker<'a> {
    pub fn new(gpu: &'a Gpu, seed: u64) -> Self {
        Checker {
            _poison: gpu.poison_scope(),
            gpu,
            rng: StdRng::seed_from_u64(seed),
            outcomes: Vec::new(),
        }
    }

    /// `n` values uniform in (-1, 1), none of them zero.
    pub fn random(&mut self, n: usize) -> Vec<f32> {
        self.random_in(n, -1.0, 1.0)
    }

    /// `n` values uniform in (lo, hi), none of them zero.
    pub fn random_in(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| loop {
                let v = self.rng.random_range(lo..hi);
                if v != 0.0 {
                    break v;
                }
            })
            .collect()
    }

    /// Uploads host values as a tensor.
    pub fn upload(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        self.gpu.upload(data, shape)
    }

    /// Reads `out` back, compares it with `reference` and records the outcome.
    pub fn compare(
        &mut self,
        kernel: &str,
        shape: String,
        output: &'static str,
        out: &Tensor,
        reference: &[f64],
    ) -> Result<()> {
        let got = f64s(&self.gpu.read_f32(out)?);
        let rel_error = if got.len() == reference.len() {
            rel_error(&got, reference)
        } else {
            f64::INFINITY
        };
        self.outcomes.push(Outcome {
            kernel: kernel.to_string(),
            shape,
            output,
            rel_error,
        });
        Ok(())
    }
}

/// f32 values widened to f64 (the reference sees exactly the GPU's inputs).
/// Runs `cases` with the device's own kernels (label suffix ""), and where the device shares
/// loads through subgroups, again with the kernels a device without subgroups gets (suffix
/// " no-subgroups"): both must be right.
pub fn with_each_subgroup_setting(
    c: &mut Checker,
    mut cases: impl FnMut(&mut Checker, &str) -> Result<()>,
) -> Result<()> {
    cases(c, "")?;
    if c.gpu.subgroup_size().is_some() {
        without_subgroups(|| cases(c, " no-subgroups"))?;
    }
    Ok(())
}

pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}
