//! tmca-worker: one training rank. Reads the rank environment (mpirun, srun, tmca launch),
//! binds a device, builds the process group and runs the trainer on it.
//!
//! This build knows one process group: the single process. Under a multi-rank launcher it
//! refuses to start rather than train every rank alone.

use tmca_trainer::config::Config;
use tmca_trainer::sink::MetricSink;
use tmca_trainer::sync::SingleProcess;
use tmca_trainer::train::{self, RunOptions, TrainSummary};

/// Rank and world size found in the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankEnv {
    pub rank: usize,
    pub world: usize,
}

/// Errors of a rank.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{var}={value}: this tmca build runs one process only; multi-process training (mpi/nccl) is not built yet")]
    MultiProcess { var: &'static str, value: String },
    #[error(transparent)]
    Train(#[from] tmca_trainer::TrainError),
}

/// Reads the world size set by mpirun (OMPI_COMM_WORLD_SIZE, PMI_SIZE), srun (SLURM_NTASKS) or
/// `tmca launch` (WORLD_SIZE); absent means one process.
pub fn rank_env(get: impl Fn(&str) -> Option<String>) -> Result<RankEnv, WorkerError> {
    for var in [
        "WORLD_SIZE",
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "SLURM_NTASKS",
    ] {
        if let Some(v) = get(var) {
            if v.trim().parse::<usize>().unwrap_or(1) > 1 {
                return Err(WorkerError::MultiProcess { var, value: v });
            }
        }
    }
    Ok(RankEnv { rank: 0, world: 1 })
}

/// Runs training on this rank.
pub fn run(
    cfg: &Config,
    sink: &mut dyn MetricSink,
    opts: RunOptions<'_>,
) -> Result<TrainSummary, WorkerError> {
    rank_env(|k| std::env::var(k).ok())?;
    let device = candle_core::Device::Cpu;
    Ok(train::train(cfg, &device, &mut SingleProcess, sink, opts)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_process_unless_a_launcher_says_otherwise() {
        assert_eq!(rank_env(|_| None).unwrap(), RankEnv { rank: 0, world: 1 });
        assert_eq!(
            rank_env(|k| (k == "SLURM_NTASKS").then(|| "1".into())).unwrap(),
            RankEnv { rank: 0, world: 1 }
        );
        let e = rank_env(|k| (k == "OMPI_COMM_WORLD_SIZE").then(|| "4".into())).unwrap_err();
        assert!(e.to_string().contains("OMPI_COMM_WORLD_SIZE=4"), "{e}");
    }
}
