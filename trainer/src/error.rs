//! Typed errors of the trainer. Messages name the field, file or step at fault.

use std::path::PathBuf;

/// Result alias of the trainer.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// Everything that can go wrong building, training, evaluating or checkpointing a model.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A config field's value, or (`field` starting with `--`) a command-line flag's.
    #[error("{}", config_message(field, message))]
    Config { field: String, message: String },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    /// A config file that is not valid TOML or names unknown fields or wrong types.
    #[error("{path}: invalid config: {message}")]
    ConfigFile { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// A checkpoint of another model configuration than the run resuming from it.
    #[error("checkpoint {}: was written by another model configuration; differing fields: {}", path.display(), fields.join(", "))]
    OtherModel { path: PathBuf, fields: Vec<String> },
    #[error("process group: {0}")]
    Collective(String),
    #[error("non-finite loss at step {step} ({detail})")]
    NonFinite { step: u64, detail: String },
    #[error(transparent)]
    Data(#[from] tmca_data::DataError),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    /// Something tmca's own code guarantees did not hold (a bug to report, exit 1).
    #[error("internal error (a bug in tmca): {0}")]
    Internal(String),
}

impl TrainError {
    /// A config error on `field`.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    /// An error about `path`.
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::File {
            path: path.into(),
            message: message.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

fn config_message(field: &str, message: &str) -> String {
    if field.starts_with("--") {
        format!("{field}: {message}")
    } else {
        format!("invalid config field `{field}`: {message}")
    }
}
