//! The GuideDecoder layout:
//!
//! ```text
//! <input>/
//!   Images/      all images (train, val and test)
//!   GTs/         masks: the image's name or mask_ + it, any image extension
//!   train.csv    columns Image, Description (others ignored)
//!   val.csv      optional
//!   test.csv
//! ```
//!
//! * The split of an image is the table that lists it; samples keep the tables' row order.
//!   Every row must name an existing image (by image or mask name), every image must be listed
//!   by exactly one row.
//! * Without `val.csv`, the last `val_fraction` of the `train.csv` rows become validation.
//! * Tables may also be `.xlsx`/`.xls` (`train.xlsx`, …); folder and file names are matched
//!   case-insensitively.

use super::files::{self, match_key, KeyIndex};
use super::table::{read_table_rows, TABLE_EXTENSIONS};
use super::{finish_plan, Planned, PlannedSample, Problems};
use crate::{DataError, Result, Split};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const LAYOUT: &str = "GuideDecoder";

/// The table of `split` (`train.csv`, `train.xlsx`, …) directly in `dir`, if any.
fn find_table(dir: &Path, stem: &str) -> Result<Option<PathBuf>> {
    let found: Vec<PathBuf> = files::list_with_extensions(dir, &TABLE_EXTENSIONS)?
        .into_iter()
        .filter(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|s| s.eq_ignore_ascii_case(stem))
        })
        .collect();
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        many => Err(DataError::bad(
            dir,
            format!("several {stem} tables, keep one: {}", files::names(many)),
        )),
    }
}

/// Lists the samples of a GuideDecoder-layout dataset at `input` and checks that tables, images
/// and masks agree (see the module docs). Reads no pixels.
pub(crate) fn plan_guide_decoder(input: &Path, val_fraction: f32) -> Result<Planned> {
    files::require_input_dir(input)?;
    let images_dir = files::require_dir(input, "Images", LAYOUT)?;
    let masks = KeyIndex::new(&files::require_dir(input, "GTs", LAYOUT)?)?;
    let mut tables = Vec::new();
    for (stem, split, required) in [
        ("train", Split::Train, true),
        ("val", Split::Val, false),
        ("test", Split::Test, true),
    ] {
        match find_table(input, stem)? {
            Some(p) => tables.push((p, split)),
            None if required => {
                return Err(DataError::bad(
                    input.join(format!("{stem}.csv")),
                    format!(
                        "missing table '{stem}.csv' expected by the {LAYOUT} layout (in {}: {})",
                        input.display(),
                        files::describe_dir(input)
                    ),
                ))
            }
            None => {}
        }
    }

    let mut problems = Problems::default();
    // Images by key.
    let mut images: HashMap<String, PathBuf> = HashMap::new();
    let mut image_order = Vec::new();
    for p in files::list_images(&images_dir)? {
        let Some(name) = problems.check(files::file_name(&p)) else {
            continue;
        };
        let key = match_key(&name);
        if let Some(prev) = images.get(&key) {
            problems.push(DataError::bad(
                &p,
                format!(
                    "duplicate image name: {} has the same name (compared without extension, \
                     case and mask_ prefix)",
                    prev.display()
                ),
            ));
            continue;
        }
        images.insert(key.clone(), p.clone());
        image_order.push(key);
    }

    let mut listed: HashMap<String, String> = HashMap::new(); // key -> "<table> row <n>"
    let mut samples = Vec::new();
    for (path, split) in &tables {
        let Some((table, row_problems)) = problems.check(read_table_rows(path)) else {
            continue;
        };
        row_problems.into_iter().for_each(|e| problems.push(e));
        for row in &table.rows {
            let key = match_key(&row.image);
            if let Some(prev) = listed.get(&key) {
                problems.push(DataError::bad(
                    path,
                    format!(
                        "row {}: '{}' is listed twice (also {prev})",
                        row.row, row.image
                    ),
                ));
                continue;
            }
            listed.insert(key.clone(), table.at(row.row));
            let Some(image) = images.get(&key) else {
                problems.push(DataError::bad(
                    path,
                    format!(
                        "row {}: the text row names '{}', but there is no such image in {}",
                        row.row,
                        row.image,
                        images_dir.display()
                    ),
                ));
                continue;
            };
            let Some(name) = problems.check(files::file_name(image)) else {
                continue;
            };
            let Some(mask) = problems.check(masks.find(&name, image, "mask")) else {
                continue;
            };
            samples.push(PlannedSample {
                name,
                split: *split,
                image: image.clone(),
                mask,
                report: row.report.clone(),
            });
        }
    }
    let table_list = files::names(&tables.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>());
    for key in &image_order {
        if !listed.contains_key(key) {
            if let Some(p) = images.get(key) {
                problems.push(DataError::bad(
                    p,
                    format!("the image has no text row in {table_list}"),
                ));
            }
        }
    }

    let has_val = tables.iter().any(|(_, s)| *s == Split::Val);
    Ok(finish_plan(samples, has_val, val_fraction, problems))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn fixture(root: &Path) {
        for (i, n) in ["e.png", "d.png", "c.png", "b.png", "a.png", "t.png"]
            .iter()
            .enumerate()
        {
            write_rgb_image(&root.join("Images").join(n), i as u8);
        }
        for n in ["e.png", "d.png", "c.png", "b.png", "a.png"] {
            write_mask(&root.join("GTs").join(n), 5, 255);
        }
        write_mask(&root.join("GTs/mask_t.png"), 5, 1);
        write_csv(
            &root.join("train.csv"),
            &["Image", "Description"],
            &[
                ("e.png", "polyp e"),
                ("d.png", "polyp d"),
                ("c.png", "polyp c"),
                ("b.png", "polyp b"),
                ("a.png", "polyp a"),
            ],
        );
        write_csv(
            &root.join("test.csv"),
            &["Image", "Description"],
            &[("mask_t.png", "test t")],
        );
    }

    #[test]
    fn plan_in_file_order_with_val_from_train() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let plan = plan_guide_decoder(dir.path(), 0.4)
            .and_then(Planned::finish)
            .unwrap();
        let got = plan_rows(&plan);
        assert_eq!(
            got,
            vec![
                ("e.png", Split::Train, "polyp e"),
                ("d.png", Split::Train, "polyp d"),
                ("c.png", Split::Train, "polyp c"),
                ("b.png", Split::Val, "polyp b"),
                ("a.png", Split::Val, "polyp a"),
                ("t.png", Split::Test, "test t"),
            ]
        );
        assert!(plan.samples[5].mask.ends_with("GTs/mask_t.png"));
        assert!(plan.val_from_train);
    }

    #[test]
    fn val_table() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        write_csv(
            &dir.path().join("train.csv"),
            &["Image", "Description"],
            &[("e.png", "1"), ("d.png", "2"), ("c.png", "3")],
        );
        write_xlsx(
            &dir.path().join("Val.xlsx"),
            &["Image", "Description"],
            &[("b.png", "4"), ("a.png", "5")],
        );
        let plan = plan_guide_decoder(dir.path(), 0.4)
            .and_then(Planned::finish)
            .unwrap();
        assert_eq!(plan.counts(), [3, 2, 1]);
        assert!(!plan.val_from_train);
    }

    #[test]
    fn bad_inputs() {
        let e = |root: &Path| {
            plan_guide_decoder(root, 0.2)
                .and_then(Planned::finish)
                .unwrap_err()
                .to_string()
        };

        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        std::fs::remove_file(dir.path().join("test.csv")).unwrap();
        let m = e(dir.path());
        assert!(m.contains("test.csv") && m.contains("missing table"), "{m}");

        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        std::fs::remove_dir_all(dir.path().join("GTs")).unwrap();
        let m = e(dir.path());
        assert!(m.contains("GTs"), "{m}");

        // image without a text row
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        write_rgb_image(&dir.path().join("Images/z.png"), 0);
        let m = e(dir.path());
        assert!(m.contains("z.png") && m.contains("no text row"), "{m}");

        // text row without image
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        std::fs::remove_file(dir.path().join("Images/c.png")).unwrap();
        let m = e(dir.path());
        assert!(
            m.contains("train.csv") && m.contains("row 4") && m.contains("no such image"),
            "{m}"
        );

        // listed twice
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        write_csv(
            &dir.path().join("test.csv"),
            &["Image", "Description"],
            &[("t.png", "x"), ("a.png", "y")],
        );
        let m = e(dir.path());
        assert!(
            m.contains("test.csv") && m.contains("row 3") && m.contains("listed twice"),
            "{m}"
        );
        assert!(m.contains("train.csv row 6"), "{m}");

        // unreadable table
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        std::fs::remove_file(dir.path().join("test.csv")).unwrap();
        std::fs::write(dir.path().join("test.xlsx"), b"garbage").unwrap();
        let m = e(dir.path());
        assert!(m.contains("test.xlsx") && m.contains("cannot read"), "{m}");
    }

    #[test]
    fn convert_end_to_end() {
        use crate::convert::{convert, ConvertOptions, Layout};
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        fixture(&input);
        let out = dir.path().join("kvasir.zarr");
        let mut opts = ConvertOptions::new(
            Layout::GuideDecoder,
            &input,
            &out,
            "kvasir",
            crate::Modality::Endoscopy,
        );
        opts.height = 16;
        opts.width = 20;
        let summary = convert(&opts, &crate::NoProgress).unwrap();
        assert_eq!(summary.counts, [4, 1, 1]);
        let store = crate::store::Store::open(&out).unwrap();
        assert_eq!(
            store.names(),
            ["e.png", "d.png", "c.png", "b.png", "a.png", "t.png"]
        );
        assert_eq!(store.info().provenance["importer"], "guidedecoder");
        assert_eq!(store.info().provenance["val_from_train_fraction"], 0.2);
        let s = store.sample(5).unwrap();
        assert_eq!(s.report, "test t");
        assert_eq!(s.image.len(), 3 * 16 * 20);
        // planar RGB: first plane is the seed (5), second x, third y
        assert_eq!(s.image[0], 5);
        assert_eq!(s.image[320 + 7], 7);
        assert_eq!(s.image[640 + 20 * 3], 3);
        // mask 0/1 stored unchanged at the same size: 5 of 20 columns
        assert_eq!(s.mask.iter().map(|&v| v as usize).sum::<usize>(), 5 * 16);
    }
}
