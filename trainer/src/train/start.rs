//! Everything a run trains with, set up before its first step: stores and tokenizer (rank 0
//! first), model and optimiser, the sharded loader, the step budget and schedule, and the
//! state a checkpoint resumes (weights, AdamW moments, moving average, counters).

use super::{ranks, resume, setup, Resume, RunOptions};
use crate::checkpoint::{Checkpointer, Loaded, Manifest, MANIFEST_VERSION};
use crate::config::Config;
use crate::model::Tmca;
use crate::optim::{AdamW, Ema, Schedule};
use crate::params::ParamStore;
use crate::pretrained;
use crate::sync::GradSync;
use crate::{Result, TrainError};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::sync::Arc;
use tmca_data::loader::{Loader, LoaderConfig};
use tmca_data::sampler::ShardedSampler;
use tmca_data::store::Store;
use tmca_data::tokenize::TextTokenizer;
use tmca_data::Split;

/// A run ready for its first (or next) optimiser step.
pub(super) struct Session {
    pub stores: Vec<Arc<Store>>,
    pub tokenizer: Arc<TextTokenizer>,
    pub params: ParamStore,
    pub model: Tmca,
    pub opt: AdamW,
    pub ema: Option<Ema>,
    pub loader: Loader,
    /// Micro-batches per epoch on this rank.
    pub per_epoch: usize,
    /// Optimiser steps of the whole run.
    pub total: u64,
    pub sched: Schedule,
    /// Counters and identity of the run, as its next checkpoint will record them.
    pub manifest: Manifest,
}

impl Session {
    /// Sets the run up; `has_checkpoints` says whether the run directory held any when it
    /// started (so `Resume::Latest` continues rather than starts).
    pub fn open(
        cfg: &Config,
        device: &Device,
        sync: &mut dyn GradSync,
        opts: &RunOptions<'_>,
        ckpt: &Checkpointer,
        has_checkpoints: bool,
    ) -> Result<Self> {
        let rank0 = sync.rank() == 0;
        if !has_checkpoints && !matches!(opts.resume, Resume::From(_)) {
            cfg.model.check_new_run()?;
        }
        cfg.run.apply_precision(device);
        if let (Resume::No, Some(p)) = (&opts.resume, &cfg.model.image_weights) {
            // A fresh run will read it: say so before generating data or learning a vocabulary.
            pretrained::weight_file(p)?;
        }
        let from = match &opts.resume {
            Resume::From(p) => Some(p.as_path()),
            _ => None,
        };
        if let Some(p) = from {
            // Read before anything is written (a tokenizer taken from its run, data generated).
            Manifest::read(p)?;
        }
        let (stores, tokenizer) = ranks::prepare(sync, || {
            let stores = setup::open_stores(cfg, opts.progress)?;
            let resuming = matches!(opts.resume, Resume::Latest) && has_checkpoints;
            let tokenizer = setup::tokenizer(cfg, &stores, from, resuming, rank0)?;
            Ok((stores, tokenizer))
        })?;
        let params = ParamStore::new(cfg.run.seed).with_frozen(&cfg.optim.freeze);
        let model = setup::build_model(cfg, tokenizer.vocab_size(), &params, device, false)?;
        setup::check_prefixes(cfg, &params)?;
        let mut opt = AdamW::new(&params, cfg.optim.adamw())?;

        let sources = stores
            .iter()
            .map(|s| tmca_data::folds::samples(s, Split::Train, cfg.data.cv().as_ref()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let data_cfg = resume::data_config(cfg, &stores, &sources)?;
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
                    "{} is larger than this rank's share of the training set ({} samples \
                     per epoch)",
                    cfg.data.batch_size,
                    loader.sampler().len_this_rank()
                ),
            ));
        }
        let (total, sched) = plan(cfg, per_epoch, rank0)?;

        let mut manifest = Manifest {
            version: MANIFEST_VERSION,
            tmca_version: env!("CARGO_PKG_VERSION").into(),
            step: 0,
            epoch: 0,
            next_batch: 0,
            seed: cfg.run.seed,
            model_hash: cfg.model_hash()?,
            model_config: resume::model_config(cfg),
            best_val: None,
            stale_validations: 0,
            files: Default::default(),
            global_batch: Some(cfg.data.batch_size * sync.world()),
            accumulate: Some(cfg.optim.accumulate),
            select: Some(cfg.train.select),
            data: Some(data_cfg),
            vocabulary: Some(resume::vocabulary_hash(&tokenizer)),
            provenance: Some(crate::provenance::Provenance::now(device, sync.world())),
        };
        let loaded = match &opts.resume {
            Resume::No => None,
            Resume::Latest => ckpt.latest(device)?,
            Resume::From(p) => Some(Checkpointer::load(p, device)?),
        };
        let mut resumed_state = None;
        if loaded.is_none() && matches!(opts.resume, Resume::Latest) && rank0 {
            // A job script resumes on every submission, the first one included; a mistyped
            // run directory starts afresh too, so say which it is.
            tracing::info!(
                "no checkpoint to resume in {}: starting a new run",
                ckpt.dir().display()
            );
        }
        match loaded {
            None => setup::pretrained_image_encoder(cfg, &params, rank0)?,
            Some(l) => {
                let (m, state) = restore(l, manifest, &params, &mut opt, ckpt, &*sync)?;
                (manifest, resumed_state) = (m, Some(state));
            }
        }
        let ema = moving_average(cfg, &params, resumed_state.as_ref(), rank0)?;
        Ok(Self {
            stores,
            tokenizer,
            params,
            model,
            opt,
            ema,
            loader,
            per_epoch,
            total,
            sched,
            manifest,
        })
    }
}

/// The run's optimiser steps and learning-rate schedule.
fn plan(cfg: &Config, per_epoch: usize, rank0: bool) -> Result<(u64, Schedule)> {
    let steps_per_epoch = per_epoch.div_ceil(cfg.optim.accumulate) as u64;
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
    Ok((total, sched))
}

/// Puts a loaded checkpoint's weights and AdamW moments in place and returns the manifest the
/// run continues with (the checkpoint's counters, this run's identity) and the optimiser
/// state (for the moving average). Later checkpoints of this run directory are moved aside.
fn restore(
    l: Loaded,
    now: Manifest,
    params: &ParamStore,
    opt: &mut AdamW,
    ckpt: &Checkpointer,
    sync: &dyn GradSync,
) -> Result<(Manifest, HashMap<String, Tensor>)> {
    let (rank0, world) = (sync.rank() == 0, sync.world());
    resume::check(&l.manifest, &now, &l.path, world)?;
    if rank0 {
        ckpt.supersede_after(l.manifest.step)?;
    }
    let bad = |e: &dyn std::fmt::Display| TrainError::Checkpoint {
        path: l.path.clone(),
        message: e.to_string(),
    };
    params.assign_all(&l.weights).map_err(|e| bad(&e))?;
    let fresh = opt
        .load_state(&l.optimizer, l.manifest.step)
        .map_err(|e| bad(&e))?;
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
    if let (Some(then), Some(now), true) = (&l.manifest.provenance, &now.provenance, rank0) {
        // Threads change the CPU kernels' summation order only.
        let threads_matter = now.device == "cpu" && then.threads != now.threads;
        if threads_matter || then.commit != now.commit {
            tracing::info!(
                "{} was written with {} threads by tmca {}, this session runs {} threads of {}: it continues the run, but not bit for bit as an uninterrupted one would",
                l.path.display(),
                then.threads,
                then.commit,
                now.threads,
                now.commit
            );
        }
    }
    // A checkpoint of another run directory starts this one: its best value is that run's,
    // and this run keeps its own `best`.
    let foreign = !ckpt.holds(&l.path);
    let mut m = Manifest {
        files: Default::default(),
        global_batch: now.global_batch,
        accumulate: now.accumulate,
        select: now.select,
        data: now.data,
        vocabulary: now.vocabulary,
        // This session writes the next checkpoints.
        provenance: now.provenance,
        ..l.manifest
    };
    if foreign {
        (m.best_val, m.stale_validations) = (None, 0);
    }
    Ok((m, l.optimizer))
}

/// The moving average of the weights (`optim.ema` > 0), continued from a checkpoint's state.
fn moving_average(
    cfg: &Config,
    params: &ParamStore,
    resumed: Option<&HashMap<String, Tensor>>,
    rank0: bool,
) -> Result<Option<Ema>> {
    if cfg.optim.ema <= 0.0 {
        return Ok(None);
    }
    let mut e = Ema::new(params, cfg.optim.ema)?;
    if let Some(state) = resumed {
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
    Ok(Some(e))
}
