//! The held-out split for architecture updates: fixed by (n, valid, seed) alone, so a resumed
//! or repeated search never lets a validation image leak into weight training.

use super::rng::Rng;

/// Indices into a dataset; both lists sorted ascending (the loader shuffles `train` itself, and
/// sorted `valid` reads memory in order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub valid: Vec<usize>,
}

/// A seeded permutation of `0..n`; its first `valid` entries are held out, the rest train.
/// Integer arithmetic only, so every machine gets the same split.
///
/// Panics if `valid > n`: callers check user-given sizes against the data first.
pub fn split(n: usize, valid: usize, seed: u64) -> Split {
    assert!(
        valid <= n,
        "split: {valid} held-out images asked of a set of {n}"
    );
    let mut perm: Vec<usize> = (0..n).collect();
    Rng::from_parts(&[seed, n as u64, 0x5917]).shuffle(&mut perm);
    let mut held = perm[..valid].to_vec();
    let mut train = perm[valid..].to_vec();
    held.sort_unstable();
    train.sort_unstable();
    Split { train, valid: held }
}
