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
pub mod results;
mod resume;
pub use resume::vocabulary_hash;
pub mod setup;
mod step_log;
pub mod tta;
mod validation;

use crate::checkpoint::{Checkpointer, Manifest, MANIFEST_VERSION};
use crate::config::{Config, OnNonFinite};
use crate::model::drop_path::DropPath;
use crate::optim::{AdamW, Ema, Grads, Schedule};
use crate::params::ParamStore;
use crate::pretrained;
use crate::sink::MetricSink;
use crate::sync::GradSync;
use crate::{Result, TrainError};
use batch::to_inputs;
use candle_core::Device;
use eval::{EvalResult, EvalSpec};
use ranks::LossValues;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tmca_data::loader::{Loader, LoaderConfig};
use tmca_data::sampler::ShardedSampler;
use tmca_data::{Progress, Split};
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

/// Distinguishes the stochastic-depth draws from the loader's, which share the run's seed.
const DROP_PATH_STREAM: u64 = 0xD509;

/// Most batches in a row `train.on_nonfinite = "skip"` passes over (or one epoch's, if fewer)
/// before the run ends as with `"stop"`.
const MAX_SKIPPED_IN_ROW: usize = 50;

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub steps: u64,
    /// Best validation value of `select` (`train.select`) over the run.
    pub best_val: Option<f64>,
    pub select: crate::config::Select,
    pub last_val: Vec<EvalResult>,
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
    cfg.run.apply_precision(device);
    if let (Resume::No, Some(p)) = (&opts.resume, &cfg.model.image_weights) {
        // A fresh run will read it: say so before generating data or learning a vocabulary.
        pretrained::weight_file(p)?;
    }
    if let Resume::From(p) = &opts.resume {
        // Read before anything is written (a tokenizer taken from its run, data generated).
        Manifest::read(p)?;
    }
    let (stores, tokenizer) = ranks::prepare(sync, || {
        let stores = setup::open_stores(cfg, opts.progress)?;
        let from = match &opts.resume {
            Resume::From(p) => Some(p.as_path()),
            _ => None,
        };
        let resuming = matches!(opts.resume, Resume::Latest) && has_checkpoints;
        let tokenizer = setup::tokenizer(cfg, &stores, from, resuming, rank0)?;
        Ok((stores, tokenizer))
    })?;
    let params = ParamStore::new(cfg.run.seed).with_frozen(&cfg.optim.freeze);
    let model = setup::build_model(cfg, tokenizer.vocab_size(), &params, device, false)?;
    setup::check_prefixes(cfg, &params)?;
    let mut opt = AdamW::new(&params, cfg.optim.adamw())?;
    let model_cfg = resume::model_config(cfg);

    let sources = stores
        .iter()
        .map(|s| tmca_data::folds::samples(s, Split::Train, cfg.data.cv()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let data_cfg = resume::data_config(cfg, &stores, &sources);
    let weights = (!cfg.data.weights.is_empty()).then(|| cfg.data.weights.clone());
    let sampler = ShardedSampler::new(
        sources,
        weights,
        cfg.run.seed,
        true,
        true,
        sync.rank(),
        sync.world(),
    )?;
    let lcfg = LoaderConfig {
        batch_size: cfg.data.batch_size,
        drop_last: true,
        workers: cfg.data.workers,
        prefetch: cfg.data.prefetch,
        input: cfg.input_spec(),
        augment: Some(cfg.data.augment.clone()),
        seed: cfg.run.seed,
    };
    let loader = Loader::new(stores.clone(), sampler, tokenizer.clone(), lcfg)?;
    let per_epoch = loader.batches_per_epoch();
    if per_epoch == 0 {
        return Err(TrainError::config(
            "data.batch_size",
            format!(
                "{} is larger than this rank's share of the training set",
                cfg.data.batch_size
            ),
        ));
    }
    let acc = cfg.optim.accumulate;
    let steps_per_epoch = per_epoch.div_ceil(acc) as u64;
    let total = if cfg.train.max_steps > 0 {
        cfg.train.max_steps
    } else {
        cfg.train
            .epochs
            .checked_mul(steps_per_epoch)
            .ok_or_else(|| {
                TrainError::config(
                    "train.epochs",
                    format!(
                        "{} epochs of {steps_per_epoch} steps are more steps than can be counted",
                        cfg.train.epochs
                    ),
                )
            })?
    };
    if rank0 && cfg.optim.warmup_steps > total / 2 {
        tracing::warn!(
            "optim.warmup_steps = {} is more than half of the run's {total} steps: warming up for {} steps",
            cfg.optim.warmup_steps,
            total / 2
        );
    }
    let sched = Schedule {
        base_lr: cfg.optim.lr,
        warmup_steps: cfg.optim.warmup_steps.min(total / 2),
        total_steps: total,
        min_ratio: cfg.optim.min_lr_ratio,
    };

    let mut m = Manifest {
        version: MANIFEST_VERSION,
        tmca_version: env!("CARGO_PKG_VERSION").into(),
        step: 0,
        epoch: 0,
        next_batch: 0,
        seed: cfg.run.seed,
        model_hash: cfg.model_hash()?,
        model_config: model_cfg.clone(),
        best_val: None,
        stale_validations: 0,
        files: Default::default(),
        global_batch: Some(cfg.data.batch_size * sync.world()),
        accumulate: Some(acc),
        select: Some(cfg.train.select),
        data: Some(data_cfg),
        vocabulary: Some(resume::vocabulary_hash(&tokenizer)),
    };
    let loaded = match &opts.resume {
        Resume::No => None,
        Resume::Latest => ckpt.latest(device)?,
        Resume::From(p) => Some(Checkpointer::load(p, device)?),
    };
    if loaded.is_none() {
        setup::pretrained_image_encoder(cfg, &params, rank0)?;
    }
    let mut resumed_state = None;
    if let Some(l) = loaded {
        resume::check(&l.manifest, &m, &l.path, sync.world())?;
        if rank0 {
            ckpt.supersede_after(l.manifest.step)?;
        }
        params
            .assign_all(&l.weights)
            .map_err(|e| TrainError::Checkpoint {
                path: l.path.clone(),
                message: e.to_string(),
            })?;
        resumed_state = Some(l.optimizer.clone());
        let fresh =
            opt.load_state(&l.optimizer, l.manifest.step)
                .map_err(|e| TrainError::Checkpoint {
                    path: l.path.clone(),
                    message: e.to_string(),
                })?;
        if rank0 && !fresh.is_empty() {
            tracing::info!(
                "{} parameter tensors were frozen when {} was written; their AdamW moments start at zero",
                fresh.len(),
                l.path.display()
            );
        }
        if rank0 {
            tracing::info!(
                "resumed from {} at step {}",
                l.path.display(),
                l.manifest.step
            );
        }
        // A checkpoint of another run directory starts this one: its best value is that
        // run's, and this run keeps its own `best`.
        let foreign = !ckpt.holds(&l.path);
        m = Manifest {
            files: Default::default(),
            global_batch: m.global_batch,
            accumulate: m.accumulate,
            select: m.select,
            data: m.data,
            vocabulary: m.vocabulary,
            ..l.manifest
        };
        if foreign {
            (m.best_val, m.stale_validations) = (None, 0);
        }
    }
    let mut ema = match cfg.optim.ema {
        d if d > 0.0 => {
            let mut e = Ema::new(&params, d)?;
            if let Some(state) = &resumed_state {
                let fresh = e.load_state(state).map_err(|e| TrainError::Checkpoint {
                    path: cfg.run.dir.join("checkpoints"),
                    message: e.to_string(),
                })?;
                if rank0 && !fresh.is_empty() {
                    tracing::info!(
                        "the checkpoint has no moving average of {} parameter tensors; they start from their current values",
                        fresh.len()
                    );
                }
            }
            Some(e)
        }
        _ => None,
    };
    let mut vlog = None;
    if rank0 {
        let text = cfg.to_toml()?;
        let p = cfg.run.dir.join("config.toml");
        if m.step > 0 {
            resume::log_changed_settings(&p, cfg);
        }
        if m.step > 0 || matches!(opts.resume, Resume::Latest) {
            // Also at step 0: a run restarted before its first checkpoint redoes what an
            // earlier session recorded (nothing to drop in a fresh run).
            sink.resumed_after(m.step);
        }
        // Replaced whole: a run stopped mid-write would leave a truncated config, and eval,
        // predict and `tmca runs` read it.
        results::write_atomic(&p, text.as_bytes())?;
        sink.text("config", &format!("```toml\n{text}\n```"), m.step);
        // Every field but the run's own folder, for the HParams dashboard; the folder names it.
        let hparams = cfg
            .fields()
            .iter()
            .filter(|(k, _)| k.as_str() != "run.dir")
            .map(|(k, v)| (k.clone(), crate::sink::HParam::from_toml(v)))
            .collect();
        sink.hparams(&hparams, &cfg.run.dir.display().to_string());
        vlog = Some(results::ValidationLog::open(&cfg.run.dir, m.step)?);
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
            total,
            cfg.data.batch_size * acc * sync.world()
        );
    }

    let spec = EvalSpec {
        input: cfg.input_spec(),
        batch_size: cfg.data.batch_size,
        workers: cfg.data.workers,
        threshold: cfg.train.threshold,
        tokenizer: tokenizer.clone(),
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
        last_val: vec![],
        last_checkpoint: None,
        best_checkpoint: None,
        stopped_early: false,
        interrupted: false,
    };
    if let Some(f) = &mut fresh_dir {
        f.keep();
    }
    let stop_at = opts.stop_after.unwrap_or(u64::MAX).min(total);
    let start_step = m.step;
    let (mut seen, mut t_log) = (0usize, Instant::now());
    let (mut skipped_in_row, mut stop_while_skipping) = (0usize, false);

    'epochs: while m.step < stop_at && (cfg.train.max_steps > 0 || m.epoch < cfg.train.epochs) {
        let mut batches = loader.epoch(m.epoch, m.next_batch);
        opts.progress.start(
            &format!("epoch {}", m.epoch + 1),
            (per_epoch - m.next_batch) as u64,
        );
        while m.next_batch < per_epoch {
            // One optimiser step over up to `acc` micro-batches.
            let mut grads = Grads::default();
            let (mut parts, mut loss_sum, mut last) = (0usize, 0f64, None);
            while parts < acc && m.next_batch < per_epoch {
                let Some(b) = batches.next() else { break };
                let b = b?;
                let mut x = to_inputs(&b, device)?;
                if cfg.optim.drop_path > 0.0 {
                    // Drawn per (seed, epoch, batch, rank): a resumed run drops the same.
                    let seed = tmca_data::sampler::derive_seed(&[
                        cfg.run.seed,
                        DROP_PATH_STREAM,
                        m.epoch,
                        m.next_batch as u64,
                        sync.rank() as u64,
                    ]);
                    let mut rng =
                        <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
                    x.drop_path = DropPath::sample(
                        cfg.optim.drop_path,
                        &cfg.model.depths,
                        b.size,
                        &mut rng,
                        device,
                    )?;
                }
                let out = model.forward(&x)?;
                let masks = x
                    .masks
                    .as_ref()
                    .ok_or_else(|| TrainError::Internal("a training batch without masks".into()))?;
                let (gathered, groups) = if sync.world() > 1 && !out.contrastive.is_empty() {
                    let (g, ids) =
                        ranks::gather_with_grad(&out.contrastive, &b.report_groups, sync)?;
                    (Some(g), ids)
                } else {
                    (None, b.report_groups.clone())
                };
                let losses = model.loss(&out, masks, &groups, gathered.as_deref())?;
                let stop = opts.stop.is_some_and(|s| s.load(Ordering::Relaxed));
                let values = LossValues::of(&losses, stop)?.mean_over_ranks(sync)?;
                let v = values.total;
                m.next_batch += 1;
                opts.progress.inc(1);
                seen += b.size;
                if !v.is_finite() {
                    match cfg.train.on_nonfinite {
                        OnNonFinite::Stop => {
                            return Err(TrainError::NonFinite {
                                step: m.step + 1,
                                detail: format!(
                                    "loss {v} in epoch {} batch {}; {}; a lower optim.lr or train.on_nonfinite = \"skip\" may help",
                                    m.epoch + 1,
                                    m.next_batch,
                                    if ckpt.steps().is_empty() {
                                        "no checkpoint was written yet"
                                    } else {
                                        "the last checkpoint is intact"
                                    }
                                ),
                            })
                        }
                        OnNonFinite::Skip => {
                            // Skipped batches change no weight: a run of them is no bad batch
                            // but a broken setup, which skipping would repeat forever.
                            skipped_in_row += 1;
                            if skipped_in_row >= per_epoch.min(MAX_SKIPPED_IN_ROW) {
                                return Err(TrainError::NonFinite {
                                    step: m.step + 1,
                                    detail: format!(
                                        "{skipped_in_row} batches in a row had a non-finite loss (last: {v}); train.on_nonfinite = \"skip\" passes over single bad batches, not this: check data.mean/std, the data and optim.lr"
                                    ),
                                });
                            }
                            tracing::warn!("skipping step {}: loss {v}", m.step + 1);
                            if values.stop {
                                stop_while_skipping = true;
                                break;
                            }
                            continue;
                        }
                    }
                }
                skipped_in_row = 0;
                grads.accumulate(Grads::from_backward(&params, &losses.total.backward()?))?;
                loss_sum += v;
                parts += 1;
                last = Some(values);
            }
            if stop_while_skipping {
                if rank0 {
                    tracing::warn!("stop requested: stopping after step {}", m.step);
                }
                summary.interrupted = true;
                break 'epochs;
            }
            if parts == 0 {
                continue;
            }
            grads.scale(1.0 / parts as f64)?;
            if sync.world() > 1 {
                grads.fill_missing(&params)?;
                if let Some(flat) = grads.flatten()? {
                    grads.unflatten(&sync.all_reduce_mean_tensor(&flat)?)?;
                }
            }
            let grad_norm = grads.clip(cfg.optim.grad_clip)?;
            let lr = sched.lr(m.step);
            opt.step(&grads, lr)?;
            if let Some(e) = ema.as_mut() {
                e.update()?;
            }
            m.step += 1;
            let loss = loss_sum / parts as f64;
            opts.progress
                .message(&format!("step {} loss {loss:.4}", m.step));
            if rank0 && (m.step.is_multiple_of(cfg.train.log_every.max(1)) || m.step == 1) {
                let ips = seen as f64 * sync.world() as f64 / t_log.elapsed().as_secs_f64();
                (seen, t_log) = (0, Instant::now());
                step_log::StepScalars {
                    step: m.step,
                    loss,
                    lr,
                    grad_norm,
                    images_per_s: ips,
                    terms: last.as_ref(),
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
            if last.as_ref().is_some_and(|l| l.stop) {
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
