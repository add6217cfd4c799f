//! `tmca bench step`: training-step and inference throughput, peak memory, loader rate and a
//! per-part profile of the `cpu-small` TMCA at several sizes, against the PyTorch mirror
//! measured in the same run. Every measurement runs in a child process (`tmca bench
//! step-probe`, or `bench_torch.py`) that prints one JSON line.

mod inputs;
mod loader;
mod replay;
mod report;
mod result;
mod train;

use super::util::{machine, replace_section, today};
use crate::cli::{BenchStepArgs, ProbeMode, StepProbeArgs};
use anyhow::Context;
use report::{Meta, SizeRun};
use result::ProbeResult;
use std::process::Command;

const SECTION: &str = "step";
const PLAN: &str = "Plan: *(hand-written from the numbers above; `tmca bench step` leaves \
this paragraph alone.)*";

/// Runs one probe in this process and prints its JSON line.
pub fn probe(a: &StepProbeArgs) -> anyhow::Result<()> {
    let r = match a.mode {
        ProbeMode::Train => train::train(a)?,
        ProbeMode::Infer => train::infer(a)?,
        ProbeMode::Loader => loader::loader(a)?,
    };
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

/// Runs `cmd` and parses the last line of its output as a probe result.
fn collect(mut cmd: Command, what: &str) -> anyhow::Result<ProbeResult> {
    eprintln!("  {what} …");
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(15).collect();
        anyhow::bail!(
            "{what} failed ({}):\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("{what} printed {line:?}"))
}

fn tmca_probe(a: &BenchStepArgs, size: usize, mode: &str) -> anyhow::Result<ProbeResult> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["bench", "step-probe", "--mode", mode]).args([
        format!("--size={size}"),
        format!("--batch={}", a.batch),
        format!("--warmup={}", a.warmup),
        format!("--steps={}", a.steps),
        format!(
            "--profile-reps={}",
            if mode == "train" { a.profile_reps } else { 0 }
        ),
        format!("--loader-seconds={}", a.loader_seconds),
    ]);
    cmd.arg("--workdir").arg(&a.workdir);
    cmd.env("RAYON_NUM_THREADS", a.threads.to_string());
    collect(cmd, &format!("tmca {mode} {size}×{size}"))
}

fn torch_probe(a: &BenchStepArgs, size: usize, mode: &str) -> anyhow::Result<ProbeResult> {
    let mut cmd = Command::new(&a.python);
    cmd.arg(&a.torch_script).args([
        format!("--size={size}"),
        format!("--mode={mode}"),
        format!("--batch={}", a.batch),
        format!("--warmup={}", a.warmup),
        format!("--steps={}", a.steps),
        format!(
            "--profile-reps={}",
            if mode == "train" { a.profile_reps } else { 0 }
        ),
        format!("--threads={}", a.threads),
    ]);
    collect(cmd, &format!("PyTorch {mode} {size}×{size}"))
}

/// torch's version, or why the PyTorch mirror cannot run.
fn torch_version(a: &BenchStepArgs) -> Result<String, String> {
    if a.no_torch {
        return Err("--no-torch".into());
    }
    if !a.torch_script.is_file() {
        return Err(format!("{} not found", a.torch_script.display()));
    }
    let out = Command::new(&a.python)
        .args(["-c", "import torch; print(torch.__version__)"])
        .output()
        .map_err(|e| format!("{}: {e}", a.python))?;
    if !out.status.success() {
        return Err(format!("torch is not importable by {}", a.python));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The 1-minute load average (/proc/loadavg), if known.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The command line as a reader would retype it.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("tmca {}", args.join(" "))
}

/// Measures every size and rewrites the step section of the output file.
pub fn run(a: &BenchStepArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!a.sizes.is_empty(), "--sizes: no size given");
    for &s in &a.sizes {
        anyhow::ensure!(
            s > 0 && s % 32 == 0,
            "--sizes: {s} is not a positive multiple of 32"
        );
    }
    anyhow::ensure!(
        a.steps > 0 && a.batch > 0,
        "--steps and --batch must be at least 1"
    );
    let load = load_average();
    if let Some(l) = load.filter(|&l| l > 0.5) {
        eprintln!(
            "warning: load average {l:.2} before the run: other processes compete for the cores \
             and the timings will be too (PyTorch's spinning OpenMP threads suffer most)"
        );
    }
    let torch = torch_version(a);
    if let Err(why) = &torch {
        eprintln!("PyTorch mirror skipped: {why}");
    }
    let mut runs = Vec::new();
    for &size in &a.sizes {
        eprintln!("{size}×{size}:");
        let run = SizeRun {
            size,
            train: tmca_probe(a, size, "train")?,
            infer: tmca_probe(a, size, "infer")?,
            loader: tmca_probe(a, size, "loader")?,
            torch_train: torch
                .is_ok()
                .then(|| torch_probe(a, size, "train"))
                .transpose()?,
            torch_infer: torch
                .is_ok()
                .then(|| torch_probe(a, size, "infer"))
                .transpose()?,
        };
        runs.push(run);
    }
    let meta = Meta {
        date: today(),
        machine: machine(),
        command: command_line(),
        torch,
        threads: a.threads,
        load,
        batch: a.batch,
        warmup: a.warmup,
        steps: a.steps,
        reps: a.profile_reps,
    };
    let body = report::section(&runs, &meta);
    let existed = std::fs::read_to_string(&a.output)
        .map(|s| s.contains(&format!("<!-- begin:{SECTION} -->")))
        .unwrap_or(false);
    replace_section(&a.output, SECTION, &body)?;
    if !existed {
        let text = std::fs::read_to_string(&a.output)?;
        std::fs::write(&a.output, format!("{}\n\n{PLAN}\n", text.trim_end()))?;
    }
    print!("{body}");
    println!("\n(written to {})", a.output.display());
    Ok(())
}
