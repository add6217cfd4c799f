//! Synthetic datasets mimicking the four modalities, whose reports carry information the image
//! alone does not.
//!
//! # The rule that makes the text matter
//!
//! Every image is divided into named **zones**. The report names the zones holding **targets**
//! (the mask is exactly the pixels of the targets). The image also holds **distractors**: objects
//! drawn by the very same code and parameter distribution as targets, in zones the report does
//! **not** name, and absent from the mask. Target and distractor zones are drawn uniformly
//! without replacement, so nothing in the image (position, size, shade, texture) tells a target
//! from a distractor; only the zone words of the report do. An image-only model can at best
//! segment every target-like object, and loses Dice on the distractors.
//!
//! Distractors per image ([`SynthConfig::max_distractors`], default 2): none with probability
//! 15%, otherwise uniform in `1..=max_distractors`, capped by the number of zones the report
//! leaves free. With `max_distractors = 0` the dataset is image-only solvable.
//!
//! # Zones and conventions
//!
//! | modality | zones | target unit |
//! |---|---|---|
//! | `xray` | {upper, middle, lower} × {left, right} lung (thirds of each lung field's height) | one ground-glass opacity per named zone, 1–4 zones (40/40/15/5%) |
//! | `ct` | as `xray`, thirds of each lung's height in the axial slice | as `xray`; 25% of samples have no infection by default |
//! | `endoscopy` | 3×3 grid: {upper, middle, lower} × {left, center, right}; the central cell is called "center" | one polyp per named cell, 1–3 polyps (75/20/5%) |
//! | `histopathology` | quadrants {upper, lower} × {left, right} | all nuclei of a named quadrant, 1–2 quadrants (65/35%) |
//!
//! **Left and right are the patient's** in `xray` and `ct`, in the radiological convention: the
//! patient's *left* lung is drawn on the *image right* (x > W/2). In `endoscopy` and
//! `histopathology` left and right are the image's. Either way a left–right flip of the image
//! together with swapping the words "left" and "right" in the report keeps the pair true; zone
//! words are always the plain lower-case words (or Capitalised, never in capitals or abbreviated).
//!
//! Every target lies entirely inside its zone's box. In histopathology a distractor is a whole
//! quadrant populated with nuclei from the same density distribution; quadrants that are neither
//! named nor distractors hold stroma only.
//!
//! # Reports
//!
//! Templates follow the real sets (QaTa-COV19: "Bilateral pulmonary infection, two infected
//! areas, upper left lung and lower right lung."; MosMedData+: "No pulmonary infection, zero
//! infected areas."; Kvasir-style: "one small polyp, located at upper left, oval shaped";
//! MoNuSeg-style: "The nuclei density in the upper right is high."), with synonyms (opacity,
//! lesion, consolidation, region…), word order variants ("left upper lung", "lower zone of the
//! right lung"), abbreviations ("pulm.", "Bilat."), optional extra clauses ("No pleural
//! effusion."), grammar slips ("one infected areas", about 10%), and the noise of
//! `synth/text.rs`: random casing, typos in non-zone words, doubled or missing final periods,
//! stray spaces. A fraction [`SynthConfig::contradiction_rate`] (default 5%) of non-empty
//! reports states a wrong count ("two infected areas" with one zone listed) while the zones stay
//! right. Reports without a target start with "No" ([`SynthConfig::empty_rate`]: default 25% for
//! `ct`, 0 otherwise).
//!
//! # Images
//!
//! Smooth intensity fields, texture noise and anatomy at any size from 32 pixels (H and W may
//! differ); sizes of anatomy and objects scale with the image. The mask is the half-opacity
//! contour of the soft-edged target blobs (see `synth/canvas.rs`).
//!
//! # Determinism
//!
//! Sample `i` depends only on the configuration and `i`: its random stream is a ChaCha8 seeded
//! from `(seed, modality, i)` through splitmix64. Samples `0..n_train` are train, the next
//! `n_val` val, the rest test; all splits share one distribution.

mod canvas;
mod ct;
mod endoscopy;
mod histo;
mod random;
mod report;
mod store;
mod text;
mod xray;

pub use store::{ensure_store, write_store};

#[cfg(test)]
mod tests;

use crate::{DataError, Modality, Progress, Result, Sample, Split, StoreInfo};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Samples generated in parallel at a time by [`generate`].
pub const BLOCK: usize = 64;

/// Smallest and largest image side accepted by [`SynthConfig::validate`].
pub const MIN_SIDE: usize = 32;
pub const MAX_SIDE: usize = 4096;

/// Largest `max_distractors` accepted (no modality has more free zones than 8).
pub const MAX_DISTRACTORS: usize = 8;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    pub modality: Modality,
    pub n_train: usize,
    pub n_val: usize,
    pub n_test: usize,
    pub height: usize,
    pub width: usize,
    pub seed: u64,
    /// Most distractors per image (see the module docs); capped by the free zones.
    pub max_distractors: usize,
    /// Fraction of non-empty reports whose count word contradicts the zone list.
    pub contradiction_rate: f32,
    /// Fraction of samples with no target (empty mask, report starting with "No").
    pub empty_rate: f32,
}

impl SynthConfig {
    /// 64×64, 160/40/40 samples, seed 0, up to 2 distractors, 5% contradictions,
    /// 25% empty masks for CT and none otherwise.
    pub fn new(modality: Modality) -> Self {
        Self {
            modality,
            n_train: 160,
            n_val: 40,
            n_test: 40,
            height: 64,
            width: 64,
            seed: 0,
            max_distractors: 2,
            contradiction_rate: 0.05,
            empty_rate: if modality == Modality::Ct { 0.25 } else { 0.0 },
        }
    }

    /// Total number of samples.
    pub fn total(&self) -> usize {
        self.n_train
            .saturating_add(self.n_val)
            .saturating_add(self.n_test)
    }

    /// The split of sample `index` (train, then val, then test).
    pub fn split_of(&self, index: usize) -> Split {
        if index < self.n_train {
            Split::Train
        } else if index < self.n_train.saturating_add(self.n_val) {
            Split::Val
        } else {
            Split::Test
        }
    }

    /// Checks every field; the error names the field at fault.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, message: String| {
            Err(DataError::Config {
                field: field.to_string(),
                message,
            })
        };
        for (field, v) in [("height", self.height), ("width", self.width)] {
            if !(MIN_SIDE..=MAX_SIDE).contains(&v) {
                return bad(
                    field,
                    format!("{v} pixels; must be {MIN_SIDE} to {MAX_SIDE}"),
                );
            }
        }
        if self.total() == 0 {
            return bad(
                "n_train",
                "n_train + n_val + n_test is 0; generate at least one sample".into(),
            );
        }
        if self.total() > 999_999_999 {
            return bad("n_train", "more than 999999999 samples in all".into());
        }
        if self.max_distractors > MAX_DISTRACTORS {
            return bad(
                "max_distractors",
                format!(
                    "{}; must be at most {MAX_DISTRACTORS}",
                    self.max_distractors
                ),
            );
        }
        for (field, v) in [
            ("contradiction_rate", self.contradiction_rate),
            ("empty_rate", self.empty_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(field, format!("{v}; must be a fraction in [0, 1]"));
            }
        }
        Ok(())
    }
}

/// The dataset name of a modality's synthetic set.
pub fn dataset_name(m: Modality) -> &'static str {
    match m {
        Modality::Xray => "synth-xray",
        Modality::Ct => "synth-ct",
        Modality::Endoscopy => "synth-endoscopy",
        Modality::Histopathology => "synth-histopathology",
    }
}

/// The store description, with the generator and all its settings as provenance.
pub fn store_info(cfg: &SynthConfig) -> StoreInfo {
    StoreInfo {
        name: dataset_name(cfg.modality).to_string(),
        modality: cfg.modality,
        channels: cfg.modality.channels(),
        height: cfg.height,
        width: cfg.width,
        provenance: serde_json::json!({
            "generator": "tmca synth",
            "version": env!("CARGO_PKG_VERSION"),
            "seed": cfg.seed,
            "n_train": cfg.n_train,
            "n_val": cfg.n_val,
            "n_test": cfg.n_test,
            "max_distractors": cfg.max_distractors,
            "contradiction_rate": cfg.contradiction_rate,
            "empty_rate": cfg.empty_rate,
        }),
        class_map: StoreInfo::default_class_map(cfg.modality),
    }
}

/// A generated sample with what the generator knows about it (the zone lists are read by the
/// tests).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct Scene {
    pub rendered: canvas::Rendered,
    pub report: String,
    /// Canonical names of the zones holding targets (e.g. "upper left", "center").
    pub targets: Vec<String>,
    /// Canonical names of the zones holding distractors.
    pub distractors: Vec<String>,
}

/// Renders sample `index` with everything the generator knows.
pub(crate) fn render(cfg: &SynthConfig, index: usize) -> Scene {
    let mut rng = random::sample_rng(cfg.seed, cfg.modality, index);
    match cfg.modality {
        Modality::Xray => xray::render(&mut rng, cfg),
        Modality::Ct => ct::render(&mut rng, cfg),
        Modality::Endoscopy => endoscopy::render(&mut rng, cfg),
        Modality::Histopathology => histo::render(&mut rng, cfg),
    }
}

/// Sample `index` of the dataset `cfg` describes; depends only on `cfg` and `index`.
/// Call [`SynthConfig::validate`] first: an invalid configuration gives unspecified (but
/// non-panicking) output.
pub fn generate_sample(cfg: &SynthConfig, index: usize) -> Sample {
    let scene = render(cfg, index);
    Sample {
        name: format!("{}-{index:06}", dataset_name(cfg.modality)),
        split: cfg.split_of(index),
        image: scene.rendered.image,
        mask: scene.rendered.mask,
        report: scene.report,
    }
}

/// The whole dataset in index order, generated [`BLOCK`] samples at a time in parallel; at
/// most one block is held in memory. Reports progress in samples.
pub fn generate<'a>(cfg: &SynthConfig, progress: &'a dyn Progress) -> Result<Generator<'a>> {
    cfg.validate()?;
    progress.start(
        &format!("generating {}", dataset_name(cfg.modality)),
        cfg.total() as u64,
    );
    Ok(Generator {
        cfg: cfg.clone(),
        progress,
        next: 0,
        block: Vec::new().into_iter(),
        finished: false,
    })
}

/// Iterator over generated samples; see [`generate`].
pub struct Generator<'a> {
    cfg: SynthConfig,
    progress: &'a dyn Progress,
    next: usize,
    block: std::vec::IntoIter<Sample>,
    finished: bool,
}

impl Iterator for Generator<'_> {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        if let Some(s) = self.block.next() {
            return Some(s);
        }
        let total = self.cfg.total();
        if self.next >= total {
            if !self.finished {
                self.finished = true;
                self.progress.finish();
            }
            return None;
        }
        let end = (self.next + BLOCK).min(total);
        let cfg = &self.cfg;
        let block: Vec<Sample> = (self.next..end)
            .into_par_iter()
            .map(|i| generate_sample(cfg, i))
            .collect();
        self.progress.inc((end - self.next) as u64);
        self.next = end;
        self.block = block.into_iter();
        self.block.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.block.len() + self.cfg.total().saturating_sub(self.next);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Generator<'_> {}
