//! The group of an `mpirun` job, over MPI (the `mpi` crate, rsmpi, on the system's Open MPI or
//! MPICH).

use std::rc::Rc;

use anyhow::{anyhow, Result};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::{CommunicatorCollectives, Root};

use super::{Collective, Group};

struct Mpi {
    world: SimpleCommunicator,
    // Finalises MPI when the last reference goes, after the world.
    _universe: Universe,
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn ranks(&self) -> usize {
        self.world.size() as usize
    }
    fn sum_f32(&self, v: &mut [f32]) -> Result<()> {
        let send = v.to_vec();
        self.world
            .all_reduce_into(&send[..], v, SystemOperation::sum());
        Ok(())
    }
    fn sum_f64(&self, v: &mut [f64]) -> Result<()> {
        let send = v.to_vec();
        self.world
            .all_reduce_into(&send[..], v, SystemOperation::sum());
        Ok(())
    }
    fn broadcast_f32(&self, v: &mut [f32]) -> Result<()> {
        self.world.process_at_rank(0).broadcast_into(v);
        Ok(())
    }
    fn broadcast_f64(&self, v: &mut [f64]) -> Result<()> {
        self.world.process_at_rank(0).broadcast_into(v);
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

/// The job's group, and this rank's index among the ranks on its machine (which GPU it takes).
/// MPI's default error handler stops the whole job on a failed operation, so a rank that dies
/// ends the others (mpirun says which rank and how).
pub fn from_mpi() -> Result<(Group, usize)> {
    let universe =
        mpi::initialize().ok_or_else(|| anyhow!("MPI was already initialised in this process"))?;
    let world = universe.world();
    let local = world.split_shared(world.rank()).rank() as usize;
    let comm = Mpi {
        world,
        _universe: universe,
    };
    Ok((Group::new(Rc::new(comm)), local))
}
