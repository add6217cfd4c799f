//! `tmca launch`: starts the ranks of a data-parallel `tmca train` on this node, like torchrun.
//! Node 0 runs the rendezvous store the ranks meet through (they then form a TCP ring, no MPI
//! library needed). Each node's launcher watches its ranks, stops them all on the first failure
//! and restarts them from the latest checkpoint up to `--max-restarts` times, and forwards
//! SIGTERM / SIGINT. Across nodes no launcher talks to another: a failure on one node breaks
//! the ring, every node's ranks fail, and every launcher restarts once, so all nodes meet again
//! under the same attempt number.

mod rank_process;
mod store;

use crate::cli::LaunchArgs;
use rank_process::RankProcess;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;

/// How a launch ended badly.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("rank {rank} failed ({status}){}", restarts_note(*.restarts))]
    RankFailed {
        rank: usize,
        status: ExitStatus,
        restarts: u32,
    },
    #[error(
        "stopped by signal {signal}; {}",
        if *.killed {
            "the ranks did not stop within the grace time (--stop-grace) and were killed: the newest complete checkpoint is from before the signal (resume with `tmca launch … --resume`)"
        } else {
            "the ranks stopped as told, with a checkpoint where they stopped once training had begun (resume with `tmca launch … --resume`)"
        }
    )]
    Interrupted {
        signal: i32,
        /// Some rank had to be SIGKILLed after the grace time (hung, or stopped).
        killed: bool,
    },
    /// A rank was stopped on its own (a signal to it, or its peers on another node stopping):
    /// every rank stopped after the same step, with a checkpoint.
    #[error(
        "rank {rank} was stopped ({status}), and every rank with it (resume with `tmca launch … --resume`)"
    )]
    RankStopped { rank: usize, status: ExitStatus },
    /// The nodes were started with different `--nnodes`/`--nproc`.
    #[error("{0}")]
    Mismatch(String),
}

fn restarts_note(restarts: u32) -> String {
    match restarts {
        0 => String::new(),
        n => format!(" after {n} restart(s)"),
    }
}

impl LaunchError {
    /// The exit code `tmca launch` ends with: the failed rank's, or 128 + the signal.
    pub fn exit_code(&self) -> u8 {
        match self {
            LaunchError::RankFailed { status, .. } => {
                use std::os::unix::process::ExitStatusExt;
                match (status.code(), status.signal()) {
                    (Some(c), _) => c.clamp(1, 255) as u8,
                    (None, Some(s)) => (128 + s).clamp(1, 255) as u8,
                    _ => 1,
                }
            }
            LaunchError::Interrupted { signal, .. } => crate::signals::exit_code(*signal),
            LaunchError::RankStopped { status, .. } => status.code().unwrap_or(143) as u8,
            LaunchError::Mismatch(_) => 2,
        }
    }
}

/// Exit codes no restart can cure: bad command line or config (2), bad input data (3),
/// validation problems (5), a diverged loss (6; it diverges again from the same checkpoint).
fn restart_would_repeat(status: &ExitStatus) -> bool {
    matches!(status.code(), Some(2 | 3 | 5 | 6))
}

enum Outcome {
    Done,
    Failed { rank: usize, status: ExitStatus },
    Signal(i32),
    Mismatch(String),
}

/// Every node must be started with the same `--nnodes` and `--nproc`, or the world sizes the
/// ranks are told disagree and the rendezvous waits for ranks that never come. Each launcher
/// records its shape in the store; node 0 compares the others' with its own, the others
/// node 0's. A mismatch arrives on the returned channel (nothing, while nodes are missing).
fn watch_node_shapes(a: &LaunchArgs, store: &str) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    if a.nnodes < 2 {
        return rx;
    }
    let shape = format!("{}x{}", a.nnodes, a.nproc);
    let (me, nnodes, store) = (a.node_rank, a.nnodes, store.to_string());
    std::thread::spawn(move || {
        let patience = Duration::from_secs(600);
        let Ok(mut c) = tmca_worker::store::StoreClient::connect(&store, patience) else {
            return;
        };
        if c.set(&format!("launch/shape/{me}"), &shape).is_err() {
            return;
        }
        let others: Vec<usize> = if me == 0 {
            (1..nnodes).collect()
        } else {
            vec![0]
        };
        for k in others {
            match c.get(&format!("launch/shape/{k}")) {
                Ok(theirs) if theirs != shape => {
                    let _ = tx.send(format!(
                        "node {k} was started with --nnodes x --nproc = {theirs}, this node (--node-rank {me}) with {shape}: start every node with the same --nnodes and --nproc"
                    ));
                    return;
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    rx
}

pub fn run(a: &LaunchArgs) -> anyhow::Result<()> {
    let bad = |m: String| anyhow::Error::new(crate::cli::UsageError(m));
    if a.nproc == 0 || a.nnodes == 0 {
        return Err(bad("--nproc and --nnodes must be at least 1".into()));
    }
    if a.node_rank >= a.nnodes {
        return Err(bad(format!(
            "--node-rank {} must be below --nnodes {}",
            a.node_rank, a.nnodes
        )));
    }
    if a.nnodes > 1 && a.master.is_none() {
        return Err(bad(
            "--nnodes > 1 needs --master host:port (node 0's address, reachable from every node)"
                .into(),
        ));
    }
    // The config (with the train flags) is checked once here, not by every rank at once.
    super::train::load_config(&a.train)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(supervise(a))
}

/// The `tmca train` arguments of every rank; restarts resume from the latest checkpoint.
fn train_args(a: &LaunchArgs, restart: bool) -> Vec<OsString> {
    // Every field named, so a new `tmca train` flag cannot be left out of the ranks'.
    let crate::cli::TrainArgs {
        config,
        resume,
        resume_from,
        run_dir,
        seed,
        fold,
        stop_after,
    } = &a.train;
    let mut v: Vec<OsString> = vec!["train".into()];
    v.extend(config.iter().map(|p| p.clone().into_os_string()));
    if let Some(d) = run_dir {
        v.extend(["--run-dir".into(), d.clone().into_os_string()]);
    }
    if let Some(s) = seed {
        v.extend(["--seed".into(), s.to_string().into()]);
    }
    if let Some(f) = fold {
        v.extend(["--fold".into(), f.to_string().into()]);
    }
    if let Some(s) = stop_after {
        v.extend(["--stop-after".into(), s.to_string().into()]);
    }
    match (resume_from, *resume || restart) {
        (_, true) => v.push("--resume".into()),
        (Some(p), false) => v.extend(["--resume-from".into(), p.clone().into_os_string()]),
        (None, false) => {}
    }
    v
}

/// Node 0 serves the store (on --master's port, all interfaces, or a free loopback port);
/// the others only connect to it.
async fn start_store(
    a: &LaunchArgs,
) -> anyhow::Result<(String, Option<tokio::task::JoinHandle<std::io::Result<()>>>)> {
    match (&a.master, a.node_rank) {
        (None, _) => {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?.to_string();
            Ok((addr, Some(tokio::spawn(store::serve(listener)))))
        }
        (Some(master), 0) => {
            let port = master
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .ok_or_else(|| {
                    anyhow::Error::new(crate::cli::UsageError(format!(
                        "--master {master}: expected host:port with a port from 1 to 65535"
                    )))
                })?;
            let listener = TcpListener::bind(("0.0.0.0", port))
                .await
                .map_err(|e| {
                    // An I/O error (exit 4), with what it was for.
                    anyhow::Error::new(e).context(format!(
                        "serving the rendezvous store on port {port} (--master: a free port of this machine)"
                    ))
                })?;
            Ok((master.clone(), Some(tokio::spawn(store::serve(listener)))))
        }
        (Some(master), _) => Ok((master.clone(), None)),
    }
}

async fn supervise(a: &LaunchArgs) -> anyhow::Result<()> {
    let (store_addr, store) = start_store(a).await?;
    let world = a.nnodes * a.nproc;
    // --threads, else the environment's RAYON_NUM_THREADS (as for one process), else the
    // cores this launcher may use, shared.
    let from_env = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&t| t > 0);
    let threads = a
        .threads
        .map(|t| t as usize)
        .or(from_env)
        .unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / a.nproc).max(1)
        });
    let exe = std::env::current_exe()?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut shapes = watch_node_shapes(a, &store_addr);
    let mut attempt = 0u32;
    let result = loop {
        let mut ranks = JoinSet::new();
        let mut pids = BTreeMap::new();
        for local in 0..a.nproc {
            let rank = a.node_rank * a.nproc + local;
            let mut cmd = Command::new(&exe);
            #[cfg(target_os = "linux")]
            // SAFETY: prctl and getppid are async-signal-safe and nothing allocates (the error is
            // a raw OS error); it runs in the child between fork and exec.
            // A launcher killed outright (SIGKILL, OOM) takes its ranks along: they get the
            // SIGTERM a stop sends (and stop with a checkpoint) instead of training on orphaned.
            // A launcher that died before the prctl took effect has no death to signal: the
            // rank, already re-parented, does not start.
            unsafe {
                let launcher = libc::getpid();
                cmd.pre_exec(move || {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    if libc::getppid() != launcher {
                        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                    }
                    Ok(())
                });
            }
            let mut child = cmd
                .args(train_args(a, attempt > 0))
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", local.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env(tmca_worker::STORE_VAR, &store_addr)
                .env(tmca_worker::ATTEMPT_VAR, attempt.to_string())
                .env("RAYON_NUM_THREADS", threads.to_string())
                // Their own process group: a terminal's Ctrl-C reaches the launcher only, which
                // forwards it (the ranks stop after the current step, with a checkpoint).
                .process_group(0)
                .kill_on_drop(true)
                .spawn()?;
            pids.insert(rank, child.id().map(RankProcess::open));
            ranks.spawn(async move { (rank, child.wait().await) });
        }
        crate::cmd::util::say(
            true,
            format_args!(
                "tmca launch: {} rank{}{}, {threads} thread{} each, attempt {} of {}",
                a.nproc,
                if a.nproc == 1 { "" } else { "s" },
                if a.nnodes > 1 {
                    format!(" on node {} of {} ({world} in all)", a.node_rank, a.nnodes)
                } else {
                    String::new()
                },
                if threads == 1 { "" } else { "s" },
                attempt + 1,
                a.max_restarts + 1
            ),
        );
        let outcome = loop {
            tokio::select! {
                done = ranks.join_next() => match done {
                    None => break Outcome::Done,
                    Some(Ok((rank, Ok(status)))) => {
                        pids.remove(&rank);
                        if !status.success() {
                            break Outcome::Failed { rank, status };
                        }
                    }
                    Some(Ok((rank, Err(e)))) => anyhow::bail!("waiting for rank {rank}: {e}"),
                    Some(Err(e)) => anyhow::bail!("rank watcher: {e}"),
                },
                _ = term.recv() => break Outcome::Signal(libc::SIGTERM),
                _ = int.recv() => break Outcome::Signal(libc::SIGINT),
                _ = usr1.recv() => break Outcome::Signal(libc::SIGUSR1),
                Some(m) = shapes.recv() => break Outcome::Mismatch(m),
            }
        };
        let failed = match outcome {
            Outcome::Done => break Ok(()),
            Outcome::Signal(sig) => {
                let killed = !stop(&mut ranks, &pids, sig, a.stop_grace).await;
                break Err(LaunchError::Interrupted {
                    signal: sig,
                    killed,
                });
            }
            Outcome::Mismatch(m) => {
                // Found as the nodes start: the ranks are still meeting, with nothing to save.
                stop(&mut ranks, &pids, libc::SIGKILL, a.stop_grace).await;
                break Err(LaunchError::Mismatch(m));
            }
            Outcome::Failed { rank, status } => {
                // The other ranks usually fail right after, one of them with the cause (rank
                // 0's data error, while rank 1 reports only that rank 0 left): give them a
                // moment, then stop the rest, and report the most telling failure.
                let mut failures = vec![(rank, status)];
                let _ = tokio::time::timeout(Duration::from_secs(3), async {
                    while let Some(Ok((r, Ok(st)))) = ranks.join_next().await {
                        pids.remove(&r);
                        if !st.success() {
                            failures.push((r, st));
                        }
                    }
                })
                .await;
                stop(&mut ranks, &pids, libc::SIGTERM, a.stop_grace).await;
                // Ranks that failed because the nodes do not fit together (node 0 saw it first
                // and left with the store): say that instead.
                if let Ok(Some(m)) =
                    tokio::time::timeout(Duration::from_millis(500), shapes.recv()).await
                {
                    break Err(LaunchError::Mismatch(m));
                }
                let (rank, status) = cause(&failures);
                // A rank stopped on request (a signal of its own, or its peers stopping with
                // it) saved a checkpoint: that ends the launch as a stop, with no restart.
                if status.code().is_some_and(crate::signals::is_stop_exit) {
                    break Err(LaunchError::RankStopped { rank, status });
                }
                LaunchError::RankFailed {
                    rank,
                    status,
                    restarts: attempt,
                }
            }
        };
        let LaunchError::RankFailed { rank, status, .. } = &failed else {
            break Err(failed);
        };
        if attempt >= a.max_restarts || restart_would_repeat(status) {
            break Err(failed);
        }
        attempt += 1;
        crate::cmd::util::say(
            true,
            format_args!(
                "tmca launch: rank {rank} failed ({status}); stopped the others, restarting all \
                 from the latest checkpoint (restart {attempt} of {})",
                a.max_restarts
            ),
        );
    };
    if let Some(store) = store {
        if matches!(result, Err(LaunchError::Mismatch(_))) {
            // The other nodes read this node's shape from the store to say what differs:
            // keep it up a moment for those that have not yet.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        store.abort();
    }
    Ok(result?)
}

/// Of the ranks' failures, the one to report and act on: an exit code that says what went
/// wrong (2–6: usage, input, I/O, validation, NaN) before the generic 1 or a signal, the
/// lowest rank among equals, else the first failure.
fn cause(failures: &[(usize, ExitStatus)]) -> (usize, ExitStatus) {
    failures
        .iter()
        .filter(|(_, st)| matches!(st.code(), Some(2..=6)))
        .min_by_key(|(r, _)| *r)
        .or(failures.first())
        .copied()
        .unwrap_or((0, ExitStatus::from_raw(1 << 8)))
}

/// Sends `sig` to the ranks still running, waits up to `grace` seconds for them (at least an
/// hour for SIGUSR1), then kills the rest. Returns whether they all ended within that time.
async fn stop(
    ranks: &mut JoinSet<(usize, std::io::Result<ExitStatus>)>,
    pids: &BTreeMap<usize, Option<RankProcess>>,
    sig: i32,
    grace: u64,
) -> bool {
    for p in pids.values().flatten() {
        p.signal(sig);
    }
    // SIGUSR1 is a warning ahead of a time limit (`--signal=USR1@SECONDS`): the ranks may be
    // in a long validation, and the scheduler ends everything at the limit anyway.
    let grace = if sig == libc::SIGUSR1 {
        grace.max(3600)
    } else {
        grace
    };
    let drained = tokio::time::timeout(Duration::from_secs(grace), async {
        while ranks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        // Killed, then waited for (reaped by their watcher tasks), so that none is still
        // exiting when the launcher returns. Should one outlast the wait (stuck in the
        // kernel), dropping its task drops the child, which kill_on_drop SIGKILLs again.
        for p in pids.values().flatten() {
            p.signal(libc::SIGKILL);
        }
        let reaped = tokio::time::timeout(Duration::from_secs(30), async {
            while ranks.join_next().await.is_some() {}
        })
        .await;
        if reaped.is_err() {
            ranks.abort_all();
            while ranks.join_next().await.is_some() {}
        }
    }
    drained.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn args(line: &str) -> LaunchArgs {
        match Cli::try_parse_from(line.split_whitespace())
            .unwrap()
            .command
        {
            crate::cli::Command::Launch(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn ranks_get_the_train_arguments_and_restarts_resume() {
        let a = args("tmca launch --nproc 3 my.toml --run-dir r --seed 4 --fold 2 --resume-from r/checkpoints/step-00000002");
        assert_eq!(a.nproc, 3);
        let s = |v: Vec<OsString>| v.join(" ".as_ref()).into_string().unwrap();
        assert_eq!(
            s(train_args(&a, false)),
            "train my.toml --run-dir r --seed 4 --fold 2 --resume-from r/checkpoints/step-00000002"
        );
        assert_eq!(
            s(train_args(&a, true)),
            "train my.toml --run-dir r --seed 4 --fold 2 --resume"
        );
        assert_eq!(s(train_args(&args("tmca launch"), false)), "train");
    }

    #[test]
    fn the_telling_failure_is_reported() {
        let code = |c: i32| ExitStatus::from_raw(c << 8);
        // Rank 1 noticed rank 0 leave (1) before rank 0 reported its data error (3).
        let (r, st) = cause(&[(1, code(1)), (0, code(3))]);
        assert_eq!((r, st.code()), (0, Some(3)));
        assert_eq!(cause(&[(2, code(1)), (1, code(1))]).0, 2);
        assert_eq!(cause(&[(1, code(6)), (0, code(2))]).0, 0);
    }

    #[test]
    fn only_curable_failures_restart() {
        use std::os::unix::process::ExitStatusExt;
        for (raw, repeat) in [(2 << 8, true), (6 << 8, true), (1 << 8, false), (9, false)] {
            assert_eq!(
                restart_would_repeat(&ExitStatus::from_raw(raw)),
                repeat,
                "{raw}"
            );
        }
        let e = LaunchError::RankFailed {
            rank: 1,
            status: ExitStatus::from_raw(9),
            restarts: 2,
        };
        assert_eq!(e.exit_code(), 137);
        assert!(e.to_string().contains("after 2 restart(s)"), "{e}");
    }
}
