//! The run configuration: one TOML file, `deny_unknown_fields` everywhere, each section
//! validated with errors that name the field. The resolved configuration (presets expanded) is
//! saved in the run directory.

use crate::model::{ModelConfig, TextConfig};
use crate::optim::AdamWConfig;
use crate::{Result, TrainError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tmca_data::augment::AugmentConfig;

/// The embedded default: single-process CPU training on the four synthetic datasets.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// Everything a run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub run: RunConfig,
    pub data: DataConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub text: TextConfig,
    #[serde(default)]
    pub optim: OptimConfig,
    #[serde(default)]
    pub train: TrainConfig,
}

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
        (self.folds > 0).then_some(tmca_data::folds::Folds {
            folds: self.folds,
            fold: self.fold,
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

/// The validation metric that picks the `best` checkpoint and counts towards `patience`, as a
/// mean over the datasets: the per-image mean Dice (LViT's protocol), the pixel-pooled Dice
/// (GuideDecoder's), the same two for IoU, or the per-image HD95 (lower is better).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Select {
    #[default]
    DicePerImage,
    DicePooled,
    IouPerImage,
    IouPooled,
    Hd95,
}

impl Select {
    /// Every choice, in the order of the docs.
    pub const ALL: [Select; 5] = [
        Select::DicePerImage,
        Select::DicePooled,
        Select::IouPerImage,
        Select::IouPooled,
        Select::Hd95,
    ];

    /// The config value (`dice_per_image`, …).
    pub fn name(self) -> &'static str {
        match self {
            Select::DicePerImage => "dice_per_image",
            Select::DicePooled => "dice_pooled",
            Select::IouPerImage => "iou_per_image",
            Select::IouPooled => "iou_pooled",
            Select::Hd95 => "hd95",
        }
    }

    /// In words, for logs and tables.
    pub fn label(self) -> &'static str {
        match self {
            Select::DicePerImage => "Dice (per-image mean)",
            Select::DicePooled => "Dice (pixel-pooled)",
            Select::IouPerImage => "IoU (per-image mean)",
            Select::IouPooled => "IoU (pixel-pooled)",
            Select::Hd95 => "HD95 px (per-image mean)",
        }
    }

    /// HD95 is a distance: smaller is better.
    pub fn lower_is_better(self) -> bool {
        self == Select::Hd95
    }

    /// Whether `value` improves on `best` (a NaN value never does; anything improves on none).
    pub fn improves(self, value: f64, best: Option<f64>) -> bool {
        match best {
            _ if value.is_nan() => false,
            None => true,
            Some(b) if b.is_nan() => true,
            Some(b) if self.lower_is_better() => value < b,
            Some(b) => value > b,
        }
    }
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

fn bad(field: &str, message: impl Into<String>) -> TrainError {
    TrainError::config(field, message)
}

/// The first field (in `fields`' order) holding NaN or an infinity, alone or in an array.
fn non_finite(fields: &std::collections::BTreeMap<String, toml::Value>) -> Option<(String, f64)> {
    fn find(v: &toml::Value) -> Option<f64> {
        match v {
            toml::Value::Float(x) if !x.is_finite() => Some(*x),
            toml::Value::Array(a) => a.iter().find_map(find),
            toml::Value::Table(t) => t.values().find_map(find),
            _ => None,
        }
    }
    fields
        .iter()
        .find_map(|(k, v)| find(v).map(|x| (k.clone(), x)))
}

impl Config {
    /// Parses TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| TrainError::ConfigFile {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.resolve()?;
        Ok(cfg)
    }

    /// Reads and resolves a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        Self::from_toml(&text, path)
    }

    /// The embedded default, resolved.
    pub fn default_config() -> Result<Self> {
        Self::from_toml(DEFAULT_CONFIG, Path::new("<embedded default config>"))
    }

    /// Expands presets and validates every section.
    pub fn resolve(&mut self) -> Result<()> {
        if let Some((field, x)) = non_finite(&self.fields()) {
            return Err(bad(&field, format!("{x} is not a finite number")));
        }
        if !["auto", "cpu", "cuda"].contains(&self.run.device.as_str()) {
            return Err(bad(
                "run.device",
                format!("{:?}: use auto, cpu or cuda", self.run.device),
            ));
        }
        self.model.resolve(&mut self.text)?;
        let d = &self.data;
        if d.image_size == 0 || !d.image_size.is_multiple_of(32) {
            return Err(bad(
                "data.image_size",
                format!("{} must be a positive multiple of 32", d.image_size),
            ));
        }
        if d.batch_size == 0 {
            return Err(bad("data.batch_size", "must be at least 1"));
        }
        if d.stores.is_empty() && d.synth.is_none() {
            return Err(bad(
                "data.stores",
                "no stores given (and no [data.synth] to generate them)",
            ));
        }
        let n_stores = d.stores.len() + self.synth_modalities().len();
        if !d.weights.is_empty() && d.weights.len() != n_stores {
            return Err(bad(
                "data.weights",
                format!(
                    "{} weights for {n_stores} stores (data.stores, then the [data.synth] ones)",
                    d.weights.len()
                ),
            ));
        }
        if d.weights.iter().any(|w| *w < 0.0)
            || (!d.weights.is_empty() && d.weights.iter().sum::<f64>() <= 0.0)
        {
            return Err(bad(
                "data.weights",
                format!("{:?}: weights must be >= 0, and not all 0", d.weights),
            ));
        }
        let c = self.model.in_channels;
        if d.folds == 1 || (d.folds > 0 && d.fold >= d.folds) || (d.folds == 0 && d.fold > 0) {
            return Err(bad(
                "data.folds",
                format!(
                    "folds = {}, fold = {}: need folds >= 2 and 0 <= fold < folds (folds = 0: the stores' own splits)",
                    d.folds, d.fold
                ),
            ));
        }
        for (field, v) in [("data.mean", &d.mean), ("data.std", &d.std)] {
            if v.len() < c || v.len() > 3 {
                return Err(bad(
                    field,
                    format!(
                        "{} values: give one per image channel (1 or 3; a gray model uses the first)",
                        v.len()
                    ),
                ));
            }
        }
        let mut seen = std::collections::HashMap::new();
        for s in &d.stores {
            let key = std::fs::canonicalize(s).unwrap_or_else(|_| s.components().collect());
            if let Some(prev) = seen.insert(key, s) {
                return Err(bad(
                    "data.stores",
                    format!(
                        "{} is listed twice (also as {}): give data.weights to draw a store more often",
                        s.display(),
                        prev.display()
                    ),
                ));
            }
        }
        if d.std.iter().any(|&s| s <= 0.0) {
            return Err(bad("data.std", "values must be > 0"));
        }
        d.augment.validate()?;
        if let Some(s) = &d.synth {
            if s.size == 0 || s.size % 32 != 0 {
                return Err(bad(
                    "data.synth.size",
                    format!("{} must be a positive multiple of 32", s.size),
                ));
            }
            for m in &s.modalities {
                m.parse::<tmca_data::Modality>()
                    .map_err(|e| bad("data.synth.modalities", e))?;
            }
        }
        let o = &self.optim;
        if !(o.lr > 0.0 && o.lr.is_finite()) {
            return Err(bad("optim.lr", format!("{} must be finite and > 0", o.lr)));
        }
        for (field, b) in [("optim.beta1", o.beta1), ("optim.beta2", o.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(bad(field, format!("{b} must be in [0, 1)")));
            }
        }
        for (field, v) in [
            ("optim.weight_decay", o.weight_decay),
            ("optim.grad_clip", o.grad_clip),
        ] {
            if v < 0.0 {
                return Err(bad(field, format!("{v} must be >= 0 (0 = off)")));
            }
        }
        if o.eps <= 0.0 {
            return Err(bad(
                "optim.eps",
                format!("{} must be > 0 (e.g. 1e-8)", o.eps),
            ));
        }
        if !(0.0..=1.0).contains(&o.min_lr_ratio) {
            return Err(bad(
                "optim.min_lr_ratio",
                format!("{} must be in [0, 1]", o.min_lr_ratio),
            ));
        }
        if o.accumulate == 0 {
            return Err(bad("optim.accumulate", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&o.drop_path) {
            return Err(bad(
                "optim.drop_path",
                format!("{} must be in [0, 1) (0 = off; e.g. 0.1)", o.drop_path),
            ));
        }
        if !(0.0..1.0).contains(&o.ema) {
            return Err(bad(
                "optim.ema",
                format!("{} must be in [0, 1) (0 = off; e.g. 0.999)", o.ema),
            ));
        }
        if let Some((p, f)) = o
            .lr_scale
            .iter()
            .find(|(p, f)| p.trim().is_empty() || !(f.is_finite() && **f >= 0.0))
        {
            return Err(bad(
                "optim.lr_scale",
                format!("{p:?} = {f}: need a non-empty prefix and a factor >= 0 (optim.lr sets the base)"),
            ));
        }
        if o.freeze.iter().any(|p| p.trim().is_empty()) {
            return Err(bad(
                "optim.freeze",
                "an empty prefix would freeze every parameter",
            ));
        }
        let t = &self.train;
        if t.epochs == 0 && t.max_steps == 0 {
            return Err(bad(
                "train.epochs",
                "epochs and max_steps are both 0: nothing to train",
            ));
        }
        if t.val_every == 0 {
            return Err(bad("train.val_every", "must be at least 1"));
        }
        if !(t.threshold > 0.0 && t.threshold < 1.0) {
            return Err(bad(
                "train.threshold",
                format!("{} must be in (0, 1)", t.threshold),
            ));
        }
        if t.keep_last == 0 {
            return Err(bad(
                "train.keep_last",
                "must be at least 1 (the latest checkpoint is what --resume continues)",
            ));
        }
        Ok(())
    }

    /// Modalities `[data.synth]` generates.
    pub fn synth_modalities(&self) -> Vec<tmca_data::Modality> {
        match &self.data.synth {
            None => vec![],
            Some(s) if s.modalities.is_empty() => tmca_data::Modality::ALL.to_vec(),
            Some(s) => s.modalities.iter().filter_map(|m| m.parse().ok()).collect(),
        }
    }

    /// The resolved config as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| bad("config", format!("cannot serialise: {e}")))
    }

    /// A config value as one line of text: TOML's own form, arrays as `[a,b]`.
    pub fn value_text(v: &toml::Value) -> String {
        match v {
            toml::Value::Array(a) => {
                let items: Vec<String> = a.iter().map(|x| x.to_string()).collect();
                format!("[{}]", items.join(","))
            }
            other => other.to_string(),
        }
    }

    /// Every field of the resolved config under its dotted name (`model.lambda`), arrays as
    /// one value (for comparing runs: `tmca runs`, TensorBoard's HParams dashboard).
    pub fn fields(&self) -> std::collections::BTreeMap<String, toml::Value> {
        fn walk(
            prefix: &str,
            v: toml::Value,
            out: &mut std::collections::BTreeMap<String, toml::Value>,
        ) {
            match v {
                toml::Value::Table(t) => {
                    for (k, v) in t {
                        let key = if prefix.is_empty() {
                            k
                        } else {
                            format!("{prefix}.{k}")
                        };
                        walk(&key, v, out);
                    }
                }
                other => {
                    out.insert(prefix.to_string(), other);
                }
            }
        }
        let mut out = std::collections::BTreeMap::new();
        if let Ok(v) = toml::Value::try_from(self) {
            walk("", v, &mut out);
        }
        // The file leaves out `fold = 0`; in a cross-validation it is a fold like the others.
        if self.data.folds > 0 {
            out.entry("data.fold".into())
                .or_insert(toml::Value::Integer(self.data.fold as i64));
        }
        out
    }

    /// What the model takes as input: channels, size and normalisation. The one definition
    /// training and inference share (prediction must prepare images as training did).
    pub fn input_spec(&self) -> tmca_data::augment::InputSpec {
        let c = self.model.in_channels;
        let first = |v: &[f32]| v[..c.min(v.len())].to_vec();
        tmca_data::augment::InputSpec {
            channels: c,
            height: self.data.image_size,
            width: self.data.image_size,
            mean: first(&self.data.mean),
            std: first(&self.data.std),
        }
    }

    /// A stable hash of the model-defining sections (checkpoints from another model are refused).
    pub fn model_hash(&self) -> Result<String> {
        use sha2::{Digest, Sha256};
        // `model.ops` picks an implementation of the same function, not another model;
        // `model.image_weights` only sets initial values.
        let model = ModelConfig {
            ops: String::new(),
            image_weights: None,
            ..self.model.clone()
        };
        let text = serde_json::to_string(&(&model, &self.text, self.data.image_size))
            .map_err(|e| TrainError::config("model", format!("cannot serialise: {e}")))?;
        Ok(format!("{:x}", Sha256::digest(text.as_bytes()))[..16].to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra_run: &str) -> Result<Config> {
        let text = DEFAULT_CONFIG.replace("[run]\n", &format!("[run]\n{extra_run}"));
        Config::from_toml(&text, Path::new("t.toml"))
    }

    #[test]
    fn the_default_resolves_and_round_trips() {
        let cfg = Config::default_config().unwrap();
        assert!(cfg.run.tf32, "TF32 on by default");
        let again = Config::from_toml(&cfg.to_toml().unwrap(), Path::new("resolved")).unwrap();
        assert_eq!(again, cfg);
        assert_eq!(again.model_hash().unwrap(), cfg.model_hash().unwrap());
    }

    #[test]
    fn fields_are_checked_by_name() {
        let text = DEFAULT_CONFIG.replace("tf32 = true", "tf32 = false");
        let cfg = Config::from_toml(&text, Path::new("t.toml")).unwrap();
        assert!(!cfg.run.tf32);
        let err = parse("colour = 3\n").unwrap_err().to_string();
        assert!(err.contains("t.toml") && err.contains("colour"), "{err}");
        let tpu = DEFAULT_CONFIG.replace("device = \"auto\"", "device = \"tpu\"");
        let err = Config::from_toml(&tpu, Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("run.device"), "{err}");
        // Where the run starts from does not change what the model is.
        let mut a = Config::default_config().unwrap();
        let h = a.model_hash().unwrap();
        a.model.image_weights = Some("convnext.safetensors".into());
        a.optim.freeze = vec!["image_encoder.".into()];
        a.run.tf32 = false;
        assert_eq!(a.model_hash().unwrap(), h);
        a.model.dims[0] += 8;
        assert_ne!(a.model_hash().unwrap(), h);
    }

    /// Values that parse but make no sense are refused naming their field (exit 2 in the
    /// binary), before a run writes anything: NaN and infinities anywhere, negative level
    /// weights, a store listed twice, one value too many, …
    #[test]
    fn senseless_values_are_refused_by_field() {
        let cases: [(&str, &str, &str); 16] = [
            (
                "[optim]\n",
                "[optim]\nweight_decay = nan\n",
                "optim.weight_decay",
            ),
            ("grad_clip = 1.0", "grad_clip = nan", "optim.grad_clip"),
            ("[optim]\n", "[optim]\neps = 0.0\n", "optim.eps"),
            ("[data]\n", "[data]\nstd = [inf, inf, inf]\n", "data.std"),
            (
                "[data]\n",
                "[data]\nmean = [0.5, 0.5, 0.5, 0.5, 0.5]\n",
                "data.mean",
            ),
            ("[model]\n", "[model]\nlte_tau = nan\n", "model.lte_tau"),
            (
                "[1.0, 1.0, 1.0, 1.0]",
                "[-1.0, 1.0, 1.0, 1.0]",
                "model.contrastive_weights",
            ),
            ("max_len = 40", "max_len = 100000", "text.max_len"),
            (
                "stores = []",
                "stores = [\"a/x.zarr\", \"a//x.zarr/\"]",
                "data.stores",
            ),
            ("\nsize = 64", "\nsize = 0", "data.synth.size"),
            ("keep_last = 2", "keep_last = 0", "train.keep_last"),
            ("[train]\n", "[train]\nthreshold = 0.0\n", "train.threshold"),
            ("[optim]\n", "[optim]\nbeta2 = 1.0\n", "optim.beta2"),
            (
                "stores = []",
                "stores = []\nweights = [-1.0, 1.0, 1.0, 1.0]",
                "data.weights",
            ),
            (
                "encoder = \"scratch\"",
                "encoder = \"bert\"\nbert_dir = \"b\"\ntokenizer = \"t.json\"",
                "text.tokenizer",
            ),
            (
                "[data.augment]\n",
                "[data.augment]\nbrightness = nan\n",
                "data.augment.brightness",
            ),
        ];
        for (from, to, field) in cases {
            assert!(DEFAULT_CONFIG.contains(from), "{from}");
            let text = DEFAULT_CONFIG.replacen(from, to, 1);
            let err = match Config::from_toml(&text, Path::new("t.toml")) {
                Ok(_) => panic!("{to:?} accepted"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(field), "{to:?}: {err}");
        }
    }

    /// The example config of the README's step-by-step section is a valid config.
    #[test]
    fn the_readme_example_config_is_valid() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("cat > qata.toml <<'TOML'\n")
            .expect("the README's example config");
        let body = &readme[start..];
        let body = &body[body.find('\n').unwrap() + 1..];
        let text = &body[..body.find("\nTOML\n").expect("its end")];
        let mut cfg = Config::from_toml(text, Path::new("qata.toml")).unwrap();
        cfg.resolve().unwrap();
        assert_eq!(cfg.model.dims, [96, 192, 384, 768]);
        assert_eq!(cfg.text.encoder, "bert");
    }

    #[test]
    fn selection_compares_each_metric_its_own_way() {
        let up = Select::DicePooled;
        assert!(up.improves(0.5, None) && up.improves(0.6, Some(0.5)));
        assert!(!up.improves(0.5, Some(0.5)) && !up.improves(0.4, Some(0.5)));
        let down = Select::Hd95;
        assert!(down.improves(3.0, Some(4.0)) && !down.improves(5.0, Some(4.0)));
        assert!(!down.improves(4.0, Some(4.0)));
        // A NaN (no images) never becomes the best, and anything replaces a NaN best.
        assert!(!up.improves(f64::NAN, None) && !down.improves(f64::NAN, Some(1.0)));
        assert!(down.improves(9.0, Some(f64::NAN)));
        for s in Select::ALL {
            let toml = format!("[train]\nselect = \"{}\"", s.name());
            let text = DEFAULT_CONFIG.replace("[train]", &toml);
            assert_eq!(
                Config::from_toml(&text, Path::new("t.toml"))
                    .unwrap()
                    .train
                    .select,
                s
            );
        }
    }

    /// Manifests from before the metric was recorded keep their best value.
    #[test]
    fn old_manifests_read_their_best_dice() {
        let old = r#"{"version":1,"tmca_version":"0.1.0","step":4,"epoch":1,"next_batch":0,"seed":0,"model_hash":"h","model_config":{},"best_val_dice":0.25,"stale_validations":0,"files":{}}"#;
        let m: crate::checkpoint::Manifest = serde_json::from_str(old).unwrap();
        assert_eq!((m.best_val, m.select), (Some(0.25), None));
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains("\"best_val\":0.25"), "{text}");
    }
}
