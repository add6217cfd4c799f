//! `tmca quickstart`: the main job on the embedded default — the four synthetic datasets,
//! generated, validated, previewed and streamed through the training loader.

use super::data::spread;
use super::util::ensure_synth;
use crate::cli::QuickstartArgs;
use crate::exit::ValidationFailed;
use crate::progress::Bar;
use anyhow::Context;
use std::sync::Arc;
use std::time::Instant;
use tmca_data::augment::{AugmentConfig, InputSpec};
use tmca_data::loader::{Loader, LoaderConfig};
use tmca_data::sampler::ShardedSampler;
use tmca_data::store::Store;
use tmca_data::synth::SynthConfig;
use tmca_data::tokenize::TextTokenizer;
use tmca_data::{preview, validate, Modality, Split};
use tmca_trainer::config::Config;
use tmca_trainer::inference::Trained;
use tmca_trainer::sink::EventWriter;
use tmca_trainer::train::eval::{mean_dice, table};
use tmca_trainer::train::{Resume, RunOptions};

/// Runs the quickstart pipeline.
pub fn run(a: &QuickstartArgs) -> anyhow::Result<()> {
    let env = tmca_worker::rank_env(|k| std::env::var(k).ok())?;
    if env.world > 1 {
        anyhow::bail!(
            "quickstart is the single-process demo, but {} started {} ranks; train data-parallel with `tmca train CONFIG` instead",
            env.launcher.unwrap_or("a launcher"),
            env.world
        );
    }
    let data_dir = a.workdir.join("data");
    let preview_dir = a.workdir.join("previews");
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let mut stores = Vec::new();
    println!("1. datasets ({}x{}, seed {})", a.size, a.size, a.seed);
    for m in Modality::ALL {
        let mut cfg = SynthConfig::new(m);
        cfg.height = a.size;
        cfg.width = a.size;
        cfg.seed = a.seed;
        let (path, fresh) = ensure_synth(&data_dir, &cfg)?;
        let store = Store::open(&path)?;
        let v = validate::validate(&store, &Bar::default())?;
        for p in &v.problems {
            println!("   {p}");
        }
        if !v.is_ok() {
            return Err(ValidationFailed(v.problems.len())).context(path.display().to_string());
        }
        let png = preview_dir.join(format!("{}.png", store.info().name));
        preview::preview(
            &store,
            &spread(&store.split_indices(Split::Train), 8),
            &png,
            &Default::default(),
        )?;
        println!(
            "   {:<22} {} samples {} valid, preview {}",
            store.info().name,
            store.len(),
            if fresh { "generated," } else { "reused," },
            png.display()
        );
        stores.push(Arc::new(store));
    }

    println!("2. tokenizer");
    let reports: Vec<String> = stores
        .iter()
        .flat_map(|s| {
            s.split_indices(Split::Train)
                .into_iter()
                .map(|i| s.reports()[i].clone())
        })
        .collect();
    let text = Config::default_config()?.text;
    let tok = TextTokenizer::learn(&reports, text.vocab_size, text.max_len)?;
    // Training learns the same vocabulary from the same reports and saves it as the run's
    // tokenizer.json.
    println!(
        "   WordPiece vocabulary of {} learned from {} reports (saved with the run in 4)",
        tok.vocab_size(),
        reports.len()
    );

    println!("3. loader (4 datasets mixed, augmentation on, batch 8, 2 workers)");
    let sources = stores
        .iter()
        .map(|s| s.split_indices(Split::Train))
        .collect();
    let sampler = ShardedSampler::new(sources, None, a.seed, true, true, 0, 1)?;
    let cfg = LoaderConfig {
        batch_size: 8,
        drop_last: true,
        workers: 2,
        prefetch: 4,
        input: InputSpec {
            channels: 3,
            height: a.size,
            width: a.size,
            mean: vec![0.5; 3],
            std: vec![0.25; 3],
        },
        augment: Some(AugmentConfig::default()),
        seed: a.seed,
    };
    let loader = Loader::new(stores.clone(), sampler, Arc::new(tok), cfg)?;
    let t = Instant::now();
    let mut n = 0usize;
    let mut flipped = 0usize;
    for b in loader.epoch(0, 0) {
        let b = b?;
        n += b.size;
        flipped += b
            .reports
            .iter()
            .zip(&b.items)
            .filter(|(r, it)| **r != stores[it.source].reports()[it.index])
            .count();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "   one epoch: {n} samples in {secs:.2} s = {:.0} samples/s ({:.1} batches/s); {flipped} reports rewritten by left-right flips",
        n as f64 / secs,
        n as f64 / 8.0 / secs
    );
    println!(
        "4. training the embedded default config (cpu-small TMCA, {}x{}, single process)",
        a.size, a.size
    );
    let mut cfg = Config::default_config()?;
    cfg.run.dir = a.workdir.clone();
    cfg.run.seed = a.seed;
    cfg.data.image_size = a.size;
    if let Some(s) = cfg.data.synth.as_mut() {
        (s.dir, s.size, s.seed) = (data_dir.clone(), a.size, a.seed);
    }
    cfg.resolve()?;
    let tb = cfg.run.dir.join("tensorboard");
    let mut sink =
        EventWriter::create(&tb).with_context(|| format!("creating {}", tb.display()))?;
    let t = Instant::now();
    let summary = tmca_trainer::train::train(
        &cfg,
        &candle_core::Device::Cpu,
        &mut tmca_trainer::sync::SingleProcess,
        &mut sink,
        RunOptions {
            resume: Resume::Latest,
            stop_after: None,
            stop: None,
            progress: &Bar::default(),
        },
    )
    .map_err(|e| match e {
        // A run of an earlier tmca, whose embedded default was another model.
        tmca_trainer::TrainError::OtherModel { .. } => anyhow::Error::from(e).context(format!(
            "{} holds a quickstart run of another model configuration (an earlier tmca's \
             default): delete {} to train anew",
            a.workdir.display(),
            a.workdir.join("checkpoints").display()
        )),
        e => e.into(),
    })?;
    drop(sink);
    println!(
        "   {} steps in {:.0} s (a finished run is reused: delete {} to retrain)",
        summary.steps,
        t.elapsed().as_secs_f64(),
        a.workdir.join("checkpoints").display()
    );

    println!("5. evaluation of the best checkpoint on the held-out test splits");
    let trained = Trained::load(&cfg.run.dir, "best", &candle_core::Device::Cpu)?;
    let evaluated = super::train::eval_run(&trained, &[], &[], Split::Test, Default::default())?;
    let results = evaluated.results;
    print!("{}", table(&results));
    let mut record = super::train::eval_record(&trained, "best", &results, false);
    record.run = Some(cfg.run.dir.display().to_string());
    record.stores = evaluated.stores;
    let name = tmca_trainer::train::results::eval_record_name("best", Split::Test, false);
    tmca_trainer::train::results::write_eval_record(&cfg.run.dir, &name, &record)?;
    println!(
        "   mean per-image Dice over the four datasets: {:.3}",
        mean_dice(&results)
    );
    println!(
        "\ndone. data in {}, previews in {}",
        data_dir.display(),
        preview_dir.display()
    );
    println!(
        "TensorBoard: tensorboard --logdir {}",
        super::util::shell_word(&tb)
    );
    Ok(())
}
