//! `tmca bench data`: random sample reads/s from a store and loader batches/s at training size,
//! against the peers' way of reading (one PNG pair per sample), measured in the same run.

use super::util::{ensure_synth, machine, replace_section, today};
use crate::cli::BenchDataArgs;
use anyhow::Context;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tmca_data::augment::{AugmentConfig, InputSpec};
use tmca_data::loader::{Loader, LoaderConfig};
use tmca_data::sampler::ShardedSampler;
use tmca_data::store::Store;
use tmca_data::synth::SynthConfig;
use tmca_data::tokenize::TextTokenizer;
use tmca_data::Modality;

/// Calls `f` repeatedly for at least `min` (and at least 8 times); returns calls per second.
fn rate(min: Duration, mut f: impl FnMut() -> anyhow::Result<usize>) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut n = 0usize;
    while n < 8 || t.elapsed() < min {
        n += f()?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Runs the data benchmark and rewrites its section of the output file.
pub fn data(a: &BenchDataArgs) -> anyhow::Result<()> {
    let mut cfg = SynthConfig::new(Modality::Endoscopy);
    cfg.height = a.size;
    cfg.width = a.size;
    cfg.n_train = a.samples;
    cfg.n_val = 0;
    cfg.n_test = 0;
    std::fs::create_dir_all(&a.workdir)?;
    let (path, _) = ensure_synth(&a.workdir, &cfg)?;
    let store = Arc::new(Store::open(&path)?);
    let n = store.len();

    // Reference: the peers' layout, one PNG image + one PNG mask per sample.
    let png_dir = a.workdir.join(format!("png-{}", a.size));
    if !png_dir.join(format!("{}_mask.png", n - 1)).exists() {
        std::fs::create_dir_all(&png_dir)?;
        for i in 0..n {
            let img = store.image(i)?;
            let plane = a.size * a.size;
            let rgb: Vec<u8> = (0..plane)
                .flat_map(|p| [img[p], img[plane + p], img[2 * plane + p]])
                .collect();
            image::RgbImage::from_raw(a.size as u32, a.size as u32, rgb)
                .context("png size")?
                .save(png_dir.join(format!("{i}.png")))?;
            let m: Vec<u8> = store.mask(i)?.iter().map(|&v| v * 255).collect();
            image::GrayImage::from_raw(a.size as u32, a.size as u32, m)
                .context("png size")?
                .save(png_dir.join(format!("{i}_mask.png")))?;
        }
    }
    let min = Duration::from_secs(3);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let store_rate = rate(min, || {
        let i = rng.random_range(0..n);
        std::hint::black_box((store.image(i)?, store.mask(i)?));
        Ok(1)
    })?;
    let png_rate = rate(min, || {
        let i = rng.random_range(0..n);
        let im = image::open(png_dir.join(format!("{i}.png")))?;
        let m = image::open(png_dir.join(format!("{i}_mask.png")))?;
        std::hint::black_box((im, m));
        Ok(1)
    })?;

    // Tokenised as the default config's training does.
    let text = tmca_trainer::config::Config::default_config()?.text;
    let tok = Arc::new(TextTokenizer::learn(
        store.reports(),
        text.vocab_size,
        text.max_len,
    )?);
    let sampler = ShardedSampler::new(vec![(0..n).collect()], None, 0, true, true, 0, 1)?;
    let lcfg = LoaderConfig {
        batch_size: a.batch,
        drop_last: true,
        workers: a.workers,
        prefetch: 2 * a.workers.max(1),
        input: InputSpec {
            channels: 3,
            height: a.size,
            width: a.size,
            mean: vec![0.5; 3],
            std: vec![0.25; 3],
        },
        augment: Some(AugmentConfig::default()),
        seed: 0,
    };
    let loader = Loader::new(vec![store.clone()], sampler, tok, lcfg)?;
    let mut epoch = 0;
    let batch_rate = rate(min, || {
        epoch += 1;
        let mut k = 0;
        for b in loader.epoch(epoch, 0) {
            std::hint::black_box(b?);
            k += 1;
        }
        Ok(k)
    })?;

    let body = format!(
        "## Data loader\n\n\
         Measured {date} on {machine} by `tmca bench data` (synthetic endoscopy store, {n} samples of \
         3x{s}x{s}, zstd, one sample a subchunk; loader: batch {b}, {w} worker threads, augmentation on).\n\n\
         | what | rate | vs reference |\n|---|---|---|\n\
         | reference: random sample read from PNG files (image + mask, the peers' layout) | {png:.0} samples/s | 1.00x |\n\
         | random sample read from the tmca store (image + mask) | {st:.0} samples/s | {r1:.2}x |\n\
         | loader: augmented, tokenised, normalised batches | {br:.1} batches/s = {bs:.0} samples/s | {r2:.2}x |\n",
        date = today(),
        machine = machine(),
        s = a.size,
        b = a.batch,
        w = a.workers,
        png = png_rate,
        st = store_rate,
        r1 = store_rate / png_rate,
        br = batch_rate,
        bs = batch_rate * a.batch as f64,
        r2 = batch_rate * a.batch as f64 / png_rate,
    );
    replace_section(&a.output, "data-loader", &body)?;
    print!("{body}");
    println!("\n(written to {})", a.output.display());
    Ok(())
}
