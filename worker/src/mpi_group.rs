//! The MPI process group (feature `mpi`): the trainer's collectives on `MPI_COMM_WORLD`.
//! Gradients are all-reduced in buckets of [`BUCKET`] values through one staging buffer, so
//! the extra memory stays bounded whatever the model's size.

use crate::{RankEnv, WorkerError};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};
use mpi::Threading;
use tmca_trainer::sync::GradSync;

/// Values per all-reduce call (16 MiB of f32).
pub const BUCKET: usize = 4 << 20;

/// `MPI_COMM_WORLD`; MPI is finalised when this is dropped.
pub struct MpiGroup {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    staging: Vec<f32>,
    // Declared last: dropped (MPI_Finalize) after the communicator.
    _universe: Universe,
}

impl MpiGroup {
    /// Initialises MPI. Collectives come from the main thread only, but the watchdog
    /// ([`crate::watchdog`]) may end the job with `MPI_Abort` from its own thread while the
    /// main thread waits in one, which `MPI_THREAD_MULTIPLE` allows; an MPI library that
    /// provides less gets the watchdog's plain exit instead ([`can_abort_from_any_thread`]).
    fn init() -> Result<Self, WorkerError> {
        let (universe, _) =
            mpi::initialize_with_threading(Threading::Multiple).ok_or_else(|| {
                WorkerError::Mpi("MPI was already initialised in this process".into())
            })?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(Self {
            world,
            rank,
            size,
            staging: Vec::new(),
            _universe: universe,
        })
    }
}

/// Whether MPI is up and may be called from any thread (`MPI_THREAD_MULTIPLE`).
pub fn can_abort_from_any_thread() -> bool {
    mpi::environment::is_initialized()
        && !mpi::environment::is_finalized()
        && mpi::environment::threading_support() == Threading::Multiple
}

impl MpiGroup {
    /// Initialises MPI for the ranks `env` describes and checks that MPI sees the same.
    pub fn join(env: &RankEnv) -> Result<Self, WorkerError> {
        if !env.mpi_wired {
            // MPI_Init would abort with a message about PMI that names no fix.
            return Err(WorkerError::NotWired {
                launcher: env.launcher.unwrap_or("the environment"),
                world: env.world,
            });
        }
        let group = Self::init()?;
        if (group.rank, group.size) != (env.rank, env.world) {
            return Err(WorkerError::Mpi(format!(
                "{} says rank {} of {}, MPI says rank {} of {}; under srun, pass --mpi=pmix \
                 (or pmi2) so that MPI sees the tasks, or start the ranks with mpirun",
                env.launcher.unwrap_or("the environment"),
                env.rank,
                env.world,
                group.rank,
                group.size
            )));
        }
        Ok(group)
    }

    /// Overwrites `bytes` on every rank with rank 0's.
    pub fn broadcast_from_root(&self, bytes: &mut [u8]) {
        self.world.process_at_rank(0).broadcast_into(bytes);
    }
}

impl GradSync for MpiGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.size
    }
    fn all_reduce_mean(&mut self, buf: &mut [f32]) -> tmca_trainer::Result<()> {
        let n = self.size as f32;
        for bucket in buf.chunks_mut(BUCKET) {
            self.staging.clear();
            self.staging.extend_from_slice(bucket);
            self.world
                .all_reduce_into(&self.staging[..], bucket, SystemOperation::sum());
            bucket.iter_mut().for_each(|v| *v /= n);
        }
        Ok(())
    }
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> tmca_trainer::Result<()> {
        let send = buf.to_vec();
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }
    fn all_gather(&mut self, local: &[f32]) -> tmca_trainer::Result<Vec<f32>> {
        let mut out = vec![0f32; local.len() * self.size];
        self.world.all_gather_into(local, &mut out[..]);
        Ok(out)
    }
    fn all_gather_u64(&mut self, local: &[u64]) -> tmca_trainer::Result<Vec<u64>> {
        let mut out = vec![0u64; local.len() * self.size];
        self.world.all_gather_into(local, &mut out[..]);
        Ok(out)
    }
}
