//! The group of an `mpirun` job, over MPI (the `mpi` crate, rsmpi, on the system's Open MPI or
//! MPICH).

use std::cell::RefCell;
use std::rc::Rc;

use anyhow::{anyhow, Result};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::{CommunicatorCollectives, Equivalence, Root};

use super::{Collective, Group};

struct Mpi {
    world: SimpleCommunicator,
    /// The send buffers of the all-reduces (MPI sums into another buffer), kept between calls.
    send32: RefCell<Vec<f32>>,
    send64: RefCell<Vec<f64>>,
    // Finalises MPI when the last reference goes, after the world.
    _universe: Universe,
}

impl Mpi {
    /// `v` summed over the ranks, in place, through the kept send buffer `send`.
    fn sum<T: Equivalence + Copy>(&self, send: &RefCell<Vec<T>>, v: &mut [T]) -> Result<()> {
        let mut send = send.borrow_mut();
        send.clear();
        send.extend_from_slice(v);
        self.world
            .all_reduce_into(&send[..], v, SystemOperation::sum());
        Ok(())
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn ranks(&self) -> usize {
        self.world.size() as usize
    }
    fn sum_f32(&self, v: &mut [f32]) -> Result<()> {
        self.sum(&self.send32, v)
    }
    fn sum_f64(&self, v: &mut [f64]) -> Result<()> {
        self.sum(&self.send64, v)
    }
    fn broadcast_f32(&self, v: &mut [f32]) -> Result<()> {
        self.world.process_at_rank(0).broadcast_into(v);
        Ok(())
    }
    fn broadcast_f64(&self, v: &mut [f64]) -> Result<()> {
        self.world.process_at_rank(0).broadcast_into(v);
        Ok(())
    }
    fn barrier(&self) {
        self.world.barrier();
    }
    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

/// The job's group, and this rank's index among the ranks on its machine (which GPU it takes).
/// When a rank dies, mpirun stops the others (it says which rank and how); each of them then
/// says so too (`say_when_stopped`).
pub fn from_mpi() -> Result<(Group, usize)> {
    let universe =
        mpi::initialize().ok_or_else(|| anyhow!("MPI was already initialised in this process"))?;
    let world = universe.world();
    let local = world.split_shared(world.rank()).rank() as usize;
    say_when_stopped(world.rank() as usize, world.size() as usize);
    let comm = Mpi {
        world,
        send32: RefCell::new(Vec::new()),
        send64: RefCell::new(Vec::new()),
        _universe: universe,
    };
    Ok((Group::new(Rc::new(comm)), local))
}

/// What a rank prints when mpirun stops it, written before the handler is installed.
static STOPPED: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

extern "C" fn on_stop(signal: libc::c_int) {
    // Only async-signal-safe calls here: write(2) and _exit(2).
    if let Some(m) = STOPPED.get() {
        // SAFETY: the bytes live for the whole process; fd 2 is stderr.
        unsafe { libc::write(2, m.as_ptr().cast(), m.len()) };
    }
    // SAFETY: _exit ends the process at once, as the default action of the signal would.
    unsafe { libc::_exit(128 + signal) }
}

/// mpirun ends the surviving ranks of a job with SIGTERM when one fails (or on Ctrl-C): each
/// then prints why and what is left, instead of vanishing without a word.
fn say_when_stopped(rank: usize, ranks: usize) {
    let message = format!(
        "error on rank {rank} of {ranks}: stopped by mpirun, because another rank ended (its message is above or below) or the job was interrupted; checkpoints are written whole, so the last one is intact: continue with the same mpirun command and --resume\n"
    );
    if STOPPED.set(message.into_bytes()).is_ok() {
        // SAFETY: installs a handler that only calls async-signal-safe functions.
        unsafe {
            libc::signal(
                libc::SIGTERM,
                on_stop as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}
