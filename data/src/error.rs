//! Typed errors of the data layer. Every variant names the file, sample or field at fault.

use std::path::PathBuf;

/// Result alias of the data layer.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Everything that can go wrong reading, writing or importing data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a tmca dataset store ({reason})")]
    NotAStore { path: PathBuf, reason: String },
    #[error(
        "{path}: store schema version {found} is newer than this tmca understands (up to {supported}); upgrade tmca"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path}: already exists; choose another output or pass --force to replace it")]
    AlreadyExists { path: PathBuf },
    #[error("{path}: zarr error: {message}")]
    Zarr { path: PathBuf, message: String },
    #[error("{path}: cannot read image: {message}")]
    Image { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    BadInput { path: PathBuf, message: String },
    #[error("{path}: sample {index} ({name}): {message}")]
    BadSample {
        path: PathBuf,
        index: usize,
        name: String,
        message: String,
    },
    /// Something tmca's own code guarantees did not hold (a bug to report, exit 1).
    #[error("internal error (a bug in tmca): {0}")]
    Internal(String),
    #[error("{path}: stopped before it was complete (a signal); nothing of it was kept")]
    Interrupted { path: PathBuf },
    #[error("{path}: the store has no samples in split '{split}'")]
    EmptySplit { path: PathBuf, split: String },
    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("invalid {field}: {message}")]
    Config { field: String, message: String },
}

impl DataError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// Bad input in `path`, with a message saying what is wrong.
    pub fn bad(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::BadInput {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A zarr-level error on the store at `path`.
    pub fn zarr(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> Self {
        Self::Zarr {
            path: path.into(),
            message: err.to_string(),
        }
    }
}
