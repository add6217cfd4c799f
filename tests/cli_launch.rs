//! `tmca launch` end to end (default build, no MPI): two ranks of batch 2 on the TCP ring train
//! like one process of batch 4; a rank killed mid-run is restarted from the latest checkpoint
//! and the run ends where an uninterrupted one does, as does one stopped by SIGTERM and
//! resumed; failures no restart cures are not retried.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::text;

fn tmca() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tmca"));
    c.env("RAYON_NUM_THREADS", "1");
    c
}

fn write_config(dir: &Path, name: &str, batch: usize, epochs: usize) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    let text = common::config_text(&dir.join(name), &dir.join("data"), batch, epochs);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn two_launched_ranks_train_like_one_process_with_the_global_batch() {
    let dir = tempfile::tempdir().unwrap();
    let one = write_config(dir.path(), "one", 4, 2);
    let o = tmca()
        .env("TMCA_LOG", "debug")
        .arg("train")
        .arg(&one)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let one_log = text(&o);

    let two = write_config(dir.path(), "two", 2, 2);
    let o = tmca()
        .env("TMCA_LOG", "debug")
        .args(["launch", "--nproc", "2", "--threads", "1"])
        .arg(&two)
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    common::assert_same_grad_norms(&one_log, &out);
    assert_eq!(
        out.matches("trained 16 steps on 2 ranks").count(),
        1,
        "rank 0 alone reports: {out}"
    );
    common::assert_trained_alike(
        &dir.path().join("one/checkpoints/step-00000016"),
        &dir.path().join("two/checkpoints/step-00000016"),
    );

    // The same two ranks as two "nodes" of one rank each: two launchers, node 0 serving the
    // store on --master.
    let nodes = write_config(dir.path(), "nodes", 2, 2);
    let master = free_port_address();
    let (n0, n1) = (node(0, &master, &nodes, &[]), node(1, &master, &nodes, &[]));
    let (o0, o1) = (
        n0.wait_with_output().unwrap(),
        n1.wait_with_output().unwrap(),
    );
    assert!(
        o0.status.success() && o1.status.success(),
        "{}\n{}",
        text(&o0),
        text(&o1)
    );
    assert!(
        text(&o0).contains("trained 16 steps on 2 ranks"),
        "{}",
        text(&o0)
    );
    assert!(
        text(&o1).contains("node 1 of 2 (2 in all)"),
        "{}",
        text(&o1)
    );
    common::assert_trained_alike(
        &dir.path().join("one/checkpoints/step-00000016"),
        &dir.path().join("nodes/checkpoints/step-00000016"),
    );
}

/// `tmca launch` as node `n` of 2 (one rank each) on `cfg`, node 0's store on `master`.
fn node(n: usize, master: &str, cfg: &Path, extra: &[&str]) -> std::process::Child {
    tmca()
        .args(["launch", "--nnodes", "2", "--nproc", "1", "--threads", "1"])
        .args(["--node-rank", &n.to_string(), "--master", master])
        .args(extra)
        .arg(cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Nodes started with different --nproc are told so at once (exit 2), not left waiting for
/// ranks that never come.
#[test]
fn nodes_of_different_shapes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "shapes", 2, 2);
    let master = free_port_address();
    let launch = |n: usize, nproc: &str| {
        tmca()
            .args([
                "launch",
                "--nnodes",
                "2",
                "--nproc",
                nproc,
                "--threads",
                "1",
            ])
            .args(["--node-rank", &n.to_string(), "--master", &master])
            .arg(&cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (n0, n1) = (launch(0, "1"), launch(1, "2"));
    for o in [
        n0.wait_with_output().unwrap(),
        n1.wait_with_output().unwrap(),
    ] {
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            text(&o).contains("same --nnodes and --nproc"),
            "{}",
            text(&o)
        );
    }
}

/// A free port for a --master store, below Linux's ephemeral range (32768–60999): ports the
/// kernel hands out for `bind(:0)` and outgoing connections (other tests' rings, stores and
/// clients, running in parallel) never land there, so it stays free between this check and
/// node 0's bind.
fn free_port_address() -> String {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize)
        ^ (std::process::id() as usize) << 7;
    (0..1000)
        .map(|k| 20_000 + (seed + k * 7919) % 12_000)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok())
        .map(|port| format!("127.0.0.1:{port}"))
        .expect("a free port in 20000..32000")
}

#[test]
fn when_a_rank_dies_every_node_restarts_and_they_meet_again() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "nodes", 2, 6);
    common::checkpoint_every_4(&cfg);
    let master = free_port_address();
    let restarts = ["--max-restarts", "1"];
    let (n0, n1) = (
        node(0, &master, &cfg, &restarts),
        node(1, &master, &cfg, &restarts),
    );
    let first = dir.path().join("nodes/checkpoints/step-00000004");
    let start = Instant::now();
    while !first.is_dir() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Kill node 1's rank: node 0's rank then loses the ring; both launchers restart.
    let ranks = common::children(n1.id());
    assert_eq!(ranks.len(), 1, "{ranks:?}");
    Command::new("kill")
        .args(["-KILL", &ranks[0].to_string()])
        .status()
        .unwrap();
    let (o0, o1) = (
        n0.wait_with_output().unwrap(),
        n1.wait_with_output().unwrap(),
    );
    let (t0, t1) = (text(&o0), text(&o1));
    assert!(o0.status.success() && o1.status.success(), "{t0}\n{t1}");
    for t in [&t0, &t1] {
        assert!(t.contains("attempt 2 of 2"), "{t}");
    }
    assert!(t0.contains("trained 48 steps on 2 ranks"), "{t0}");
}

#[test]
fn launch_flags_that_do_not_fit_exit_2() {
    for (args, msg) in [
        (&["--nnodes", "2"][..], "--master"),
        (
            &["--nnodes", "2", "--node-rank", "2", "--master", "h:1"][..],
            "--node-rank 2",
        ),
        (&["--nproc", "0"][..], "at least 1"),
        (&["--nproc", "two"][..], "a number of ranks, or `gpu`"),
        // The default build has no CUDA: `gpu` says how to get one.
        (&["--nproc", "gpu"][..], "--features cuda"),
    ] {
        let o = tmca().arg("launch").args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(msg), "{args:?}: {}", text(&o));
    }
}

/// Starts `tmca launch` with 2 ranks on `cfg` (whose run directory sits beside it) and returns
/// once the run's first checkpoint (step 4) exists.
fn launch_until_first_checkpoint(cfg: &Path, extra: &[&str]) -> std::process::Child {
    let child = tmca()
        .args(["launch", "--nproc", "2", "--threads", "1"])
        .args(extra)
        .arg(cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = cfg.with_extension("").join("checkpoints/step-00000004");
    let start = Instant::now();
    while !first.is_dir() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

#[test]
fn a_killed_rank_restarts_all_and_sigterm_stops_all_with_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    // Reference: the same launch, uninterrupted.
    let cfg = |name: &str| {
        let p = write_config(dir.path(), name, 2, 6);
        common::checkpoint_every_4(&p);
        p
    };
    let straight = cfg("straight");
    let o = tmca()
        .args(["launch", "--nproc", "2", "--threads", "1"])
        .arg(&straight)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));

    // Once the first checkpoint is there, kill rank 1 (the launcher's second child).
    let launcher = launch_until_first_checkpoint(&cfg("cut"), &["--max-restarts", "1"]);
    let mut ranks = common::children(launcher.id());
    ranks.sort();
    assert_eq!(ranks.len(), 2, "{ranks:?}");
    Command::new("kill")
        .args(["-KILL", &ranks[1].to_string()])
        .status()
        .unwrap();
    let o = launcher.wait_with_output().unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    // Rank 1's SIGKILL, or rank 0's broken ring if the launcher sees that first.
    assert!(
        out.contains("failed (") && out.contains("restart 1 of 1"),
        "{out}"
    );
    assert!(out.contains("attempt 2 of 2"), "{out}");
    // Resume is exact and the ring's sums are the same in every attempt: bitwise equal.
    let weights = |run: &str| {
        std::fs::read(
            dir.path()
                .join(run)
                .join("checkpoints/step-00000048/weights.safetensors"),
        )
        .unwrap()
    };
    assert_eq!(weights("straight"), weights("cut"));

    // SIGTERM to the launcher (what SLURM sends before its time limit), or SIGUSR1 (what
    // `--signal=USR1@SECONDS` sends that long before): forwarded, every rank stops after the
    // same step with a checkpoint, exit 128 + the signal; --resume finishes the run.
    for (name, sig, number) in [("term", "-TERM", 15), ("usr1", "-USR1", 10)] {
        let run = cfg(name);
        let launcher = launch_until_first_checkpoint(&run, &[]);
        Command::new("kill")
            .args([sig, &launcher.id().to_string()])
            .status()
            .unwrap();
        let o = launcher.wait_with_output().unwrap();
        let out = text(&o);
        assert_eq!(o.status.code(), Some(128 + number), "{out}");
        let step: u64 = out
            .split(&format!("stopped by signal {number} after step "))
            .nth(1)
            .and_then(|r| r.split(';').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no stop message: {out}"));
        assert!(step < 48, "{out}");
        assert!(dir
            .path()
            .join(format!("{name}/checkpoints/step-{step:08}"))
            .is_dir());
        let o = tmca()
            .args(["launch", "--nproc", "2", "--threads", "1", "--resume"])
            .arg(&run)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(weights("straight"), weights(name));
    }
}

#[test]
fn a_config_error_is_not_restarted_and_keeps_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(dir.path(), "bad", 2, 2);
    common::edit_config(&p, "warmup_steps = 1", "lr = -1.0");
    let o = tmca()
        .args(["launch", "--nproc", "2", "--max-restarts", "3"])
        .arg(&p)
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("optim.lr") && !out.contains("restart 1"),
        "{out}"
    );
}

/// SIGTERM to one rank (a scheduler or a user stopping that process): every rank stops after
/// the same step with a checkpoint, the other saying why, and the launch ends as stopped
/// (exit 143) instead of restarting.
#[test]
fn a_rank_stopped_alone_stops_the_launch_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "one", 2, 6);
    common::checkpoint_every_4(&cfg);
    let launcher = launch_until_first_checkpoint(&cfg, &["--max-restarts", "2"]);
    let mut ranks = common::children(launcher.id());
    ranks.sort();
    assert_eq!(ranks.len(), 2, "{ranks:?}");
    Command::new("kill")
        .args(["-TERM", &ranks[1].to_string()])
        .status()
        .unwrap();
    let o = launcher.wait_with_output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(143), "{out}");
    assert!(out.contains("because another rank was stopped"), "{out}");
    assert!(!out.contains("restart 1"), "{out}");
    assert!(!out.contains("signal 0"), "{out}");
}

/// A rank that does not stop (here stopped with SIGSTOP, as a hung one) is killed after
/// --stop-grace and the launch says so; nothing is left running, and --resume goes on from the
/// newest complete checkpoint.
#[test]
fn a_rank_that_does_not_stop_is_killed_after_the_grace_time() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "hung", 2, 2);
    common::checkpoint_every_4(&cfg);
    let launcher = launch_until_first_checkpoint(&cfg, &["--stop-grace", "2"]);
    let mut ranks = common::children(launcher.id());
    ranks.sort();
    assert_eq!(ranks.len(), 2, "{ranks:?}");
    let kill = |sig: &str, pid: u32| {
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill {sig} {pid}");
    };
    kill("-STOP", ranks[1]);
    let start = Instant::now();
    kill("-TERM", launcher.id());
    let o = launcher.wait_with_output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(143), "{out}");
    assert!(
        out.contains("did not stop within the grace time (--stop-grace) and were killed"),
        "{out}"
    );
    // Two seconds of grace, not the default 30 (a bound far from both, not a speed goal).
    assert!(start.elapsed() < Duration::from_secs(20), "{out}");
    // Gone, or a zombie its new parent has yet to reap.
    for pid in &ranks {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next());
        assert!(
            matches!(state, None | Some("Z" | "X")),
            "rank {pid} left: {stat}"
        );
    }
    let o = tmca()
        .args(["launch", "--nproc", "2", "--threads", "1", "--resume"])
        .arg(&cfg)
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("resum"), "{out}");
    assert!(dir.path().join("hung/checkpoints/step-00000016").is_dir());
}

/// A --master port that is taken is an I/O error (exit 4) naming the port.
#[test]
fn a_busy_master_port_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "busy", 2, 1);
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let o = tmca()
        .args([
            "launch",
            "--nnodes",
            "2",
            "--node-rank",
            "0",
            "--nproc",
            "1",
        ])
        .args(["--master", &format!("127.0.0.1:{port}")])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("rendezvous store on port {port}")),
        "{}",
        text(&o)
    );
}

/// A node still waiting for node 0 (never started here) ends at once on SIGTERM: its ranks
/// have nothing to save yet, so they do not wait for a step to end (they did, 30 s).
#[test]
fn a_node_waiting_for_node_0_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "wait", 2, 1);
    let master = free_port_address();
    let child = node(1, &master, &cfg, &[]);
    std::thread::sleep(Duration::from_secs(3));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let t = Instant::now();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143), "{}", text(&o));
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "{:?}: {}",
        t.elapsed(),
        text(&o)
    );
}
