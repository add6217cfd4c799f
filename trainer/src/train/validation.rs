//! Validation during training: the metrics of every store's val split (sharded over ranks),
//! TensorBoard's scalars and pictures, `validation.jsonl`, the best checkpoint and patience.

use super::eval::{evaluate, select_value, EvalResult, EvalSpec};
use super::{overlay, results, TrainSummary};
use crate::checkpoint::Manifest;
use crate::config::Config;
use crate::config::Select;
use crate::sink::MetricSink;
use crate::sync::GradSync;
use crate::Result;
use candle_core::Device;
use std::path::PathBuf;
use std::sync::Arc;
use tmca_data::Split;

/// Appends a validation to `<run>/validation.jsonl` (rank 0 holds the log).
pub(super) fn log_validation(
    log: Option<&results::ValidationLog>,
    results: &[EvalResult],
    m: &Manifest,
    threshold: f32,
) -> Result<()> {
    if let Some(log) = log {
        let mut r = results::ResultRecord::new(m.step, results);
        r.epoch = Some(m.epoch);
        r.threshold = Some(threshold);
        log.append(&r)?;
    }
    Ok(())
}

/// Writes the `best` checkpoint of a manifest.
pub(super) type SaveBest<'a> = dyn Fn(&Manifest) -> Result<PathBuf> + 'a;

/// Logs a validation and keeps the best checkpoint (rank 0: `save_best`), and the patience
/// count.
pub(super) fn record_validation(
    results: Vec<EvalResult>,
    m: &mut Manifest,
    summary: &mut TrainSummary,
    select: Select,
    save_best: Option<&SaveBest<'_>>,
) -> Result<()> {
    let value = select_value(select, &results);
    if save_best.is_some() {
        tracing::info!(
            "epoch {} step {}: val {} (mean over datasets) {value:.4}",
            m.epoch,
            m.step,
            select.label()
        );
    }
    summary.last_val = results;
    summary.last_val_step = Some(m.step);
    if select.improves(value, m.best_val) {
        m.best_val = Some(value);
        m.stale_validations = 0;
        if let Some(save) = save_best {
            summary.best_checkpoint = Some(save(m)?);
        }
    } else {
        m.stale_validations += 1;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(super) fn validate(
    model: &crate::model::Tmca,
    stores: &[Arc<tmca_data::store::Store>],
    spec: &EvalSpec<'_>,
    cfg: &Config,
    device: &Device,
    sync: &mut dyn GradSync,
    sink: &mut dyn MetricSink,
    step: u64,
) -> Result<Vec<EvalResult>> {
    let mut shown = 0usize;
    // What each overlay shows: its dataset, sample and the report the model read.
    let mut captions: Vec<String> = Vec::new();
    let want = if sync.rank() == 0 {
        cfg.train.preview_images
    } else {
        0
    };
    let (mean, std) = (spec.input.mean.clone(), spec.input.std.clone());
    let results = evaluate(
        model,
        stores,
        Split::Val,
        spec,
        device,
        sync,
        &mut |store, b, probs, maps, _| {
            let n = want.saturating_sub(shown).min(b.size);
            for row in 0..n {
                let index = b.items[row].index;
                captions.push(format!(
                    "| {} | {} | {index} ({}) | {} |",
                    shown + row,
                    store.info().name,
                    store.names().get(index).map_or("", String::as_str),
                    b.reports[row].replace('|', "\\|")
                ));
                let rgb = overlay::overlay(b, probs, row, &mean, &std, cfg.train.threshold);
                sink.image(
                    &format!("val/overlay_{}", shown + row),
                    &rgb,
                    b.height as u32,
                    b.width as u32,
                    step,
                );
                if !maps.is_empty() {
                    let levels = maps
                        .iter()
                        .map(|(level, a)| {
                            let (_, _, h, w) = a.dims4()?;
                            Ok((*level, a.get(row)?.flatten_all()?.to_vec1::<f32>()?, (h, w)))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let (strip, width) = overlay::map_strip(b, row, &mean, &std, &levels);
                    sink.image(
                        &format!("val/lte_{}", shown + row),
                        &strip,
                        b.height as u32,
                        width as u32,
                        step,
                    );
                }
            }
            shown += n;
            Ok(())
        },
    )?;
    if !captions.is_empty() {
        sink.text(
            "val/overlay_reports",
            &format!(
                "| overlay and lte image | dataset | sample | report |\n|---|---|---|---|\n{}",
                captions.join("\n")
            ),
            step,
        );
    }
    record_scalars(sink, "val", &results, step);
    Ok(results)
}

/// An evaluation's scalars under `prefix` (`val` during training, `test…` from `tmca eval`):
/// each dataset's metrics as `<prefix>/<dataset>/<metric>`, and every metric `train.select`
/// can choose by, averaged over the datasets, as `<prefix>/mean_<its name>`.
pub fn record_scalars(sink: &mut dyn MetricSink, prefix: &str, results: &[EvalResult], step: u64) {
    for r in results {
        let s = &r.summary;
        for (k, v) in [
            ("dice_per_image", s.dice_per_image),
            ("iou_per_image", s.iou_per_image),
            ("dice_pooled", s.dice_pooled),
            ("iou_pooled", s.iou_pooled),
            ("hd95_per_image", s.hd95_per_image),
            ("assd_per_image", s.assd_per_image),
        ] {
            sink.scalar(&format!("{prefix}/{}/{k}", r.dataset), v, step);
        }
    }
    for select in Select::ALL {
        let name = format!("{prefix}/mean_{}", select.name());
        sink.scalar(&name, select_value(select, results), step);
    }
}
