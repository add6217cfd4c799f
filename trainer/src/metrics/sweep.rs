//! [`ThresholdSweep`]: the metrics of one evaluation pass at many foreground thresholds, for
//! choosing the threshold on the validation split (`tmca eval --split val --sweep`).

use super::accumulator::{nullable_f64, SegMetrics, SegSummary};
use super::error::MetricsError;
use serde::{Deserialize, Serialize};

/// The metrics at one threshold of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    pub threshold: f32,
    #[serde(deserialize_with = "nullable_f64")]
    pub mean_dice_per_image: f64,
    #[serde(deserialize_with = "nullable_f64")]
    pub mean_hd95_per_image: f64,
    /// Each dataset's metrics at this threshold (the shape of a record's top-level
    /// `datasets`, less the split; records written as `[name, metrics]` pairs read too).
    #[serde(deserialize_with = "datasets_old_or_new")]
    pub datasets: Vec<SweepDataset>,
}

/// One dataset's metrics at a threshold of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepDataset {
    pub dataset: String,
    #[serde(flatten)]
    pub summary: SegSummary,
}

fn datasets_old_or_new<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<SweepDataset>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Now(SweepDataset),
        Pair(String, SegSummary),
    }
    Ok(Vec::<Either>::deserialize(d)?
        .into_iter()
        .map(|e| match e {
            Either::Now(x) => x,
            Either::Pair(dataset, summary) => SweepDataset { dataset, summary },
        })
        .collect())
}

/// Of `(threshold, mean per-image Dice)` pairs, the one with the highest Dice (the first of
/// equals; thresholds without a finite Dice never win): a live sweep's best and a recorded
/// sweep's ([`SweepRow`]) are chosen alike.
pub fn best_threshold(pairs: impl Iterator<Item = (f32, f64)>) -> Option<(f32, f64)> {
    pairs
        .filter(|(_, d)| d.is_finite())
        .fold(None, |best, (t, d)| match best {
            Some((_, bd)) if bd >= d => best,
            _ => Some((t, d)),
        })
}

/// Per dataset, a [`SegMetrics`] for each threshold.
#[derive(Debug, Clone)]
pub struct ThresholdSweep {
    thresholds: Vec<f32>,
    datasets: Vec<(String, Vec<SegMetrics>)>,
    /// `tmca eval --min-area`: at each threshold, predicted components smaller than this
    /// fraction of the image are removed before scoring, as at the evaluation's own.
    min_area: f32,
}

impl ThresholdSweep {
    /// A sweep over `thresholds` (each in (0, 1)).
    pub fn new(thresholds: Vec<f32>) -> Self {
        Self {
            thresholds,
            datasets: Vec::new(),
            min_area: 0.0,
        }
    }

    /// The sweep of an evaluation with `--min-area`: small components are removed at each
    /// threshold (the probabilities given to [`Self::update`] are those before any removal).
    pub fn with_min_area(self, min_area: f32) -> Self {
        Self { min_area, ..self }
    }

    /// 0.05, 0.10, …, 0.95.
    pub fn grid() -> Self {
        Self::new((1..20).map(|k| k as f32 * 0.05).collect())
    }

    pub fn thresholds(&self) -> &[f32] {
        &self.thresholds
    }

    /// Adds a batch of `dataset`: `n` probability maps and masks of `height`x`width`.
    pub fn update(
        &mut self,
        dataset: &str,
        probs: &[f32],
        masks: &[f32],
        n: usize,
        (height, width): (usize, usize),
    ) -> Result<(), MetricsError> {
        let k = match self.datasets.iter().position(|(d, _)| d == dataset) {
            Some(k) => k,
            None => {
                let fresh = vec![SegMetrics::default(); self.thresholds.len()];
                self.datasets.push((dataset.to_string(), fresh));
                self.datasets.len() - 1
            }
        };
        let mut cleaned = Vec::new();
        for (m, &t) in self.datasets[k].1.iter_mut().zip(&self.thresholds) {
            let probs = if self.min_area > 0.0 {
                cleaned.clear();
                cleaned.extend_from_slice(probs);
                crate::postprocess::clear_small_in_probs(
                    &mut cleaned,
                    n,
                    (height, width),
                    t,
                    self.min_area,
                );
                &cleaned[..]
            } else {
                probs
            };
            m.update(probs, masks, n, height, width, t)?;
        }
        Ok(())
    }

    /// Mean over datasets of the per-image Dice at threshold number `i`.
    fn mean_dice(&self, i: usize) -> f64 {
        let n = self.datasets.len().max(1) as f64;
        self.datasets
            .iter()
            .map(|(_, m)| m[i].summary().dice_per_image)
            .sum::<f64>()
            / n
    }

    /// The threshold with the highest mean per-image Dice (the first of equals) and that Dice;
    /// `None` before any image.
    pub fn best(&self) -> Option<(f32, f64)> {
        if self.datasets.is_empty() {
            return None;
        }
        best_threshold((0..self.thresholds.len()).map(|i| (self.thresholds[i], self.mean_dice(i))))
    }

    /// One record per threshold: the mean per-image Dice and HD95 over datasets and each
    /// dataset's summary (for JSON results).
    pub fn rows(&self) -> Vec<SweepRow> {
        let n = self.datasets.len().max(1) as f64;
        (0..self.thresholds.len())
            .map(|i| SweepRow {
                threshold: self.thresholds[i],
                mean_dice_per_image: self.mean_dice(i),
                mean_hd95_per_image: self
                    .datasets
                    .iter()
                    .map(|(_, m)| m[i].summary().hd95_per_image)
                    .sum::<f64>()
                    / n,
                datasets: self
                    .datasets
                    .iter()
                    .map(|(d, m)| SweepDataset {
                        dataset: d.clone(),
                        summary: m[i].summary(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// A Markdown table: one row per threshold, per-image Dice per dataset, their mean and
    /// the mean HD95; the best row marked.
    pub fn table(&self) -> String {
        let mut s = String::from("| threshold |");
        for (d, _) in &self.datasets {
            s.push_str(&format!(" {d} |"));
        }
        s.push_str(" mean Dice (per-image) | mean HD95 px |\n|---|");
        s.push_str(&"---|".repeat(self.datasets.len() + 2));
        s.push('\n');
        let best = self.best().map(|(t, _)| t);
        for r in self.rows() {
            let mark = if Some(r.threshold) == best {
                " ←"
            } else {
                ""
            };
            s.push_str(&format!("| {:.2}{mark} |", r.threshold));
            for d in &r.datasets {
                s.push_str(&format!(" {:.4} |", d.summary.dice_per_image));
            }
            s.push_str(&format!(
                " {:.4} | {:.2} |\n",
                r.mean_dice_per_image, r.mean_hd95_per_image
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweep row's datasets are written as the top-level ones are (`{dataset, metrics…}`),
    /// and rows written as `[name, metrics]` pairs before read the same.
    #[test]
    fn rows_write_datasets_as_objects_and_read_old_pairs() {
        let m = r#"{"dice_per_image":0.5,"iou_per_image":0.25,"dice_pooled":0.5,"iou_pooled":0.25,"hd95_per_image":2.0,"assd_per_image":1.0,"images":3}"#;
        let old = format!(
            r#"{{"threshold":0.5,"mean_dice_per_image":0.5,"mean_hd95_per_image":2.0,"datasets":[["a",{m}]]}}"#
        );
        let row: SweepRow = serde_json::from_str(&old).unwrap();
        assert_eq!(row.datasets[0].dataset, "a");
        assert_eq!(row.datasets[0].summary.images, 3);
        let text = serde_json::to_string(&row).unwrap();
        assert!(
            text.contains(r#""datasets":[{"dataset":"a","dice_per_image":0.5"#),
            "{text}"
        );
        let back: SweepRow = serde_json::from_str(&text).unwrap();
        assert_eq!(back, row);
    }

    #[test]
    fn sweep_matches_separate_evaluations_and_finds_the_best() {
        // One 1x4 image: probabilities 0.2, 0.4, 0.6, 0.8 over the mask 0 1 1 1.
        let probs = [0.2, 0.4, 0.6, 0.8];
        let mask = [0.0, 1.0, 1.0, 1.0];
        let mut sweep = ThresholdSweep::new(vec![0.1, 0.3, 0.5, 0.7]);
        sweep.update("a", &probs, &mask, 1, (1, 4)).unwrap();
        for (i, &t) in sweep.thresholds().iter().enumerate() {
            let mut m = SegMetrics::default();
            m.update(&probs, &mask, 1, 1, 4, t).unwrap();
            assert_eq!(sweep.datasets[0].1[i], m);
        }
        // At 0.3 the prediction is exactly the mask.
        assert_eq!(sweep.best(), Some((0.3, 1.0)));
        let rows = sweep.rows();
        assert_eq!(rows.len(), 4);
        assert_eq!((rows[1].threshold, rows[1].mean_dice_per_image), (0.3, 1.0));
        assert_eq!(
            rows[1].datasets[0].summary,
            sweep.datasets[0].1[1].summary()
        );
        let table = sweep.table();
        assert!(table.contains("| 0.30 ← | 1.0000 |"), "{table}");
        assert_eq!(ThresholdSweep::grid().thresholds().len(), 19);
        assert_eq!(ThresholdSweep::grid().best(), None);
    }

    /// With `--min-area`, each threshold removes the components too small at that threshold:
    /// one 4x4 image, a 1-pixel speck (0.9) and a 4-pixel target (0.6, the mask), a speck at
    /// 0.4 joining the target only at 0.3. Removing under 2 pixels (min area 2/16): at 0.5 the
    /// prediction is the mask; before, the sweep saw probabilities cleaned at the run's
    /// threshold whatever the row.
    #[test]
    fn with_min_area_each_threshold_removes_its_own_small_components() {
        #[rustfmt::skip]
        let probs = [
            0.9, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.6, 0.6,
            0.0, 0.0, 0.6, 0.6,
            0.0, 0.0, 0.0, 0.4,
        ];
        let mask: Vec<f32> = probs.iter().map(|&p| f32::from(p == 0.6)).collect();
        let mut sweep = ThresholdSweep::new(vec![0.3, 0.5, 0.8]).with_min_area(2.0 / 16.0);
        sweep.update("a", &probs, &mask, 1, (4, 4)).unwrap();
        for (i, &t) in sweep.thresholds().iter().enumerate() {
            let mut cleaned = probs;
            crate::postprocess::clear_small_in_probs(&mut cleaned, 1, (4, 4), t, 2.0 / 16.0);
            let mut m = SegMetrics::default();
            m.update(&cleaned, &mask, 1, 4, 4, t).unwrap();
            assert_eq!(sweep.datasets[0].1[i], m, "threshold {t}");
        }
        let dice = |i: usize| sweep.datasets[0].1[i].summary().dice_per_image;
        assert_eq!(dice(1), 1.0, "speck removed at 0.5");
        assert!(dice(0) < 1.0, "at 0.3 the 0.4 pixel joins the target");
        assert_eq!(dice(2), 0.0, "at 0.8 only the speck is above, and removed");
    }
}
