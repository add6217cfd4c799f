//! `tmca train` under `mpirun` and SLURM (feature `mpi`; needs Open MPI's `mpirun` and a SLURM
//! cluster, which `.ci/run` installs and starts with `.ci/slurm.sh`; `TMCA_SKIP_SLURM=1` skips
//! the SLURM test): two CPU ranks of batch 2 reach the weights one process reaches with batch
//! 4, and only rank 0 writes. The same semantics run without MPI in `tests/data_parallel.rs`.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::text;

fn write_config(dir: &Path, name: &str, batch: usize) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    let text = common::config_text(&dir.join(name), &dir.join("data"), batch, 2);
    std::fs::write(&p, text).unwrap();
    p
}

fn mpirun(ranks: usize, args: &[&str]) -> Output {
    Command::new("mpirun")
        .args(["-n", &ranks.to_string(), "--oversubscribe"])
        .arg(env!("CARGO_BIN_EXE_tmca"))
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // One compute thread per rank: two ranks share this machine's cores.
        .env("RAYON_NUM_THREADS", "1")
        // Rank 0's per-step lines (gradient norms).
        .env("TMCA_LOG", "debug")
        .output()
        .expect("mpirun runs (Open MPI: apt-get install openmpi-bin)")
}

#[test]
fn two_mpi_ranks_train_like_one_process_with_the_global_batch() {
    let dir = tempfile::tempdir().unwrap();
    let one = write_config(dir.path(), "one", 4);
    let o = Command::new(env!("CARGO_BIN_EXE_tmca"))
        .env("TMCA_LOG", "debug")
        .args(["train", one.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let one_log = text(&o);

    let two = write_config(dir.path(), "two", 2);
    let o = mpirun(2, &["train", two.to_str().unwrap()]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    common::assert_same_grad_norms(&one_log, &out);
    assert!(out.contains("trained 16 steps on 2 ranks"), "{out}");
    assert_eq!(
        out.matches("trained 16 steps").count(),
        1,
        "only rank 0 reports: {out}"
    );
    let events = std::fs::read_dir(dir.path().join("two/tensorboard"))
        .unwrap()
        .count();
    assert_eq!(events, 1, "one TensorBoard event file, rank 0's");

    common::assert_trained_alike(
        &dir.path().join("one/checkpoints/step-00000016"),
        &dir.path().join("two/checkpoints/step-00000016"),
    );
}

#[test]
fn a_bad_config_on_every_rank_fails_the_job_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(dir.path(), "bad", 2);
    common::edit_config(&p, "warmup_steps = 1", "lr = -1.0");
    let o = mpirun(2, &["train", p.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("optim.lr"), "{}", text(&o));
}

/// A rank that fails alone (rank 1 cannot open a store) ends the whole job at once with its
/// error named: without that, the other rank waited for it in its next collective and the
/// failing one in MPI_Finalize, silently, until the job's time limit.
#[test]
fn one_failing_rank_ends_the_job_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), "job", 2);
    let bad = dir.path().join("bad.toml");
    let missing = dir.path().join("missing.zarr");
    let text = std::fs::read_to_string(&good).unwrap().replace(
        "[data]\n",
        &format!("[data]\nstores = [\"{}\"]\n", missing.display()),
    );
    std::fs::write(&bad, text).unwrap();
    let log = dir.path().join("mpirun.log");
    let out = std::fs::File::create(&log).unwrap();
    let bin = env!("CARGO_BIN_EXE_tmca");
    let mut child = Command::new("mpirun")
        .args([
            "--oversubscribe",
            "-n",
            "1",
            bin,
            "train",
            good.to_str().unwrap(),
        ])
        .args([":", "-n", "1", bin, "train", bad.to_str().unwrap()])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("mpirun runs");
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > std::time::Duration::from_secs(180) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "the job still ran after 180 s:\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{text}");
    assert!(text.contains("missing.zarr"), "{text}");
}

/// A rank that hangs (here stopped with SIGSTOP) ends the job after TMCA_COLLECTIVE_TIMEOUT:
/// the other rank's watchdog ends it in its next collective, saying why, and mpirun ends the
/// hung one. Without the watchdog the job waited, silently, until its time limit.
#[test]
fn a_hung_rank_ends_the_job_after_the_collective_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "hung", 2);
    common::edit_config(&cfg, "epochs = 2", "epochs = 1000");
    let log = dir.path().join("mpirun.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut job = Command::new("mpirun")
        .args(["-n", "2", "--oversubscribe"])
        .arg(env!("CARGO_BIN_EXE_tmca"))
        .args(["train", cfg.to_str().unwrap()])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1")
        // Short, but longer than rank 0 alone takes to write a checkpoint here while rank 1
        // waits in a collective (which counts).
        .env("TMCA_COLLECTIVE_TIMEOUT", "10")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("mpirun runs");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let limit = std::time::Duration::from_secs(180);
    let start = std::time::Instant::now();
    // Training has begun once the first epoch is validated.
    let run = dir.path().join("hung");
    while !run.join("validation.jsonl").is_file() {
        if start.elapsed() > limit || job.try_wait().unwrap().is_some() {
            let _ = job.kill();
            panic!("no validation after 180 s:\n{}", read_log());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let rank1 = common::children(job.id())
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|&b| b == 0)
                    .any(|v| v == b"OMPI_COMM_WORLD_RANK=1")
            })
        })
        .expect("rank 1 is a child of mpirun");
    let kill = |sig: &str| {
        Command::new("kill")
            .args([sig, &rank1.to_string()])
            .status()
            .unwrap()
    };
    assert!(kill("-STOP").success());
    let stopped = std::time::Instant::now();
    let status = loop {
        if let Some(s) = job.try_wait().unwrap() {
            break s;
        }
        if stopped.elapsed() > limit {
            let _ = kill("-KILL");
            let _ = job.kill();
            panic!("the job still ran 180 s after rank 1 hung:\n{}", read_log());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let waited = stopped.elapsed();
    let _ = kill("-KILL");
    let text = read_log();
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("rank 0 of 2:")
            && text.contains("s for the other ranks")
            && text.contains("TMCA_COLLECTIVE_TIMEOUT"),
        "{text}"
    );
    // Ten seconds of timeout, not the default 30 minutes (a bound far from both).
    assert!(
        waited >= std::time::Duration::from_secs(10) && waited < std::time::Duration::from_secs(90),
        "{waited:?}: {text}"
    );
}

/// Submits `script` with `sbatch --wait` and returns its exit status and output file.
fn sbatch(dir: &Path, name: &str, script: &str) -> (bool, String) {
    let out = dir.join(format!("{name}.out"));
    let job = dir.join(format!("{name}.sh"));
    std::fs::write(
        &job,
        format!(
            "#!/bin/bash\n#SBATCH --ntasks=2 --cpus-per-task=1 --output={}\n\
             export RAYON_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1\n{script}\n",
            out.display()
        ),
    )
    .unwrap();
    let o = Command::new("sbatch")
        .arg("--wait")
        .arg(&job)
        .output()
        .expect("sbatch runs (bash .ci/slurm.sh starts a one-node cluster)");
    let log = std::fs::read_to_string(&out).unwrap_or_default();
    (o.status.success(), format!("{}{log}", text(&o)))
}

#[test]
fn sbatch_jobs_train_on_two_ranks_with_srun_and_with_mpirun() {
    if std::env::var_os("TMCA_SKIP_SLURM").is_some() {
        eprintln!("TMCA_SKIP_SLURM set: the SLURM test is skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tmca = env!("CARGO_BIN_EXE_tmca");
    for (name, launch) in [
        ("srun", "srun --mpi=pmix"),
        ("mpirun", "mpirun"), // Open MPI takes the tasks from the allocation
    ] {
        let cfg = write_config(dir.path(), name, 2);
        let (ok, log) = sbatch(
            dir.path(),
            name,
            &format!("{launch} {tmca} train {}", cfg.display()),
        );
        assert!(ok, "{name}: {log}");
        assert!(log.contains("trained 16 steps on 2 ranks"), "{name}: {log}");
        assert!(dir
            .path()
            .join(name)
            .join("checkpoints/step-00000016")
            .is_dir());
    }
    // srun without a PMI plugin: refused before MPI starts, with the fix named.
    let cfg = write_config(dir.path(), "bare", 2);
    let (ok, log) = sbatch(
        dir.path(),
        "bare",
        &format!("srun --mpi=none {tmca} train {}", cfg.display()),
    );
    assert!(!ok);
    assert!(
        log.contains("srun started 2 ranks") && log.contains("--mpi=pmix"),
        "{log}"
    );
}

/// The README's time-limit warning under SLURM: SIGUSR1 sent to the tasks of the `srun` step
/// (as `#SBATCH --signal=USR1@…` and `scancel --signal=USR1` do) stops both ranks after one
/// step with a checkpoint, exit 138, which the batch script sees to requeue the job.
#[test]
fn sigusr1_under_srun_stops_the_job_with_a_checkpoint() {
    if std::env::var_os("TMCA_SKIP_SLURM").is_some() {
        eprintln!("TMCA_SKIP_SLURM set: the SLURM test is skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "usr1", 2);
    // Long enough that the signal comes mid-run (it stops within a step).
    common::edit_config(&cfg, "epochs = 2", "epochs = 1000");
    let out = dir.path().join("usr1.out");
    let job = dir.path().join("usr1.sh");
    std::fs::write(
        &job,
        format!(
            "#!/bin/bash\n#SBATCH --ntasks=2 --cpus-per-task=1 --output={}\n\
             export RAYON_NUM_THREADS=1\n\
             srun --mpi=pmix {} train {} --resume\nrc=$?\necho \"tmca exit $rc\"\nexit $rc\n",
            out.display(),
            env!("CARGO_BIN_EXE_tmca"),
            cfg.display()
        ),
    )
    .unwrap();
    let o = Command::new("sbatch")
        .arg("--parsable")
        .arg(&job)
        .output()
        .expect("sbatch runs (bash .ci/slurm.sh starts a one-node cluster)");
    assert!(o.status.success(), "{}", text(&o));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let run = dir.path().join("usr1");
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let start = std::time::Instant::now();
        while !done() {
            if start.elapsed() > std::time::Duration::from_secs(150) {
                let _ = Command::new("scancel").arg(&id).status();
                panic!(
                    "job {id}: no {what} after 150 s:\n{}",
                    std::fs::read_to_string(&out).unwrap_or_default()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    };
    // Training has begun once the first epoch is validated.
    wait_for("validation", &|| run.join("validation.jsonl").is_file());
    let o = Command::new("scancel")
        .args(["--signal=USR1", &id])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    wait_for("exit line", &|| {
        std::fs::read_to_string(&out).is_ok_and(|l| l.contains("tmca exit"))
    });
    let log = std::fs::read_to_string(&out).unwrap();
    assert!(log.contains("tmca exit 138"), "{log}");
    let step: u64 = log
        .split("stopped by signal 10 after step ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no stop message: {log}"));
    assert!(
        run.join(format!("checkpoints/step-{step:08}")).is_dir(),
        "{log}"
    );
}
