//! Plain f64 CPU reference implementations of every neural-net op, forward and backward.
//!
//! These are the ground truth the GPU kernels are checked against, so they favour obvious
//! loops over speed, and accumulate in f64 so their own rounding error is negligible next to
//! the f32 kernels'. Conventions shared with the kernels:
//!
//! - activations are NHWC and contiguous, with shape `[n, h, w, c]`;
//! - matrices are row-major;
//! - conv weights are OIHW like PyTorch (full `[cout, cin, k, k]`, depthwise `[c, k, k]`,
//!   pointwise `[cout, cin]`, linear `[out, in]`);
//! - a k x k conv is padded by `k / 2` on every side.
//!
//! Each submodule holds one op family; their items are re-exported here.

pub mod activation;
pub mod batchnorm;
pub mod conv;
pub mod depthwise;
pub mod dropout;
pub mod elementwise;
pub mod linear;
pub mod loss;
pub mod optim;
pub mod pointwise;
pub mod pool;
pub mod reduce;

pub use activation::*;
pub use batchnorm::*;
pub use conv::*;
pub use depthwise::*;
pub use dropout::*;
pub use elementwise::*;
pub use linear::*;
pub use loss::*;
pub use optim::*;
pub use pointwise::*;
pub use pool::*;
pub use reduce::*;

/// Relative error `||out - reference|| / ||reference||` in the Euclidean norm.
///
/// Falls back to the absolute error `||out - reference||` when the reference is all zeros,
/// and returns infinity when the lengths differ or `out` holds a NaN or infinity, so a
/// broken result can never pass a `< tolerance` check.
pub fn rel_error(out: &[f64], reference: &[f64]) -> f64 {
    if out.len() != reference.len() || out.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let diff = out
        .iter()
        .zip(reference)
        .map(|(o, r)| (o - r) * (o - r))
        .sum::<f64>()
        .sqrt();
    let norm = reference.iter().map(|r| r * r).sum::<f64>().sqrt();
    if norm == 0.0 {
        diff
    } else {
        diff / norm
    }
}

/// `len` values drawn uniformly from `[lo, hi)`; deterministic for a seeded `rng`.
pub fn random_vec(rng: &mut impl rand::Rng, len: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..len).map(|_| rng.random_range(lo..hi)).collect()
}
