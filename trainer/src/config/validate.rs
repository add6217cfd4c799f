//! Per-section checks of a parsed config: each error names its field (exit 2 in the binary).

use super::{Config, DataConfig, OptimConfig, RunConfig, SynthSection, TrainConfig};
use crate::TrainError;
use std::collections::BTreeMap;

type Result<T> = std::result::Result<T, TrainError>;

pub(super) fn bad(field: &str, message: impl Into<String>) -> TrainError {
    TrainError::config(field, message)
}

/// The first field (in `fields`' order) holding NaN or an infinity, alone or in an array.
fn non_finite(fields: &BTreeMap<String, toml::Value>) -> Option<(String, f64)> {
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
    /// No NaN or infinity anywhere (checked before presets are expanded).
    pub(super) fn check_finite(&self) -> Result<()> {
        match non_finite(&self.fields()) {
            Some((field, x)) => Err(bad(&field, format!("{x} is not a finite number"))),
            None => Ok(()),
        }
    }

    /// Each section's checks (after presets are expanded: the data needs the model's channels).
    pub(super) fn validate(&self) -> Result<()> {
        self.run.validate()?;
        let n_stores = self.data.stores.len() + self.synth_modalities().len();
        self.data.validate(self.model.in_channels, n_stores)?;
        self.optim.validate()?;
        self.train.validate()
    }
}

impl RunConfig {
    fn validate(&self) -> Result<()> {
        if !["auto", "cpu", "cuda"].contains(&self.device.as_str()) {
            return Err(bad(
                "run.device",
                format!("{:?}: use auto, cpu or cuda", self.device),
            ));
        }
        Ok(())
    }
}

impl DataConfig {
    /// `channels`: the model's input channels; `n_stores`: stores given plus generated ones.
    fn validate(&self, channels: usize, n_stores: usize) -> Result<()> {
        if self.image_size == 0 || !self.image_size.is_multiple_of(32) {
            return Err(bad(
                "data.image_size",
                format!("{} must be a positive multiple of 32", self.image_size),
            ));
        }
        if self.batch_size == 0 {
            return Err(bad("data.batch_size", "must be at least 1"));
        }
        if self.stores.is_empty() && self.synth.is_none() {
            return Err(bad(
                "data.stores",
                "no stores given (and no [data.synth] to generate them)",
            ));
        }
        self.validate_weights(n_stores)?;
        let (folds, fold) = (self.folds, self.fold);
        if folds == 1 || (folds > 0 && fold >= folds) || (folds == 0 && fold > 0) {
            return Err(bad(
                "data.folds",
                format!(
                    "folds = {folds}, fold = {fold}: need folds >= 2 and 0 <= fold < folds (folds = 0: the stores' own splits)"
                ),
            ));
        }
        if !self.fold_group.is_empty() {
            if folds == 0 {
                return Err(bad(
                    "data.fold_group",
                    "groups folds, but data.folds is 0 (no cross-validation)",
                ));
            }
            if let Err(e) = regex::Regex::new(&self.fold_group) {
                return Err(bad(
                    "data.fold_group",
                    format!("{:?} is not a regular expression: {e}", self.fold_group),
                ));
            }
        }
        for (field, v) in [("data.mean", &self.mean), ("data.std", &self.std)] {
            if v.len() < channels || v.len() > 3 {
                return Err(bad(
                    field,
                    format!(
                        "{} values: give one per image channel (1 or 3; a gray model uses the first)",
                        v.len()
                    ),
                ));
            }
        }
        self.validate_stores_distinct()?;
        if self.std.iter().any(|&s| s <= 0.0) {
            return Err(bad("data.std", "values must be > 0"));
        }
        self.augment.validate()?;
        match &self.synth {
            Some(s) => s.validate(),
            None => Ok(()),
        }
    }

    fn validate_weights(&self, n_stores: usize) -> Result<()> {
        let w = &self.weights;
        if !w.is_empty() && w.len() != n_stores {
            return Err(bad(
                "data.weights",
                format!(
                    "{} weights for {n_stores} stores (data.stores, then the [data.synth] ones)",
                    w.len()
                ),
            ));
        }
        if w.iter().any(|w| *w < 0.0) || (!w.is_empty() && w.iter().sum::<f64>() <= 0.0) {
            return Err(bad(
                "data.weights",
                format!("{w:?}: weights must be >= 0, and not all 0"),
            ));
        }
        Ok(())
    }

    /// The same store twice (under any spelling of its path) would silently double its weight.
    fn validate_stores_distinct(&self) -> Result<()> {
        let mut seen = std::collections::HashMap::new();
        for s in &self.stores {
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
        Ok(())
    }
}

impl SynthSection {
    fn validate(&self) -> Result<()> {
        if self.size == 0 || !self.size.is_multiple_of(32) {
            return Err(bad(
                "data.synth.size",
                format!("{} must be a positive multiple of 32", self.size),
            ));
        }
        for m in &self.modalities {
            m.parse::<tmca_data::Modality>()
                .map_err(|e| bad("data.synth.modalities", e))?;
        }
        Ok(())
    }
}

impl OptimConfig {
    fn validate(&self) -> Result<()> {
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(bad(
                "optim.lr",
                format!("{} must be finite and > 0", self.lr),
            ));
        }
        for (field, b) in [("optim.beta1", self.beta1), ("optim.beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(bad(field, format!("{b} must be in [0, 1)")));
            }
        }
        for (field, v) in [
            ("optim.weight_decay", self.weight_decay),
            ("optim.grad_clip", self.grad_clip),
        ] {
            if v < 0.0 {
                return Err(bad(field, format!("{v} must be >= 0 (0 = off)")));
            }
        }
        if self.eps <= 0.0 {
            return Err(bad(
                "optim.eps",
                format!("{} must be > 0 (e.g. 1e-8)", self.eps),
            ));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(bad(
                "optim.min_lr_ratio",
                format!("{} must be in [0, 1]", self.min_lr_ratio),
            ));
        }
        if self.accumulate == 0 {
            return Err(bad("optim.accumulate", "must be at least 1"));
        }
        for (field, v, example) in [
            ("optim.drop_path", self.drop_path, "0.1"),
            ("optim.ema", self.ema, "0.999"),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(bad(
                    field,
                    format!("{v} must be in [0, 1) (0 = off; e.g. {example})"),
                ));
            }
        }
        if let Some((p, f)) = self
            .lr_scale
            .iter()
            .find(|(p, f)| p.trim().is_empty() || !(f.is_finite() && **f >= 0.0))
        {
            return Err(bad(
                "optim.lr_scale",
                format!("{p:?} = {f}: need a non-empty prefix and a factor >= 0 (optim.lr sets the base)"),
            ));
        }
        if self.freeze.iter().any(|p| p.trim().is_empty()) {
            return Err(bad(
                "optim.freeze",
                "an empty prefix would freeze every parameter",
            ));
        }
        Ok(())
    }
}

impl TrainConfig {
    fn validate(&self) -> Result<()> {
        if self.epochs == 0 && self.max_steps == 0 {
            return Err(bad(
                "train.epochs",
                "epochs and max_steps are both 0: nothing to train",
            ));
        }
        if self.val_every == 0 {
            return Err(bad("train.val_every", "must be at least 1"));
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(bad(
                "train.threshold",
                format!("{} must be in (0, 1)", self.threshold),
            ));
        }
        if self.keep_last == 0 {
            return Err(bad(
                "train.keep_last",
                "must be at least 1 (the latest checkpoint is what --resume continues)",
            ));
        }
        Ok(())
    }
}
