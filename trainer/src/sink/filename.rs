//! Unique event file names: `events.out.tfevents.<unix secs>.<hostname>.<pid>.<counter>`.
//!
//! The pid separates processes, the in-process counter separates writers created in the same
//! second by one process, and the file is opened with `create_new` so an existing file is never
//! truncated: on a clash (say, a pid reused on another machine sharing the directory) the next
//! counter value is tried.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{Result, SinkError};

/// Per-process counter, shared by every writer.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// How many names to try before giving up.
const MAX_ATTEMPTS: u32 = 1000;

/// Prefix TensorBoard looks for (`tfevents` in the name).
pub const PREFIX: &str = "events.out.tfevents";

/// The host name, reduced to characters safe in a file name (`localhost` if unknown).
pub fn hostname() -> String {
    let raw = crate::host::name().unwrap_or_else(|| "localhost".to_string());
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The file name for the given parts.
pub fn file_name(unix_secs: u64, host: &str, pid: u32, counter: u64) -> String {
    format!("{PREFIX}.{unix_secs}.{host}.{pid}.{counter}")
}

/// Creates a new, never-before-existing event file in `dir` (creating `dir` if needed).
pub fn create_unique(dir: &Path, unix_secs: u64) -> Result<(File, PathBuf)> {
    std::fs::create_dir_all(dir).map_err(|source| SinkError::Io {
        path: dir.to_path_buf(),
        op: "create directory",
        source,
    })?;
    create_unique_with(dir, unix_secs, &hostname(), std::process::id(), || {
        COUNTER.fetch_add(1, Ordering::Relaxed)
    })
}

/// [`create_unique`] with explicit host, pid and counter source (`dir` must exist).
pub(crate) fn create_unique_with(
    dir: &Path,
    unix_secs: u64,
    host: &str,
    pid: u32,
    mut next_counter: impl FnMut() -> u64,
) -> Result<(File, PathBuf)> {
    for _ in 0..MAX_ATTEMPTS {
        let counter = next_counter();
        let path = dir.join(file_name(unix_secs, host, pid, counter));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(source) => {
                return Err(SinkError::Io {
                    path,
                    op: "create",
                    source,
                });
            }
        }
    }
    Err(SinkError::NameExhausted {
        dir: dir.to_path_buf(),
        attempts: MAX_ATTEMPTS,
    })
}
