//! Shared by the training tests (ranks as threads, `tmca launch`, mpirun, SLURM, pretrained
//! weights, freezing): one small training config, a CPU training call and the comparison of
//! two runs' weights; and by the command-line tests: running `tmca` and reading its output.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use tmca_trainer::config::Config;
use tmca_trainer::sync::GradSync;
use tmca_trainer::train::{Resume, RunOptions, TrainSummary};

/// `tmca_trainer::train` on the CPU with `sync`, no metric sink and no progress output.
pub fn train_cpu(
    cfg: &Config,
    sync: &mut dyn GradSync,
    resume: Resume,
) -> tmca_trainer::Result<TrainSummary> {
    train_cpu_into(cfg, sync, resume, &mut tmca_trainer::sink::NullSink)
}

/// [`train_cpu`] recording into `sink`.
#[allow(dead_code)]
pub fn train_cpu_into(
    cfg: &Config,
    sync: &mut dyn GradSync,
    resume: Resume,
    sink: &mut dyn tmca_trainer::sink::MetricSink,
) -> tmca_trainer::Result<TrainSummary> {
    tmca_trainer::train::train(
        cfg,
        &candle_core::Device::Cpu,
        sync,
        sink,
        RunOptions {
            resume,
            stop_after: None,
            stop: None,
            progress: &tmca_data::NoProgress,
        },
    )
}

/// A tiny run (cpu-tiny, 32², 2 synthetic datasets of 16 training samples, augmentation and
/// the contrastive loss on) with per-rank batch `batch` for `epochs` epochs.
pub fn config_text(run: &Path, data: &Path, batch: usize, epochs: usize) -> String {
    format!(
        r#"[run]
dir = "{run}"
seed = 5
[data]
image_size = 32
batch_size = {batch}
workers = 1
[data.synth]
dir = "{data}"
size = 32
train = 16
val = 6
test = 2
modalities = ["xray", "endoscopy"]
[model]
preset = "cpu-tiny"
[text]
max_len = 12
[optim]
warmup_steps = 1
[train]
epochs = {epochs}
val_every = 1
"#,
        run = run.display(),
        data = data.display()
    )
}

/// Writes `<dir>/tiny.toml`, the command-line tests' run: `<dir>/run`, cpu-tiny at 32², one
/// synthetic dataset of `modality` (8 train, 4 val, 4 test in `<dir>/data`), batch 4, 2 epochs;
/// `data_extra` and `model_extra` are added to `[data]` and `[model]`.
pub fn cli_config(
    dir: &Path,
    modality: &str,
    data_extra: &str,
    model_extra: &str,
) -> std::path::PathBuf {
    let cfg = format!(
        r#"[run]
dir = "{run}"
[data]
image_size = 32
batch_size = 4
{data_extra}
[data.synth]
dir = "{data}"
size = 32
train = 8
val = 4
test = 4
modalities = ["{modality}"]
[model]
preset = "cpu-tiny"
{model_extra}
[text]
max_len = 12
[train]
epochs = 2
"#,
        run = dir.join("run").display(),
        data = dir.join("data").display()
    );
    let p = dir.join("tiny.toml");
    std::fs::write(&p, cfg).unwrap();
    p
}

/// Replaces `from` by `to` in the config file at `path` (which must contain it).
pub fn edit_config(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{}: no {from:?}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

/// Adds `checkpoint_every = 4` to the config at `path`.
pub fn checkpoint_every_4(path: &Path) {
    edit_config(path, "val_every = 1", "val_every = 1\ncheckpoint_every = 4");
}

/// A checkpoint's weights by name.
pub fn checkpoint_weights(ckpt: &Path) -> Vec<(String, Vec<f32>)> {
    let path = ckpt.join("weights.safetensors");
    let mut w: Vec<_> = candle_core::safetensors::load(&path, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

/// R ranks of batch b against one process of batch R·b: equal to float tolerance, not bitwise
/// (two means of two vs one mean of four; the gathered batch in rank order). ~1e-4 relative
/// here, where a missing factor R on the gathered embeddings' gradients gives differences of
/// order 1. Attention key biases are left out: softmax is invariant to them, so their true
/// gradient is 0 and AdamW's update of them is normalised rounding noise.
pub fn assert_trained_alike(a: &Path, b: &Path) {
    let (a, b) = (checkpoint_weights(a), checkpoint_weights(b));
    assert_eq!(a.len(), b.len());
    let mut worst = (0.0f32, String::new());
    for ((name, x), (name_b, y)) in a.iter().zip(&b) {
        assert_eq!(name, name_b);
        if name.ends_with(".key.bias") {
            continue;
        }
        for (p, q) in x.iter().zip(y) {
            let d = (p - q).abs() / (1e-3 + p.abs());
            if d > worst.0 {
                worst = (d, name.clone());
            }
        }
    }
    assert!(worst.0 < 1e-3, "largest relative difference {worst:?}");
}

/// `(step, gradient norm)` of the "step N loss … grad norm G …" lines of a `TMCA_LOG=debug`
/// log (rank 0's).
#[allow(dead_code)]
pub fn logged_grad_norms(log: &str) -> Vec<(u64, f64)> {
    log.lines()
        .filter_map(|l| {
            let step = l.split("step ").nth(1)?.split(' ').next()?.parse().ok()?;
            let norm = l
                .split("grad norm ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()?;
            Some((step, norm))
        })
        .collect()
}

/// Two runs' logged gradient norms agree step by step (to the 3 decimals logged, within
/// 1%): weights hide a gradient scaled by a constant (clipping and AdamW normalise it), its
/// norm does not — a rank group that sums where it should average doubles it.
#[allow(dead_code)]
pub fn assert_same_grad_norms(a: &str, b: &str) {
    let (x, y) = (logged_grad_norms(a), logged_grad_norms(b));
    assert!(!x.is_empty() && x.len() == y.len(), "{x:?} vs {y:?}");
    for ((s, p), (t, q)) in x.iter().zip(&y) {
        assert_eq!(s, t);
        assert!(
            (p - q).abs() <= 0.01 * p.abs().max(1e-3),
            "step {s}: grad norm {p} vs {q}"
        );
    }
}

/// `tmca ARGS` run to completion (the binary of the tmca-launch tests; other crates' tests
/// have none).
pub fn tmca(args: &[&str]) -> Output {
    let Some(bin) = option_env!("CARGO_BIN_EXE_tmca") else {
        panic!("only the tmca-launch tests run tmca");
    };
    Command::new(bin).args(args).output().expect("tmca runs")
}

/// Standard output and error of a finished command, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs the independent check `tests/python/<script>` with `args`; fails the test with its
/// output unless it succeeds, else returns the output.
pub fn python_check(script: &str, args: &[&std::ffi::OsStr]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/python")
        .join(script);
    let o = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(o.status.success(), "{script}: {}", text(&o));
    text(&o)
}

/// The largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// A deterministic stream of numbers in [0, 1) (a 64-bit LCG), for test inputs.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An index below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() * n as f64) as usize
    }
}

/// The pids of `parent`'s children.
pub fn children(parent: u32) -> Vec<u32> {
    let mut out = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may hold spaces, so split after its ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}
