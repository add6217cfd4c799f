//! Data-parallel semantics, with ranks as threads (`ThreadGroup`, the in-process twin of the
//! MPI and NCCL groups): R ranks with local batch b reach the parameters one process reaches
//! with batch R·b, contrastive negatives gathered across ranks included.

use std::path::Path;
use tmca_trainer::config::Config;
use tmca_trainer::sync::{GradSync, SingleProcess, ThreadGroup};
use tmca_trainer::train::{Resume, TrainSummary};

mod common;

fn config(run: &Path, data: &Path, batch: usize) -> Config {
    let text = common::config_text(run, data, batch, 2);
    let mut cfg = Config::from_toml(&text, Path::new("dp.toml")).unwrap();
    cfg.resolve().unwrap();
    cfg
}

fn run(cfg: &Config, sync: &mut dyn GradSync) -> TrainSummary {
    common::train_cpu(cfg, sync, Resume::No).unwrap()
}

/// [`run`] logging every step; returns the summary and the steps' (loss, gradient norm)
/// (rank 0 logs; the others return none).
fn run_logged(cfg: &Config, sync: &mut dyn GradSync) -> (TrainSummary, Vec<(f64, f64)>) {
    let mut cfg = cfg.clone();
    cfg.train.log_every = 1;
    let mut sink = tmca_trainer::sink::MemorySink::new();
    let s = common::train_cpu_into(&cfg, sync, Resume::No, &mut sink).unwrap();
    let (loss, norm) = (sink.scalars("train/loss"), sink.scalars("train/grad_norm"));
    assert_eq!(loss.len(), norm.len());
    (s, loss.iter().zip(&norm).map(|(l, n)| (l.1, n.1)).collect())
}

/// Two runs' (loss, gradient norm) agree at every step: 1e-4 and 1e-3 relative.
fn assert_steps_alike(a: &[(f64, f64)], b: &[(f64, f64)]) {
    assert_eq!(a.len(), b.len());
    let rel = |x: f64, y: f64| (x - y).abs() / x.abs().max(1e-12);
    for (step, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            rel(x.0, y.0) < 1e-4 && rel(x.1, y.1) < 1e-3,
            "step {}: (loss, grad norm) {x:?} vs {y:?}",
            step + 1
        );
    }
}

#[test]
fn two_ranks_of_batch_two_train_like_one_process_of_batch_four() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let one = config(&dir.path().join("one"), &data, 4);
    assert!(one.model.uses_contrastive() && one.data.augment.enabled);
    let (single, single_log) = run_logged(&one, &mut SingleProcess);
    assert_eq!(single.steps, 16, "2 epochs x 32 samples / 4");

    let two = config(&dir.path().join("two"), &data, 2);
    let (ranks, logs): (Vec<TrainSummary>, Vec<_>) = ThreadGroup::new(2)
        .into_iter()
        .map(|mut g| {
            let cfg = two.clone();
            std::thread::spawn(move || run_logged(&cfg, &mut g))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .unzip();
    assert_eq!(ranks[0].steps, 16);
    assert!(ranks[1].last_checkpoint.is_none(), "only rank 0 writes");
    // Step by step, the loss and the norm of the (clipped-from) averaged gradient are one
    // process's: clipping and AdamW hide a gradient scaled by a constant (a sum for a mean)
    // from the weights, not from its norm.
    assert_eq!((single_log.len(), logs[1].len()), (16, 0));
    assert_steps_alike(&single_log, &logs[0]);

    common::assert_trained_alike(
        single.last_checkpoint.as_ref().unwrap(),
        ranks[0].last_checkpoint.as_ref().unwrap(),
    );
    let (va, vb) = (single.best_val.unwrap(), ranks[0].best_val.unwrap());
    assert!((va - vb).abs() < 1e-3, "val Dice {va} vs {vb}");
    assert_eq!(ranks[0].best_val, ranks[1].best_val);

    // The two-rank run resumes in one process only with the same global batch (1 x 4 = 2 x 2).
    let err = common::train_cpu(&two, &mut SingleProcess, Resume::Latest)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("data.batch_size") && err.contains("data.batch_size = 4"),
        "{err}"
    );
    let mut same = two.clone();
    same.data.batch_size = 4;
    let resumed = common::train_cpu(&same, &mut SingleProcess, Resume::Latest).unwrap();
    assert_eq!(resumed.steps, 16);
}

/// Evaluation sharded over ranks without padding scores every image once, as one process
/// does, when the shares are uneven (6 val images per dataset over 4 ranks: 2, 2, 1, 1).
#[test]
fn uneven_evaluation_shards_score_like_one_process() {
    use tmca_data::{NoProgress, Split};
    use tmca_trainer::inference::Trained;
    use tmca_trainer::train::eval::{evaluate, EvalResult, EvalSpec};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cfg = config(&dir.path().join("run"), &data, 4);
    cfg.train.epochs = 1;
    run(&cfg, &mut SingleProcess);
    let eval = |sync: &mut dyn GradSync| -> Vec<EvalResult> {
        let t = Trained::load(&cfg.run.dir, "latest", &candle_core::Device::Cpu).unwrap();
        let stores = tmca_trainer::train::setup::open_stores(&t.cfg, &NoProgress).unwrap();
        let spec = EvalSpec {
            input: t.input_spec(),
            batch_size: 1,
            workers: 1,
            threshold: 0.5,
            tokenizer: t.tokenizer.clone(),
            progress: &NoProgress,
            tta: false,
            folds: None,
            min_area: 0.0,
        };
        let device = candle_core::Device::Cpu;
        evaluate(
            &t.model,
            &stores,
            Split::Val,
            &spec,
            &device,
            sync,
            &mut |_, b, _, _, _| {
                assert!(b.size > 0, "an empty batch");
                Ok(())
            },
        )
        .unwrap()
    };
    let one = eval(&mut SingleProcess);
    let sharded: Vec<Vec<EvalResult>> = std::thread::scope(|s| {
        ThreadGroup::new(4)
            .into_iter()
            .map(|mut g| s.spawn(move || eval(&mut g)))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect()
    });
    for r in &sharded {
        for (a, b) in r.iter().zip(&one) {
            assert_eq!(a.summary.images, 6);
            assert!((a.summary.dice_per_image - b.summary.dice_per_image).abs() < 1e-12);
            assert!((a.summary.hd95_per_image - b.summary.hd95_per_image).abs() < 1e-9);
        }
    }
}

/// `optim.accumulate = 2` at batch 2 takes the steps batch 4 takes: the same loss and gradient
/// norm at every step, and weights alike (the contrastive loss off: its negatives are the
/// micro-batch's, so with it on the two differ by design).
#[test]
fn two_accumulated_micro_batches_step_like_one_batch_of_both() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut four = config(&dir.path().join("four"), &data, 4);
    let mut acc = config(&dir.path().join("acc"), &data, 2);
    four.model.lambda = 0.0;
    (acc.model.lambda, acc.optim.accumulate) = (0.0, 2);
    let (a, la) = run_logged(&four, &mut SingleProcess);
    let (b, lb) = run_logged(&acc, &mut SingleProcess);
    assert_eq!((a.steps, b.steps), (16, 16));
    assert_steps_alike(&la, &lb);
    common::assert_trained_alike(
        a.last_checkpoint.as_ref().unwrap(),
        b.last_checkpoint.as_ref().unwrap(),
    );
}
