//! tmca-worker: one training rank. Reads the rank environment (mpirun, srun, a torchrun-like
//! launcher), builds the process group and runs the trainer on it.
//!
//! Process groups: the single process; the TCP ring of CPU ranks that `tmca launch` starts
//! (no MPI library needed); with feature `mpi` the MPI group (CPU ranks under `mpirun` or
//! `srun --mpi=pmix`); with feature `nccl` the NCCL group of GPU ranks. A build without the
//! group a launcher needs refuses to start rather than train every rank alone.

mod device;
mod env;
#[cfg(feature = "mpi")]
mod mpi_group;
#[cfg(feature = "nccl")]
mod nccl_group;
mod rank;
pub mod store;
mod tcp_group;
pub mod watchdog;

pub use device::{bind_device, gpu_count};
pub use env::{rank_env, RankEnv};
#[cfg(feature = "mpi")]
pub use mpi_group::MpiGroup;
#[cfg(feature = "nccl")]
pub use nccl_group::NcclGroup;
pub use rank::Rank;
pub use tcp_group::TcpGroup;

/// Variables `tmca launch` sets besides `RANK`, `WORLD_SIZE`, `LOCAL_RANK`: the rendezvous
/// store's address and the attempt number (keys of a restarted attempt never mix with the
/// previous one's).
pub const STORE_VAR: &str = "TMCA_STORE";
pub const ATTEMPT_VAR: &str = "TMCA_ATTEMPT";

/// Errors of a rank.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{var}={value}: {message}")]
    Env {
        var: &'static str,
        value: String,
        message: String,
    },
    #[error("{launcher} started {world} ranks, but this tmca was built without multi-process support; rebuild with `cargo build --release -p tmca-launch --features mpi` (needs an MPI library such as libopenmpi-dev), or start the ranks with `tmca launch --nproc N`, which needs no MPI")]
    NotBuilt {
        launcher: &'static str,
        world: usize,
    },
    #[error("{launcher} started {world} ranks without wiring them up for MPI; under SLURM use `srun --mpi=pmix` (`srun --mpi=list` shows the plugins) or `mpirun` inside the allocation")]
    NotWired {
        launcher: &'static str,
        world: usize,
    },
    #[error("rendezvous: {0}")]
    Store(String),
    #[error("MPI: {0}")]
    Mpi(String),
    #[error("device: {0}")]
    Device(String),
    #[error("NCCL: {0}")]
    Nccl(String),
    #[error("{launcher} started {world} GPU ranks, but this tmca was built without NCCL; rebuild with `--features cuda,nccl`, or set run.device = \"cpu\"")]
    NoNccl {
        launcher: &'static str,
        world: usize,
    },
    #[error(transparent)]
    Train(#[from] tmca_trainer::TrainError),
}
