//! This process as a rank: its place, its device and its process group.
//!
//! | ranks | device | started by | group |
//! |---|---|---|---|
//! | 1 | any | — | single process |
//! | > 1 | CPU | `tmca launch` | TCP ring through the launcher's store |
//! | > 1 | CPU | mpirun, srun | MPI (feature `mpi`) |
//! | > 1 | GPU | `tmca launch` | NCCL (feature `nccl`), id through the store |
//! | > 1 | GPU | mpirun, srun | NCCL, id by MPI broadcast (features `nccl` + `mpi`) |

use crate::env::{rank_env, RankEnv, TMCA_LAUNCH};
use crate::store::StoreClient;
use crate::tcp_group::COLLECTIVE_TIMEOUT;
use crate::watchdog::{Expired, Watchdog, Watched};
use crate::{bind_device, TcpGroup, WorkerError, ATTEMPT_VAR, STORE_VAR};
use candle_core::Device;
use tmca_trainer::config::Config;
use tmca_trainer::sink::MetricSink;
use tmca_trainer::sync::{GradSync, SingleProcess};
use tmca_trainer::train::{self, RunOptions, TrainSummary};

/// One rank of a (possibly single-process) training job.
pub struct Rank {
    pub env: RankEnv,
    device: Device,
    group: Box<dyn GradSync>,
}

impl Rank {
    /// Joins the ranks the environment describes, on the device `run.device` asks for
    /// (`auto`, `cpu`, `cuda`). MPI and NCCL are initialised here when they are used.
    pub fn join(device: &str) -> Result<Rank, WorkerError> {
        let get = |k: &str| std::env::var(k).ok();
        let env = rank_env(get)?;
        // Every rank of a job must land on the same kind of device (NCCL and the CPU groups
        // cannot meet), so with several ranks a CUDA build's `auto` insists on the GPU.
        let device = if env.world > 1 && device == "auto" && candle_core::utils::cuda_is_available()
        {
            "cuda"
        } else {
            device
        };
        let device = bind_device(device, env.local_rank)?;
        let timeout = if env.world > 1 {
            collective_timeout(&get)?
        } else {
            COLLECTIVE_TIMEOUT
        };
        // MPI's and NCCL's collectives cannot time out: a watchdog ends a rank that waits too
        // long in one. The TCP ring's sockets time out themselves.
        let dog = || Watchdog::start(timeout, env.rank, env.world, end_job);
        let group: Box<dyn GradSync> = if env.world == 1 {
            Box::new(SingleProcess)
        } else if device.is_cuda() {
            let dog = dog();
            let group = nccl(&env, &device, get, &dog)?;
            Box::new(Watched::new(group, dog))
        } else if env.launcher == Some(TMCA_LAUNCH) {
            let (mut store, prefix) = store(&env, get)?;
            Box::new(
                TcpGroup::join(&mut store, &prefix, env.rank, env.world)?.with_timeout(timeout)?,
            )
        } else {
            Box::new(Watched::new(mpi(&env)?, dog()))
        };
        if env.world > 1 {
            tracing::info!(
                "rank {} of {} ({}) on {:?}",
                env.rank,
                env.world,
                env.launcher.unwrap_or(""),
                device
            );
        }
        Ok(Rank { env, device, group })
    }

    /// Rank 0 writes checkpoints, TensorBoard and the console summary.
    pub fn is_root(&self) -> bool {
        self.env.rank == 0
    }

    /// Whether this rank is one of several that mpirun or srun started: their MPI job ends
    /// only when every rank ends, and a rank leaving with an error must end it
    /// ([`Rank::abort_job`]). Ranks of `tmca launch` are stopped by the launcher instead.
    pub fn in_mpi_job(&self) -> bool {
        self.env.world > 1 && self.env.launcher != Some(TMCA_LAUNCH)
    }

    /// Ends every rank of this MPI job with exit `code` (`MPI_Abort` on `MPI_COMM_WORLD`):
    /// the other ranks wait in their next collective for this one, and `MPI_Finalize`
    /// (dropping the group) would wait for them, so an error would hang the job silently until
    /// its time limit. Without MPI this process exits with `code`.
    pub fn abort_job(self, code: i32) -> ! {
        abort_mpi(code);
        std::process::exit(code)
    }

    /// Runs training on this rank.
    pub fn train(
        &mut self,
        cfg: &Config,
        sink: &mut dyn MetricSink,
        opts: RunOptions<'_>,
    ) -> Result<TrainSummary, WorkerError> {
        Ok(train::train(
            cfg,
            &self.device,
            self.group.as_mut(),
            sink,
            opts,
        )?)
    }
}

/// How long ranks wait for each other in a collective ([`crate::tcp_group::COLLECTIVE_TIMEOUT_VAR`]).
fn collective_timeout(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<std::time::Duration, WorkerError> {
    use crate::tcp_group::COLLECTIVE_TIMEOUT_VAR;
    let Some(v) = get(COLLECTIVE_TIMEOUT_VAR) else {
        return Ok(COLLECTIVE_TIMEOUT);
    };
    match v.trim().parse::<u64>() {
        Ok(s) if s > 0 => Ok(std::time::Duration::from_secs(s)),
        _ => Err(WorkerError::Env {
            var: COLLECTIVE_TIMEOUT_VAR,
            value: v,
            message:
                "seconds ranks wait for each other in a collective: a whole number, at least 1"
                    .into(),
        }),
    }
}

/// A connection to `tmca launch`'s store and this attempt's key prefix.
fn store(
    env: &RankEnv,
    get: impl Fn(&str) -> Option<String>,
) -> Result<(StoreClient, String), WorkerError> {
    let addr = get(STORE_VAR).ok_or(WorkerError::Env {
        var: "RANK",
        value: env.rank.to_string(),
        message: format!(
            "set without {STORE_VAR}: start the ranks with `tmca launch` (or with mpirun/srun \
             and a build with the `mpi` feature)"
        ),
    })?;
    let attempt = get(ATTEMPT_VAR).unwrap_or_else(|| "0".into());
    // As long as a rendezvous waits for a missing rank: nodes may be started minutes apart.
    let client = StoreClient::connect_telling(&addr, crate::store::WAIT, env.local_rank == 0)?;
    Ok((client, format!("attempt{attempt}")))
}

/// The watchdog's end of a rank whose collective waited too long: said, then the whole MPI
/// job ended with `MPI_Abort` where MPI allows it from the watchdog's thread (under `srun` as
/// under `mpirun`), else this process alone (its launcher ends the others).
fn end_job(e: Expired) {
    tracing::error!("{e}");
    if mpi_can_abort() {
        abort_mpi(1);
    }
    crate::watchdog::exit_now(1)
}

#[cfg(feature = "mpi")]
fn mpi_can_abort() -> bool {
    crate::mpi_group::can_abort_from_any_thread()
}

#[cfg(not(feature = "mpi"))]
fn mpi_can_abort() -> bool {
    false
}

#[cfg(feature = "mpi")]
fn abort_mpi(code: i32) {
    use mpi::traits::Communicator;
    if mpi::environment::is_initialized() && !mpi::environment::is_finalized() {
        mpi::topology::SimpleCommunicator::world().abort(code)
    }
}

#[cfg(not(feature = "mpi"))]
fn abort_mpi(_code: i32) {}

#[cfg(feature = "mpi")]
fn mpi(env: &RankEnv) -> Result<Box<dyn GradSync>, WorkerError> {
    Ok(Box::new(crate::MpiGroup::join(env)?))
}

#[cfg(not(feature = "mpi"))]
fn mpi(env: &RankEnv) -> Result<Box<dyn GradSync>, WorkerError> {
    Err(WorkerError::NotBuilt {
        launcher: env.launcher.unwrap_or("the environment"),
        world: env.world,
    })
}

/// The NCCL group; joining its communicator is watched by `dog` (the id's exchange before it
/// waits as long as a rendezvous does).
#[cfg(feature = "nccl")]
fn nccl(
    env: &RankEnv,
    device: &Device,
    get: impl Fn(&str) -> Option<String>,
    dog: &Watchdog,
) -> Result<Box<dyn GradSync>, WorkerError> {
    use crate::nccl_group::{new_id, IdBytes, NcclGroup};
    let hex = |id: &IdBytes| id.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let unhex = |s: &str| -> Result<IdBytes, WorkerError> {
        let mut id = [0u8; 128];
        if s.len() != 256 || !s.is_ascii() {
            return Err(WorkerError::Store(format!(
                "bad NCCL id of {} characters",
                s.len()
            )));
        }
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
                .map_err(|_| WorkerError::Store("bad NCCL id".into()))?;
        }
        Ok(id)
    };
    let (id, keep): (IdBytes, Option<Box<dyn std::any::Any>>) = if env.launcher == Some(TMCA_LAUNCH)
    {
        let (mut store, prefix) = store(env, get)?;
        let key = format!("{prefix}/nccl-id");
        if env.rank == 0 {
            let id = new_id()?;
            store.set(&key, &hex(&id))?;
            (id, None)
        } else {
            (unhex(&store.get(&key)?)?, None)
        }
    } else {
        mpi_id(env)?
    };
    let group = dog.watch("joining the NCCL communicator", || {
        NcclGroup::new(device, env.rank, env.world, id, keep)
    })?;
    Ok(Box::new(group))
}

/// The NCCL id broadcast from rank 0 over MPI; MPI stays up as long as the group.
#[cfg(all(feature = "nccl", feature = "mpi"))]
fn mpi_id(
    env: &RankEnv,
) -> Result<(crate::nccl_group::IdBytes, Option<Box<dyn std::any::Any>>), WorkerError> {
    let group = crate::MpiGroup::join(env)?;
    let mut id = if env.rank == 0 {
        crate::nccl_group::new_id()?
    } else {
        [0u8; 128]
    };
    group.broadcast_from_root(&mut id);
    Ok((id, Some(Box::new(group))))
}

#[cfg(all(feature = "nccl", not(feature = "mpi")))]
fn mpi_id(
    env: &RankEnv,
) -> Result<(crate::nccl_group::IdBytes, Option<Box<dyn std::any::Any>>), WorkerError> {
    Err(WorkerError::NotBuilt {
        launcher: env.launcher.unwrap_or("the environment"),
        world: env.world,
    })
}

#[cfg(not(feature = "nccl"))]
fn nccl(
    env: &RankEnv,
    _device: &Device,
    _get: impl Fn(&str) -> Option<String>,
    _dog: &Watchdog,
) -> Result<Box<dyn GradSync>, WorkerError> {
    Err(WorkerError::NoNccl {
        launcher: env.launcher.unwrap_or("the environment"),
        world: env.world,
    })
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
        let e = mpi(&env).err().unwrap().to_string();
        assert!(e.contains("4 ranks") && e.contains("--features mpi"), "{e}");
    }

    #[test]
    fn the_collective_timeout_is_read_in_seconds_and_checked() {
        let t = |v: Option<&str>| collective_timeout(&|_: &str| v.map(String::from));
        assert_eq!(t(None).unwrap(), crate::tcp_group::COLLECTIVE_TIMEOUT);
        assert_eq!(t(Some(" 90")).unwrap(), std::time::Duration::from_secs(90));
        for bad in ["0", "1.5", "ten"] {
            let e = t(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("TMCA_COLLECTIVE_TIMEOUT"), "{e}");
        }
    }

    #[test]
    fn launched_ranks_without_the_store_address_are_told_how_to_start() {
        let env = rank_env(|k| match k {
            "RANK" => Some("1".into()),
            "WORLD_SIZE" => Some("2".into()),
            _ => None,
        })
        .unwrap();
        let e = store(&env, |_| None).err().unwrap().to_string();
        assert!(e.contains("TMCA_STORE") && e.contains("tmca launch"), "{e}");
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
        let e = mpi(&env).err().unwrap().to_string();
        assert!(
            e.contains("srun started 2 ranks") && e.contains("--mpi=pmix"),
            "{e}"
        );
    }
}
