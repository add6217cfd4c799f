//! The run configuration: one TOML file, `deny_unknown_fields` everywhere, each section
//! validated with errors that name the field. The resolved configuration (presets expanded) is
//! saved in the run directory.

mod sections;
mod select;
mod validate;

pub use sections::*;
pub use select::Select;

use crate::model::{ModelConfig, TextConfig};
use crate::{Result, TrainError};
use serde::{Deserialize, Serialize};
use std::path::Path;

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
        self.check_finite()?;
        self.model.resolve(&mut self.text)?;
        self.validate()
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
        toml::to_string_pretty(self)
            .map_err(|e| TrainError::config("config", format!("cannot serialise: {e}")))
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
        // Fields added after checkpoints were written are left out at their default, so that
        // those checkpoints keep their hash (each is followed by another field, hence the
        // comma).
        let text = text.replace("\"target_sensitive\":true,", "");
        Ok(format!("{:x}", Sha256::digest(text.as_bytes()))[..16].to_string())
    }
}

#[cfg(test)]
mod tests;
