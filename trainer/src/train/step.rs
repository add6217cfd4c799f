//! One optimiser step: up to `optim.accumulate` micro-batches forward and backward (stochastic
//! depth drawn per batch, contrastive embeddings gathered across ranks, non-finite losses
//! stopped or skipped), then the gradients averaged over ranks, clipped and applied.

use super::batch::to_inputs;
use super::ranks::{self, LossValues};
use crate::checkpoint::{Checkpointer, Manifest};
use crate::config::{Config, OnNonFinite};
use crate::model::drop_path::DropPath;
use crate::model::Tmca;
use crate::optim::{AdamW, Ema, Grads, Schedule};
use crate::params::ParamStore;
use crate::sync::GradSync;
use crate::{Result, TrainError};
use candle_core::Device;
use std::sync::atomic::{AtomicBool, Ordering};
use tmca_data::loader::BatchIter;
use tmca_data::Progress;

/// Distinguishes the stochastic-depth draws from the loader's, which share the run's seed.
const DROP_PATH_STREAM: u64 = 0xD509;

/// Most batches in a row `train.on_nonfinite = "skip"` passes over (or one epoch's, if fewer)
/// before the run ends as with `"stop"`.
const MAX_SKIPPED_IN_ROW: usize = 50;

/// What a step reads.
pub(super) struct StepCtx<'a> {
    pub cfg: &'a Config,
    pub device: &'a Device,
    pub model: &'a Tmca,
    pub params: &'a ParamStore,
    pub ckpt: &'a Checkpointer,
    /// Micro-batches per epoch on this rank.
    pub per_epoch: usize,
    pub stop: Option<&'a AtomicBool>,
    pub progress: &'a dyn Progress,
}

/// Counts kept across steps.
#[derive(Default)]
pub(super) struct Tally {
    /// Images seen on this rank since the last logged step.
    pub seen: usize,
    /// Batches skipped in a row for a non-finite loss.
    pub skipped_in_row: usize,
}

/// The micro-batches of one step, summed.
#[derive(Default)]
pub(super) struct Accumulated {
    pub grads: Grads,
    /// Micro-batches whose gradients are in `grads` (skipped ones are not).
    pub parts: usize,
    pub loss_sum: f64,
    /// The last micro-batch's loss terms, averaged over ranks (and whether a rank asked to stop).
    pub last: Option<LossValues>,
    /// A stop was asked for while a batch was skipped: no step follows.
    pub stop_while_skipping: bool,
}

impl Accumulated {
    /// Mean loss of the micro-batches taken.
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.parts as f64
    }

    /// Whether any rank asked to stop.
    pub fn stop(&self) -> bool {
        self.last.as_ref().is_some_and(|l| l.stop)
    }
}

/// Runs forward and backward over up to `optim.accumulate` micro-batches of `batches`,
/// advancing `m.next_batch` past each one read.
pub(super) fn accumulate(
    ctx: &StepCtx<'_>,
    batches: &mut BatchIter,
    m: &mut Manifest,
    sync: &mut dyn GradSync,
    tally: &mut Tally,
) -> Result<Accumulated> {
    let cfg = ctx.cfg;
    let mut acc = Accumulated::default();
    while acc.parts < cfg.optim.accumulate && m.next_batch < ctx.per_epoch {
        let Some(b) = batches.next() else { break };
        let b = b?;
        let mut x = to_inputs(&b, ctx.device)?;
        if cfg.optim.drop_path > 0.0 {
            // Drawn per (seed, epoch, batch, rank): a resumed run drops the same.
            let seed = tmca_data::sampler::derive_seed(&[
                cfg.run.seed,
                DROP_PATH_STREAM,
                m.epoch,
                m.next_batch as u64,
                sync.rank() as u64,
            ]);
            let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
            x.drop_path = DropPath::sample(
                cfg.optim.drop_path,
                &cfg.model.depths,
                b.size,
                &mut rng,
                ctx.device,
            )?;
        }
        let out = ctx.model.forward(&x)?;
        let masks = x
            .masks
            .as_ref()
            .ok_or_else(|| TrainError::Internal("a training batch without masks".into()))?;
        let (gathered, groups) = if sync.world() > 1 && !out.contrastive.is_empty() {
            let (g, ids) = ranks::gather_with_grad(&out.contrastive, &b.report_groups, sync)?;
            (Some(g), ids)
        } else {
            (None, b.report_groups.clone())
        };
        let losses = ctx.model.loss(&out, masks, &groups, gathered.as_deref())?;
        let stop = ctx.stop.is_some_and(|s| s.load(Ordering::Relaxed));
        let values = LossValues::of(&losses, stop)?.mean_over_ranks(sync)?;
        let v = values.total;
        m.next_batch += 1;
        ctx.progress.inc(1);
        tally.seen += b.size;
        if !v.is_finite() {
            non_finite(ctx, m, v, tally)?;
            tracing::warn!("skipping step {}: loss {v}", m.step + 1);
            if values.stop {
                acc.stop_while_skipping = true;
                break;
            }
            continue;
        }
        tally.skipped_in_row = 0;
        acc.grads
            .accumulate(Grads::from_backward(ctx.params, &losses.total.backward()?))?;
        acc.loss_sum += v;
        acc.parts += 1;
        acc.last = Some(values);
    }
    Ok(acc)
}

/// A batch's loss `v` is not finite: the run's error, or (`train.on_nonfinite = "skip"`) Ok to
/// pass over it, unless too many were passed over in a row.
fn non_finite(ctx: &StepCtx<'_>, m: &Manifest, v: f64, tally: &mut Tally) -> Result<()> {
    match ctx.cfg.train.on_nonfinite {
        OnNonFinite::Stop => Err(TrainError::NonFinite {
            step: m.step + 1,
            detail: format!(
                "loss {v} in epoch {} batch {}; {}; a lower optim.lr or train.on_nonfinite = \"skip\" may help",
                m.epoch + 1,
                m.next_batch,
                if ctx.ckpt.steps().is_empty() {
                    "no checkpoint was written yet"
                } else {
                    "the last checkpoint is intact"
                }
            ),
        }),
        OnNonFinite::Skip => {
            // Skipped batches change no weight: a run of them is no bad batch but a broken
            // setup, which skipping would repeat forever.
            tally.skipped_in_row += 1;
            if tally.skipped_in_row >= ctx.per_epoch.min(MAX_SKIPPED_IN_ROW) {
                return Err(TrainError::NonFinite {
                    step: m.step + 1,
                    detail: format!(
                        "{} batches in a row had a non-finite loss (last: {v}); train.on_nonfinite = \"skip\" passes over single bad batches, not this: check data.mean/std, the data and optim.lr",
                        tally.skipped_in_row
                    ),
                });
            }
            Ok(())
        }
    }
}

/// Averages `acc`'s gradients over its micro-batches and the ranks, clips them and takes the
/// optimiser step at `step` (then the moving average's). Returns the gradient norm before
/// clipping and the learning rate used.
pub(super) fn apply(
    ctx: &StepCtx<'_>,
    acc: &mut Accumulated,
    step: u64,
    opt: &mut AdamW,
    ema: Option<&mut Ema>,
    sched: &Schedule,
    sync: &mut dyn GradSync,
) -> Result<(f64, f64)> {
    let grads = &mut acc.grads;
    grads.scale(1.0 / acc.parts as f64)?;
    if sync.world() > 1 {
        grads.fill_missing(ctx.params)?;
        if let Some(flat) = grads.flatten()? {
            grads.unflatten(&sync.all_reduce_mean_tensor(&flat)?)?;
        }
    }
    let grad_norm = grads.clip(ctx.cfg.optim.grad_clip)?;
    let lr = sched.lr(step);
    opt.step(grads, lr)?;
    if let Some(e) = ema {
        e.update()?;
    }
    Ok((grad_norm, lr))
}
