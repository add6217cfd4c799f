//! Machine-readable results in the run directory, for scripts, sweeps and `tmca runs`:
//! `validation.jsonl` (one line per validation during training) and `eval/*.json` (one file per
//! `tmca eval` of a checkpoint and split).

use super::eval::{mean_dice, EvalResult};
use crate::metrics::accumulator::nullable_f64;
use crate::{Result, TrainError};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One evaluation of a model: where it came from and the metrics per dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// Optimiser steps the evaluated weights had taken.
    pub step: u64,
    /// Epochs completed (validations during training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The evaluated checkpoint (`tmca eval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// Flip test-time augmentation.
    #[serde(default)]
    pub tta: bool,
    /// Foreground probability threshold of the masks scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// Predicted components smaller than this fraction of the image were removed
    /// (`tmca eval --min-area`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_area: Option<f32>,
    /// The run directories averaged, for an ensemble (`tmca eval RUN RUN…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<Vec<String>>,
    /// The run directory evaluated, as given (`tmca eval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// The stores scored: dataset name, path and content digest (`tmca eval`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<StoreRef>,
    /// The build, threads and device of the evaluation (`tmca eval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<crate::provenance::Provenance>,
    /// The metrics at other thresholds from the same pass (`tmca eval --sweep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<Vec<crate::metrics::SweepRow>>,
    /// Mean over datasets of the per-image mean Dice (the model-selection criterion).
    #[serde(deserialize_with = "nullable_f64")]
    pub mean_dice_per_image: f64,
    /// Mean over datasets of the pixel-pooled Dice.
    #[serde(deserialize_with = "nullable_f64")]
    pub mean_dice_pooled: f64,
    pub datasets: Vec<EvalResult>,
}

/// A store an evaluation scored: which data, whatever its path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreRef {
    pub name: String,
    pub path: String,
    /// Its content digest (`tmca data inspect` shows a store's).
    pub content: String,
}

impl StoreRef {
    /// The reference to an open store (its digest computed if it has none recorded).
    pub fn of(store: &tmca_data::store::Store) -> Result<Self> {
        Ok(Self {
            name: store.info().name.clone(),
            path: store.path().display().to_string(),
            content: store.content_digest()?,
        })
    }
}

impl ResultRecord {
    /// How the scores were made: checkpoint, threshold, flip TTA, small components removed
    /// (`best t=0.50 tta min-area=0.002`). Scores of different protocols are not comparable.
    pub fn protocol(&self) -> String {
        self.protocol_with(self.checkpoint.as_deref().unwrap_or("?"))
    }

    /// [`ResultRecord::protocol`] naming the checkpoint as `checkpoint` (as it was asked for:
    /// `latest` of two runs is one protocol, their step names differ).
    pub fn protocol_with(&self, checkpoint: &str) -> String {
        let mut s = checkpoint.to_string();
        if let Some(t) = self.threshold {
            s += &format!(" t={t:.2}");
        }
        if self.tta {
            s += " tta";
        }
        if let Some(a) = self.min_area.filter(|a| *a > 0.0) {
            s += &format!(" min-area={a}");
        }
        s
    }

    /// Mean over datasets of the per-image HD95 (NaN for results written before the
    /// distances existed).
    pub fn mean_hd95_per_image(&self) -> f64 {
        if self.datasets.is_empty() {
            return f64::NAN;
        }
        let n = self.datasets.len() as f64;
        self.datasets
            .iter()
            .map(|d| d.summary.hd95_per_image)
            .sum::<f64>()
            / n
    }

    /// The record of `results` at `step`.
    pub fn new(step: u64, results: &[EvalResult]) -> Self {
        let pooled = super::eval::mean_dice_pooled(results);
        Self {
            step,
            epoch: None,
            checkpoint: None,
            tta: false,
            threshold: None,
            min_area: None,
            ensemble: None,
            run: None,
            stores: vec![],
            provenance: None,
            sweep: None,
            mean_dice_per_image: mean_dice(results),
            mean_dice_pooled: pooled,
            datasets: results.to_vec(),
        }
    }
}

/// `<run>/validation.jsonl`: appended (and flushed) at every validation of a training run.
#[derive(Debug)]
pub struct ValidationLog {
    path: PathBuf,
}

impl ValidationLog {
    pub const FILE: &'static str = "validation.jsonl";

    /// Opens the log of `run_dir` for a run continuing after `step`: lines of later steps
    /// (from a run that went on past the checkpoint it now resumes from) are dropped, so the
    /// file describes this run's history once.
    pub fn open(run_dir: &Path, step: u64) -> Result<Self> {
        let path = run_dir.join(Self::FILE);
        if path.is_file() {
            let kept: Vec<ResultRecord> = read_validation_log(run_dir)?
                .into_iter()
                .filter(|r| r.step <= step)
                .collect();
            let mut text = String::new();
            for r in &kept {
                text.push_str(&line(r));
            }
            write_atomic(&path, text.as_bytes())?;
        }
        Ok(Self { path })
    }

    /// Appends one validation.
    pub fn append(&self, record: &ResultRecord) -> Result<()> {
        let text = line(record);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| TrainError::io(&self.path, e))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.flush())
            .map_err(|e| TrainError::io(&self.path, e))
    }
}

fn line(r: &ResultRecord) -> String {
    // Plain data (strings, numbers, NaN as null): serialising cannot fail.
    serde_json::to_string(r).unwrap_or_default() + "\n"
}

/// The validations of `run_dir` in file order (none when there is no log). A line that does
/// not parse is an error naming the file and line; a torn last line (a run killed while
/// writing) is skipped.
pub fn read_validation_log(run_dir: &Path) -> Result<Vec<ResultRecord>> {
    let path = run_dir.join(ValidationLog::FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(&path, e)),
    };
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(l) {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == lines.len() && !complete => {
                tracing::warn!("{}: skipping the torn last line", path.display())
            }
            Err(e) => {
                return Err(TrainError::file(&path, format!("line {}: {e}", i + 1)));
            }
        }
    }
    Ok(out)
}

/// The file name of an evaluation record: `<checkpoint>-<split>[-tta].json`.
pub fn eval_record_name(checkpoint: &str, split: tmca_data::Split, tta: bool) -> String {
    let label: String = checkpoint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{label}-{split}{}.json", if tta { "-tta" } else { "" })
}

/// Writes `record` to `<run_dir>/eval/<name>` (replacing an earlier evaluation of the same
/// checkpoint and split atomically); returns the path.
pub fn write_eval_record(run_dir: &Path, name: &str, record: &ResultRecord) -> Result<PathBuf> {
    let dir = run_dir.join("eval");
    std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
    let path = dir.join(name);
    let text =
        serde_json::to_string_pretty(record).map_err(|e| TrainError::file(&path, e.to_string()))?;
    write_atomic(&path, format!("{text}\n").as_bytes())?;
    Ok(path)
}

/// The evaluation records of `run_dir` (`eval/*.json`), with their paths, by file name.
pub fn read_eval_records(run_dir: &Path) -> Result<Vec<(PathBuf, ResultRecord)>> {
    let dir = run_dir.join("eval");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(&dir, e)),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).map_err(|e| TrainError::io(&p, e))?;
            let r = serde_json::from_str(&text)
                .map_err(|e| TrainError::file(&p, format!("not an evaluation record: {e}")))?;
            Ok((p, r))
        })
        .collect()
}

/// Writes `path` through a temporary sibling and a rename: readers see the old or the new file,
/// never a part.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| TrainError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::SegSummary;
    use tmca_data::Split;

    fn result(name: &str, dice: f64) -> EvalResult {
        EvalResult {
            dataset: name.into(),
            split: Split::Val,
            summary: SegSummary {
                dice_per_image: dice,
                iou_per_image: dice / 2.0,
                dice_pooled: dice + 0.1,
                iou_pooled: 0.25,
                hd95_per_image: 3.5,
                assd_per_image: 1.25,
                images: 4,
                empty_masks: 1,
            },
        }
    }

    #[test]
    fn the_log_round_trips_and_a_resume_drops_later_steps() {
        let dir = tempfile::tempdir().unwrap();
        let log = ValidationLog::open(dir.path(), 0).unwrap();
        for step in [10, 20, 30] {
            let r = ResultRecord::new(step, &[result("a", 0.5), result("b", step as f64 / 100.0)]);
            log.append(&r).unwrap();
        }
        let back = read_validation_log(dir.path()).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[1].datasets[1].summary.dice_per_image, 0.2);
        assert!((back[1].mean_dice_per_image - 0.35).abs() < 1e-12);
        assert!((back[1].mean_dice_pooled - 0.45).abs() < 1e-12);

        // Resuming from step 20 forgets step 30, then appends after 20.
        let log = ValidationLog::open(dir.path(), 20).unwrap();
        log.append(&ResultRecord::new(40, &[result("a", 0.9)]))
            .unwrap();
        let steps: Vec<u64> = read_validation_log(dir.path())
            .unwrap()
            .iter()
            .map(|r| r.step)
            .collect();
        assert_eq!(steps, [10, 20, 40]);
    }

    #[test]
    fn a_torn_last_line_is_skipped_but_a_bad_line_inside_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = ValidationLog::open(dir.path(), 0).unwrap();
        log.append(&ResultRecord::new(1, &[result("a", 0.5)]))
            .unwrap();
        let path = dir.path().join(ValidationLog::FILE);
        let mut text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}{{\"step\": 2, \"mea")).unwrap();
        assert_eq!(read_validation_log(dir.path()).unwrap().len(), 1);
        text.push_str("not json\n");
        text.push_str(&line(&ResultRecord::new(3, &[result("a", 0.5)])));
        std::fs::write(&path, text).unwrap();
        let err = read_validation_log(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("validation.jsonl") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn a_dataset_without_images_round_trips_as_null() {
        let dir = tempfile::tempdir().unwrap();
        let empty = EvalResult {
            summary: crate::metrics::SegMetrics::default().summary(),
            ..result("empty", 0.0)
        };
        let r = ResultRecord::new(5, &[empty]);
        let p = write_eval_record(dir.path(), "x.json", &r).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"dice_per_image\": null"), "{text}");
        let back = &read_eval_records(dir.path()).unwrap()[0].1;
        assert!(back.datasets[0].summary.dice_pooled.is_nan());
        assert!(back.mean_dice_per_image.is_nan());
        assert_eq!(back.datasets[0].dataset, "empty");
    }

    #[test]
    fn eval_records_are_named_by_checkpoint_split_and_tta() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            eval_record_name("best", Split::Test, false),
            "best-test.json"
        );
        assert_eq!(
            eval_record_name("step-00000960", Split::Val, true),
            "step-00000960-val-tta.json"
        );
        let mut r = ResultRecord::new(960, &[result("a", 0.7)]);
        r.checkpoint = Some("best".into());
        let p = write_eval_record(dir.path(), "best-test.json", &r).unwrap();
        assert_eq!(p, dir.path().join("eval/best-test.json"));
        let back = read_eval_records(dir.path()).unwrap();
        assert_eq!(back, vec![(p, r)]);
    }
}
