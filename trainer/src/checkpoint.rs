//! Checkpoints: `weights.safetensors`, `optimizer.safetensors` and a JSON manifest (step,
//! epoch, loader position, seed, config hash, sha256 of each file), written into a temporary
//! directory, fsynced and renamed into place; the last `keep_last` step checkpoints and `best`
//! are kept. A checkpoint whose files do not match their hashes is refused.

use crate::{Result, TrainError};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Manifest format version.
pub const MANIFEST_VERSION: u32 = 1;

/// Where training stands; everything needed to continue exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub tmca_version: String,
    /// Optimiser steps taken.
    pub step: u64,
    /// Epoch to continue in, and the index of the next batch within it.
    pub epoch: u64,
    pub next_batch: usize,
    /// Seed of the run (all randomness derives from it and the loader position).
    pub seed: u64,
    /// Hash of the model-defining config; another model's checkpoint is refused.
    pub model_hash: String,
    /// The model config, to name differing fields when refusing.
    pub model_config: serde_json::Value,
    /// Best value so far of the validation metric `select` (`train.select`; named
    /// `best_val_dice` in manifests written before the metric was recorded) and validations
    /// since it improved.
    #[serde(alias = "best_val_dice")]
    pub best_val: Option<f64>,
    pub stale_validations: u64,
    /// sha256 of each file of the checkpoint.
    pub files: BTreeMap<String, String>,
    /// Samples per micro-batch over all ranks (ranks × `data.batch_size`) and micro-batches
    /// per step: the loader position (`next_batch`) and the schedule are in these units.
    /// Absent in manifests written before they were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_batch: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accumulate: Option<usize>,
    /// The metric `best_val` is of; absent in manifests written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<crate::config::Select>,
    /// What the loader position counts in: the training datasets (name and training samples),
    /// `data.weights`, `data.folds` and `data.fold`; absent in older manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// sha256 of the tokenizer's vocabulary in id order (what the text encoder's embedding
    /// rows stand for); absent in older manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocabulary: Option<String>,
    /// The build, threads, device and ranks that wrote this checkpoint (none before it was
    /// recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<crate::provenance::Provenance>,
}

impl Manifest {
    /// Reads the manifest of the checkpoint directory `path` (without verifying its files).
    pub fn read(path: &Path) -> Result<Self> {
        let mp = path.join("manifest.json");
        let text = std::fs::read_to_string(&mp)
            .map_err(|e| ck_err(path, format!("no readable manifest.json ({e})")))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| ck_err(&mp, format!("corrupted manifest: {e}")))?;
        if manifest.version > MANIFEST_VERSION {
            return Err(ck_err(
                path,
                format!(
                    "manifest version {} is newer than this tmca understands ({MANIFEST_VERSION})",
                    manifest.version
                ),
            ));
        }
        Ok(manifest)
    }
}

/// Saves and finds checkpoints under `<run>/checkpoints`.
#[derive(Debug, Clone)]
pub struct Checkpointer {
    dir: PathBuf,
    keep_last: usize,
}

/// The sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// Gives `path` the permissions of `like`, a file written the ordinary way: the safetensors
/// writer creates its files readable by the owner only (0600), where a run or an export shared
/// on a cluster should follow the user's umask like every other file.
pub(crate) fn same_permissions(path: &Path, like: &Path) -> Result<()> {
    let perms = std::fs::metadata(like)
        .map_err(|e| TrainError::io(like, e))?
        .permissions();
    std::fs::set_permissions(path, perms).map_err(|e| TrainError::io(path, e))
}

fn fsync(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| TrainError::io(path, e))
}

fn ck_err(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Checkpoint {
        path: path.into(),
        message: message.into(),
    }
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub weights: HashMap<String, Tensor>,
    pub optimizer: HashMap<String, Tensor>,
}

impl Loaded {
    /// The weights the model computes with: with `ema` (`optim.ema` > 0) the moving averages
    /// the optimiser state holds in place of the trained values (frozen parameters have none
    /// and keep theirs).
    pub fn model_weights(&self, ema: bool) -> HashMap<String, Tensor> {
        let mut w = self.weights.clone();
        if ema {
            w.extend(crate::optim::ema::averaged_weights(&self.optimizer));
        }
        w
    }
}

impl Checkpointer {
    /// Checkpoints of the run directory `run_dir`.
    pub fn new(run_dir: &Path, keep_last: usize) -> Self {
        Self {
            dir: run_dir.join("checkpoints"),
            keep_last,
        }
    }

    /// The checkpoints directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the checkpoint directory `path` is one of this run's (compared canonically).
    pub fn holds(&self, path: &Path) -> bool {
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        canon(path).starts_with(canon(&self.dir))
    }

    /// Writes checkpoint `name` (`step-000123` or `best`) atomically.
    pub fn save(
        &self,
        name: &str,
        weights: &HashMap<String, Tensor>,
        optimizer: &HashMap<String, Tensor>,
        manifest: &Manifest,
    ) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir).map_err(|e| TrainError::io(&self.dir, e))?;
        let tmp = self.dir.join(format!(".tmp-{name}-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        let mut m = manifest.clone();
        for (file, tensors) in [
            ("weights.safetensors", weights),
            ("optimizer.safetensors", optimizer),
        ] {
            let p = tmp.join(file);
            candle_core::safetensors::save(tensors, &p).map_err(|e| ck_err(&p, e.to_string()))?;
            fsync(&p)?;
            m.files.insert(file.into(), sha256_file(&p)?);
        }
        let mp = tmp.join("manifest.json");
        let text = serde_json::to_string_pretty(&m).map_err(|e| ck_err(&mp, e.to_string()))?;
        std::fs::write(&mp, text).map_err(|e| TrainError::io(&mp, e))?;
        fsync(&mp)?;
        for file in ["weights.safetensors", "optimizer.safetensors"] {
            same_permissions(&tmp.join(file), &mp)?;
        }
        let dst = self.dir.join(name);
        if dst.exists() {
            // `.<k>` after the name when an earlier copy could not be removed.
            let old = unused(
                &self.dir,
                &format!(".old-{name}-{}", std::process::id()),
                '.',
            );
            std::fs::rename(&dst, &old).map_err(|e| TrainError::io(&dst, e))?;
            std::fs::rename(&tmp, &dst).map_err(|e| TrainError::io(&dst, e))?;
            // The new checkpoint is in place: a leftover old copy is not worth stopping for
            // (the next run's `recover` removes it).
            if let Err(e) = std::fs::remove_dir_all(&old) {
                tracing::warn!(
                    "could not remove the replaced checkpoint {}: {e}",
                    old.display()
                );
            }
        } else {
            std::fs::rename(&tmp, &dst).map_err(|e| TrainError::io(&dst, e))?;
        }
        let _ = fsync(&self.dir);
        if name.starts_with("step-") {
            self.prune()?;
        }
        Ok(dst)
    }

    /// Tidies what a writer killed mid-[`save`](Self::save) left (call with the run's lock
    /// held, so no writer is alive): removes `.tmp-*` directories, puts back a `.old-<name>-<pid>`
    /// copy whose replacement never arrived (killed between the two renames) and removes the
    /// other `.old-*` copies; `spare` (the checkpoint a run resumes from, if one of these) is
    /// left as it is. Returns the checkpoints put back.
    pub fn recover(&self, spare: Option<&Path>) -> Result<Vec<PathBuf>> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(vec![]);
        };
        let canon = |p: &Path| std::fs::canonicalize(p).ok();
        let spare = spare.and_then(canon);
        let mut restored = vec![];
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            if spare.is_some() && canon(&path) == spare {
                // The checkpoint this run resumes from, wherever it lies.
                continue;
            }
            let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(name) = old_copy_of(file).filter(|n| !self.dir.join(n).exists()) {
                let dst = self.dir.join(name);
                std::fs::rename(&path, &dst).map_err(|e| TrainError::io(&dst, e))?;
                tracing::warn!(
                    "put back checkpoint {} (a run was stopped while replacing it)",
                    dst.display()
                );
                restored.push(dst);
            } else if file.starts_with(".tmp-") || file.starts_with(".old-") {
                std::fs::remove_dir_all(&path).map_err(|e| TrainError::io(&path, e))?;
            }
        }
        Ok(restored)
    }

    /// Step checkpoints, oldest first.
    pub fn steps(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("step-"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn prune(&self) -> Result<()> {
        let steps = self.steps();
        if steps.len() > self.keep_last.max(1) {
            for p in &steps[..steps.len() - self.keep_last.max(1)] {
                std::fs::remove_dir_all(p).map_err(|e| TrainError::io(p, e))?;
            }
        }
        Ok(())
    }

    /// Loads and verifies the checkpoint at `path`.
    pub fn load(path: &Path, device: &Device) -> Result<Loaded> {
        let manifest = Manifest::read(path)?;
        for file in ["weights.safetensors", "optimizer.safetensors"] {
            let p = path.join(file);
            let want = manifest
                .files
                .get(file)
                .ok_or_else(|| ck_err(path, format!("manifest lists no hash for {file}")))?;
            let got = sha256_file(&p)?;
            if &got != want {
                return Err(ck_err(
                    &p,
                    format!(
                        "corrupted or truncated: sha256 {got} does not match the manifest's {want}"
                    ),
                ));
            }
        }
        let load = |file: &str| {
            candle_core::safetensors::load(path.join(file), device)
                .map_err(|e| ck_err(&path.join(file), e.to_string()))
        };
        Ok(Loaded {
            path: path.into(),
            weights: load("weights.safetensors")?,
            optimizer: load("optimizer.safetensors")?,
            manifest,
        })
    }

    /// The newest step checkpoint that verifies; corrupted ones are skipped with a warning.
    pub fn latest(&self, device: &Device) -> Result<Option<Loaded>> {
        let steps = self.steps();
        for p in steps.iter().rev() {
            match Self::load(p, device) {
                Ok(l) => return Ok(Some(l)),
                Err(e) => tracing::warn!("skipping checkpoint: {e}"),
            }
        }
        // `best` is a whole checkpoint too (weights, optimiser, position): with no readable
        // step checkpoint it is where the run is, rather than nowhere.
        let best = self.dir.join("best");
        if best.is_dir() {
            match Self::load(&best, device) {
                Ok(l) => {
                    tracing::warn!(
                        "no readable step checkpoint: taking {} (step {})",
                        best.display(),
                        l.manifest.step
                    );
                    return Ok(Some(l));
                }
                Err(e) => tracing::warn!("skipping checkpoint: {e}"),
            }
        } else if steps.is_empty() {
            return Ok(None);
        }
        Err(ck_err(
            &self.dir,
            format!(
                "none of its {} checkpoints can be read (the warnings above say why): continue from one you trust with --resume-from, or move them away to start over",
                steps.len() + usize::from(best.is_dir())
            ),
        ))
    }

    /// A copy of checkpoint `name` moved aside by a writer stopped while replacing it
    /// (`.old-<name>-<pid>`), if there is one.
    pub fn moved_aside(&self, name: &str) -> Option<PathBuf> {
        std::fs::read_dir(&self.dir)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| old_copy_of(n.to_str()?))
                    .is_some_and(|n| n == name)
            })
    }

    /// Whether the run has a checkpoint to continue from (a step checkpoint or `best`).
    pub fn any(&self) -> bool {
        !self.steps().is_empty() || self.dir.join("best").is_dir()
    }

    /// Moves the step checkpoints later than `step`, and a `best` written after it, into
    /// `superseded-<unix seconds>/`: a run resumed from an earlier checkpoint starts another
    /// branch, whose checkpoints would otherwise be pruned as the oldest at once and lose to
    /// those on the next `--resume`. Nothing is deleted. Returns the folder they went to, if
    /// any went.
    pub fn supersede_after(&self, step: u64) -> Result<Option<PathBuf>> {
        let mut later: Vec<PathBuf> = self
            .steps()
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str()?.strip_prefix("step-")?.parse::<u64>().ok())
                    .is_some_and(|s| s > step)
            })
            .collect();
        // A `best` of the abandoned branch goes with it: the new branch keeps its own (it
        // would otherwise replace a better model, or be compared with a value it never had).
        let best = self.dir.join("best");
        if Manifest::read(&best).is_ok_and(|m| m.step > step) {
            later.push(best);
        }
        if later.is_empty() {
            return Ok(None);
        }
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let aside = unused(&self.dir, &format!("superseded-{secs}"), '-');
        std::fs::create_dir_all(&aside).map_err(|e| TrainError::io(&aside, e))?;
        for p in &later {
            if let Some(name) = p.file_name() {
                let to = aside.join(name);
                std::fs::rename(p, &to).map_err(|e| TrainError::io(p, e))?;
            }
        }
        tracing::warn!(
            "resumed from step {step}: moved the {} later checkpoint{} of the run to {}",
            later.len(),
            if later.len() == 1 { "" } else { "s" },
            aside.display()
        );
        Ok(Some(aside))
    }
}

/// The checkpoint a `.old-<name>-<pid>[.<k>]` folder is a replaced copy of (see `save`).
fn old_copy_of(file: &str) -> Option<&str> {
    Some(file.strip_prefix(".old-")?.rsplit_once('-')?.0)
}

/// `dir/base`, or `dir/base<sep>1`, `…<sep>2`, … : the first that does not exist.
fn unused(dir: &Path, base: &str, sep: char) -> PathBuf {
    let mut path = dir.join(base);
    for k in 1.. {
        if !path.exists() {
            break;
        }
        path = dir.join(format!("{base}{sep}{k}"));
    }
    path
}

/// Names the model-config fields that differ between a checkpoint and the current run.
pub fn differing_fields(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    diff("", a, b, true, &mut out);
    out
}

/// [`differing_fields`] of the fields both hold (one absent from `a` or `b`, e.g. not yet
/// recorded by the tmca that wrote it, is no difference).
pub fn differing_shared_fields(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    diff("", a, b, false, &mut out);
    out
}

fn diff(
    prefix: &str,
    a: &serde_json::Value,
    b: &serde_json::Value,
    absent_differs: bool,
    out: &mut Vec<String>,
) {
    match (a, b) {
        (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => diff(&p, u, v, absent_differs, out),
                    _ if absent_differs => out.push(p),
                    _ => {}
                }
            }
        }
        // Lists of records (datasets) by position; lists of numbers as a whole.
        (serde_json::Value::Array(x), serde_json::Value::Array(y))
            if x.len() == y.len() && x.iter().all(serde_json::Value::is_object) =>
        {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                diff(&format!("{prefix}.{i}"), u, v, absent_differs, out);
            }
        }
        _ if a != b => out.push(format!("{prefix} ({a} vs {b})")),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
