//! One epoch of batches, prepared on a background thread a few batches ahead, so augmentation
//! overlaps the GPU's work on the batch before.

use std::ops::Range;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::augment::Augment;
use super::normalize::Normalize;
use super::rng::Rng;
use super::Dataset;

/// Batches prepared ahead of the consumer: enough to hide a slow batch, little memory.
const DEPTH: usize = 3;

/// Which share of every batch a loader yields: each batch is cut into `parts` parts whose
/// sizes differ by at most one (part j of a batch of n takes rows [j n / parts, (j + 1) n /
/// parts) rounded down), and this loader keeps parts `first .. first + count`. A rank of a
/// data-parallel run keeps its own parts; one process that runs every part in turn
/// (`--parts`) keeps them all and sees the same parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub parts: usize,
    pub first: usize,
    pub count: usize,
}

impl Shard {
    /// The whole batch as one part.
    pub fn whole() -> Shard {
        Shard {
            parts: 1,
            first: 0,
            count: 1,
        }
    }

    /// Rows of part `j` of a batch of `n`.
    pub fn part_rows(n: usize, parts: usize, j: usize) -> Range<usize> {
        j * n / parts..(j + 1) * n / parts
    }

    /// Rows of a batch of `n` this shard keeps.
    pub fn rows(&self, n: usize) -> Range<usize> {
        Self::part_rows(n, self.parts, self.first).start
            ..Self::part_rows(n, self.parts, self.first + self.count - 1).end
    }

    /// Sizes of this shard's parts of a batch of `n`, in order.
    pub fn part_sizes(&self, n: usize) -> Vec<usize> {
        (self.first..self.first + self.count)
            .map(|j| Self::part_rows(n, self.parts, j).len())
            .collect()
    }
}

/// One batch, ready to upload.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `n * height * width * 3` values, NHWC, normalised (and augmented).
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
    /// Which dataset images these are, in batch order.
    pub indices: Vec<usize>,
    pub n: usize,
    pub height: usize,
    pub width: usize,
    /// Images in the whole batch, of which this is the loader's share (`n` when unsharded).
    pub of: usize,
    /// Sizes of the shard's parts, in row order (they add up to `n`).
    pub parts: Vec<usize>,
}

/// An iterator over one epoch's batches. Everything random (order and augmentation) comes from
/// (seed, epoch), so an epoch can be replayed bit for bit after a resume.
pub struct Loader {
    rx: Option<Receiver<Batch>>,
    worker: Option<JoinHandle<()>>,
    batches: usize,
    yielded: usize,
}

/// Parameters the worker needs, moved onto its thread.
struct Plan {
    data: Arc<Dataset>,
    order: Vec<usize>,
    batch: usize,
    batches: usize,
    augment: Augment,
    norm: Normalize,
    seed: u64,
    epoch: u64,
    shard: Shard,
}

impl Loader {
    /// Starts the epoch: `indices` (into `data`) are visited shuffled by (seed, epoch) when
    /// `shuffle`, else in the given order, `batch` at a time; a last short batch is kept unless
    /// `drop_last`. Each batch yields only `shard`'s rows (`Shard::whole()`: all), drawn as the
    /// whole batch's rows would be (every image has its own random stream).
    ///
    /// Panics on `batch == 0`, an index out of range or a shard outside its parts: all caller
    /// bugs, checked here so the worker thread never fails.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        data: Arc<Dataset>,
        indices: Vec<usize>,
        batch: usize,
        shuffle: bool,
        drop_last: bool,
        augment: Augment,
        norm: Normalize,
        seed: u64,
        epoch: u64,
        shard: Shard,
    ) -> Loader {
        assert!(batch > 0, "Loader: batch size 0");
        assert!(
            shard.count > 0 && shard.first + shard.count <= shard.parts,
            "Loader: {shard:?} is not a shard of its parts"
        );
        if let Some(&bad) = indices.iter().find(|&&i| i >= data.len()) {
            panic!("Loader: index {bad} outside a dataset of {}", data.len());
        }
        let mut order = indices;
        if shuffle {
            Rng::from_parts(&[seed, epoch, 0x5ff1e]).shuffle(&mut order);
        }
        let batches = if drop_last {
            order.len() / batch
        } else {
            order.len().div_ceil(batch)
        };
        let plan = Plan {
            data,
            order,
            batch,
            batches,
            augment,
            norm,
            seed,
            epoch,
            shard,
        };
        let (tx, rx) = sync_channel(DEPTH);
        let worker = std::thread::Builder::new()
            .name("data-loader".into())
            .spawn(move || {
                for b in 0..plan.batches {
                    // A closed channel means the consumer stopped early: just end.
                    if tx.send(plan.make(b)).is_err() {
                        return;
                    }
                }
            })
            .expect("the OS refused to start the data loader thread");
        Loader {
            rx: Some(rx),
            worker: Some(worker),
            batches,
            yielded: 0,
        }
    }

    /// How many batches this epoch yields.
    pub fn batches(&self) -> usize {
        self.batches
    }
}

impl Plan {
    fn make(&self, b: usize) -> Batch {
        let d = &self.data;
        let (h, w) = (d.height, d.width);
        let per = d.image_bytes();
        let end = ((b + 1) * self.batch).min(self.order.len());
        let whole = &self.order[b * self.batch..end];
        let rows = self.shard.rows(whole.len());
        let indices = whole[rows.clone()].to_vec();
        let n = indices.len();
        let table = self.norm.table();
        let mut images = vec![0.0f32; n * per];
        for ((&i, out), row) in indices.iter().zip(images.chunks_exact_mut(per)).zip(rows) {
            // A stream per image (not one per epoch or batch) so that batches, and the rows of
            // one, can be built in any order, by any rank, and still come out the same.
            let mut rng = Rng::from_parts(&[self.seed, self.epoch, b as u64, 0xa06, row as u64]);
            self.augment.apply(d.image(i), h, w, &table, &mut rng, out);
        }
        Batch {
            of: whole.len(),
            parts: self.shard.part_sizes(whole.len()),
            images,
            labels: indices.iter().map(|&i| d.labels[i] as u32).collect(),
            indices,
            n,
            height: h,
            width: w,
        }
    }
}

impl Iterator for Loader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let got = self.rx.as_ref()?.recv().ok();
        match got {
            Some(batch) => {
                self.yielded += 1;
                Some(batch)
            }
            None => {
                // The worker is gone: at the end of the epoch, or because it panicked, which
                // must not pass for a short epoch.
                self.rx = None;
                if let Some(worker) = self.worker.take() {
                    if let Err(panic) = worker.join() {
                        std::panic::resume_unwind(panic);
                    }
                }
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.batches - self.yielded;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Loader {}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channel first wakes a worker blocked in `send`; then it can be joined.
        self.rx = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
