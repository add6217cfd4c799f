//! The generic layout:
//!
//! ```text
//! <input>/
//!   images/<id>.<ext>      any supported image format
//!   masks/<id>.<ext>       (or mask_<id>.<ext>)
//!   reports/<id>.txt       UTF-8, stored verbatim (a byte-order mark and surrounding
//!                          whitespace trimmed)
//!   splits.json            {"train": [ids], "val": [ids], "test": [ids]}
//! ```
//!
//! * The id is the image's file stem and is the sample name; samples keep the order of
//!   `splits.json`. `val` (also `valid`/`validation`) and `test` may be missing or empty.
//! * Without a `val` key, the last `val_fraction` of the `train` ids become validation.
//! * Every image must be listed, every listed id must have exactly one image, one mask and a
//!   non-empty report, and every report must belong to a listed id.

use super::files::{self, KeyIndex};
use super::{finish_plan, Planned, PlannedSample, Problems};
use crate::{DataError, Result, Split};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

const LAYOUT: &str = "generic";

/// Ids per split, in file order.
type SplitIds = Vec<(Split, Vec<String>)>;

/// Reads `splits.json`: ids per split, in file order, and whether a `val` key was present.
fn read_splits(path: &Path) -> Result<(SplitIds, bool)> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| DataError::bad(path, format!("not valid JSON: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(DataError::bad(
            path,
            r#"expected an object like {"train": [ids], "val": [ids], "test": [ids]}"#,
        ));
    };
    let mut out: SplitIds = Vec::new();
    for (key, ids) in map {
        let split: Split = key
            .parse()
            .map_err(|e: String| DataError::bad(path, format!("key '{key}': {e}")))?;
        if out.iter().any(|(s, _)| *s == split) {
            return Err(DataError::bad(
                path,
                format!("split '{split}' is given twice"),
            ));
        }
        let serde_json::Value::Array(ids) = ids else {
            return Err(DataError::bad(
                path,
                format!("'{key}' must be a list of ids"),
            ));
        };
        let ids = ids
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                other => Err(DataError::bad(
                    path,
                    format!(
                        "'{key}' must hold non-empty strings (image file stems), found {other}"
                    ),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        out.push((split, ids));
    }
    let has_val = out.iter().any(|(s, _)| *s == Split::Val);
    out.sort_by_key(|(s, _)| *s);
    Ok((out, has_val))
}

/// Lists the samples of a generic-layout dataset at `input` and checks that the split list,
/// images, masks and reports agree (see the module docs). Reads no pixels.
pub(crate) fn plan_generic(input: &Path, val_fraction: f32) -> Result<Planned> {
    files::require_input_dir(input)?;
    let images_dir = files::require_dir(input, "images", LAYOUT)?;
    let masks = KeyIndex::new(&files::require_dir(input, "masks", LAYOUT)?)?;
    let reports_dir = files::require_dir(input, "reports", LAYOUT)?;
    let splits_path = input.join("splits.json");
    if !splits_path.is_file() {
        return Err(DataError::bad(
            &splits_path,
            format!(
                "missing file 'splits.json' expected by the {LAYOUT} layout (in {}: {})",
                input.display(),
                files::describe_dir(input)
            ),
        ));
    }
    let (splits, has_val) = read_splits(&splits_path)?;

    let mut problems = Problems::default();
    let mut images: HashMap<String, Vec<PathBuf>> = HashMap::new();
    for p in files::list_images(&images_dir)? {
        if let Some(stem) = problems.check(files::file_stem(&p)) {
            images.entry(stem).or_default().push(p);
        }
    }
    let mut reports: HashMap<String, PathBuf> = HashMap::new();
    for p in files::list_with_extensions(&reports_dir, &["txt"])? {
        if let Some(stem) = problems.check(files::file_stem(&p)) {
            reports.insert(stem, p);
        }
    }

    let mut listed: HashSet<String> = HashSet::new();
    let mut samples = Vec::new();
    for (split, ids) in &splits {
        for id in ids {
            if !listed.insert(id.clone()) {
                problems.push(DataError::bad(
                    &splits_path,
                    format!("id '{id}' is listed twice (in '{split}' and earlier)"),
                ));
                continue;
            }
            let image = match images.get(id).map(Vec::as_slice) {
                Some([one]) => one.clone(),
                Some(many) => {
                    problems.push(DataError::bad(
                        &images_dir,
                        format!("several images for id '{id}': {}", files::names(many)),
                    ));
                    continue;
                }
                None => {
                    problems.push(DataError::bad(
                        &splits_path,
                        format!(
                            "id '{id}' (in '{split}') has no image {}/{id}.<png|jpg|…>",
                            images_dir.display()
                        ),
                    ));
                    continue;
                }
            };
            let mask = problems.check(masks.find(
                &files::file_name(&image).unwrap_or_else(|_| id.clone()),
                &image,
                "mask",
            ));
            let Some(report_path) = reports.get(id) else {
                problems.push(DataError::bad(
                    &image,
                    format!(
                        "the image has no report {}",
                        reports_dir.join(format!("{id}.txt")).display()
                    ),
                ));
                continue;
            };
            let report = match std::fs::read(report_path) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    // A byte-order mark (Windows Notepad writes one) is not part of the text.
                    Ok(s) => s.trim_start_matches('\u{feff}').trim().to_string(),
                    Err(_) => {
                        problems.push(DataError::bad(report_path, "the report is not valid UTF-8"));
                        continue;
                    }
                },
                Err(e) => {
                    problems.push(DataError::io(report_path, e));
                    continue;
                }
            };
            if report.is_empty() {
                problems.push(DataError::bad(report_path, "the report is empty"));
                continue;
            }
            if let Some(mask) = mask {
                samples.push(PlannedSample {
                    name: id.clone(),
                    split: *split,
                    image,
                    mask,
                    report,
                });
            }
        }
    }
    let mut unlisted: Vec<&PathBuf> = images
        .iter()
        .filter(|(id, _)| !listed.contains(*id))
        .flat_map(|(_, ps)| ps)
        .collect();
    unlisted.sort();
    for p in unlisted {
        problems.push(DataError::bad(
            p,
            format!("the image is not listed in {}", splits_path.display()),
        ));
    }
    let mut orphans: Vec<(&String, &PathBuf)> = reports
        .iter()
        .filter(|(id, _)| !images.contains_key(*id))
        .collect();
    orphans.sort();
    for (id, p) in orphans {
        problems.push(DataError::bad(
            p,
            format!("the report has no image '{id}' in {}", images_dir.display()),
        ));
    }
    Ok(finish_plan(samples, has_val, val_fraction, problems))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn fixture(root: &Path, splits: &str) {
        std::fs::create_dir_all(root.join("reports")).unwrap();
        for (i, id) in ["n1", "n2", "n3", "n4", "n5"].iter().enumerate() {
            let ext = if i == 2 { "jpg" } else { "png" };
            write_rgb_image(&root.join("images").join(format!("{id}.{ext}")), i as u8);
            write_mask(&root.join("masks").join(format!("{id}.png")), 3, 255);
            std::fs::write(
                root.join("reports").join(format!("{id}.txt")),
                format!("  nuclei {id}\n"),
            )
            .unwrap();
        }
        std::fs::write(root.join("splits.json"), splits).unwrap();
    }

    #[test]
    fn plan_with_and_without_val() {
        let dir = tempfile::tempdir().unwrap();
        fixture(
            dir.path(),
            r#"{"test": ["n5"], "train": ["n2", "n1", "n3"], "val": ["n4"]}"#,
        );
        let plan = plan_generic(dir.path(), 0.2)
            .and_then(Planned::finish)
            .unwrap();
        let got = plan_rows(&plan);
        assert_eq!(
            got,
            vec![
                ("n2", Split::Train, "nuclei n2"),
                ("n1", Split::Train, "nuclei n1"),
                ("n3", Split::Train, "nuclei n3"),
                ("n4", Split::Val, "nuclei n4"),
                ("n5", Split::Test, "nuclei n5"),
            ]
        );
        assert!(plan.samples[2].image.ends_with("images/n3.jpg"));
        assert!(!plan.val_from_train);

        let dir = tempfile::tempdir().unwrap();
        fixture(
            dir.path(),
            r#"{"train": ["n1", "n2", "n3", "n4"], "test": ["n5"]}"#,
        );
        let plan = plan_generic(dir.path(), 0.25)
            .and_then(Planned::finish)
            .unwrap();
        assert_eq!(plan.counts(), [3, 1, 1]);
        assert_eq!(plan.samples[3].name, "n4");
        assert!(plan.val_from_train);

        // A report saved with a byte-order mark reads without it.
        std::fs::write(dir.path().join("reports/n1.txt"), "\u{feff}nuclei n1\r\n").unwrap();
        let plan = plan_generic(dir.path(), 0.25)
            .and_then(Planned::finish)
            .unwrap();
        assert_eq!(plan.samples[0].report, "nuclei n1");
    }

    #[test]
    fn bad_inputs() {
        let all = r#"{"train": ["n1", "n2", "n3", "n4"], "test": ["n5"]}"#;
        let e = |root: &Path| {
            plan_generic(root, 0.2)
                .and_then(Planned::finish)
                .unwrap_err()
                .to_string()
        };

        let dir = tempfile::tempdir().unwrap();
        fixture(
            dir.path(),
            r#"{"train": ["n1", "n2", "n3"], "test": ["n5"]}"#,
        );
        let m = e(dir.path());
        assert!(m.contains("n4.png") && m.contains("not listed"), "{m}");

        let dir = tempfile::tempdir().unwrap();
        fixture(
            dir.path(),
            r#"{"train": ["n1", "n2", "n3", "n4", "n9"], "test": ["n5"]}"#,
        );
        let m = e(dir.path());
        assert!(
            m.contains("splits.json") && m.contains("'n9'") && m.contains("no image"),
            "{m}"
        );

        let dir = tempfile::tempdir().unwrap();
        fixture(
            dir.path(),
            r#"{"train": ["n1", "n2", "n3", "n4"], "test": ["n5", "n1"]}"#,
        );
        let m = e(dir.path());
        assert!(m.contains("'n1'") && m.contains("twice"), "{m}");

        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path(), all);
        std::fs::remove_file(dir.path().join("reports/n2.txt")).unwrap();
        let m = e(dir.path());
        assert!(m.contains("n2.png") && m.contains("no report"), "{m}");

        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path(), all);
        std::fs::write(dir.path().join("reports/n2.txt"), " \n").unwrap();
        let m = e(dir.path());
        assert!(m.contains("n2.txt") && m.contains("empty"), "{m}");

        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path(), all);
        std::fs::write(dir.path().join("reports/n7.txt"), "x").unwrap();
        let m = e(dir.path());
        assert!(m.contains("n7.txt") && m.contains("no image"), "{m}");

        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path(), all);
        write_rgb_image(&dir.path().join("images/n1.bmp"), 0);
        let m = e(dir.path());
        assert!(m.contains("several images") && m.contains("n1.bmp"), "{m}");

        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path(), r#"{"holdout": []}"#);
        let m = e(dir.path());
        assert!(m.contains("splits.json") && m.contains("holdout"), "{m}");

        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path(), all);
        std::fs::remove_file(dir.path().join("splits.json")).unwrap();
        let m = e(dir.path());
        assert!(m.contains("splits.json") && m.contains("missing"), "{m}");
    }

    #[test]
    fn convert_end_to_end() {
        use crate::convert::{convert, ConvertOptions, Layout};
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        fixture(
            &input,
            r#"{"train": ["n1", "n2", "n3"], "val": ["n4"], "test": ["n5"]}"#,
        );
        let out = dir.path().join("monuseg.zarr");
        let mut opts = ConvertOptions::new(
            Layout::Generic,
            &input,
            &out,
            "monuseg",
            crate::Modality::Histopathology,
        );
        opts.height = 32;
        opts.width = 40;
        let summary = convert(&opts, &crate::NoProgress).unwrap();
        assert_eq!(summary.counts, [3, 1, 1]);
        let store = crate::store::Store::open(&out).unwrap();
        assert_eq!(store.len(), 5);
        assert_eq!(store.reports()[3], "nuclei n4");
        let s = store.sample(0).unwrap();
        assert_eq!(s.name, "n1");
        assert_eq!(s.image.len(), 3 * 32 * 40);
        // upsampled nearest: 3 of 20 columns -> 6 of 40
        assert_eq!(s.mask.iter().map(|&v| v as usize).sum::<usize>(), 6 * 32);
    }
}
