//! Rank 0's record of a run's start: `config.toml` (replaced whole), a line in
//! `sessions.jsonl`, the config as TensorBoard text and HParams, `validation.jsonl` opened (cut back to the resumed step), reports the text
//! encoder reads only in part, the model's size.

use super::start::Session;
use super::{results, Resume};
use crate::config::Config;
use crate::sink::MetricSink;
use crate::Result;

/// Writes the start of a run (of `world` ranks) and opens its validation log.
pub(super) fn record_start(
    cfg: &Config,
    s: &Session,
    resume: &Resume,
    world: usize,
    sink: &mut dyn MetricSink,
) -> Result<results::ValidationLog> {
    let step = s.manifest.step;
    let text = cfg.to_toml()?;
    let p = cfg.run.dir.join("config.toml");
    let changed = if step > 0 {
        super::sessions::changed_settings(&p, cfg)
    } else {
        Default::default()
    };
    if !changed.is_empty() {
        let said: Vec<String> = changed
            .iter()
            .map(|(k, [was, now])| format!("{k} {was} -> {now}"))
            .collect();
        tracing::info!("resuming with changed settings: {}", said.join(", "));
    }
    if step == 0 && matches!(resume, Resume::No) {
        // A fresh start: an earlier history in this directory (a run that never reached a
        // checkpoint) is not this run's, as validation.jsonl starts over too.
        super::sessions::clear(&cfg.run.dir)?;
    }
    super::sessions::append(
        &cfg.run.dir,
        &super::sessions::SessionRecord {
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            from_step: step,
            provenance: s.manifest.provenance.clone(),
            changed,
        },
    )?;
    if step > 0 || matches!(resume, Resume::Latest) {
        // Also at step 0: a run restarted before its first checkpoint redoes what an earlier
        // session recorded (nothing to drop in a fresh run).
        sink.resumed_after(step);
    }
    // Replaced whole: a run stopped mid-write would leave a truncated config, and eval,
    // predict and `tmca runs` read it.
    results::write_atomic(&p, text.as_bytes())?;
    sink.text("config", &format!("```toml\n{text}\n```"), step);
    // Every field but the run's own folder, for the HParams dashboard; the folder names it.
    // Plus the samples per step over all ranks (`tmca runs`' pseudo-field): 1 × 8 and 2 × 4
    // train alike, which `data.batch_size` alone does not show.
    let mut hparams: std::collections::BTreeMap<String, crate::sink::HParam> = cfg
        .fields()
        .iter()
        .filter(|(k, _)| k.as_str() != "run.dir")
        .map(|(k, v)| (k.clone(), crate::sink::HParam::from_toml(v)))
        .collect();
    let global_batch = cfg.data.batch_size * cfg.optim.accumulate * world;
    hparams.insert(
        "train.global_batch".into(),
        crate::sink::HParam::Number(global_batch as f64),
    );
    sink.hparams(&hparams, &cfg.run.dir.display().to_string());
    let vlog = results::ValidationLog::open(&cfg.run.dir, step)?;
    super::setup::warn_truncated_reports(cfg, &s.stores, &s.tokenizer)?;
    super::setup::warn_resampled(&s.stores, &cfg.input_spec(), "validation scores");
    let params = &s.params;
    let frozen: usize = params
        .vars()
        .iter()
        .filter(|(n, _)| params.is_frozen(n))
        .map(|(_, v)| v.elem_count())
        .sum();
    tracing::info!(
        "model: {} parameters in {} tensors ({frozen} frozen); {} steps of {} images",
        params.numel(),
        params.len(),
        s.total,
        global_batch
    );
    // Each rank drops its last partial batch: on a small training set that is a share worth
    // knowing (and another rank count drops another number).
    let share = s.loader.sampler().len_this_rank();
    let left = share.saturating_sub(s.per_epoch * cfg.data.batch_size);
    if left > 0 {
        tracing::info!(
            "each epoch leaves out {left} of the {share} training samples of each rank (the \
             last, partial batch of its shuffled share; another sample each epoch)"
        );
    }
    Ok(vlog)
}
