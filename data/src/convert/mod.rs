//! Importers from the folder layouts the PyTorch peers use into a tmca store.
//!
//! Four layouts ([`Layout`]):
//!
//! * **LViT** (QaTa-COV19, MosMedData+): `Train_Folder/`, `Val_Folder/` (optional),
//!   `Test_Folder/`, each with `img/` and `labelcol/`; text tables (`.xlsx`, `.xls` or `.csv` with
//!   the columns `Image` and `Description`) in the split folders and/or at the top level. See
//!   [`lvit`].
//! * **GuideDecoder**: `Images/`, `GTs/`, `train.csv`, optional `val.csv`, `test.csv`. See
//!   [`guide`].
//! * **Generic**: `images/`, `masks/`, `reports/<id>.txt`, `splits.json`. See [`generic`].
//! * **Table**: one `.csv`/`.xlsx` listing image path, mask path, report and split per row (the
//!   input is the table file). See [`manifest`].
//!
//! Conversion happens in two steps:
//!
//! 1. **Plan** ([`plan`]): list every sample (name, split, image file, mask file, report) and run
//!    every check that does not need the pixels — missing folders, files and columns, duplicate
//!    names, rows without text, text rows without an image, images without a text row, images
//!    whose header does not decode, image/mask size mismatches. All problems found are reported
//!    together (the first as the error, the others listed in its message). Nothing is written
//!    until the plan is complete.
//! 2. **Decode and write**: samples are decoded in parallel in blocks of [`BLOCK`] ([`decode_entry`])
//!    and pushed in plan order to a [`StoreWriter`]. A bad mask value found now aborts the
//!    conversion; the writer then removes its temporary folder and leaves any existing store
//!    untouched.
//!
//! Names are matched to one another by a key: the file name, lower-cased, without image
//! extension and without a `mask_` prefix (so a QaTa text row keyed `mask_covid_1.png` finds the
//! image `covid_1.png`, whose mask is `mask_covid_1.png`; MosMed uses the same name for image and
//! mask). Reports are stored verbatim, only surrounding whitespace is trimmed.
//!
//! Validation split: when a layout has no validation part of its own, the last `val_fraction`
//! (rounded, at most all but one) of the training samples — in LViT by sorted file name, in
//! GuideDecoder in `train.csv` row order, in Generic in `splits.json` order, in Table in row
//! order — become validation.

mod files;
pub mod generic;
pub mod guide;
pub mod lvit;
pub mod manifest;
pub mod table;

#[cfg(test)]
mod fixtures;

use crate::imageops::MaskRule;
use crate::store::{StoreWriter, WriteOptions};
use crate::{DataError, Modality, Progress, Result, Sample, Split, StoreInfo};
use rayon::prelude::*;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Samples decoded at once (in parallel) before being written.
pub const BLOCK: usize = 64;

/// The folder layout of the dataset being imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// LViT's `Train_Folder`/`Val_Folder`/`Test_Folder` with `img`, `labelcol` and text tables.
    Lvit,
    /// GuideDecoder's `Images`, `GTs` and `train.csv`/`val.csv`/`test.csv`.
    GuideDecoder,
    /// `images/`, `masks/`, `reports/<id>.txt` and `splits.json`.
    Generic,
    /// One table listing image, mask, report and split per row (the input is the table).
    Table,
}

impl Layout {
    /// Lower-case name, as written in the store's provenance.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Lvit => "lvit",
            Layout::GuideDecoder => "guidedecoder",
            Layout::Generic => "generic",
            Layout::Table => "table",
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lvit" => Ok(Layout::Lvit),
            "guidedecoder" | "guide" | "guide-decoder" | "guide_decoder" => {
                Ok(Layout::GuideDecoder)
            }
            "generic" => Ok(Layout::Generic),
            "table" | "manifest" | "csv" => Ok(Layout::Table),
            other => Err(format!(
                "unknown layout '{other}' (expected lvit, guidedecoder, generic or table)"
            )),
        }
    }
}

/// What to import and how.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Folder layout of the input.
    pub layout: Layout,
    /// The dataset folder.
    pub input: PathBuf,
    /// The store to write.
    pub output: PathBuf,
    /// Dataset name stored in the store (`qata`, `mosmed`, …).
    pub name: String,
    /// Imaging modality (decides gray or RGB).
    pub modality: Modality,
    /// Stored image height.
    pub height: usize,
    /// Stored image width.
    pub width: usize,
    /// Fraction of the training samples moved to validation when the layout has no validation
    /// part of its own (in `[0, 1)`).
    pub val_fraction: f32,
    /// How mask files become 0/1 (exact 0/1 or 0/255 values, or a threshold for JPEG masks).
    pub mask_rule: MaskRule,
    /// The bit depth 16-bit images are read at (8–16); `None`: the dataset's, the smallest
    /// holding its largest value ([`dataset_bit_depth`]).
    pub bit_depth: Option<u32>,
    /// Replace an existing store at `output`.
    pub force: bool,
}

impl ConvertOptions {
    /// Options with the defaults: 224x224, `val_fraction` 0.2, no `force`.
    pub fn new(
        layout: Layout,
        input: impl Into<PathBuf>,
        output: impl Into<PathBuf>,
        name: impl Into<String>,
        modality: Modality,
    ) -> Self {
        Self {
            layout,
            input: input.into(),
            output: output.into(),
            name: name.into(),
            modality,
            height: 224,
            width: 224,
            val_fraction: 0.2,
            mask_rule: MaskRule::Exact,
            bit_depth: None,
            force: false,
        }
    }

    fn validate(&self) -> Result<()> {
        let cfg = |field: &str, message: String| DataError::Config {
            field: field.into(),
            message,
        };
        if self.name.trim().is_empty() {
            return Err(cfg("name", "the dataset name is empty".into()));
        }
        if self.height == 0 || self.width == 0 || self.height.max(self.width) > MAX_SIDE {
            return Err(cfg(
                "size",
                format!(
                    "height and width must be between 1 and {MAX_SIDE}, got {}x{} (the stored size; models train at data.image_size, typically 224)",
                    self.height, self.width
                ),
            ));
        }
        if let Some(t) = self.mask_rule.threshold() {
            if !(t > 0.0 && t <= 1.0) {
                return Err(cfg(
                    "mask_threshold",
                    format!("must be in (0, 1] (a fraction of the full value), got {t}"),
                ));
            }
        }
        if let Some(b) = self.bit_depth.filter(|b| !(8..=16).contains(b)) {
            return Err(cfg(
                "bit_depth",
                format!("must be between 8 and 16 (bits per pixel of 16-bit images), got {b}"),
            ));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(cfg(
                "val_fraction",
                format!("must be in [0, 1), got {}", self.val_fraction),
            ));
        }
        Ok(())
    }
}

/// What a conversion wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertSummary {
    /// The store written.
    pub output: PathBuf,
    /// Samples per split: train, val, test.
    pub counts: [usize; 3],
    /// Names of the samples whose mask is empty (no target), in plan order.
    pub empty_masks: Vec<String>,
}

/// One sample to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSample {
    /// Name in the store (the image file name; the id in the generic layout).
    pub name: String,
    /// Split it goes to.
    pub split: Split,
    /// Image file.
    pub image: PathBuf,
    /// Mask file.
    pub mask: PathBuf,
    /// Report, verbatim except for surrounding whitespace.
    pub report: String,
}

/// Every sample of an import, in the order they will be stored (train, val, test).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The samples.
    pub samples: Vec<PlannedSample>,
    /// Whether validation was taken from the training samples (`val_fraction`).
    pub val_from_train: bool,
}

impl Plan {
    /// Samples per split: train, val, test.
    pub fn counts(&self) -> [usize; 3] {
        let mut c = [0; 3];
        for s in &self.samples {
            c[s.split.code() as usize] += 1;
        }
        c
    }
}

/// Collects every problem found while planning; reported as one error.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    errors: Vec<DataError>,
}

impl Problems {
    /// Most further problems listed in the error message.
    const LISTED: usize = 10;

    pub fn push(&mut self, e: DataError) {
        self.errors.push(e);
    }

    /// Records the error of `r`, if any, and returns its value.
    pub fn check<T>(&mut self, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(e);
                None
            }
        }
    }

    /// `Ok` if nothing was found; otherwise the first problem, with the others listed.
    pub fn finish(self) -> Result<()> {
        let mut it = self.errors.into_iter();
        let Some(first) = it.next() else {
            return Ok(());
        };
        let rest: Vec<DataError> = it.collect();
        if rest.is_empty() {
            return Err(first);
        }
        let mut more = format!("\n... and {} more problem(s):", rest.len());
        for e in rest.iter().take(Self::LISTED) {
            more.push_str(&format!("\n  - {e}"));
        }
        if rest.len() > Self::LISTED {
            more.push_str(&format!("\n  - ({} not shown)", rest.len() - Self::LISTED));
        }
        Err(match first {
            DataError::BadInput { path, message } => DataError::BadInput {
                path,
                message: message + &more,
            },
            DataError::Image { path, message } => DataError::Image {
                path,
                message: message + &more,
            },
            DataError::Io { path, source } => DataError::BadInput {
                path,
                message: format!("{source}{more}"),
            },
            other => {
                for e in &rest {
                    tracing::error!("{e}");
                }
                other
            }
        })
    }
}

/// Marks the last `fraction` of the training samples (in their current order) as validation.
/// Rounds to the nearest count, and always leaves at least one training sample.
pub(crate) fn carve_val(samples: &mut [PlannedSample], fraction: f32) {
    let train: Vec<usize> = (0..samples.len())
        .filter(|&i| samples[i].split == Split::Train)
        .collect();
    let k = ((train.len() as f64) * f64::from(fraction)).round() as usize;
    let k = k.min(train.len().saturating_sub(1));
    for &i in &train[train.len() - k..] {
        samples[i].split = Split::Val;
    }
}

/// The plan of `samples` in store order (train, val, test; stable within a split). Without a
/// validation part of the layout's own (`has_val`), the last `val_fraction` of the training
/// samples become validation first.
pub(crate) fn finish_plan(
    mut samples: Vec<PlannedSample>,
    has_val: bool,
    val_fraction: f32,
    problems: Problems,
) -> Planned {
    if !has_val {
        carve_val(&mut samples, val_fraction);
    }
    samples.sort_by_key(|s| s.split);
    Planned {
        plan: Plan {
            samples,
            val_from_train: !has_val,
        },
        problems,
    }
}

/// A layout's plan of the samples it could match, with the problems of the others (rows
/// without images, images without rows, …), so that later checks can list theirs too.
#[derive(Debug)]
pub(crate) struct Planned {
    plan: Plan,
    problems: Problems,
}

impl Planned {
    /// The plan if no problem was found; otherwise every problem as one error.
    pub fn finish(self) -> Result<Plan> {
        self.problems.finish()?;
        Ok(self.plan)
    }
}

/// Plans an import for `opts.layout` without the pixel-level checks of [`check_plan`].
pub fn plan_layout(layout: Layout, input: &Path, val_fraction: f32) -> Result<Plan> {
    planned(layout, input, val_fraction)?.finish()
}

fn planned(layout: Layout, input: &Path, val_fraction: f32) -> Result<Planned> {
    match layout {
        Layout::Lvit => lvit::plan_lvit(input, val_fraction),
        Layout::GuideDecoder => guide::plan_guide_decoder(input, val_fraction),
        Layout::Generic => generic::plan_generic(input, val_fraction),
        Layout::Table => manifest::plan_manifest(input, val_fraction),
    }
}

/// Checks a plan as a whole: at least one sample, unique names, non-empty reports, and image
/// and mask headers that decode and agree in size. Reads only file headers (in parallel).
pub fn check_plan(plan: &Plan, progress: &dyn Progress) -> Result<()> {
    let mut problems = Problems::default();
    check_plan_into(plan, progress, &mut problems)?;
    problems.finish()
}

/// [`check_plan`], adding the problems found to `problems`; `Err` only for an empty plan.
fn check_plan_into(plan: &Plan, progress: &dyn Progress, problems: &mut Problems) -> Result<()> {
    if plan.samples.is_empty() {
        return Err(DataError::Config {
            field: "input".into(),
            message: "no samples found to import".into(),
        });
    }
    let mut seen: HashMap<&str, &Path> = HashMap::new();
    for s in &plan.samples {
        if let Some(prev) = seen.insert(s.name.as_str(), s.image.as_path()) {
            problems.push(DataError::bad(
                &s.image,
                format!(
                    "duplicate sample name '{}' (also used by {})",
                    s.name,
                    prev.display()
                ),
            ));
        }
        if s.report.trim().is_empty() {
            problems.push(DataError::bad(
                &s.image,
                format!("sample '{}' has an empty report", s.name),
            ));
        }
    }
    progress.start("checking", plan.samples.len() as u64);
    let headers: Vec<Result<()>> = plan
        .samples
        .par_iter()
        .map(|s| {
            let r = check_sizes(s);
            progress.inc(1);
            r
        })
        .collect();
    progress.finish();
    for r in headers {
        problems.check(r);
    }
    Ok(())
}

fn check_sizes(s: &PlannedSample) -> Result<()> {
    let image = crate::imageops::image_size(&s.image)?;
    let mask = crate::imageops::image_size(&s.mask)?;
    if image != mask {
        return Err(crate::imageops::size_mismatch(
            &s.image, image, &s.mask, mask,
        ));
    }
    Ok(())
}

/// Plans an import ([`plan_layout`]) and checks it ([`check_plan`]); every problem found is
/// listed in one error.
pub fn plan(opts: &ConvertOptions, progress: &dyn Progress) -> Result<Plan> {
    planned_and_checked(opts, progress)?.finish()
}

/// [`plan`], and every mask decoded by `rule` ([`check_masks`]): what `--dry-run` checks, all
/// problems — of the tables, file headers and mask values — listed together.
pub fn dry_run(opts: &ConvertOptions, progress: &dyn Progress) -> Result<Plan> {
    let mut p = planned_and_checked(opts, progress)?;
    check_masks_into(&p.plan, opts.mask_rule, progress, &mut p.problems);
    p.finish()
}

fn planned_and_checked(opts: &ConvertOptions, progress: &dyn Progress) -> Result<Planned> {
    opts.validate()?;
    let mut p = planned(opts.layout, &opts.input, opts.val_fraction)?;
    if p.plan.samples.is_empty() {
        // The problems say why nothing matched; without any, there was nothing.
        p.problems.finish()?;
        return Err(DataError::bad(&opts.input, "no samples found to import"));
    }
    check_plan_into(&p.plan, progress, &mut p.problems)?;
    Ok(p)
}

/// Decodes every mask of `plan` by `rule` (in parallel) and reports every one whose values the
/// rule refuses, together — what only the conversion itself would otherwise find, one at a
/// time (`tmca data convert --dry-run`). Reports the phase `masks`.
pub fn check_masks(plan: &Plan, rule: MaskRule, progress: &dyn Progress) -> Result<()> {
    let mut problems = Problems::default();
    check_masks_into(plan, rule, progress, &mut problems);
    problems.finish()
}

fn check_masks_into(plan: &Plan, rule: MaskRule, progress: &dyn Progress, problems: &mut Problems) {
    progress.start("masks", plan.samples.len() as u64);
    let results: Vec<Result<()>> = plan
        .samples
        .par_iter()
        .map(|s| {
            let r = crate::imageops::decode(&s.mask)
                .and_then(|img| crate::imageops::binarize_mask(&s.mask, &img, rule))
                .map(|_| ());
            progress.inc(1);
            r
        })
        .collect();
    progress.finish();
    for r in results {
        problems.check(r);
    }
}

/// The bit depth of the dataset's 16-bit images: the smallest holding the largest value of any
/// of them (one scale for the dataset: a slice whose brightest pixel happens to cross 1023
/// must not come out four times darker than its neighbour); `None` without 16-bit images.
/// Reads every image's header, and decodes the 16-bit ones. Reports the phase `bit depth`.
pub fn dataset_bit_depth(plan: &Plan, progress: &dyn Progress) -> Result<Option<u32>> {
    progress.start("bit depth", plan.samples.len() as u64);
    let depths = plan
        .samples
        .par_iter()
        .map(|s| {
            let d = crate::imageops::image_bit_depth(&s.image);
            progress.inc(1);
            d
        })
        .collect::<Result<Vec<_>>>();
    progress.finish();
    Ok(depths?.into_iter().flatten().max())
}

/// Decodes one planned sample: image (gray or RGB by `channels`, a 16-bit one scaled from
/// `bits`, resized bilinear) and mask (read by `rule`: 0/1 or 0/255, or thresholded; resized
/// nearest, stored 0/1).
pub fn decode_entry(
    entry: &PlannedSample,
    rule: MaskRule,
    (bits, channels): (Option<u32>, usize),
    height: usize,
    width: usize,
) -> Result<Sample> {
    let (image, mask) = crate::imageops::load_pair(
        &entry.image,
        &entry.mask,
        rule,
        (bits, channels),
        height,
        width,
    )?;
    Ok(Sample {
        name: entry.name.clone(),
        split: entry.split,
        image,
        mask,
        report: entry.report.clone(),
    })
}

/// The store description written for `opts` (`bits`: the depth 16-bit images were read at).
fn store_info(
    opts: &ConvertOptions,
    source: &Path,
    val_from_train: bool,
    bits: Option<u32>,
) -> StoreInfo {
    let mut provenance = serde_json::json!({
        "importer": opts.layout.name(),
        "source": source.display().to_string(),
        "tmca_version": env!("CARGO_PKG_VERSION"),
    });
    if let Some(t) = opts.mask_rule.threshold() {
        provenance["mask_threshold"] = serde_json::json!(shortest(t));
    }
    if val_from_train {
        provenance["val_from_train_fraction"] = serde_json::json!(shortest(opts.val_fraction));
    }
    if let Some(b) = bits {
        provenance["bit_depth"] = serde_json::json!(b);
    }
    StoreInfo {
        name: opts.name.trim().to_string(),
        modality: opts.modality,
        channels: opts.modality.channels(),
        height: opts.height,
        width: opts.width,
        provenance,
        class_map: StoreInfo::default_class_map(opts.modality),
    }
}

/// `x` via its shortest decimal form, so 0.2 is written 0.2, not 0.20000000298….
fn shortest(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// Refuses an output that would replace (with `force`) the input or a folder containing it.
/// (A table's images may lie anywhere; [`check_sources`] checks the plan's files.)
fn check_output(input: &Path, output: &Path) -> Result<()> {
    let Ok(out) = std::fs::canonicalize(output) else {
        return Ok(()); // does not exist yet
    };
    if input.starts_with(&out) {
        return Err(DataError::Config {
            field: "output".into(),
            message: format!(
                "{} is the input folder or contains it; choose another output",
                output.display()
            ),
        });
    }
    Ok(())
}

/// The largest stored height or width (a 4096² RGB image is 48 MiB per sample).
pub const MAX_SIDE: usize = 4096;

/// Finds the images a table names in a folder the way the importers do: a path relative to
/// the folder as given, else by name as LViT's tables write it (`mask_` prefix, any image
/// extension, case; see [`files`]) — for `tmca predict --table`.
pub struct ImageLookup {
    index: files::KeyIndex,
}

impl ImageLookup {
    /// Indexes the images of `dir` (an error when it is not a readable folder).
    pub fn new(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(DataError::bad(dir, "the images folder does not exist"));
        }
        Ok(Self {
            index: files::KeyIndex::new(dir)?,
        })
    }

    /// The file `name` stands for; `owner` (the table) names the error.
    pub fn find(&self, name: &str, owner: &Path) -> Result<PathBuf> {
        let direct = self.index.dir.join(name);
        if direct.is_file() {
            return Ok(direct);
        }
        self.index.find(name, owner, "image")
    }
}

/// The checks of the options, the input and the output before any file is read (also those
/// of `--dry-run`): an existing output needs `force`, and `force` replaces only a store or an
/// empty folder, never the input or a folder containing it. Returns the canonical input.
pub fn check_destination(opts: &ConvertOptions) -> Result<PathBuf> {
    opts.validate()?;
    match opts.layout {
        Layout::Table => manifest::require_table(&opts.input)?,
        _ => files::require_input_dir(&opts.input)?,
    }
    let source = std::fs::canonicalize(&opts.input).map_err(|e| DataError::io(&opts.input, e))?;
    check_output(&source, &opts.output)?;
    if opts.output.exists() && !opts.force {
        return Err(DataError::AlreadyExists {
            path: opts.output.clone(),
        });
    }
    if opts.output.exists() && !crate::store::replaceable(&opts.output) {
        return Err(DataError::Config {
            field: "output".into(),
            message: format!(
                "{} exists and is not a tmca store: --force replaces only a store (or an empty folder); choose another output or move it away yourself",
                opts.output.display()
            ),
        });
    }
    Ok(source)
}

/// Refuses an existing output (replaced with `force`) that holds one of the plan's files.
fn check_sources(plan: &Plan, output: &Path) -> Result<()> {
    let Ok(out) = std::fs::canonicalize(output) else {
        return Ok(()); // does not exist yet
    };
    for s in &plan.samples {
        for file in [&s.image, &s.mask] {
            if std::fs::canonicalize(file).is_ok_and(|f| f.starts_with(&out)) {
                return Err(DataError::Config {
                    field: "output".into(),
                    message: format!(
                        "{} holds {}, a file of the dataset; choose another output",
                        output.display(),
                        file.display()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Imports a dataset into a new store. Plans and checks everything first, then decodes in
/// parallel and writes in plan order. Reports the phases `checking`, `bit depth` and
/// `converting`.
pub fn convert(opts: &ConvertOptions, progress: &dyn Progress) -> Result<ConvertSummary> {
    let source = check_destination(opts)?;
    let plan = plan(opts, progress)?;
    check_sources(&plan, &opts.output)?;
    let found = dataset_bit_depth(&plan, progress)?;
    let bits = match (opts.bit_depth, found) {
        (Some(b), Some(f)) if f > b => {
            tracing::warn!(
                "--bit-depth {b}: the 16-bit images hold values up to {f} bits; values of \
                 {} and above saturate at 255",
                1u32 << b
            );
            Some(b)
        }
        (Some(_), None) => {
            tracing::warn!("--bit-depth has no effect: there are no 16-bit images");
            None
        }
        (Some(b), Some(_)) => Some(b),
        (None, f) => f,
    };
    let info = store_info(opts, &source, plan.val_from_train, bits);
    let wopts = WriteOptions {
        force: opts.force,
        ..WriteOptions::default()
    };
    let mut writer = StoreWriter::create(&opts.output, &info, plan.samples.len(), &wopts)?;
    let (c, h, w) = (info.channels, info.height, info.width);
    progress.start("converting", plan.samples.len() as u64);
    let mut empty = Vec::new();
    let written = (|| {
        for block in plan.samples.chunks(BLOCK) {
            let decoded: Vec<Result<Sample>> = block
                .par_iter()
                .map(|e| decode_entry(e, opts.mask_rule, (bits, c), h, w))
                .collect();
            for sample in decoded {
                let sample = sample?;
                if sample.mask.iter().all(|&v| v == 0) {
                    empty.push(sample.name.clone());
                }
                writer.push(sample)?;
                progress.inc(1);
            }
        }
        writer.finish()
    })();
    progress.finish();
    Ok(ConvertSummary {
        output: written?,
        counts: plan.counts(),
        empty_masks: empty,
    })
}

#[cfg(test)]
mod tests;
