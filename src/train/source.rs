//! What a run trains and tests on: `--data DIR` (CIFAR-10 binary or an image folder) or the
//! built-in synthetic set, with its held-out valid split, augmentation and normalisation.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};

use crate::data::{self, Augment, CifarSplit, Dataset, Loader, Normalize, Shard};

pub struct DataSource {
    /// Human-readable origin, for logs.
    pub name: String,
    pub train: Arc<Dataset>,
    pub train_indices: Vec<usize>,
    /// Held out of `train` (deterministic), for per-epoch validation.
    pub valid_indices: Vec<usize>,
    /// The separate test set, when the data has one.
    pub test: Option<Arc<Dataset>>,
    pub augment: Augment,
    pub norm: Normalize,
}

/// Seed of the held-out split: fixed, so every run holds out the same images.
const SPLIT_SEED: u64 = 0x005E_ED0F_5717;

/// Images of the synthetic set: train (before the valid split) and test.
pub const SYNTHETIC_TRAIN: usize = 6000;
pub const SYNTHETIC_TEST: usize = 1000;

impl DataSource {
    /// Reads `dir` (or makes the synthetic set when `None`) at `size` x `size` (CIFAR stays
    /// 32). `valid` images are held out of the training set (default: a tenth, at most 5000).
    pub fn open(
        dir: Option<&Path>,
        size: usize,
        valid: Option<usize>,
        synthetic_seed: u64,
    ) -> Result<DataSource> {
        let (name, train, test, augment) = match dir {
            None => {
                let train = data::synthetic(synthetic_seed, SYNTHETIC_TRAIN, size);
                let test = data::synthetic(synthetic_seed ^ 0x7E57, SYNTHETIC_TEST, size);
                ("synthetic".to_string(), train, Some(test), Augment::None)
            }
            Some(d) => {
                let train = data::load(d, CifarSplit::Train, size)?;
                let cifar = data::is_cifar_dir(d);
                let has_test = cifar
                    || (d.join("train").is_dir()
                        && (d.join("test").is_dir() || d.join("val").is_dir()));
                let test = if has_test {
                    Some(data::load(d, CifarSplit::Test, size)?)
                } else {
                    None
                };
                let augment = if cifar {
                    Augment::CropFlip { pad: 4 }
                } else {
                    Augment::ResizedCropFlip
                };
                (d.display().to_string(), train, test, augment)
            }
        };
        let valid = valid.unwrap_or((train.len() / 10).min(5000));
        Self::from_sets(name, train, test, augment, valid)
    }

    pub fn from_sets(
        name: String,
        train: Dataset,
        test: Option<Dataset>,
        augment: Augment,
        valid: usize,
    ) -> Result<DataSource> {
        if valid >= train.len() {
            bail!(
                "{name}: cannot hold out {valid} images for validation from a training set of {}: lower --valid",
                train.len()
            );
        }
        let norm = Normalize::of(&train);
        let s = data::split(train.len(), valid, SPLIT_SEED);
        Ok(DataSource {
            name,
            train: Arc::new(train),
            train_indices: s.train,
            valid_indices: s.valid,
            test: test.map(Arc::new),
            augment,
            norm,
        })
    }

    /// Keeps only the first `n` training images of the (shuffled) split, for runs that must fit
    /// a time budget; the valid split is unchanged.
    pub fn limit_train(&mut self, n: Option<usize>) -> Result<()> {
        if let Some(n) = n {
            if n == 0 {
                bail!("--train-images must be at least 1");
            }
            self.train_indices.truncate(n);
        }
        Ok(())
    }

    pub fn classes(&self) -> usize {
        self.train.classes()
    }

    /// Full batches in one epoch of the training split; an error when there is none.
    pub fn batches_per_epoch(&self, batch: usize) -> Result<usize> {
        let n = self.train_indices.len() / batch.max(1);
        if n == 0 {
            bail!(
                "the training set has {} images, fewer than one batch of {batch}: lower --batch",
                self.train_indices.len()
            );
        }
        Ok(n)
    }

    /// One epoch of the training split: shuffled, augmented, full batches only, `shard`'s rows
    /// of each.
    pub fn train_loader(&self, batch: usize, seed: u64, epoch: u64, shard: Shard) -> Loader {
        self.loader(
            &self.train_indices,
            self.augment,
            batch,
            (seed, epoch),
            shard,
        )
    }

    /// One pass over the valid split: shuffled, not augmented, full batches only, `shard`'s
    /// rows of each.
    pub fn valid_loader(&self, batch: usize, seed: u64, epoch: u64, shard: Shard) -> Loader {
        self.loader(
            &self.valid_indices,
            Augment::None,
            batch,
            (seed, epoch),
            shard,
        )
    }

    fn loader(
        &self,
        indices: &[usize],
        augment: Augment,
        batch: usize,
        (seed, epoch): (u64, u64),
        shard: Shard,
    ) -> Loader {
        Loader::new(
            Arc::clone(&self.train),
            indices.to_vec(),
            batch,
            true,
            true,
            augment,
            self.norm,
            seed,
            epoch,
            shard,
        )
    }
}
