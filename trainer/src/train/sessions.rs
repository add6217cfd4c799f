//! `<run.dir>/sessions.jsonl`: one line per training session of a run, appended by rank 0 as
//! it starts — when, from which step, with which build, threads, device and ranks, and the
//! settings changed since the session before. A checkpoint's manifest describes only the
//! session that wrote it (a run resumed on 2 threads after 100 steps on 1 says 2); this file
//! keeps the whole history, for telling what a result took to make.

use crate::config::Config;
use crate::provenance::Provenance;
use crate::{Result, TrainError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// The file's name in the run directory.
pub const FILE: &str = "sessions.jsonl";

/// One session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Start, in seconds since 1970-01-01 UTC.
    pub started_unix: u64,
    /// The optimiser step it started from (0: a fresh start).
    pub from_step: u64,
    pub provenance: Option<Provenance>,
    /// Settings changed since the previous session: field → [before, now].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub changed: BTreeMap<String, [String; 2]>,
}

/// The settings of `cfg` that differ from the config file at `previous` (`run.dir` aside):
/// field → [before (`unset` if absent), now]. Empty when `previous` does not read.
pub fn changed_settings(previous: &Path, cfg: &Config) -> BTreeMap<String, [String; 2]> {
    let Ok(old) = Config::load(previous) else {
        return BTreeMap::new();
    };
    let (before, now) = (old.fields(), cfg.fields());
    now.iter()
        .filter(|(k, v)| k.as_str() != "run.dir" && before.get(*k) != Some(*v))
        .map(|(k, v)| {
            let was = before
                .get(k)
                .map_or_else(|| "unset".into(), Config::value_text);
            (k.clone(), [was, Config::value_text(v)])
        })
        .collect()
}

/// Appends `record` to the run's file (one JSON line, flushed).
pub fn append(run_dir: &Path, record: &SessionRecord) -> Result<()> {
    let p = run_dir.join(FILE);
    let line = serde_json::to_string(record).map_err(|e| TrainError::file(&p, e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .map_err(|e| TrainError::io(&p, e))?;
    writeln!(f, "{line}")
        .and_then(|_| f.flush())
        .map_err(|e| TrainError::io(&p, e))
}

/// Removes the run's file (a fresh start's history begins with it).
pub fn clear(run_dir: &Path) -> Result<()> {
    let p = run_dir.join(FILE);
    match std::fs::remove_file(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(TrainError::io(&p, e)),
        _ => Ok(()),
    }
}

/// The sessions recorded in `run_dir`, oldest first (none when the file is absent; a line
/// that does not parse is skipped: the file is a history, not an input).
pub fn read(run_dir: &Path) -> Result<Vec<SessionRecord>> {
    let p = run_dir.join(FILE);
    match std::fs::read_to_string(&p) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(TrainError::io(&p, e)),
    }
}
