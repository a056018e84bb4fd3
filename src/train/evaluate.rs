//! Loss and accuracy of a net over a set of images (BN in eval mode), on one process or dealt
//! out over a group's ranks, and the test set with its input normalisation.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::autograd::Tape;
use crate::data::{Augment, Dataset, Loader, Normalize, NormalizeChoice};
use crate::dist::Group;
use crate::gpu::Gpu;
use crate::nn::Network;
use crate::ops::loss;

use super::{stored_normalization, upload_batch, DataSource, StepOutput, Totals};

/// Loss and accuracy of `net` (BN in eval mode) over `indices` of `data`.
pub fn evaluate(
    gpu: &Gpu,
    net: &Network,
    data: &Arc<Dataset>,
    indices: Vec<usize>,
    norm: Normalize,
    batch: usize,
) -> Result<(f64, f64)> {
    let (loss, acc, _) = evaluate_logits(gpu, net, data, indices, norm, batch, false)?;
    Ok((loss, acc))
}

/// [`evaluate`] with the batches dealt out over `group`'s ranks (batch i to rank i mod K), the
/// sums added up: every rank gets the result of the whole. The ranks must hold the same weights
/// and running statistics.
pub fn evaluate_shared(
    gpu: &Gpu,
    net: &Network,
    data: &Arc<Dataset>,
    indices: Vec<usize>,
    norm: Normalize,
    batch: usize,
    group: &Group,
) -> Result<(f64, f64)> {
    let mine = dealt(&indices, batch, group);
    let mut sums = [0.0; 3];
    if !mine.is_empty() {
        let n = mine.len() as f64;
        let (loss, acc) = evaluate(gpu, net, data, mine, norm, batch)?;
        sums = [loss * n, acc * n, n];
    }
    group.sum_f64(&mut sums)?;
    if sums[2] == 0.0 {
        bail!("evaluate: no images to evaluate on");
    }
    Ok((sums[0] / sums[2], sums[1] / sums[2]))
}

/// This rank's batches of `indices` cut into batches of `batch`: batch i goes to rank i mod K,
/// so every batch keeps the images it has on one process.
pub(crate) fn dealt(indices: &[usize], batch: usize, group: &Group) -> Vec<usize> {
    indices
        .chunks(batch.max(1))
        .enumerate()
        .filter(|(i, _)| i % group.ranks() == group.rank())
        .flat_map(|(_, c)| c.iter().copied())
        .collect()
}

/// [`evaluate`], with every image's logits as well when `keep_logits` (row i: `indices[i]`),
/// read back batch by batch: `eval --logits`, to compare with another implementation image by
/// image.
pub fn evaluate_logits(
    gpu: &Gpu,
    net: &Network,
    data: &Arc<Dataset>,
    indices: Vec<usize>,
    norm: Normalize,
    batch: usize,
    keep_logits: bool,
) -> Result<(f64, f64, Vec<f32>)> {
    if indices.is_empty() {
        bail!("evaluate: no images to evaluate on");
    }
    let loader = Loader::new(
        Arc::clone(data),
        indices,
        batch,
        false,
        false,
        Augment::None,
        norm,
        0,
        0,
        crate::data::Shard::whole(),
    );
    let mut totals = Totals::new(gpu);
    let mut kept = Vec::new();
    for b in loader {
        let (x, y) = upload_batch(gpu, &b)?;
        let tape = Tape::new(gpu, 0);
        let _no_grad = tape.no_grad();
        let x = tape.constant(x);
        let logits = net.forward(&tape, &x, false)?;
        let (loss, dlogits) = loss::softmax_cross_entropy(gpu, logits.value(), &y, 0.0)?;
        drop(dlogits);
        let correct = loss::count_correct(gpu, logits.value(), &y)?;
        if keep_logits {
            kept.extend(gpu.read_many(&[logits.value()])?.remove(0));
        }
        totals.add(gpu, &StepOutput { loss, correct }, b.n)?;
    }
    let (loss, acc) = totals.read(gpu)?;
    Ok((loss, acc, kept))
}

/// The test images of `dir` (CIFAR's test batch, an image folder's `val/` or `test/`, or the
/// whole folder when it has none; the synthetic test set without `dir`) and the normalisation
/// to apply: `choice` when given, else the one stored with `weights`. Weights without one
/// (a PyTorch state_dict, say) are refused rather than guessed for: a wrong normalisation
/// costs accuracy silently.
pub fn test_set(
    dir: Option<&Path>,
    size: usize,
    seed: u64,
    weights: &Path,
    choice: Option<NormalizeChoice>,
) -> Result<(Dataset, Normalize)> {
    use crate::data::CifarSplit;
    let stored = match choice {
        Some(_) => None,
        None => Some(stored_normalization(weights)?.with_context(|| {
            format!(
                "{} has no normalisation metadata (normalize_mean, normalize_std): pass \
                 --normalize data (the training images' statistics), imagenet, or MEAN,STD",
                weights.display()
            )
        })?),
    };
    let fixed = match (stored, choice) {
        (Some(n), _) | (None, Some(NormalizeChoice::Fixed(n))) => Some(n),
        _ => None,
    };
    match dir {
        None => {
            let s = DataSource::open(None, size, Some(0), seed)?;
            let test = s.test.context("the synthetic source has a test set")?;
            Ok(((*test).clone(), fixed.unwrap_or(s.norm)))
        }
        Some(d) => {
            let split_dirs =
                d.join("train").is_dir() && (d.join("val").is_dir() || d.join("test").is_dir());
            let test = if crate::data::is_cifar_dir(d) || split_dirs {
                crate::data::load(d, CifarSplit::Test, size)?
            } else {
                crate::data::load(d, CifarSplit::Train, size)?
            };
            let norm = match fixed {
                Some(n) => n,
                None => Normalize::of(&crate::data::load(d, CifarSplit::Train, size)?),
            };
            Ok((test, norm))
        }
    }
}
