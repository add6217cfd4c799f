//! The sections of a run config and their defaults; their checks are in `validate.rs`.

use crate::optim::AdamWConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tmca_data::augment::AugmentConfig;

use super::Select;

/// `[run]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Run directory: resolved config, checkpoints, TensorBoard logs, tokenizer.
    pub dir: PathBuf,
    /// Seed of parameter initialisation, sampling and augmentation.
    #[serde(default)]
    pub seed: u64,
    /// Where each rank computes: `auto` (its GPU, `cuda:<local rank>`, in a CUDA build that
    /// finds one; else the CPU), `cpu` or `cuda`.
    #[serde(default = "default_device")]
    pub device: String,
    /// On a GPU, let f32 matrix products (convolutions included: candle's are products over
    /// unfolded windows) use TF32 tensor cores, as PyTorch's cuDNN convolutions do by default:
    /// several times faster, with a 10-bit mantissa in the products. No effect on the CPU.
    #[serde(default = "default_tf32")]
    pub tf32: bool,
}

fn default_device() -> String {
    "auto".into()
}

fn default_tf32() -> bool {
    true
}

impl RunConfig {
    /// Applies [`tf32`](Self::tf32) to candle's GPU matrix products (a process-wide setting)
    /// when `device` is a GPU.
    pub fn apply_precision(&self, device: &candle_core::Device) {
        candle_core::cuda::set_gemm_reduced_precision_f32(self.tf32 && device.is_cuda());
    }
}

/// `[data.synth]`: generate the four synthetic datasets into `dir` when they are missing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthSection {
    pub dir: PathBuf,
    #[serde(default = "default_synth_size")]
    pub size: usize,
    #[serde(default = "default_synth_train")]
    pub train: usize,
    #[serde(default = "default_synth_eval")]
    pub val: usize,
    #[serde(default = "default_synth_eval")]
    pub test: usize,
    #[serde(default)]
    pub seed: u64,
    /// Modalities to generate (default: all four).
    #[serde(default)]
    pub modalities: Vec<String>,
}

fn default_synth_size() -> usize {
    64
}
fn default_synth_train() -> usize {
    160
}
fn default_synth_eval() -> usize {
    40
}

/// `[data]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Dataset stores to train on (mixed); may be empty when `[data.synth]` is given.
    #[serde(default)]
    pub stores: Vec<PathBuf>,
    /// Relative draw weights of the stores, `stores` first then the `[data.synth]` ones
    /// (default: proportional to size).
    #[serde(default)]
    pub weights: Vec<f64>,
    /// Model input size (square, a multiple of 32).
    pub image_size: usize,
    /// Samples per optimiser micro-batch on one process.
    pub batch_size: usize,
    /// Loader threads and batches prepared ahead.
    #[serde(default = "default_workers")]
    pub workers: usize,
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// Per-channel normalisation `(x/255 − mean) / std`.
    #[serde(
        default = "default_mean",
        serialize_with = "tmca_data::short_float::many"
    )]
    pub mean: Vec<f32>,
    #[serde(
        default = "default_std",
        serialize_with = "tmca_data::short_float::many"
    )]
    pub std: Vec<f32>,
    #[serde(default)]
    pub augment: AugmentConfig,
    /// k-fold cross-validation: each store's training and validation samples dealt into
    /// `folds` folds (the same for every run); fold `fold` (0-based) validates, the others
    /// train. 0 = the stores' own splits.
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub folds: usize,
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub fold: usize,
    /// Cross-validation by group: a regular expression over the samples' source names whose
    /// first capture group (else the whole match) names the group — the patient of a slice,
    /// e.g. `^(study_\d+)_` — dealt into folds whole ("" = samples one by one).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fold_group: String,
    pub synth: Option<SynthSection>,
}

fn is_zero_usize(v: &usize) -> bool {
    *v == 0
}

fn default_workers() -> usize {
    2
}
fn default_prefetch() -> usize {
    4
}
fn default_mean() -> Vec<f32> {
    vec![0.5, 0.5, 0.5]
}
fn default_std() -> Vec<f32> {
    vec![0.25, 0.25, 0.25]
}

/// `[optim]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW moments and epsilon.
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay of matrices and kernels (never biases, norms, temperatures).
    pub weight_decay: f64,
    /// Linear warm-up steps, then cosine decay to `lr · min_lr_ratio`.
    pub warmup_steps: u64,
    pub min_lr_ratio: f64,
    /// Clip the global gradient norm to this (0 = off).
    pub grad_clip: f64,
    /// Micro-batches accumulated per optimiser step.
    pub accumulate: usize,
    /// Parameters kept fixed: every parameter whose name (checkpoint key) starts with one of
    /// these, e.g. `image_encoder.` (the whole encoder) or `image_encoder.stages.0.`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
    /// Learning-rate factors by parameter-name prefix (the longest matching prefix wins; 1
    /// elsewhere), e.g. `{ "image_encoder." = 0.1 }` to fine-tune a pretrained encoder slowly.
    /// They scale weight decay too, as PyTorch's parameter groups do.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lr_scale: BTreeMap<String, f64>,
    /// Decay of the exponential moving average of the weights (0 = off; e.g. 0.999): with it,
    /// validation, the best checkpoint, eval, predict and export use the averaged weights.
    #[serde(skip_serializing_if = "is_zero")]
    pub ema: f64,
    /// Stochastic depth of the image encoder's blocks while training (0 = off; ConvNeXt-T
    /// fine-tuning uses 0.1–0.4): the rate of the last block, rising linearly from 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub drop_path: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl Default for OptimConfig {
    fn default() -> Self {
        let a = AdamWConfig::default();
        Self {
            lr: 2e-3,
            beta1: a.beta1,
            beta2: a.beta2,
            eps: a.eps,
            weight_decay: a.weight_decay,
            warmup_steps: 50,
            min_lr_ratio: 0.05,
            grad_clip: 1.0,
            accumulate: 1,
            freeze: vec![],
            lr_scale: BTreeMap::new(),
            ema: 0.0,
            drop_path: 0.0,
        }
    }
}

impl DataConfig {
    /// The cross-validation fold, if `folds` is set.
    pub fn cv(&self) -> Option<tmca_data::folds::Folds> {
        (self.folds > 0).then(|| tmca_data::folds::Folds {
            folds: self.folds,
            fold: self.fold,
            group: (!self.fold_group.is_empty()).then(|| self.fold_group.clone()),
        })
    }
}

impl OptimConfig {
    /// The AdamW hyper-parameters.
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            lr_scale: self.lr_scale.clone(),
        }
    }
}

/// What to do on a NaN/Inf loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnNonFinite {
    /// Stop with an error; the last checkpoint stays intact.
    Stop,
    /// Skip the step (no update) and go on.
    Skip,
}

/// `[train]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: u64,
    /// Stop after this many optimiser steps (0 = no limit).
    pub max_steps: u64,
    /// Validate (and checkpoint the best) every N epochs.
    pub val_every: u64,
    /// Also checkpoint every N optimiser steps (0 = only at validation).
    pub checkpoint_every: u64,
    /// Stop after this many validations without a better value of `select` (0 = never).
    pub patience: u64,
    /// Checkpoints kept besides `best`.
    pub keep_last: usize,
    /// Log scalars every N optimiser steps.
    pub log_every: u64,
    pub on_nonfinite: OnNonFinite,
    /// Probability threshold of a foreground pixel in evaluation.
    #[serde(serialize_with = "tmca_data::short_float::one")]
    pub threshold: f32,
    /// Validation overlays written to TensorBoard per validation.
    pub preview_images: usize,
    /// The validation metric of model selection ([`Select`]).
    pub select: Select,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 20,
            max_steps: 0,
            val_every: 1,
            checkpoint_every: 0,
            patience: 0,
            keep_last: 2,
            log_every: 10,
            on_nonfinite: OnNonFinite::Stop,
            threshold: 0.5,
            preview_images: 4,
            select: Select::DicePerImage,
        }
    }
}
