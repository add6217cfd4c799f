//! The benchmarked model and its inputs: the embedded default config (the `cpu-small` preset,
//! scratch text encoder, every TMCA part on) at a given size, and a synthetic batch of the
//! right shapes (no dataset needed).

use candle_core::{DType, Device};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use tmca_data::loader::Batch;
use tmca_trainer::config::Config;
use tmca_trainer::model::{BertConfig, Tmca};
use tmca_trainer::params::ParamStore;

/// The embedded default config at `size`² with batches of `batch` and the model `preset`,
/// resolved.
pub fn config(size: usize, batch: usize, preset: &str) -> anyhow::Result<Config> {
    let mut cfg = Config::default_config()?;
    cfg.data.image_size = size;
    cfg.data.batch_size = batch;
    if cfg.model.preset != preset {
        // The preset's own sizes, not the default's resolved ones.
        cfg.model = tmca_trainer::model::ModelConfig {
            preset: preset.into(),
            ..tmca_trainer::model::ModelConfig::default()
        };
        cfg.text.hidden = 0;
        cfg.text.layers = 0;
        cfg.text.heads = 0;
        cfg.text.intermediate = 0;
    }
    cfg.resolve()?;
    Ok(cfg)
}

/// The vocabulary size the benchmarked text encoder is built for.
pub fn vocab_size(cfg: &Config) -> usize {
    cfg.text.vocab_size
}

/// The model of `params` rebuilt on detached copies of its parameters: its forward builds no
/// autograd graph (PyTorch's `no_grad`).
pub fn frozen(cfg: &Config, params: &ParamStore, device: &Device) -> anyhow::Result<Tmca> {
    let tensors: HashMap<_, _> = params
        .vars()
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().detach()))
        .collect();
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, device);
    let bert = BertConfig::scratch(&cfg.text, vocab_size(cfg));
    Ok(Tmca::new(&cfg.model, &bert, vb.clone(), vb.pp("text"))?)
}

/// A batch of `cfg`'s geometry: normal images, rectangular masks (sample 0 empty), reports of
/// 8 to `max_len` random tokens, samples 1 and 2 with the same report.
pub fn synthetic_batch(cfg: &Config, seed: u64) -> Batch {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (b, c, s, l) = (
        cfg.data.batch_size,
        cfg.model.in_channels,
        cfg.data.image_size,
        cfg.text.max_len,
    );
    let images = (0..b * c * s * s)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    let mut masks = vec![0f32; b * s * s];
    for m in masks.chunks_exact_mut(s * s).skip(1) {
        let (h, w) = (
            rng.random_range(s / 4..=s / 2),
            rng.random_range(s / 4..=s / 2),
        );
        let (y0, x0) = (rng.random_range(0..=s - h), rng.random_range(0..=s - w));
        for y in y0..y0 + h {
            m[y * s + x0..y * s + x0 + w].fill(1.0);
        }
    }
    let vocab = vocab_size(cfg) as u32;
    let (mut token_ids, mut attention) = (vec![0u32; b * l], vec![0u32; b * l]);
    for i in 0..b {
        let n = rng.random_range(l.min(8)..=l);
        for j in 0..n {
            token_ids[i * l + j] = rng.random_range(1..vocab);
            attention[i * l + j] = 1;
        }
    }
    let report_groups = (0..b as u64).map(|i| if i == 2 { 1 } else { i }).collect();
    Batch {
        size: b,
        channels: c,
        height: s,
        width: s,
        max_len: l,
        images,
        masks,
        token_ids,
        attention,
        report_groups,
        reports: vec![],
        items: vec![],
    }
}
