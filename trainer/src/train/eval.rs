//! Evaluation: Dice and IoU per dataset and split, under both protocols, reduced over ranks.

use super::batch::to_inputs;
use crate::metrics::{ImageScores, SegMetrics, SegSummary};
use crate::model::Tmca;
use crate::sync::GradSync;
use crate::Result;
use candle_core::{Device, Tensor};
use std::sync::Arc;
use tmca_data::augment::InputSpec;
use tmca_data::loader::{Batch, Loader, LoaderConfig};
use tmca_data::sampler::ShardedSampler;
use tmca_data::store::Store;
use tmca_data::tokenize::TextTokenizer;
use tmca_data::{Progress, Split};

/// The metrics of one dataset split (in JSON, the summary's fields sit beside the name).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalResult {
    pub dataset: String,
    pub split: Split,
    #[serde(flatten)]
    pub summary: SegSummary,
}

/// What [`evaluate`] calls with each batch, its store, its probabilities (before any
/// `min_area` removal), the enhancement maps A_l (B, 1, h, w) of the direct pass with their
/// level, and each image's scores (after it).
pub type OnBatch<'a> =
    dyn FnMut(&Store, &Batch, &[f32], &[(usize, Tensor)], &[ImageScores]) -> Result<()> + 'a;

/// Options of an evaluation pass.
pub struct EvalSpec<'a> {
    pub input: InputSpec,
    pub batch_size: usize,
    pub workers: usize,
    pub threshold: f32,
    pub tokenizer: Arc<TextTokenizer>,
    pub progress: &'a dyn Progress,
    /// Average each prediction with that of the mirrored image and report ([`super::tta`]).
    pub tta: bool,
    /// Cross-validation: the validation split is this fold ([`tmca_data::folds`]).
    pub folds: Option<tmca_data::folds::Folds>,
    /// Predicted components smaller than this fraction of the image are removed before
    /// scoring ([`crate::postprocess`]; 0 = off).
    pub min_area: f32,
}

/// One model of an ensemble, with the tokenizer of its run (runs learn their own vocabulary).
pub struct Member<'a> {
    pub model: &'a Tmca,
    pub tokenizer: &'a TextTokenizer,
}

/// Evaluates `model` on `split` of every store (this rank's shard, reduced over `sync`).
/// `on_batch` sees each batch with its store and probabilities (for overlays, prediction files
/// and per-image results).
pub fn evaluate(
    model: &Tmca,
    stores: &[Arc<Store>],
    split: Split,
    spec: &EvalSpec<'_>,
    device: &Device,
    sync: &mut dyn GradSync,
    on_batch: &mut OnBatch<'_>,
) -> Result<Vec<EvalResult>> {
    let member = Member {
        model,
        tokenizer: &spec.tokenizer,
    };
    evaluate_ensemble(&[member], stores, split, spec, device, sync, on_batch)
}

/// [`evaluate`] for the mean probability of several models that share the input size and
/// normalisation of `spec` (e.g. the fold models of a cross-validation). The loader tokenizes
/// with `spec.tokenizer`, which must be the first member's; the others encode the reports with
/// their own. `on_batch` gets the first member's enhancement maps.
pub fn evaluate_ensemble(
    members: &[Member<'_>],
    stores: &[Arc<Store>],
    split: Split,
    spec: &EvalSpec<'_>,
    device: &Device,
    sync: &mut dyn GradSync,
    on_batch: &mut OnBatch<'_>,
) -> Result<Vec<EvalResult>> {
    let mut out = Vec::new();
    for store in stores {
        let idx = tmca_data::folds::samples(store, split, spec.folds.as_ref())?;
        let sampler =
            ShardedSampler::new(vec![idx], None, 0, false, false, sync.rank(), sync.world())?;
        let cfg = LoaderConfig {
            batch_size: spec.batch_size,
            drop_last: false,
            workers: spec.workers,
            prefetch: 2,
            input: spec.input.clone(),
            augment: None,
            seed: 0,
        };
        let loader = Loader::new(vec![store.clone()], sampler, spec.tokenizer.clone(), cfg)?;
        spec.progress.start(
            &format!("eval {} {split}", store.info().name),
            loader.batches_per_epoch() as u64,
        );
        let mut m = SegMetrics::default();
        for b in loader.epoch(0, 0) {
            let b = b?;
            let (probs, maps) = ensemble_probabilities(members, &b, spec.tta, device)?;
            let mut probs: Vec<f32> = probs.detach().flatten_all()?.to_vec1()?;
            let raw = (spec.min_area > 0.0).then(|| probs.clone());
            crate::postprocess::clear_small_in_probs(
                &mut probs,
                b.size,
                (b.height, b.width),
                spec.threshold,
                spec.min_area,
            );
            let scores = m.update(&probs, &b.masks, b.size, b.height, b.width, spec.threshold)?;
            on_batch(store, &b, raw.as_deref().unwrap_or(&probs), &maps, &scores)?;
            spec.progress.inc(1);
        }
        spec.progress.finish();
        let mut sums = m.to_vec();
        sync.all_reduce_sum_f64(&mut sums)?;
        let m = SegMetrics::from_vec(&sums)?;
        out.push(EvalResult {
            dataset: store.info().name.clone(),
            split,
            summary: m.summary(),
        });
    }
    Ok(out)
}

/// The members' mean foreground probability (B, 1, H, W) of batch `b` (each with flip TTA
/// when `tta`), and the first member's enhancement maps.
fn ensemble_probabilities(
    members: &[Member<'_>],
    b: &Batch,
    tta: bool,
    device: &Device,
) -> Result<(Tensor, Vec<(usize, Tensor)>)> {
    let mut x = to_inputs(b, device)?;
    let (mut sum, mut first_maps) = (None::<Tensor>, Vec::new());
    for (i, m) in members.iter().enumerate() {
        if i > 0 {
            (x.token_ids, x.attention) =
                super::tta::report_tokens(m.tokenizer, &b.reports, device)?;
        }
        let mirrored = if tta {
            Some(super::tta::mirrored_tokens(
                m.tokenizer,
                &b.reports,
                device,
            )?)
        } else {
            None
        };
        let (p, maps) = super::tta::probabilities_and_maps(m.model, &x, mirrored)?;
        if i == 0 {
            first_maps = maps;
        }
        sum = Some(match sum {
            None => p,
            Some(s) => (s + p)?,
        });
    }
    let sum = sum.ok_or_else(|| crate::TrainError::Internal("an ensemble of no models".into()))?;
    let mean = match members.len() {
        1 => sum,
        n => (sum / n as f64)?,
    };
    Ok((mean, first_maps))
}

/// The mean over datasets of one figure of their summaries.
pub fn mean_over(results: &[EvalResult], f: impl Fn(&crate::metrics::SegSummary) -> f64) -> f64 {
    results.iter().map(|r| f(&r.summary)).sum::<f64>() / results.len().max(1) as f64
}

/// Mean per-image Dice over datasets (the default model-selection criterion).
pub fn mean_dice(results: &[EvalResult]) -> f64 {
    mean_over(results, |s| s.dice_per_image)
}

/// Mean pixel-pooled Dice over datasets (`train.select = "dice_pooled"`).
pub fn mean_dice_pooled(results: &[EvalResult]) -> f64 {
    mean_over(results, |s| s.dice_pooled)
}

/// The value of the model-selection metric `select` (`train.select`) over datasets.
pub fn select_value(select: crate::config::Select, results: &[EvalResult]) -> f64 {
    use crate::config::Select;
    match select {
        Select::DicePerImage => mean_dice(results),
        Select::DicePooled => mean_dice_pooled(results),
        Select::IouPerImage => mean_over(results, |s| s.iou_per_image),
        Select::IouPooled => mean_over(results, |s| s.iou_pooled),
        Select::Hd95 => mean_over(results, |s| s.hd95_per_image),
    }
}

/// A Markdown table of results, labelled with both protocols; boundary distances in pixels.
pub fn table(results: &[EvalResult]) -> String {
    let mut s = String::from(
        "| dataset | split | images | Dice (per-image mean) | IoU (per-image mean) | Dice (pixel-pooled) | IoU (pixel-pooled) | HD95 px | ASSD px | empty masks |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        let m = &r.summary;
        s.push_str(&format!(
            "| {} | {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.2} | {:.2} | {} |\n",
            r.dataset,
            r.split,
            m.images,
            m.dice_per_image,
            m.iou_per_image,
            m.dice_pooled,
            m.iou_pooled,
            m.hd95_per_image,
            m.assd_per_image,
            m.empty_masks
        ));
    }
    s
}
