//! The rank environment a launcher sets: `mpirun` (Open MPI's `OMPI_COMM_WORLD_*`, MPICH's
//! `PMI_*`), `srun` (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`) or a torchrun-like
//! launcher (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`). The first complete set wins.

use crate::WorkerError;

/// This process's place among the ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankEnv {
    pub rank: usize,
    pub world: usize,
    /// Rank among the processes of this node (picks the GPU).
    pub local_rank: usize,
    /// The launcher that set it (`None`: a plain single process).
    pub launcher: Option<&'static str>,
    /// Whether the launcher wired the ranks up for MPI (mpirun, or srun with a PMI plugin):
    /// `srun` without `--mpi=pmix`/`pmi2` starts tasks that MPI cannot connect.
    pub mpi_wired: bool,
}

impl RankEnv {
    /// One process, no launcher.
    pub const SINGLE: RankEnv = RankEnv {
        rank: 0,
        world: 1,
        local_rank: 0,
        launcher: None,
        mpi_wired: false,
    };
}

/// The launcher name of `RANK`/`WORLD_SIZE`.
pub const TMCA_LAUNCH: &str = "tmca launch";

/// (launcher, rank variable, world-size variable, local-rank variable), in the order tried.
const SETS: [(&str, &str, &str, &str); 4] = [
    (TMCA_LAUNCH, "RANK", "WORLD_SIZE", "LOCAL_RANK"),
    (
        "mpirun (Open MPI)",
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_LOCAL_RANK",
    ),
    (
        "PMI (mpirun, srun --mpi=pmi2)",
        "PMI_RANK",
        "PMI_SIZE",
        "MPI_LOCALRANKID",
    ),
    ("srun", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
];

/// Reads the rank environment through `get` (the process environment in `tmca`, a map in tests).
pub fn rank_env(get: impl Fn(&str) -> Option<String>) -> Result<RankEnv, WorkerError> {
    let num = |var: &'static str| -> Result<Option<usize>, WorkerError> {
        get(var)
            .map(|v| {
                v.trim().parse::<usize>().map_err(|_| WorkerError::Env {
                    var,
                    value: v.clone(),
                    message: "not a non-negative integer".into(),
                })
            })
            .transpose()
    };
    for (launcher, rank_var, world_var, local_var) in SETS {
        let (Some(rank), Some(world)) = (num(rank_var)?, num(world_var)?) else {
            continue;
        };
        if world == 0 || rank >= world {
            return Err(WorkerError::Env {
                var: rank_var,
                value: rank.to_string(),
                message: format!("must be below {world_var}={world}"),
            });
        }
        let mpi_wired = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_FD"]
            .iter()
            .any(|v| get(v).is_some());
        return Ok(RankEnv {
            rank,
            world,
            local_rank: num(local_var)?.unwrap_or(0),
            launcher: Some(launcher),
            mpi_wired,
        });
    }
    Ok(RankEnv::SINGLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<RankEnv, WorkerError> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        rank_env(|k| map.get(k).cloned())
    }

    #[test]
    fn each_launcher_is_recognised() {
        assert_eq!(env(&[]).unwrap(), RankEnv::SINGLE);
        let e = env(&[
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
        ])
        .unwrap();
        assert_eq!((e.rank, e.world, e.local_rank), (3, 4, 1));
        assert_eq!(e.launcher, Some("mpirun (Open MPI)"));
        assert!(e.mpi_wired);
        let e = env(&[("SLURM_PROCID", "1"), ("SLURM_NTASKS", "2")]).unwrap();
        assert_eq!((e.rank, e.world, e.local_rank), (1, 2, 0));
        assert_eq!(e.launcher, Some("srun"));
        assert!(!e.mpi_wired, "srun without a PMI plugin");
        let e = env(&[
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
            ("PMIX_RANK", "1"),
        ])
        .unwrap();
        assert!(e.mpi_wired, "srun --mpi=pmix");
        // SLURM_NTASKS alone (an sbatch script before srun) is not a rank.
        assert_eq!(env(&[("SLURM_NTASKS", "8")]).unwrap(), RankEnv::SINGLE);
        // mpirun inside an allocation: the MPI variables win over SLURM's.
        let e = env(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
            ("PMI_RANK", "1"),
            ("PMI_SIZE", "2"),
        ])
        .unwrap();
        assert_eq!((e.rank, e.world), (1, 2));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = env(&[("RANK", "x"), ("WORLD_SIZE", "2")]).unwrap_err();
        assert!(e.to_string().contains("RANK=x"), "{e}");
        let e = env(&[("RANK", "2"), ("WORLD_SIZE", "2")]).unwrap_err();
        assert!(e.to_string().contains("WORLD_SIZE=2"), "{e}");
    }
}
