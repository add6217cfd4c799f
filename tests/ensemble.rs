//! An ensemble evaluation (`evaluate_ensemble`, `tmca eval RUN RUN…`) scores the mean of its
//! members' probabilities, each member reading the reports with its own tokenizer: checked
//! against each run's own `Trained::predict` on every test image, for two runs whose learned
//! vocabularies differ; `Ensemble::predict` (`tmca predict RUN RUN…`) agrees.

use std::path::Path;
use std::sync::Mutex;
use tmca_data::{NoProgress, Split};
use tmca_trainer::config::Config;
use tmca_trainer::inference::{Ensemble, Trained};
use tmca_trainer::sync::SingleProcess;
use tmca_trainer::train::eval::{evaluate_ensemble, EvalSpec, Member};
use tmca_trainer::train::Resume;

mod common;

fn trained_run(dir: &Path, name: &str, seed: u64, vocab: Option<usize>) -> Trained {
    let text = common::config_text(&dir.join(name), &dir.join("data"), 4, 2);
    let mut cfg = Config::from_toml(&text, Path::new("ensemble.toml")).unwrap();
    cfg.run.seed = seed;
    if let Some(v) = vocab {
        cfg.text.vocab_size = v;
    }
    cfg.resolve().unwrap();
    common::train_cpu(&cfg, &mut SingleProcess, Resume::No).unwrap();
    Trained::load(&dir.join(name), "latest", &candle_core::Device::Cpu).unwrap()
}

#[test]
fn ensemble_averages_members_with_their_own_tokenizers() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Ensemble::new(vec![
        trained_run(dir.path(), "a", 1, None),
        trained_run(dir.path(), "b", 2, Some(70)),
    ])
    .unwrap();
    let (a, b) = (&runs.members()[0], &runs.members()[1]);
    let report = "small opacity in the left lower zone";
    assert_ne!(
        a.tokenizer.encode(report).unwrap().ids,
        b.tokenizer.encode(report).unwrap().ids,
        "the members should read reports differently"
    );

    let stores = tmca_trainer::train::setup::open_stores(&a.cfg, &NoProgress).unwrap();
    let spec = EvalSpec {
        input: a.input_spec(),
        batch_size: 3,
        workers: 1,
        threshold: 0.5,
        tokenizer: a.tokenizer.clone(),
        progress: &NoProgress,
        tta: false,
        folds: None,
        min_area: 0.0,
    };
    let members = [a, b].map(|t| Member {
        model: &t.model,
        tokenizer: &t.tokenizer,
    });
    let seen = Mutex::new(Vec::new());
    evaluate_ensemble(
        &members,
        &stores,
        Split::Test,
        &spec,
        &candle_core::Device::Cpu,
        &mut SingleProcess,
        &mut |store, batch, probs, _, _| {
            let hw = batch.height * batch.width;
            for (k, item) in batch.items.iter().enumerate() {
                let s = store.sample(item.index).unwrap();
                let info = store.info();
                let planar = tmca_data::augment::Planar {
                    data: &s.image,
                    channels: info.channels,
                    height: info.height,
                    width: info.width,
                };
                let mean: Vec<f32> = [a, b]
                    .iter()
                    .map(|t| t.predict(&[(planar, s.report.as_str())], false).unwrap())
                    .fold(vec![0f32; hw], |mut acc, p| {
                        acc.iter_mut()
                            .zip(&p[0].probs)
                            .for_each(|(x, y)| *x += 0.5 * y);
                        acc
                    });
                // `tmca predict RUN RUN…` averages the same way.
                let predicted = runs
                    .predict(&[(planar, s.report.as_str())], false)
                    .unwrap()
                    .remove(0)
                    .probs;
                let got = &probs[k * hw..(k + 1) * hw];
                let diff = |x: &[f32], y: &[f32]| {
                    x.iter()
                        .zip(y)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0f32, f32::max)
                };
                let d = diff(got, &mean).max(diff(&predicted, &mean));
                seen.lock().unwrap().push((item.index, d));
            }
            Ok(())
        },
    )
    .unwrap();
    let seen = seen.into_inner().unwrap();
    let want: usize = stores
        .iter()
        .map(|s| s.split_indices(Split::Test).len())
        .sum();
    assert_eq!(seen.len(), want, "every test image");
    for (i, d) in &seen {
        assert!(*d < 1e-5, "sample {i}: ensemble vs mean of the members {d}");
    }
}
