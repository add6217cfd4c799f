//! The training loop: AdamW with parameter groups, warm-up + cosine schedule, gradient
//! clipping and accumulation, periodic validation, best checkpoint by `train.select`, early stopping,
//! exact resume. Rank 0 writes metrics and checkpoints.

pub mod batch;
pub mod eval;
mod fresh_dir;
mod lock;
mod overlay;
pub mod per_image;
pub mod ranks;
mod record;
pub mod results;
mod resume;
pub mod sessions;
pub use resume::vocabulary_hash;
pub mod setup;
mod start;
mod step;
mod step_log;
pub mod tta;
mod validation;
pub use validation::record_scalars;

use crate::checkpoint::{Checkpointer, Manifest};
use crate::config::Config;
use crate::optim::{AdamW, Ema};
use crate::sink::MetricSink;
use crate::sync::GradSync;
use crate::{Result, TrainError};
use candle_core::Device;
use eval::{EvalResult, EvalSpec};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;
use tmca_data::Progress;
use validation::{log_validation, record_validation, validate};

/// How a run starts.
#[derive(Debug, Clone, Default)]
pub enum Resume {
    /// Fresh run (the run directory must not hold checkpoints).
    #[default]
    No,
    /// Continue from the newest valid checkpoint of the run directory (fresh if none).
    Latest,
    /// Continue from this checkpoint directory.
    From(PathBuf),
}

/// Options that are not part of the config.
pub struct RunOptions<'a> {
    pub resume: Resume,
    /// Stop (with a checkpoint) after this many optimiser steps in total, as an interruption
    /// would; the schedule still follows the config.
    pub stop_after: Option<u64>,
    /// Set (by a signal handler, say) to stop after the current optimiser step with a
    /// checkpoint. Ranks agree: when it is set on any rank, every rank stops at the same step.
    pub stop: Option<&'a AtomicBool>,
    pub progress: &'a dyn Progress,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub steps: u64,
    /// The step this session started from (0 for a new run; a resume's checkpoint).
    pub started_at: u64,
    /// Best validation value of `select` (`train.select`) over the run.
    pub best_val: Option<f64>,
    pub select: crate::config::Select,
    pub last_val: Vec<EvalResult>,
    /// The step `last_val` was measured at.
    pub last_val_step: Option<u64>,
    pub last_checkpoint: Option<PathBuf>,
    pub best_checkpoint: Option<PathBuf>,
    pub stopped_early: bool,
    /// Stopped by [`RunOptions::stop`] before the end (the last checkpoint is where it stopped).
    pub interrupted: bool,
}

/// Trains per `cfg` on `device`, synchronising over `sync`, logging to `sink` (rank 0).
pub fn train(
    cfg: &Config,
    device: &Device,
    sync: &mut dyn GradSync,
    sink: &mut dyn MetricSink,
    opts: RunOptions<'_>,
) -> Result<TrainSummary> {
    let rank0 = sync.rank() == 0;
    // Declared before the lock, so dropped after it: a directory this run created goes again
    // if the run fails before training starts.
    let mut fresh_dir = rank0.then(|| fresh_dir::FreshDir::note(&cfg.run.dir));
    // Held to the end of the run: one training process per run directory.
    let _lock = if rank0 {
        Some(lock::RunLock::acquire(&cfg.run.dir)?)
    } else {
        None
    };
    let ckpt = Checkpointer::new(&cfg.run.dir, cfg.train.keep_last);
    if rank0 {
        let spare = match &opts.resume {
            Resume::From(p) => Some(p.as_path()),
            _ => None,
        };
        ckpt.recover(spare)?;
    }
    let has_checkpoints = ckpt.any();
    if matches!(opts.resume, Resume::No) && has_checkpoints {
        // Before anything is written into the run directory (its tokenizer.json above all).
        return Err(TrainError::config(
            "run.dir",
            format!(
                "{} already holds checkpoints: continue it with --resume, or choose another run.dir (--run-dir)",
                cfg.run.dir.display()
            ),
        ));
    }
    let session = start::Session::open(cfg, device, &mut *sync, &opts, &ckpt, has_checkpoints)?;
    let vlog = match rank0 {
        true => Some(record::record_start(
            cfg,
            &session,
            &opts.resume,
            sync.world(),
            &mut *sink,
        )?),
        false => None,
    };
    let start::Session {
        stores,
        tokenizer,
        params,
        model,
        mut opt,
        mut ema,
        loader,
        per_epoch,
        total,
        sched,
        manifest: mut m,
    } = session;

    let spec = EvalSpec {
        input: cfg.input_spec(),
        batch_size: cfg.data.batch_size,
        workers: cfg.data.workers,
        threshold: cfg.train.threshold,
        tokenizer,
        progress: opts.progress,
        tta: false,
        folds: cfg.data.cv(),
        min_area: 0.0,
    };
    let save = |name: &str, m: &Manifest, opt: &AdamW, ema: Option<&Ema>| -> Result<PathBuf> {
        let weights = params
            .vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect();
        let mut state = opt.state()?;
        if let Some(e) = ema {
            state.extend(e.state());
        }
        ckpt.save(name, &weights, &state, m)
    };
    let save_step = |m: &Manifest, opt: &AdamW, ema: Option<&Ema>| {
        save(&format!("step-{:08}", m.step), m, opt, ema)
    };
    // One validation: every store's val split (with the averaged weights under EMA), logged,
    // and the best checkpoint and patience count brought up to date.
    let validation = |m: &mut Manifest,
                      summary: &mut TrainSummary,
                      ema: &mut Option<Ema>,
                      opt: &AdamW,
                      sync: &mut dyn GradSync,
                      sink: &mut dyn MetricSink|
     -> Result<()> {
        let results = with_averaged(ema.as_mut(), || {
            validate(&model, &stores, &spec, cfg, device, sync, sink, m.step)
        })?;
        log_validation(vlog.as_ref(), &results, m, cfg.train.threshold)?;
        let best = |m: &Manifest| save("best", m, opt, ema.as_ref());
        record_validation(
            results,
            m,
            summary,
            cfg.train.select,
            rank0.then_some(&best),
        )
    };
    let mut summary = TrainSummary {
        run_dir: cfg.run.dir.clone(),
        steps: m.step,
        best_val: m.best_val,
        select: cfg.train.select,
        started_at: m.step,
        last_val: vec![],
        last_val_step: None,
        last_checkpoint: None,
        best_checkpoint: None,
        stopped_early: false,
        interrupted: false,
    };
    if let Some(f) = &mut fresh_dir {
        f.keep();
    }
    let ctx = step::StepCtx {
        cfg,
        device,
        model: &model,
        params: &params,
        ckpt: &ckpt,
        per_epoch,
        stop: opts.stop,
        progress: opts.progress,
    };
    let stop_at = opts.stop_after.unwrap_or(u64::MAX).min(total);
    let start_step = m.step;
    let (mut tally, mut t_log) = (step::Tally::default(), Instant::now());

    'epochs: while m.step < stop_at && (cfg.train.max_steps > 0 || m.epoch < cfg.train.epochs) {
        let mut batches = loader.epoch(m.epoch, m.next_batch);
        opts.progress.start(
            &format!("epoch {}", m.epoch + 1),
            (per_epoch - m.next_batch) as u64,
        );
        while m.next_batch < per_epoch {
            let mut acc = step::accumulate(&ctx, &mut batches, &mut m, &mut *sync, &mut tally)?;
            if acc.stop_while_skipping {
                if rank0 {
                    tracing::warn!("stop requested: stopping after step {}", m.step);
                }
                summary.interrupted = true;
                break 'epochs;
            }
            if acc.parts == 0 {
                continue;
            }
            let (grad_norm, lr) = step::apply(
                &ctx,
                &mut acc,
                m.step,
                &mut opt,
                ema.as_mut(),
                &sched,
                &mut *sync,
            )?;
            m.step += 1;
            let loss = acc.loss();
            opts.progress
                .message(&format!("step {} loss {loss:.4}", m.step));
            if rank0 && (m.step.is_multiple_of(cfg.train.log_every.max(1)) || m.step == 1) {
                let ips = tally.seen as f64 * sync.world() as f64 / t_log.elapsed().as_secs_f64();
                (tally.seen, t_log) = (0, Instant::now());
                step_log::StepScalars {
                    step: m.step,
                    loss,
                    lr,
                    grad_norm,
                    images_per_s: ips,
                    terms: acc.last.as_ref(),
                    levels: &cfg.model.contrastive_levels,
                    temperatures: model.temperatures()?,
                }
                .write(sink);
            }
            if rank0
                && cfg.train.checkpoint_every > 0
                && m.step.is_multiple_of(cfg.train.checkpoint_every)
            {
                summary.last_checkpoint = Some(save_step(&m, &opt, ema.as_ref())?);
                // What a resume from this checkpoint will not redo is on disk too.
                sink.flush()?;
            }
            if acc.stop() {
                if rank0 {
                    tracing::warn!("stop requested: stopping after step {}", m.step);
                }
                summary.interrupted = true;
                break 'epochs;
            }
            // Out of steps: mid-epoch, stop here; at an epoch's end, finish it first (its
            // count and validation, as a longer run would).
            if m.step >= stop_at && m.next_batch < per_epoch {
                break 'epochs;
            }
        }
        drop(batches);
        opts.progress.finish();
        m.epoch += 1;
        m.next_batch = 0;
        let last_epoch =
            (cfg.train.max_steps == 0 && m.epoch >= cfg.train.epochs) || m.step >= total;

        if m.epoch.is_multiple_of(cfg.train.val_every) || last_epoch {
            validation(&mut m, &mut summary, &mut ema, &opt, &mut *sync, &mut *sink)?;
            if rank0 {
                summary.last_checkpoint = Some(save_step(&m, &opt, ema.as_ref())?);
                sink.flush()?;
            }
            if cfg.train.patience > 0 && m.stale_validations >= cfg.train.patience {
                if rank0 {
                    tracing::info!(
                        "early stop: no better val {} in {} validations",
                        cfg.train.select.label(),
                        m.stale_validations
                    );
                }
                summary.stopped_early = true;
                break;
            }
        }
    }
    opts.progress.finish();
    // A step budget that ends mid-epoch still gets its final validation (and `best`), once:
    // not again when a finished run is resumed.
    let validate_at_end =
        m.step >= total && m.step > start_step && m.next_batch != 0 && !summary.stopped_early;
    if validate_at_end {
        validation(&mut m, &mut summary, &mut ema, &opt, &mut *sync, &mut *sink)?;
    }
    if rank0 {
        // Saved again after that validation even when this step's checkpoint exists: its
        // manifest carries the best value and patience count a longer resumed run compares with.
        let name = format!("step-{:08}", m.step);
        if validate_at_end
            || summary
                .last_checkpoint
                .as_ref()
                .and_then(|p| p.file_name())
                .is_none_or(|n| n != name.as_str())
        {
            summary.last_checkpoint = Some(save(&name, &m, &opt, ema.as_ref())?);
        }
        sink.flush()?;
    }
    if sync.world() > 1 {
        // The others end only once rank 0's last checkpoint is complete: a launcher that
        // sees them end (and a --resume after it) finds it there.
        sync.all_reduce_sum_f64(&mut [0.0])?;
    }
    if summary.best_checkpoint.is_none() && ckpt.dir().join("best").is_dir() {
        summary.best_checkpoint = Some(ckpt.dir().join("best"));
    }
    summary.steps = m.step;
    summary.best_val = m.best_val;
    Ok(summary)
}

/// Runs `f` with the averaged weights swapped in (when averaging), then swaps them back.
fn with_averaged<T>(ema: Option<&mut Ema>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let Some(e) = ema else {
        return f();
    };
    e.swap()?;
    let out = f();
    e.swap()?;
    out
}
