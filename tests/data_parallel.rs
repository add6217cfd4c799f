//! Data-parallel semantics, with ranks as threads (`ThreadGroup`, the in-process twin of the
//! MPI and NCCL groups): R ranks with local batch b reach the parameters one process reaches
//! with batch R·b, contrastive negatives gathered across ranks included.

use candle_core::Device;
use std::path::Path;
use tmca_data::NoProgress;
use tmca_trainer::config::Config;
use tmca_trainer::sink::NullSink;
use tmca_trainer::sync::{GradSync, SingleProcess, ThreadGroup};
use tmca_trainer::train::{train, Resume, RunOptions, TrainSummary};

fn config(run: &Path, data: &Path, batch: usize) -> Config {
    let text = format!(
        r#"
[run]
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
        run = run.display(),
        data = data.display()
    );
    let mut cfg = Config::from_toml(&text, Path::new("dp.toml")).unwrap();
    cfg.resolve().unwrap();
    cfg
}

fn run(cfg: &Config, sync: &mut dyn GradSync) -> TrainSummary {
    train(
        cfg,
        &Device::Cpu,
        sync,
        &mut NullSink,
        RunOptions {
            resume: Resume::No,
            stop_after: None,
            progress: &NoProgress,
        },
    )
    .unwrap()
}

fn weights(s: &TrainSummary) -> Vec<(String, Vec<f32>)> {
    let path = s
        .last_checkpoint
        .as_ref()
        .unwrap()
        .join("weights.safetensors");
    let mut w: Vec<_> = candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

#[test]
fn two_ranks_of_batch_two_train_like_one_process_of_batch_four() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let one = config(&dir.path().join("one"), &data, 4);
    assert!(one.model.uses_contrastive() && one.data.augment.enabled);
    let single = run(&one, &mut SingleProcess);
    assert_eq!(single.steps, 16, "2 epochs x 32 samples / 4");

    let two = config(&dir.path().join("two"), &data, 2);
    let ranks: Vec<TrainSummary> = ThreadGroup::new(2)
        .into_iter()
        .map(|mut g| {
            let cfg = two.clone();
            std::thread::spawn(move || run(&cfg, &mut g))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(ranks[0].steps, 16);
    assert!(ranks[1].last_checkpoint.is_none(), "only rank 0 writes");

    let (a, b) = (weights(&single), weights(&ranks[0]));
    assert_eq!(a.len(), b.len());
    // Summation orders differ (two means of two vs one mean of four, the gathered batch in
    // rank order), so equal to float tolerance, not bitwise: ~1e-4 here, where a missing
    // factor R on the gathered embeddings' gradients gives differences of order 1. Attention
    // key biases are left out: softmax is invariant to them, so their true gradient is 0 and
    // AdamW's update of them is normalised rounding noise, different in every summation order.
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
    let (va, vb) = (
        single.best_val_dice.unwrap(),
        ranks[0].best_val_dice.unwrap(),
    );
    assert!((va - vb).abs() < 1e-3, "val Dice {va} vs {vb}");
    assert_eq!(ranks[0].best_val_dice, ranks[1].best_val_dice);
}
