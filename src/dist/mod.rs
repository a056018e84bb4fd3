//! Data parallelism: ranks that each take a share of every batch and add up their gradients.
//!
//! A run is a [`Group`] of ranks. One process is a group of one ([`Group::solo`]); with the
//! `mpi` feature, `mpirun -n K proxyless ...` makes a group of K ([`Group::from_mpi`]). Each
//! batch is cut into parts (`data::Shard`), each rank runs its own parts, and the weight
//! gradients are summed over the ranks before every update, so every rank keeps the same
//! weights. A process that runs all K parts in turn (`--parts K`) computes what K ranks do.
//!
//! What crosses between ranks, per step: the gradients of one weight step, packed into one
//! buffer (one copy to the host, one all-reduce, one copy back), and a few numbers of an
//! architecture step. BN batch statistics stay per rank (each part's own, as PyTorch's
//! DataParallel without SyncBN); the running statistics are rank 0's, sent to the others
//! before each evaluation.

#[cfg(feature = "mpi")]
mod mpi;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::data::Shard;
use crate::gpu::{Gpu, Tensor};

/// What the ranks of a group do together. Every rank calls the same operations in the same
/// order with the same lengths; the results are the same on every rank.
pub trait Collective {
    fn rank(&self) -> usize;
    fn ranks(&self) -> usize;
    /// Element-wise sum over the ranks, in place.
    fn sum_f32(&self, v: &mut [f32]) -> Result<()>;
    fn sum_f64(&self, v: &mut [f64]) -> Result<()>;
    /// Rank 0's values, in place on every rank.
    fn broadcast_f32(&self, v: &mut [f32]) -> Result<()>;
    fn broadcast_f64(&self, v: &mut [f64]) -> Result<()>;
    /// Returns once every rank has called it.
    fn barrier(&self);
    /// Stops every rank of the job (after an error on this one, which the others cannot see).
    fn abort(&self, code: i32) -> !;
}

/// One process alone: every operation is the identity.
struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn ranks(&self) -> usize {
        1
    }
    fn sum_f32(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn sum_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast_f32(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn broadcast_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) {}
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// Time and bytes of the gradient exchanges, for the per-epoch log.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExchangeStats {
    pub exchanges: usize,
    /// f32 values summed per exchange (the last one).
    pub values: usize,
    /// Device to host: packing the tensors into one buffer and reading it.
    pub to_host: Duration,
    /// Waiting for the other ranks to reach the exchange (their steps took longer).
    pub wait: Duration,
    /// The all-reduce itself, every rank there.
    pub reduce: Duration,
    /// Host to device: writing the sums and unpacking them (recorded, not waited for).
    pub to_device: Duration,
}

impl ExchangeStats {
    /// Milliseconds per exchange of each stage, for logs.
    pub fn per_exchange_ms(&self) -> serde_json::Value {
        let per = |d: Duration| 1e3 * d.as_secs_f64() / self.exchanges.max(1) as f64;
        serde_json::json!({
            "exchanges": self.exchanges,
            "bytes": self.values * 4,
            "to_host_ms": per(self.to_host),
            "wait_ms": per(self.wait),
            "all_reduce_ms": per(self.reduce),
            "to_device_ms": per(self.to_device),
        })
    }
}

/// The ranks of a run and how its batches are cut. Cheap to clone (shared).
#[derive(Clone)]
pub struct Group {
    comm: Rc<dyn Collective>,
    stats: Rc<RefCell<ExchangeStats>>,
    /// The host copy of the packed tensors, kept between exchanges.
    host: Rc<RefCell<Vec<f32>>>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Group(rank {} of {})", self.rank(), self.ranks())
    }
}

impl Default for Group {
    fn default() -> Group {
        Group::solo()
    }
}

impl Group {
    /// This process alone.
    pub fn solo() -> Group {
        Group::new(Rc::new(Solo))
    }

    pub fn new(comm: Rc<dyn Collective>) -> Group {
        Group {
            comm,
            stats: Rc::new(RefCell::new(ExchangeStats::default())),
            host: Rc::new(RefCell::new(Vec::new())),
        }
    }

    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    pub fn ranks(&self) -> usize {
        self.comm.ranks()
    }

    /// Rank 0 writes the logs, checkpoints and plots.
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// Stops the whole job; see [`Collective::abort`].
    pub fn abort(&self, code: i32) -> ! {
        self.comm.abort(code)
    }

    /// This rank's share of batches cut into at least `min_parts` parts: the parts are a
    /// multiple of the ranks, each rank takes as many in a row.
    pub fn shard(&self, min_parts: usize) -> Shard {
        let k = self.ranks();
        let per_rank = min_parts.max(1).div_ceil(k);
        Shard {
            parts: per_rank * k,
            first: self.rank() * per_rank,
            count: per_rank,
        }
    }

    pub fn sum_f64(&self, v: &mut [f64]) -> Result<()> {
        self.comm.sum_f64(v)
    }

    pub fn broadcast_f64(&self, v: &mut [f64]) -> Result<()> {
        self.comm.broadcast_f64(v)
    }

    /// Stops with an error unless `value` is the same on every rank (checks, at the start of
    /// a run, that every rank read the same files and flags). `value` is computed only where
    /// there are other ranks.
    pub fn check_same(&self, what: &str, value: impl FnOnce() -> Result<u64>) -> Result<()> {
        if self.ranks() == 1 {
            return Ok(());
        }
        let value = value()?;
        // Two 32-bit halves, each exact in an f64.
        let mine = [(value >> 32) as f64, (value & 0xffff_ffff) as f64];
        let mut root = mine;
        self.comm.broadcast_f64(&mut root)?;
        if root != mine {
            bail!(
                "rank {} has another {what} than rank 0: every rank must see the same files and flags",
                self.rank()
            );
        }
        Ok(())
    }

    /// Sums `tensors` over the ranks, in place: packed into one buffer on the device, read
    /// once, all-reduced, written back once and unpacked. Nothing to do for one rank.
    pub fn sum_tensors(&self, gpu: &Gpu, tensors: &[&Tensor]) -> Result<()> {
        self.exchange(gpu, tensors, |c, v| c.sum_f32(v))
    }

    /// Rank 0's `tensors` on every rank, packed as in [`Group::sum_tensors`].
    pub fn broadcast_tensors(&self, gpu: &Gpu, tensors: &[&Tensor]) -> Result<()> {
        self.exchange(gpu, tensors, |c, v| c.broadcast_f32(v))
    }

    /// What the exchanges have cost since the last call (then reset).
    pub fn take_stats(&self) -> ExchangeStats {
        std::mem::take(&mut *self.stats.borrow_mut())
    }

    fn exchange(
        &self,
        gpu: &Gpu,
        tensors: &[&Tensor],
        op: impl Fn(&dyn Collective, &mut [f32]) -> Result<()>,
    ) -> Result<()> {
        if self.ranks() == 1 || tensors.is_empty() {
            return Ok(());
        }
        // The step's own work first, so that the time below is the exchange's alone.
        gpu.sync()?;
        let t0 = Instant::now();
        let packed = gpu.concat(tensors);
        let mut host = self.host.borrow_mut();
        gpu.read_f32_into(&packed, &mut host)?;
        let t1 = Instant::now();
        // A barrier first, so that the time of the all-reduce is its own and not the wait for
        // a slower rank.
        self.comm.barrier();
        let t2 = Instant::now();
        op(self.comm.as_ref(), &mut host)?;
        let t3 = Instant::now();
        gpu.write(&packed.buf, &host[..])?;
        gpu.scatter(&packed, tensors)?;
        let t4 = Instant::now();
        let mut s = self.stats.borrow_mut();
        s.exchanges += 1;
        s.values = host.len();
        s.to_host += t1 - t0;
        s.wait += t2 - t1;
        s.reduce += t3 - t2;
        s.to_device += t4 - t3;
        Ok(())
    }
}

#[cfg(feature = "mpi")]
pub use self::mpi::from_mpi;

/// FNV-1a, 64 bits: a short fingerprint of bytes (do the ranks read the same checkpoint?).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_row_once_in_parts_that_differ_by_at_most_one() {
        for n in [1usize, 2, 7, 64, 65, 127] {
            for parts in 1..=n.min(9) {
                let mut next = 0;
                for j in 0..parts {
                    let r = Shard::part_rows(n, parts, j);
                    assert_eq!(r.start, next, "n {n} parts {parts} part {j}");
                    assert!(r.len() == n / parts || r.len() == n / parts + 1);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
    }

    /// Rank `0` of `1` ranks, for the arithmetic of shards (no operation is called).
    struct Seat(usize, usize);

    impl Collective for Seat {
        fn rank(&self) -> usize {
            self.0
        }
        fn ranks(&self) -> usize {
            self.1
        }
        fn sum_f32(&self, _: &mut [f32]) -> Result<()> {
            unreachable!()
        }
        fn sum_f64(&self, _: &mut [f64]) -> Result<()> {
            unreachable!()
        }
        fn broadcast_f32(&self, _: &mut [f32]) -> Result<()> {
            unreachable!()
        }
        fn broadcast_f64(&self, _: &mut [f64]) -> Result<()> {
            unreachable!()
        }
        fn barrier(&self) {
            unreachable!()
        }
        fn abort(&self, _: i32) -> ! {
            unreachable!()
        }
    }

    #[test]
    fn a_groups_shards_are_the_parts_of_one_process_in_turn() {
        // 2 ranks asked for 3 parts: 4 parts, 2 each, rows in order.
        let n = 30;
        let shard = |rank| Group::new(Rc::new(Seat(rank, 2))).shard(3);
        assert_eq!(shard(0).rows(n), 0..15);
        assert_eq!(shard(1).rows(n), 15..30);
        assert_eq!(shard(0).part_sizes(n), vec![7, 8]);
        assert_eq!(shard(1).part_sizes(n), vec![7, 8]);
        // One process with 4 parts runs the same parts in turn.
        let whole = Group::solo().shard(4);
        assert_eq!(whole.rows(n), 0..30);
        assert_eq!(whole.part_sizes(n), vec![7, 8, 7, 8]);
        // 3 ranks asked for 1 part: one each.
        let third = Group::new(Rc::new(Seat(2, 3))).shard(1);
        assert_eq!((third.parts, third.first, third.count), (3, 2, 1));
        assert_eq!(third.rows(n), 20..30);
    }
}
