//! `tmca data inspect`: what a store holds — schema, counts per split, report lengths, mask
//! coverage.

use crate::store::Store;
use crate::{Progress, Result, Split};
use rayon::prelude::*;
use std::collections::HashSet;
use std::fmt;

/// Min / mean / max of a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stats {
    pub min: f64,
    pub mean: f64,
    pub max: f64,
}

impl Stats {
    fn of(values: impl Iterator<Item = f64>) -> Self {
        let (mut min, mut max, mut sum, mut n) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0usize);
        for v in values {
            min = min.min(v);
            max = max.max(v);
            sum += v;
            n += 1;
        }
        if n == 0 {
            return Self::default();
        }
        Self {
            min,
            mean: sum / n as f64,
            max,
        }
    }
}

/// Per-split summary.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitSummary {
    pub split: Split,
    pub samples: usize,
    pub distinct_reports: usize,
    pub report_words: Stats,
    pub report_chars: Stats,
    /// Foreground fraction of the masks.
    pub mask_coverage: Stats,
    /// Samples whose mask is all background.
    pub empty_masks: usize,
}

/// Everything `inspect` prints.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspection {
    pub path: String,
    pub schema_version: u32,
    pub info: crate::StoreInfo,
    /// The content digest recorded when the store was written (runs record it to recognise
    /// their data); `None` for a store another tool wrote.
    pub content: Option<String>,
    pub splits: Vec<SplitSummary>,
}

/// Summarises the store (reads every mask once, in parallel).
pub fn inspect(store: &Store, progress: &dyn Progress) -> Result<Inspection> {
    progress.start("reading masks", store.len() as u64);
    let coverage: Vec<f64> = (0..store.len())
        .into_par_iter()
        .map(|i| {
            let m = store.mask(i)?;
            progress.inc(1);
            Ok(m.iter().filter(|&&v| v > 0).count() as f64 / m.len().max(1) as f64)
        })
        .collect::<Result<_>>()?;
    progress.finish();
    let splits = Split::ALL
        .iter()
        .map(|&split| {
            let idx = store.split_indices(split);
            let reports = store.reports();
            SplitSummary {
                split,
                samples: idx.len(),
                distinct_reports: idx
                    .iter()
                    .map(|&i| reports[i].as_str())
                    .collect::<HashSet<_>>()
                    .len(),
                report_words: Stats::of(
                    idx.iter()
                        .map(|&i| reports[i].split_whitespace().count() as f64),
                ),
                report_chars: Stats::of(idx.iter().map(|&i| reports[i].chars().count() as f64)),
                mask_coverage: Stats::of(idx.iter().map(|&i| coverage[i])),
                empty_masks: idx.iter().filter(|&&i| coverage[i] == 0.0).count(),
            }
        })
        .collect();
    Ok(Inspection {
        path: store.path().display().to_string(),
        schema_version: store.schema_version(),
        info: store.info().clone(),
        content: if store.content_digest_recorded() {
            Some(store.content_digest()?)
        } else {
            None
        },
        splits,
    })
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.info;
        writeln!(f, "store        {}", self.path)?;
        writeln!(f, "dataset      {} ({})", i.name, i.modality)?;
        writeln!(f, "schema       v{}", self.schema_version)?;
        match &self.content {
            Some(d) => writeln!(f, "content      sha256 {d}")?,
            None => writeln!(
                f,
                "content      not recorded (written by another tool; computed when a run uses it)"
            )?,
        }
        writeln!(
            f,
            "images       {} x {} x {} (C x H x W) uint8",
            i.channels, i.height, i.width
        )?;
        writeln!(
            f,
            "classes      {}",
            serde_json::Value::Object(i.class_map.clone())
        )?;
        writeln!(f, "provenance   {}", i.provenance)?;
        writeln!(
            f,
            "\n{:<6} {:>8} {:>16} {:>18} {:>18} {:>22} {:>7}",
            "split",
            "samples",
            "distinct reports",
            "words min/mean/max",
            "chars min/mean/max",
            "mask cover min/mean/max",
            "empty"
        )?;
        for s in &self.splits {
            let st =
                |x: &Stats, p: usize| format!("{:.p$}/{:.p$}/{:.p$}", x.min, x.mean, x.max, p = p);
            writeln!(
                f,
                "{:<6} {:>8} {:>16} {:>18} {:>18} {:>22} {:>7}",
                s.split.name(),
                s.samples,
                s.distinct_reports,
                st(&s.report_words, 1),
                st(&s.report_chars, 0),
                st(&s.mask_coverage, 3),
                s.empty_masks
            )?;
        }
        Ok(())
    }
}
