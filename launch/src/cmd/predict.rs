//! `tmca predict`: masks and overlays from images and reports — one image, a store split or a
//! table of new images (no masks needed) — in batches, with a progress bar and, in batch mode,
//! a `predictions.csv` summary.

use crate::cli::{PredictArgs, UsageError};
use crate::progress::Bar;
use anyhow::Context;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use tmca_data::augment::Planar;
use tmca_data::convert::table::{csv_field, read_table};
use tmca_data::store::Store;
use tmca_data::{DataError, Progress};
use tmca_trainer::inference::{Ensemble, Prediction};

/// One image to predict, decoded.
struct Sample {
    name: String,
    source: String,
    data: Vec<u8>,
    channels: usize,
    height: usize,
    width: usize,
    report: String,
    /// Read from an image file (not from a store).
    file: bool,
}

/// What a new image is prepared as: channels (as the training images were stored:
/// [`tmca_trainer::inference::Trained::prepared_channels`]) and the model's side.
type InputSize = (usize, usize);

fn input_size(models: &Ensemble) -> InputSize {
    let t = models.first();
    (t.prepared_channels(), t.cfg.data.image_size)
}

impl Sample {
    fn planar(&self) -> Planar<'_> {
        Planar {
            data: &self.data,
            channels: self.channels,
            height: self.height,
            width: self.width,
        }
    }

    /// What the model is given: a file's picture as an import at the model's size would have
    /// stored it (anti-aliased, gray as imported when the training stores were gray: prepared
    /// as the training images were); a store's sample as stored (resampled to the model's size
    /// as in evaluation).
    fn model_input(&self, (channels, side): InputSize) -> anyhow::Result<Option<Vec<u8>>> {
        if !self.file {
            return Ok(None);
        }
        let own = (self.channels, self.height, self.width);
        let data = tmca_data::imageops::planar_as_imported(&self.data, own, channels, side, side)
            .with_context(|| format!("preparing {}", self.source))?;
        Ok(Some(data))
    }

    /// [`Self::planar`], or `input` of [`Self::model_input`] when there is one.
    fn input_planar<'a>(&'a self, input: &'a Option<Vec<u8>>, size: InputSize) -> Planar<'a> {
        match input {
            Some(data) => Planar {
                data,
                channels: size.0,
                height: size.1,
                width: size.1,
            },
            None => self.planar(),
        }
    }

    /// An image file, as RGB at its own size (a 16-bit one scaled from `bits`, the depth the
    /// training images were imported at, else its own).
    fn from_file(path: &Path, report: &str, bits: Option<u32>) -> anyhow::Result<Self> {
        let (w, h) = tmca_data::imageops::image_size(path)?;
        let (w, h) = (w as usize, h as usize);
        Ok(Self {
            name: path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("image")
                .to_string(),
            source: path.display().to_string(),
            data: tmca_data::imageops::load_image_at(path, bits, 3, h, w)?,
            channels: 3,
            height: h,
            width: w,
            report: report.to_string(),
            file: true,
        })
    }
}

/// Writes `<stem>_mask.png` (0/255 at the image's size), `<stem>_overlay.png` and, with
/// `extras.probs`, `<stem>_prob.png` (the probability × 255) and `<stem>_prob.npy` (float32),
/// with `extras.maps` `<stem>_lte<L>.png` ([`super::heatmap`]); returns the number of
/// foreground pixels.
fn write_outputs(
    out: &Path,
    stem: &str,
    img: Planar<'_>,
    pred: &Prediction,
    model_hw: (usize, usize),
    threshold: f32,
    extras: Extras,
) -> anyhow::Result<usize> {
    if extras.maps {
        super::heatmap::write_maps(out, stem, img, &pred.maps)?;
    }
    let (h, w) = (img.height, img.width);
    let plane = h * w;
    let probs = tmca_trainer::viz::resize_bilinear(&pred.probs, model_hw, (h, w));
    let mut fg: Vec<bool> = probs.iter().map(|&p| p > threshold).collect();
    let keep = tmca_trainer::postprocess::min_pixels(extras.min_area, h, w);
    tmca_trainer::postprocess::remove_small_components(&mut fg, h, w, keep);
    let mut mask = vec![0u8; plane];
    let mut overlay = Vec::with_capacity(plane * 3);
    let mut on_pixels = 0;
    for y in 0..h {
        for x in 0..w {
            let on = fg[y * w + x];
            on_pixels += on as usize;
            mask[y * w + x] = if on { 255 } else { 0 };
            let px = |c: usize| img.data[c.min(img.channels - 1) * plane + y * w + x] as f32;
            let (r, g, b) = (px(0), px(1), px(2));
            let (r, g, b) = if on {
                (0.5 * r + 127.5, 0.5 * g, 0.5 * b)
            } else {
                (r, g, b)
            };
            overlay.extend([r as u8, g as u8, b as u8]);
        }
    }
    let mp = out.join(format!("{stem}_mask.png"));
    image::GrayImage::from_raw(w as u32, h as u32, mask)
        .context("mask size")?
        .save(&mp)
        .with_context(|| format!("writing {}", mp.display()))?;
    let op = out.join(format!("{stem}_overlay.png"));
    image::RgbImage::from_raw(w as u32, h as u32, overlay)
        .context("overlay size")?
        .save(&op)
        .with_context(|| format!("writing {}", op.display()))?;
    if extras.probs {
        let pp = out.join(format!("{stem}_prob.png"));
        let bytes = probs
            .iter()
            .map(|p| (p.clamp(0.0, 1.0) * 255.0).round() as u8);
        image::GrayImage::from_raw(w as u32, h as u32, bytes.collect())
            .context("probability map size")?
            .save(&pp)
            .with_context(|| format!("writing {}", pp.display()))?;
        super::npy::write_f32(&out.join(format!("{stem}_prob.npy")), &[h, w], &probs)?;
    }
    Ok(on_pixels)
}

/// What is written and computed besides masks and overlays.
#[derive(Debug, Clone, Copy)]
struct Extras {
    probs: bool,
    maps: bool,
    tta: bool,
    /// Components smaller than this fraction of the image are removed from the mask.
    min_area: f32,
}

impl Extras {
    fn of(a: &PredictArgs) -> Self {
        Self {
            probs: a.probs,
            maps: a.maps,
            tta: a.tta,
            min_area: a.min_area.unwrap_or(0.0),
        }
    }
}

/// Output stems that do not overwrite each other: a repeated one gets `_<index>` appended.
#[derive(Default)]
struct Stems {
    seen: HashSet<String>,
    renamed: usize,
}

impl Stems {
    fn unique(&mut self, name: &str, index: usize) -> String {
        let stem = Path::new(name)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(name)
            .to_string();
        let stem = if self.seen.contains(&stem) {
            self.renamed += 1;
            format!("{stem}_{index}")
        } else {
            stem
        };
        self.seen.insert(stem.clone());
        stem
    }
}

/// The samples of `split` of `store`: for one of a cross-validated run's own stores (by name)
/// its fold, else the store's own split.
fn split_of_run(
    models: &Ensemble,
    store: &Store,
    split: tmca_data::Split,
) -> anyhow::Result<Vec<usize>> {
    let t = models.first();
    let name = &store.info().name;
    let own = tmca_trainer::train::setup::store_names(&t.cfg).contains(name);
    let folds = t.cfg.data.cv().filter(|_| own);
    if models.members().len() > 1 && folds.is_some() && split != tmca_data::Split::Test {
        anyhow::bail!(UsageError(format!(
            "{name}: an ensemble of cross-validation runs predicts --split test only (each \
             fold's validation images are another fold's training images)"
        )));
    }
    if let (Some(f), false) = (&folds, split == tmca_data::Split::Test) {
        eprintln!(
            "{name}: fold {} of {} (the run's cross-validation)",
            f.fold, f.folds
        );
    }
    Ok(tmca_data::folds::samples(store, split, folds.as_ref())?)
}

/// The samples of batch mode: how many, and how to fetch sample `i`.
type Samples<'a> = (usize, Box<dyn Fn(usize) -> anyhow::Result<Sample> + 'a>);

fn store_samples<'a>(store: &'a Store, path: &'a Path, idx: &'a [usize]) -> Samples<'a> {
    let info = store.info().clone();
    let fetch = move |k: usize| -> anyhow::Result<Sample> {
        let i = idx[k];
        Ok(Sample {
            name: store.names()[i].clone(),
            source: format!("{} sample {i}", path.display()),
            data: store.image(i)?,
            channels: info.channels,
            height: info.height,
            width: info.width,
            report: store.reports()[i].clone(),
            file: false,
        })
    };
    (idx.len(), Box::new(fetch))
}

/// The rows of a table with their image paths. Every image is found (as the importers match
/// names) and its header read before anything is written; the problems name their rows.
fn table_rows(table: &Path, images: Option<&Path>) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let t = read_table(table)?;
    if t.rows.is_empty() {
        anyhow::bail!(DataError::bad(table, "the table has no rows"));
    }
    let dir = images
        .map(Path::to_path_buf)
        .unwrap_or_else(|| table.parent().unwrap_or(Path::new(".")).to_path_buf());
    let lookup = tmca_data::convert::ImageLookup::new(&dir).map_err(|e| match images {
        Some(_) => anyhow::Error::new(UsageError(format!("--images: {e}"))),
        None => e.into(),
    })?;
    let mut problems = Vec::new();
    let mut rows = Vec::new();
    for r in &t.rows {
        let found = lookup
            .find(&r.image, table)
            .and_then(|p| tmca_data::imageops::image_size(&p).map(|_| p));
        match found {
            Ok(p) => rows.push((p, r.report.clone())),
            Err(e) => problems.push(format!("{}: {e}", t.at(r.row))),
        }
    }
    if !problems.is_empty() {
        let more = if problems.len() > 3 {
            format!(" and {} more", problems.len() - 3)
        } else {
            String::new()
        };
        anyhow::bail!(DataError::bad(
            table,
            format!(
                "{} image(s) not found or not readable (relative to {}; --images sets the folder): {}{more}",
                problems.len(),
                dir.display(),
                problems[..problems.len().min(3)].join("; ")
            )
        ));
    }
    Ok(rows)
}

/// Predicts every sample in batches of `batch`, writing masks, overlays and
/// `predictions.csv`: as `predictions.csv.partial` (flushed after every batch, so an error or
/// a kill keeps what was written, under a name that says it is incomplete) until the last
/// image, and an earlier run's `predictions.csv` removed first (it would describe masks this
/// run is replacing).
fn predict_all(
    models: &Ensemble,
    out: &Path,
    (n, fetch): Samples<'_>,
    batch: usize,
    extras: Extras,
) -> anyhow::Result<usize> {
    let t = models.first();
    let hw = (t.cfg.data.image_size, t.cfg.data.image_size);
    let thr = t.cfg.train.threshold;
    let (csv_path, partial) = (
        out.join("predictions.csv"),
        out.join("predictions.csv.partial"),
    );
    if csv_path.exists() {
        std::fs::remove_file(&csv_path)
            .with_context(|| format!("replacing the earlier {}", csv_path.display()))?;
    }
    let mut csv = std::io::BufWriter::new(
        std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?,
    );
    writeln!(
        csv,
        "name,source,report,foreground_pixels,foreground_fraction"
    )?;
    let bar = Bar::default();
    bar.start("predict", n as u64);
    let mut stems = Stems::default();
    for start in (0..n).step_by(batch) {
        let samples = (start..(start + batch).min(n))
            .map(&fetch)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let size = input_size(models);
        let inputs = samples
            .iter()
            .map(|s| s.model_input(size))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let items: Vec<(Planar<'_>, &str)> = samples
            .iter()
            .zip(&inputs)
            .map(|(s, input)| (s.input_planar(input, size), s.report.as_str()))
            .collect();
        let preds = models.predict(&items, extras.tta)?;
        for (k, (s, p)) in samples.iter().zip(&preds).enumerate() {
            let stem = stems.unique(&s.name, start + k);
            let on = write_outputs(out, &stem, s.planar(), p, hw, thr, extras)?;
            let frac = on as f64 / (s.height * s.width).max(1) as f64;
            writeln!(
                csv,
                "{},{},{},{on},{frac:.6}",
                csv_field(&stem),
                csv_field(&s.source),
                csv_field(&s.report)
            )?;
        }
        csv.flush()
            .with_context(|| format!("writing {}", partial.display()))?;
        bar.inc(samples.len() as u64);
    }
    drop(csv);
    std::fs::rename(&partial, &csv_path)
        .with_context(|| format!("renaming {} to predictions.csv", partial.display()))?;
    bar.finish();
    if stems.renamed > 0 {
        println!(
            "{} repeated names got _<row> appended (see predictions.csv)",
            stems.renamed
        );
    }
    Ok(n)
}

/// Runs prediction for one image, a store split or a table.
pub fn run(a: &PredictArgs) -> anyhow::Result<()> {
    if a.batch == Some(0) {
        anyhow::bail!(UsageError("--batch must be at least 1".into()));
    }
    // Everything the command reads is checked before the output folder is made.
    let device = tmca_worker::bind_device("auto", 0)?;
    let threshold = super::ensemble::chosen_on_val(&a.runs, &a.checkpoint, a.threshold, a.tta)?;
    let models = super::ensemble::load(&a.runs, &a.checkpoint, &device, threshold)?;
    let bits = models.first().imported_bit_depth();
    let single = match (&a.image, &a.report) {
        (Some(path), Some(report)) => Some((path, report, Sample::from_file(path, report, bits)?)),
        _ => None,
    };
    let rows = match &a.table {
        Some(table) => Some(table_rows(table, a.images.as_deref())?),
        None => None,
    };
    let store = match (&single, &rows, &a.store) {
        (None, None, Some(p)) => Some((p, Store::open(p)?)),
        (None, None, None) => anyhow::bail!(UsageError(
            "give --image with --report, --store or --table".into()
        )),
        _ => None,
    };
    let t = models.first();
    let hw = (t.cfg.data.image_size, t.cfg.data.image_size);
    let batch = a.batch.unwrap_or(t.cfg.data.batch_size).max(1);
    let store = match store {
        Some((path, store)) => {
            let idx = split_of_run(&models, &store, a.split)?;
            Some((path, store, idx))
        }
        None => None,
    };
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("creating {}", a.output.display()))?;
    if let Some((path, report, s)) = single {
        let size = input_size(&models);
        let input = s.model_input(size)?;
        let pred = models
            .predict(&[(s.input_planar(&input, size), report.as_str())], a.tta)?
            .pop()
            .context("no prediction")?;
        let stem = Stems::default().unique(&s.name, 0);
        write_outputs(
            &a.output,
            &stem,
            s.planar(),
            &pred,
            hw,
            t.cfg.train.threshold,
            Extras::of(a),
        )?;
        println!(
            "{}: mask and overlay in {}",
            path.display(),
            a.output.display()
        );
        return Ok(());
    }
    if let (Some(rows), Some(table)) = (&rows, &a.table) {
        let fetch = |k: usize| Sample::from_file(&rows[k].0, &rows[k].1, bits);
        let samples: Samples<'_> = (rows.len(), Box::new(fetch));
        let n = predict_all(&models, &a.output, samples, batch, Extras::of(a))?;
        println!(
            "{n} images of {}: masks, overlays and predictions.csv in {}",
            table.display(),
            a.output.display()
        );
        return Ok(());
    }
    let Some((store_path, store, idx)) = store else {
        return Ok(()); // one of the three inputs above was given
    };
    let n = predict_all(
        &models,
        &a.output,
        store_samples(&store, store_path, &idx),
        batch,
        Extras::of(a),
    )?;
    println!(
        "{n} samples of {} ({}): masks, overlays and predictions.csv in {}",
        store_path.display(),
        a.split,
        a.output.display()
    );
    Ok(())
}
