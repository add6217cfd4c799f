//! The prepared GPU check of the fused ops (issue 4): the CUDA implementations against the CPU
//! reference and against the composed candle ops, then timings at the paper setting's sizes.
//!
//!     cargo run --release -p tmca-kernels --features cuda --example gpu_check [-- OPTIONS]
//!     cargo run --release -p tmca-kernels --example gpu_check -- --cpu     # no GPU needed
//!
//! On a GPU machine use `kernels/gpu-check.sh` (build here, run there).
//!
//! Options:
//! * `--cpu`: run the same correctness checks with Device::Cpu as the device under test
//!   (fused f32 vs the f64 CPU op, fused vs composed); no timings unless `--time`.
//! * `--quick`: only the small odd-sized cases (and small timing sizes).
//! * `--sanitize`: quick cases, fused ops on the device only, no timings (for
//!   compute-sanitizer, whose slowdown would make the composed ops and the timings take long).
//! * `--no-time` / `--time`: skip / force the timings; `--reps N` (default 50, at least 1).
//! * `--md PATH`: also write the timing table (Markdown) to PATH.
//!
//! Exit status: 0 every check passed; 1 a check failed; 2 CUDA is not compiled in (build with
//! `--features cuda`) and `--cpu` was not given; 3 no usable CUDA device, or another error.
//!
//! # Correctness
//!
//! Every case draws fresh deterministic inputs in f64, rounded through f32, so that the f32 and
//! the f64 evaluations see identical values. The reference is the fused op on Device::Cpu in f64.
//! Per case, forward outputs and the gradients of a random weighted sum of them are compared as
//! max |a − b| / max |b| (non-finite values in `a` where `b` is finite count as ∞):
//!
//! * `dev32~cpu32`: the op on the device in f32 vs the same op on the CPU in f32;
//! * `dev32~cpu64`: device f32 vs the f64 reference (the f32 result's actual accuracy);
//! * `dev64~cpu64`: device f64 vs the f64 reference (the kernels' logic, without f32 noise);
//! * `comp32~dev32`, `comp64~dev64`: the composed candle ops on the device vs the fused op.
//!
//! Tolerances: f32 1e-5 forward, 1e-4 backward; f64 1e-9 forward and backward. With `--cpu` the
//! device is the CPU, so the `dev~cpu` checks of equal dtype are skipped (they are identities).
//!
//! # Poisoning (device runs only)
//!
//! The CUDA ops allocate their outputs and scratch buffers uninitialised, from cudarc's
//! stream-ordered memory pool (cuMemAllocAsync on candle's stream). Right before each fused
//! forward and before its backward, a NaN-filled tensor larger than everything the call
//! allocates (4× the inputs + 64 MiB) is created and dropped on that same stream, with no
//! synchronisation in between: its memory goes back to the pool still holding NaN, and the
//! op's allocations are carved out of it. An element a kernel forgets to write then reads NaN,
//! which every comparison counts as a failure. That the poison landed is checked, not assumed:
//! after each poisoned forward the output buffer's device address must lie inside the freed
//! NaN range; the number of runs where it did is reported, and a warning is printed if it never
//! did (the check is then only as strong as whatever the memory held before).
//!
//! # Timings
//!
//! B = 32, D = 256, levels 56², 28², 14², 7²; Lv = 4, N = 32 and 4096 for the contrastive loss;
//! f32. Each figure is the median of `--reps` runs after 5 warm-up runs, each run bracketed by
//! `Device::synchronize` (launch overhead and the wrappers' own small candle ops included).
//! GB/s = the op's compulsory bytes (inputs read once + outputs written once, formulas in the
//! table notes) / median time, against the device-to-device copy bandwidth of a 256 MiB
//! `Tensor::copy` (bytes read + written) timed the same way.
#![allow(dead_code)]

mod cases;
#[path = "../../tests/common/mod.rs"]
mod common;
mod compare;
mod inputs;
mod timing;

pub(crate) use cases::*;
pub(crate) use compare::*;
pub(crate) use inputs::*;
pub(crate) use timing::*;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};
use common::{reference, Rng};
use std::fmt::Write as _;
use std::time::Instant;
use tmca_kernels::{masked_pool, multi_level_contrastive, pixel_text_cos};

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct Opts {
    pub cpu: bool,
    pub quick: bool,
    pub sanitize: bool,
    pub time: Option<bool>,
    pub reps: usize,
    pub md: Option<String>,
}

impl Opts {
    pub fn parse(args: &[String]) -> std::result::Result<Self, String> {
        let mut o = Opts {
            reps: 50,
            ..Default::default()
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--cpu" => o.cpu = true,
                "--quick" => o.quick = true,
                "--sanitize" => o.sanitize = true,
                "--time" => o.time = Some(true),
                "--no-time" => o.time = Some(false),
                "--reps" => {
                    o.reps = it
                        .next()
                        .and_then(|v| v.parse().ok())
                        .filter(|&r: &usize| r > 0)
                        .ok_or("--reps needs a positive integer")?
                }
                "--md" => o.md = Some(it.next().ok_or("--md needs a path")?.clone()),
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        if o.sanitize {
            o.quick = true;
            o.time = Some(false);
        }
        Ok(o)
    }

    fn timings(&self) -> bool {
        self.time.unwrap_or(!self.cpu)
    }
}

/// The whole check on `dev`; Ok(true) when every check passed.
pub fn run(dev: &Device, opts: &Opts) -> Result<bool> {
    let start = Instant::now();
    let rep = correctness(dev, opts)?;
    println!(
        "\n{} checks, {} failed ({:.1} s)",
        rep.checks,
        rep.failures.len(),
        start.elapsed().as_secs_f64()
    );
    if rep.poison_tries > 0 {
        println!(
            "poison: the output buffer lay in the freed NaN range in {} of {} poisoned runs",
            rep.poison_hits, rep.poison_tries
        );
        if rep.poison_hits == 0 {
            println!(
                "WARNING: the poison never landed on an output buffer: unwritten elements \
                 would go unnoticed unless the memory held NaN by chance"
            );
        }
    }
    for f in &rep.failures {
        println!("FAIL {f}");
    }
    if opts.timings() {
        println!("\ntimings");
        let (rows, copy) = timings(dev, opts)?;
        let md = table(&rows, copy, dev, opts);
        println!("\n{md}");
        if let Some(path) = &opts.md {
            std::fs::write(path, &md)?;
            println!("wrote {path}");
        }
    }
    println!("total {:.1} s", start.elapsed().as_secs_f64());
    Ok(rep.failures.is_empty())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match Opts::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("gpu_check: {e}");
            }
            eprintln!(
                "usage: gpu_check [--cpu] [--quick] [--sanitize] [--time|--no-time] [--reps N] [--md PATH]"
            );
            std::process::exit(if e.is_empty() { 0 } else { 3 });
        }
    };
    let dev = if opts.cpu {
        Device::Cpu
    } else if !cfg!(feature = "cuda") {
        eprintln!(
            "gpu_check: CUDA is not compiled in; build with `--features cuda` \
             (or pass --cpu for the CPU-only checks)"
        );
        std::process::exit(2);
    } else {
        match Device::new_cuda(0) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("gpu_check: no usable CUDA device 0: {e}");
                std::process::exit(3);
            }
        }
    };
    match run(&dev, &opts) {
        Ok(true) => println!("gpu_check: all checks passed"),
        Ok(false) => {
            eprintln!("gpu_check: checks FAILED");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("gpu_check: error: {e}");
            std::process::exit(3);
        }
    }
}
