//! The loader probe: augmented, tokenised, normalised batches per second from a synthetic
//! endoscopy store at the benchmarked size, with the default config's loader settings, and the
//! time per batch of a single worker thread (its CPU cost per batch).

use super::inputs::config;
use super::result::{peak_rss_mb, ProbeResult};
use crate::cli::StepProbeArgs;
use crate::cmd::util::ensure_synth;
use std::sync::Arc;
use std::time::Instant;
use tmca_data::augment::InputSpec;
use tmca_data::loader::{Loader, LoaderConfig};
use tmca_data::sampler::ShardedSampler;
use tmca_data::store::Store;
use tmca_data::synth::SynthConfig;
use tmca_data::tokenize::TextTokenizer;
use tmca_data::Modality;

/// Batches per epoch of the benchmark store.
const BATCHES_PER_EPOCH: usize = 8;

/// Batches/s over whole epochs lasting at least `seconds` together.
fn rate(loader: &Loader, seconds: f64) -> anyhow::Result<f64> {
    let t = Instant::now();
    let (mut n, mut epoch) = (0usize, 0u64);
    while n == 0 || t.elapsed().as_secs_f64() < seconds {
        for b in loader.epoch(epoch, 0) {
            std::hint::black_box(b?);
            n += 1;
        }
        epoch += 1;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Measures the loader at `a.size`.
pub fn loader(a: &StepProbeArgs) -> anyhow::Result<ProbeResult> {
    let cfg = config(a.size, a.batch, "cpu-small")?;
    let mut sc = SynthConfig::new(Modality::Endoscopy);
    (sc.height, sc.width) = (a.size, a.size);
    (sc.n_train, sc.n_val, sc.n_test) = (BATCHES_PER_EPOCH * a.batch, 0, 0);
    let dir = a.workdir.join(format!("step-{}", a.size));
    std::fs::create_dir_all(&dir)?;
    let (path, _) = ensure_synth(&dir, &sc)?;
    let store = Arc::new(Store::open(&path)?);
    let n = store.len();
    let tok = Arc::new(TextTokenizer::learn(
        store.reports(),
        cfg.text.vocab_size,
        cfg.text.max_len,
    )?);
    let c = cfg.model.in_channels;
    let make = |workers: usize| -> anyhow::Result<Loader> {
        let sampler = ShardedSampler::new(vec![(0..n).collect()], None, 0, true, true, 0, 1)?;
        let lcfg = LoaderConfig {
            batch_size: a.batch,
            drop_last: true,
            workers,
            prefetch: cfg.data.prefetch,
            input: InputSpec {
                channels: c,
                height: a.size,
                width: a.size,
                mean: cfg.data.mean[..c].to_vec(),
                std: cfg.data.std[..c].to_vec(),
            },
            augment: Some(cfg.data.augment.clone()),
            seed: cfg.run.seed,
        };
        Ok(Loader::new(
            vec![store.clone()],
            sampler,
            tok.clone(),
            lcfg,
        )?)
    };
    let workers = cfg.data.workers;
    let many = rate(&make(workers)?, a.loader_seconds)?;
    let one = rate(&make(1)?, a.loader_seconds)?;
    Ok(ProbeResult {
        framework: "tmca".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        mode: "loader".into(),
        size: a.size,
        batch: a.batch,
        threads: workers,
        peak_rss_mb: peak_rss_mb(),
        batches_per_s: Some(many),
        workers: Some(workers),
        batch_ms_one_worker: Some(1e3 / one),
        ..Default::default()
    })
}
