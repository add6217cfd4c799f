//! tmca-worker: one training rank. Reads the rank environment (mpirun, srun, a torchrun-like
//! launcher), builds the process group and runs the trainer on it.
//!
//! Process groups: the single process; the TCP ring of CPU ranks that `tmca launch` starts
//! (no MPI library needed); with feature `mpi` the MPI group (CPU ranks under `mpirun` or
//! `srun --mpi=pmix`). A build without `mpi` refuses an MPI launcher's ranks rather than train
//! every rank alone.

mod env;
#[cfg(feature = "mpi")]
mod mpi_group;
pub mod store;
mod tcp_group;

pub use env::{rank_env, RankEnv};
#[cfg(feature = "mpi")]
pub use mpi_group::MpiGroup;
pub use tcp_group::TcpGroup;

/// Variables `tmca launch` sets besides `RANK`, `WORLD_SIZE`, `LOCAL_RANK`: the rendezvous
/// store's address and the attempt number (keys of a restarted attempt never mix with the
/// previous one's).
pub const STORE_VAR: &str = "TMCA_STORE";
pub const ATTEMPT_VAR: &str = "TMCA_ATTEMPT";

use tmca_trainer::config::Config;
use tmca_trainer::sink::MetricSink;
use tmca_trainer::sync::{GradSync, SingleProcess};
use tmca_trainer::train::{self, RunOptions, TrainSummary};

/// Errors of a rank.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{var}={value}: {message}")]
    Env {
        var: &'static str,
        value: String,
        message: String,
    },
    #[error("{launcher} started {world} ranks, but this tmca was built without multi-process support; rebuild with `cargo build --release --features mpi` (needs an MPI library such as libopenmpi-dev)")]
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
    #[error(transparent)]
    Train(#[from] tmca_trainer::TrainError),
}

/// This process as a rank: where it stands and its process group.
pub struct Rank {
    pub env: RankEnv,
    group: Box<dyn GradSync>,
}

impl Rank {
    /// Joins the ranks the environment describes (MPI is initialised here when it is used).
    pub fn join() -> Result<Rank, WorkerError> {
        let env = rank_env(|k| std::env::var(k).ok())?;
        if env.world == 1 {
            return Ok(Rank {
                env,
                group: Box::new(SingleProcess),
            });
        }
        if env.launcher == Some(env::TMCA_LAUNCH) {
            return Self::join_ring(env, |k| std::env::var(k).ok());
        }
        Self::join_many(env)
    }

    /// The TCP ring of `tmca launch`'s ranks, through its rendezvous store.
    fn join_ring(env: RankEnv, get: impl Fn(&str) -> Option<String>) -> Result<Rank, WorkerError> {
        let store = get(STORE_VAR).ok_or(WorkerError::Env {
            var: "RANK",
            value: env.rank.to_string(),
            message: format!("set without {STORE_VAR}: start the ranks with `tmca launch` (or mpirun/srun with a build that has the `mpi` feature)"),
        })?;
        let attempt = get(ATTEMPT_VAR).unwrap_or_else(|| "0".into());
        let mut client = store::StoreClient::connect(&store, std::time::Duration::from_secs(60))?;
        let group = TcpGroup::join(
            &mut client,
            &format!("attempt{attempt}"),
            env.rank,
            env.world,
        )?;
        tracing::info!("rank {} of {} (tmca launch), TCP ring", env.rank, env.world);
        Ok(Rank {
            env,
            group: Box::new(group),
        })
    }

    #[cfg(feature = "mpi")]
    fn join_many(env: RankEnv) -> Result<Rank, WorkerError> {
        if !env.mpi_wired {
            // MPI_Init would abort with a message about PMI that names no fix.
            return Err(WorkerError::NotWired {
                launcher: env.launcher.unwrap_or("the environment"),
                world: env.world,
            });
        }
        let group = MpiGroup::init()?;
        if (group.rank(), group.world()) != (env.rank, env.world) {
            return Err(WorkerError::Mpi(format!(
                "{} says rank {} of {}, MPI says rank {} of {}; under srun, pass --mpi=pmix \
                 (or pmi2) so that MPI sees the tasks, or start the ranks with mpirun",
                env.launcher.unwrap_or("the environment"),
                env.rank,
                env.world,
                group.rank(),
                group.world()
            )));
        }
        tracing::info!(
            "rank {} of {} ({}), MPI process group",
            env.rank,
            env.world,
            env.launcher.unwrap_or("")
        );
        Ok(Rank {
            env,
            group: Box::new(group),
        })
    }

    #[cfg(not(feature = "mpi"))]
    fn join_many(env: RankEnv) -> Result<Rank, WorkerError> {
        Err(WorkerError::NotBuilt {
            launcher: env.launcher.unwrap_or("the environment"),
            world: env.world,
        })
    }

    /// Rank 0 writes checkpoints, TensorBoard and the console summary.
    pub fn is_root(&self) -> bool {
        self.env.rank == 0
    }

    /// The process group, for evaluation outside training.
    pub fn group(&mut self) -> &mut dyn GradSync {
        self.group.as_mut()
    }

    /// Runs training on this rank.
    pub fn train(
        &mut self,
        cfg: &Config,
        sink: &mut dyn MetricSink,
        opts: RunOptions<'_>,
    ) -> Result<TrainSummary, WorkerError> {
        let device = candle_core::Device::Cpu;
        Ok(train::train(cfg, &device, self.group.as_mut(), sink, opts)?)
    }
}

#[cfg(all(test, not(feature = "mpi")))]
mod tests {
    use super::*;

    #[test]
    fn a_multi_rank_environment_without_mpi_is_refused_with_the_fix() {
        let env = rank_env(|k| match k {
            "PMI_RANK" => Some("0".into()),
            "PMI_SIZE" => Some("4".into()),
            _ => None,
        })
        .unwrap();
        let e = Rank::join_many(env).err().unwrap().to_string();
        assert!(e.contains("4 ranks") && e.contains("--features mpi"), "{e}");
    }
}

#[cfg(all(test, feature = "mpi"))]
mod mpi_tests {
    use super::*;

    #[test]
    fn srun_without_a_pmi_plugin_is_refused_before_mpi_init() {
        let env = rank_env(|k| match k {
            "SLURM_PROCID" => Some("0".into()),
            "SLURM_NTASKS" => Some("2".into()),
            _ => None,
        })
        .unwrap();
        let e = Rank::join_many(env).err().unwrap().to_string();
        assert!(
            e.contains("srun started 2 ranks") && e.contains("--mpi=pmix"),
            "{e}"
        );
    }
}
