//! Errors of the event writer. Every variant names the event file concerned.

use std::path::PathBuf;

/// Result of sink operations.
pub type Result<T, E = SinkError> = std::result::Result<T, E>;

/// What can go wrong writing (or re-reading) a TensorBoard event file.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Creating, writing, syncing or reading the file failed.
    #[error("event file {path}: {op}: {source}")]
    Io {
        /// The event file (or, when creating, the directory).
        path: PathBuf,
        /// What was being done ("create", "write", "fsync", ...).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The pixel buffer handed to an image call does not match its declared shape.
    #[error("event file {path}: image {tag:?}: {reason}")]
    InvalidImage {
        /// The event file the image was meant for.
        path: PathBuf,
        /// The summary tag.
        tag: String,
        /// What is wrong with the buffer.
        reason: String,
    },
    /// PNG encoding failed.
    #[error("event file {path}: image {tag:?}: PNG encoding: {source}")]
    Png {
        /// The event file the image was meant for.
        path: PathBuf,
        /// The summary tag.
        tag: String,
        /// The encoder's error.
        #[source]
        source: image::ImageError,
    },
    /// A record read back from an event file is truncated or fails its checksum.
    #[error("event file {path}: record at byte {offset}: {reason}")]
    Corrupt {
        /// The event file.
        path: PathBuf,
        /// Byte offset of the record's header.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A unique file name could not be found (every candidate already existed).
    #[error("event directory {dir}: no unused event file name after {attempts} attempts")]
    NameExhausted {
        /// The directory.
        dir: PathBuf,
        /// How many names were tried.
        attempts: u32,
    },
}
