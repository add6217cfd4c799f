//! `tmca train` under `mpirun` (feature `mpi`; needs Open MPI's `mpirun`, installed by
//! `.ci/run`): two CPU ranks of batch 2 reach the weights one process reaches with batch 4,
//! and only rank 0 writes. The same semantics run without MPI in `tests/data_parallel.rs`.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write_config(dir: &Path, name: &str, batch: usize) -> PathBuf {
    let cfg = format!(
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
epochs = 2
val_every = 1
"#,
        run = dir.join(name).display(),
        data = dir.join("data").display()
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, cfg).unwrap();
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
        .output()
        .expect("mpirun runs (Open MPI: apt-get install openmpi-bin)")
}

fn final_weights(run: &Path) -> Vec<(String, Vec<f32>)> {
    let path = run.join("checkpoints/step-00000016/weights.safetensors");
    let mut w: Vec<_> = candle_core::safetensors::load(&path, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

#[test]
fn two_mpi_ranks_train_like_one_process_with_the_global_batch() {
    let dir = tempfile::tempdir().unwrap();
    let one = write_config(dir.path(), "one", 4);
    let o = Command::new(env!("CARGO_BIN_EXE_tmca"))
        .args(["train", one.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));

    let two = write_config(dir.path(), "two", 2);
    let o = mpirun(2, &["train", two.to_str().unwrap()]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
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

    // As in tests/data_parallel.rs: float tolerance (summation orders differ), attention key
    // biases left out (their true gradient is 0; AdamW normalises rounding noise).
    let (a, b) = (
        final_weights(&dir.path().join("one")),
        final_weights(&dir.path().join("two")),
    );
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

#[test]
fn a_bad_config_on_every_rank_fails_the_job_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(dir.path(), "bad", 2);
    let cfg = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, cfg.replace("warmup_steps = 1", "lr = -1.0")).unwrap();
    let o = mpirun(2, &["train", p.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("optim.lr"), "{}", text(&o));
}
