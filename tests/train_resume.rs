//! Training end to end on tiny synthetic data: resume is bit-exact, corrupted checkpoints are
//! refused (and skipped when resuming automatically), another model's checkpoint is refused
//! naming the differing fields, moving averages resume exactly and serve evaluation, and a tiny
//! model overfits a handful of samples.

use candle_core::Device;
use std::path::Path;
use tmca_data::NoProgress;
use tmca_trainer::checkpoint::Checkpointer;
use tmca_trainer::config::Config;
use tmca_trainer::sink::NullSink;
use tmca_trainer::sync::SingleProcess;
use tmca_trainer::train::{train, Resume, RunOptions};

mod common;

fn config(run: &Path, data: &Path, extra: &str) -> Config {
    let text = format!(
        r#"
[run]
dir = "{run}"
seed = 3
[data]
image_size = 32
batch_size = 4
workers = 2
[data.synth]
dir = "{data}"
size = 32
train = 12
val = 4
test = 4
modalities = ["xray", "endoscopy"]
[model]
preset = "cpu-tiny"
[text]
max_len = 12
[optim]
warmup_steps = 2
[train]
epochs = 2
val_every = 1
keep_last = 5
{extra}
"#,
        run = run.display(),
        data = data.display()
    );
    Config::from_toml(&text, Path::new("test.toml")).unwrap()
}

fn try_run(
    cfg: &Config,
    resume: Resume,
    stop_after: Option<u64>,
) -> tmca_trainer::Result<tmca_trainer::train::TrainSummary> {
    train(
        cfg,
        &Device::Cpu,
        &mut SingleProcess,
        &mut NullSink,
        RunOptions {
            resume,
            stop_after,
            stop: None,
            progress: &NoProgress,
        },
    )
}

fn run(cfg: &Config, resume: Resume, stop_after: Option<u64>) -> tmca_trainer::train::TrainSummary {
    try_run(cfg, resume, stop_after).unwrap()
}

fn weights(ckpt: &Path) -> Vec<u8> {
    std::fs::read(ckpt.join("weights.safetensors")).unwrap()
}

#[test]
fn resume_is_bit_exact_and_bad_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let straight = config(&dir.path().join("a"), &data, "");
    let s = run(&straight, Resume::No, None);
    assert_eq!(s.steps, 12, "2 epochs x 6 batches");

    // Interrupted mid-epoch (step 4 of 6), then resumed.
    let cut = config(&dir.path().join("b"), &data, "");
    let first = run(&cut, Resume::No, Some(4));
    assert_eq!(first.steps, 4);
    // Resumed with a changed setting that does not change the path (patience never reached).
    let mut patient = cut.clone();
    patient.train.patience = 5;
    let second = run(&patient, Resume::Latest, None);
    assert_eq!(second.steps, 12);
    // The run's history: two sessions, the second from step 4 with the changed setting.
    let sessions = tmca_trainer::train::sessions::read(&cut.run.dir).unwrap();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!((sessions[0].from_step, sessions[1].from_step), (0, 4));
    assert!(sessions[0].changed.is_empty());
    assert_eq!(
        sessions[1].changed.get("train.patience"),
        Some(&["0".to_string(), "5".to_string()])
    );
    assert_eq!(sessions[1].changed.len(), 1, "{:?}", sessions[1].changed);
    let p = sessions[1].provenance.as_ref().unwrap();
    assert_eq!((p.device.as_str(), p.ranks), ("cpu", 1));
    assert!(sessions[1].started_unix >= sessions[0].started_unix && sessions[0].started_unix > 0);
    // A fresh start where an earlier run left a history but no checkpoint begins a new one.
    let fresh = dir.path().join("c");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::write(
        fresh.join("sessions.jsonl"),
        "{\"started_unix\":1,\"from_step\":0,\"provenance\":null}\n",
    )
    .unwrap();
    run(&config(&fresh, &data, ""), Resume::No, Some(1));
    let history = tmca_trainer::train::sessions::read(&fresh).unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert!(history[0].started_unix > 1);
    assert_eq!(
        weights(s.last_checkpoint.as_ref().unwrap()),
        weights(second.last_checkpoint.as_ref().unwrap()),
        "resumed run must reach identical weights"
    );
    let log =
        |run: &str| std::fs::read_to_string(dir.path().join(run).join("validation.jsonl")).unwrap();
    assert_eq!(log("a").lines().count(), 2, "one validation per epoch");
    assert_eq!(
        log("a"),
        log("b"),
        "the resumed run logs the same validations"
    );
    // Going back to the end of epoch 1 forgets the later validation before logging it again.
    let again = run(
        &straight,
        Resume::From(dir.path().join("a/checkpoints/step-00000006")),
        None,
    );
    assert_eq!(again.steps, 12);
    assert_eq!(
        log("a"),
        log("b"),
        "resuming from an earlier checkpoint rewrites the log"
    );

    // A fresh run refuses to overwrite a run directory with checkpoints.
    let err = try_run(&cut, Resume::No, None).unwrap_err();
    assert!(
        err.to_string().contains("already holds checkpoints"),
        "{err}"
    );

    // Truncate the newest checkpoint: loading it directly is refused by hash …
    let ck = Checkpointer::new(&cut.run.dir, 5);
    let steps = ck.steps();
    let newest = steps.last().unwrap().clone();
    let w = newest.join("weights.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let err = Checkpointer::load(&newest, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sha256") && err.contains("weights.safetensors"),
        "{err}"
    );
    // … and automatic resume falls back to the previous one.
    let prev = ck.latest(&Device::Cpu).unwrap().unwrap();
    assert_eq!(&prev.path, &steps[steps.len() - 2]);

    // Another model configuration's checkpoint is refused, naming the field.
    let other = config(&dir.path().join("b"), &data, "");
    let mut other = other;
    other.model.embed_dim = 24;
    other.text.max_len = 10;
    let err = try_run(&other, Resume::From(prev.path.clone()), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("differing fields: model.embed_dim (")
            && err.contains("text.max_len (12 vs 10)"),
        "{err}"
    );
    assert!(
        !err.contains("\"preset\""),
        "only the differing fields: {err}"
    );
}

/// With `optim.ema`, a resumed run reaches the straight run's weights and averages bit for
/// bit; the averages are what validation picked and what `Trained` (eval, predict, export)
/// computes with.
#[test]
fn moving_averages_resume_exactly_and_serve_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let with_ema = |run: &str| {
        let mut cfg = config(&dir.path().join(run), &data, "");
        cfg.optim.ema = 0.9;
        cfg
    };
    let straight = run(&with_ema("a"), Resume::No, None);
    let cut = with_ema("b");
    run(&cut, Resume::No, Some(4));
    let resumed = run(&cut, Resume::Latest, None);
    let (a, b) = (
        straight.last_checkpoint.unwrap(),
        resumed.last_checkpoint.unwrap(),
    );
    assert_eq!(weights(&a), weights(&b));
    assert_eq!(
        std::fs::read(a.join("optimizer.safetensors")).unwrap(),
        std::fs::read(b.join("optimizer.safetensors")).unwrap(),
        "moments and averages"
    );

    let state =
        candle_core::safetensors::load(a.join("optimizer.safetensors"), &Device::Cpu).unwrap();
    let avg = tmca_trainer::optim::ema::averaged_weights(&state);
    let raw = candle_core::safetensors::load(a.join("weights.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(avg.len(), raw.len(), "every trainable tensor is averaged");
    let name = "decoder.head.out.weight";
    let diff = common::max_abs_diff;
    let (a_t, r_t) = (avg.get(name).expect(name), &raw[name]);
    assert!(diff(a_t, r_t) > 0.0, "the average is not the last step");

    let trained =
        tmca_trainer::inference::Trained::load(&dir.path().join("a"), "latest", &Device::Cpu)
            .unwrap();
    let (exported, _) = tmca_trainer::export::model_tensors(&trained).unwrap();
    assert_eq!(
        diff(&exported[name], a_t),
        0.0,
        "eval and export use the averages"
    );

    // Validation chose `best` by the averaged weights: evaluating them again gives its Dice.
    let best = tmca_trainer::inference::Trained::load(&dir.path().join("a"), "best", &Device::Cpu)
        .unwrap();
    let stores = tmca_trainer::train::setup::open_stores(&best.cfg, &NoProgress).unwrap();
    let spec = tmca_trainer::train::eval::EvalSpec {
        input: best.input_spec(),
        batch_size: best.cfg.data.batch_size,
        workers: 1,
        threshold: best.cfg.train.threshold,
        tokenizer: best.tokenizer.clone(),
        progress: &NoProgress,
        tta: false,
        folds: best.cfg.data.cv(),
        min_area: 0.0,
    };
    let results = tmca_trainer::train::eval::evaluate(
        &best.model,
        &stores,
        tmca_data::Split::Val,
        &spec,
        &Device::Cpu,
        &mut SingleProcess,
        &mut |_, _, _, _, _| Ok(()),
    )
    .unwrap();
    let again = tmca_trainer::train::eval::mean_dice(&results);
    let manifest = Checkpointer::load(&dir.path().join("a/checkpoints/best"), &Device::Cpu)
        .unwrap()
        .manifest;
    assert_eq!(Some(again), manifest.best_val);
}

#[test]
fn config_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = |extra: &str, field: &str| {
        let text = format!("[run]\ndir = \"{}\"\n[data]\nimage_size = 32\nbatch_size = 2\nstores = [\"x\"]\n{extra}", dir.path().display());
        let err = Config::from_toml(&text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{extra}: {err}");
    };
    bad("[model]\npreset = \"huge\"", "model.preset");
    bad(
        "[model]\ncontrastive_levels = [5]",
        "model.contrastive_levels",
    );
    bad("[optim]\nlr = -1.0", "optim.lr");
    bad("[model]\naux_weight = -0.5", "model.aux_weight");
    bad("[train]\nbogus = 1", "bogus");
    bad("[text]\nencoder = \"gpt\"", "text.encoder");
    // Epochs × steps per epoch past what a step count holds: refused when training starts.
    let mut cfg = config(&dir.path().join("many"), &dir.path().join("data"), "");
    cfg.train.epochs = i64::MAX as u64;
    let err = try_run(&cfg, Resume::No, None).unwrap_err().to_string();
    assert!(err.contains("train.epochs"), "{err}");
}

#[test]
fn tiny_model_overfits_eight_samples() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cfg = config(&dir.path().join("o"), &data, "");
    cfg.train.epochs = 400;
    cfg.train.val_every = 400;
    cfg.optim.weight_decay = 0.0;
    cfg.data.synth.as_mut().unwrap().train = 8;
    cfg.data.synth.as_mut().unwrap().modalities = vec!["endoscopy".into()];
    cfg.data.augment.enabled = false;
    cfg.optim.lr = 4e-3;
    cfg.resolve().unwrap();
    let s = run(&cfg, Resume::No, None);
    // Evaluate on the training split itself.
    let trained =
        tmca_trainer::inference::Trained::load(&cfg.run.dir, "latest", &Device::Cpu).unwrap();
    let stores = tmca_trainer::train::setup::open_stores(&cfg, &NoProgress).unwrap();
    let spec = tmca_trainer::train::eval::EvalSpec {
        input: trained.input_spec(),
        batch_size: 4,
        workers: 1,
        threshold: 0.5,
        tokenizer: trained.tokenizer.clone(),
        progress: &NoProgress,
        tta: false,
        folds: None,
        min_area: 0.0,
    };
    let r = tmca_trainer::train::eval::evaluate(
        &trained.model,
        &stores,
        tmca_data::Split::Train,
        &spec,
        &Device::Cpu,
        &mut SingleProcess,
        &mut |_, _, _, _, _| Ok(()),
    )
    .unwrap();
    assert!(
        r[0].summary.dice_pooled > 0.95,
        "after {} steps: {:?}",
        s.steps,
        r[0].summary
    );
}

#[test]
fn non_finite_loss_stops_with_the_last_checkpoint_intact_or_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // An absurd learning rate blows the weights up after the first update.
    let mut cfg = config(&dir.path().join("nan"), &data, "checkpoint_every = 1");
    cfg.optim.lr = 1e30;
    cfg.optim.warmup_steps = 0;
    cfg.optim.grad_clip = 0.0;
    let err = try_run(&cfg, Resume::No, None).unwrap_err();
    assert!(
        matches!(err, tmca_trainer::TrainError::NonFinite { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("last checkpoint is intact"),
        "{err}"
    );
    let ck = Checkpointer::new(&cfg.run.dir, 5);
    let last = ck
        .latest(&Device::Cpu)
        .unwrap()
        .expect("the checkpoints before the failure remain");
    assert!(last.manifest.step >= 1);

    cfg.run.dir = dir.path().join("skip");
    cfg.train.on_nonfinite = tmca_trainer::config::OnNonFinite::Skip;
    // Every batch after the first update is non-finite and skipping changes no weight: after
    // a run of skipped batches (here one epoch's) it ends as "stop" does, where it looped
    // over epochs forever before.
    let err = try_run(&cfg, Resume::No, None).unwrap_err();
    assert!(
        matches!(err, tmca_trainer::TrainError::NonFinite { .. })
            && err.to_string().contains("in a row"),
        "{err}"
    );
    let last = Checkpointer::new(&cfg.run.dir, 5)
        .latest(&Device::Cpu)
        .unwrap()
        .expect("the steps before were checkpointed");
    assert!(
        (1..12).contains(&last.manifest.step),
        "non-finite steps were skipped, not applied ({} steps)",
        last.manifest.step
    );
}

#[test]
fn the_best_checkpoint_follows_train_select() {
    use tmca_trainer::config::Select;
    use tmca_trainer::train::results::ResultRecord;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (select, value) in [
        (
            Select::DicePooled,
            (|r: &ResultRecord| r.mean_dice_pooled) as fn(&ResultRecord) -> f64,
        ),
        (Select::Hd95, ResultRecord::mean_hd95_per_image),
    ] {
        let mut cfg = config(
            &dir.path().join(select.name()),
            &data,
            &format!("select = \"{}\"", select.name()),
        );
        cfg.train.epochs = 4;
        let s = run(&cfg, Resume::No, None);
        let log = tmca_trainer::train::results::read_validation_log(&cfg.run.dir).unwrap();
        assert_eq!(log.len(), 4);
        let values: Vec<f64> = log.iter().map(value).collect();
        let best = if select.lower_is_better() {
            values.iter().copied().fold(f64::MAX, f64::min)
        } else {
            values.iter().copied().fold(f64::MIN, f64::max)
        };
        let manifest = Checkpointer::load(&cfg.run.dir.join("checkpoints/best"), &Device::Cpu)
            .unwrap()
            .manifest;
        assert_eq!(manifest.best_val, Some(best), "{select:?} {values:?}");
        assert_eq!(manifest.select, Some(select));
        assert_eq!((s.best_val, s.select), (Some(best), select));
        // `best` holds the weights of the first validation that reached it.
        let first = values.iter().position(|&v| v == best).unwrap();
        assert_eq!(manifest.step, log[first].step, "{select:?} {values:?}");
    }
    // Values of another metric cannot be compared with the recorded best: resuming is refused.
    let mut cfg = config(&dir.path().join("hd95"), &data, "");
    cfg.train.epochs = 5;
    let err = try_run(&cfg, Resume::Latest, None).unwrap_err().to_string();
    assert!(
        err.contains("train.select")
            && err.contains("\"hd95\"")
            && err.contains("\"dice_per_image\""),
        "{err}"
    );
    let err = Config::from_toml(
        &format!(
            "[run]\ndir = \"{}\"\n[data]\nimage_size = 32\nbatch_size = 2\nstores = [\"x\"]\n[train]\nselect = \"hd99\"",
            dir.path().display()
        ),
        Path::new("t.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("select") || err.contains("hd99"), "{err}");
}

/// A resume continues the same run: another seed, fold or vocabulary is refused; a run resumed
/// from another run's checkpoint takes that run's tokenizer.
#[test]
fn resume_continues_the_same_run_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let a = config(&dir.path().join("a"), &data, "");
    run(&a, Resume::No, None);
    let resume = |cfg: &Config, how: Resume| try_run(cfg, how, None);
    let mut seed = a.clone();
    seed.run.seed = 4;
    let err = resume(&seed, Resume::Latest).unwrap_err().to_string();
    assert!(
        err.contains("run.seed") && err.contains("run.seed = 3, this run has 4"),
        "{err}"
    );
    let mut fold = a.clone();
    (fold.data.folds, fold.data.fold) = (2, 1);
    let err = resume(&fold, Resume::Latest).unwrap_err().to_string();
    assert!(
        err.contains("`data.fold`") && err.contains("folds (0 vs 2)"),
        "{err}"
    );
    // Another vocabulary of the same size: two tokens swapped in the run's tokenizer.json.
    let tok = a.run.dir.join("tokenizer.json");
    let original = std::fs::read_to_string(&tok).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&original).unwrap();
    let vocab = json["model"]["vocab"].as_object_mut().unwrap();
    let (x, y) = ("left".to_string(), "right".to_string());
    let (ix, iy) = (vocab[&x].clone(), vocab[&y].clone());
    vocab.insert(x, iy);
    vocab.insert(y, ix);
    std::fs::write(&tok, serde_json::to_string(&json).unwrap()).unwrap();
    let err = resume(&a, Resume::Latest).unwrap_err().to_string();
    assert!(err.contains("another tokenizer vocabulary"), "{err}");
    std::fs::write(&tok, &original).unwrap();

    // A new run directory resumed from a's checkpoint reads a's tokenizer and continues.
    let mut b = a.clone();
    b.run.dir = dir.path().join("b");
    b.train.epochs = 3;
    let from = Checkpointer::new(&a.run.dir, 5)
        .latest(&Device::Cpu)
        .unwrap()
        .unwrap()
        .path;
    // A checkpoint path that is none is refused before the new directory gets anything.
    let err = resume(&b, Resume::From(dir.path().join("none")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("manifest.json"), "{err}");
    assert!(!b.run.dir.join("tokenizer.json").exists());
    let s = resume(&b, Resume::From(from)).unwrap();
    assert_eq!(s.steps, 18, "continued from step 12");
    assert_eq!(
        std::fs::read_to_string(b.run.dir.join("tokenizer.json")).unwrap(),
        original
    );
    // It keeps its own `best` (a's best value does not carry over) ...
    assert!(b.run.dir.join("checkpoints/best").is_dir(), "b has no best");
    // ... and its checkpoints are its own: evaluating them as a's is refused; a's own are
    // found by name too.
    use tmca_trainer::inference::Trained;
    let err = Trained::load(
        &a.run.dir,
        b.run.dir.join("checkpoints/best").to_str().unwrap(),
        &Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("belongs to the run"), "{err}");
    let t = Trained::load(&a.run.dir, "step-00000012", &Device::Cpu).unwrap();
    assert_eq!(t.step, 12);
}

/// A run restarted before its first checkpoint starts at step 0 again: it tells TensorBoard
/// so (a START at step 1 drops the earlier session's records), and every checkpoint flushes
/// the event file, so that what a resume does not redo is on disk.
#[test]
fn a_restart_from_step_0_tells_tensorboard_and_checkpoints_flush_the_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(
        &dir.path().join("run"),
        &dir.path().join("data"),
        "checkpoint_every = 2",
    );
    cfg.train.epochs = 1;
    let go = |resume: Resume| {
        let mut sink = tmca_trainer::sink::MemorySink::new();
        train(
            &cfg,
            &Device::Cpu,
            &mut SingleProcess,
            &mut sink,
            RunOptions {
                resume,
                stop_after: None,
                stop: None,
                progress: &NoProgress,
            },
        )
        .unwrap();
        sink
    };
    let fresh = go(Resume::No);
    assert!(fresh.resumed_after.is_empty());
    let steps = Checkpointer::new(&cfg.run.dir, 99).steps().len();
    assert!(
        fresh.flushes > steps,
        "{} flushes for {steps} checkpoints",
        fresh.flushes
    );
    std::fs::remove_dir_all(&cfg.run.dir).unwrap();
    let restarted = go(Resume::Latest);
    assert_eq!(restarted.resumed_after, [0]);
}

/// Stochastic depth (`optim.drop_path`) changes training and resumes exactly: the branches
/// dropped after a resume are the ones an uninterrupted run drops.
#[test]
fn stochastic_depth_trains_differently_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plain = config(&dir.path().join("plain"), &data, "");
    let p = run(&plain, Resume::No, None);
    let mut straight = config(&dir.path().join("a"), &data, "");
    straight.optim.drop_path = 0.5;
    let s = run(&straight, Resume::No, None);
    assert_ne!(
        weights(p.last_checkpoint.as_ref().unwrap()),
        weights(s.last_checkpoint.as_ref().unwrap()),
        "drop_path changed nothing"
    );
    let mut cut = config(&dir.path().join("b"), &data, "");
    cut.optim.drop_path = 0.5;
    run(&cut, Resume::No, Some(5));
    let second = run(&cut, Resume::Latest, None);
    assert_eq!(
        weights(s.last_checkpoint.as_ref().unwrap()),
        weights(second.last_checkpoint.as_ref().unwrap()),
        "resumed run must reach identical weights"
    );
}

/// A step budget that ends mid-epoch validates once more after the loop. The step checkpoint
/// saved just before, at the same step, is written again with that validation's best value:
/// a longer run resumed from it compares its validations with that value, not an older one.
#[test]
fn the_last_checkpoint_holds_the_final_validation() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &dir.path().join("run"),
        &dir.path().join("data"),
        "max_steps = 3\ncheckpoint_every = 3",
    );
    let s = run(&cfg, Resume::No, None);
    assert_eq!(s.steps, 3);
    let log = tmca_trainer::train::results::read_validation_log(&cfg.run.dir).unwrap();
    assert_eq!(log.iter().map(|r| r.step).collect::<Vec<_>>(), [3]);
    assert!(s.best_val.is_some());
    let last = Checkpointer::load(&cfg.run.dir.join("checkpoints/step-00000003"), &Device::Cpu)
        .unwrap()
        .manifest;
    assert_eq!((last.step, last.best_val), (3, s.best_val));
}

/// Rolling back: a run resumed from an earlier checkpoint of its own moves the later step
/// checkpoints aside (nothing deleted), so its new ones are not pruned as the oldest and the
/// next `--resume` continues the new branch. With every step checkpoint unreadable, `--resume`
/// continues from `best`; with that unreadable too it refuses instead of starting over; a
/// fresh run refuses a directory that holds only `best`.
#[test]
fn rolling_back_and_unreadable_checkpoints_keep_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir.path().join("r"), &dir.path().join("data"), "");
    cfg.train.keep_last = 2;
    cfg.train.checkpoint_every = 2;
    run(&cfg, Resume::No, None);
    let ck = Checkpointer::new(&cfg.run.dir, 2);
    let names = |ck: &Checkpointer| -> Vec<String> {
        ck.steps()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(&ck), ["step-00000010", "step-00000012"]);
    let best = cfg.run.dir.join("checkpoints/best");
    let best_step = Checkpointer::load(&best, &Device::Cpu)
        .unwrap()
        .manifest
        .step;
    assert!(
        best_step < 12,
        "the test needs a best before the end: {best_step}"
    );

    // Back to `best`, a few steps on: the new branch's checkpoints are the run's.
    run(&cfg, Resume::From(best.clone()), Some(best_step + 1));
    let aside: Vec<_> = std::fs::read_dir(ck.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("superseded-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert!(aside[0].join("step-00000012/manifest.json").is_file());
    let now = ck.latest(&Device::Cpu).unwrap().unwrap();
    assert_eq!(now.manifest.step, best_step + 1);

    // Every step checkpoint unreadable: continue from `best`, moving the broken ones aside;
    // resumes are exact, so it reaches the weights the rollback above reached.
    let rolled = weights(&now.path);
    for p in ck.steps() {
        std::fs::write(p.join("weights.safetensors"), b"broken").unwrap();
    }
    let s = run(&cfg, Resume::Latest, Some(best_step + 1));
    assert_eq!(s.steps, best_step + 1);
    assert!(weights(s.last_checkpoint.as_ref().unwrap()) == rolled);
    // `best` unreadable as well: refused, not a new run over the old one.
    for p in ck.steps() {
        std::fs::write(p.join("weights.safetensors"), b"broken").unwrap();
    }
    std::fs::write(best.join("weights.safetensors"), b"broken").unwrap();
    let err = try_run(&cfg, Resume::Latest, None).unwrap_err().to_string();
    assert!(err.contains("checkpoints can be read"), "{err}");

    // Only `best` left: a fresh run is refused.
    let mut only_best = config(&dir.path().join("b"), &dir.path().join("data"), "");
    only_best.train.epochs = 1;
    run(&only_best, Resume::No, None);
    for p in Checkpointer::new(&only_best.run.dir, 5).steps() {
        std::fs::remove_dir_all(p).unwrap();
    }
    let err = try_run(&only_best, Resume::No, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already holds checkpoints"), "{err}");
}
