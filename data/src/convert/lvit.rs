//! The LViT layout (QaTa-COV19, MosMedData+ as released for LViT):
//!
//! ```text
//! <input>/
//!   Train_Folder/ img/ labelcol/ [Train_text.xlsx]
//!   Val_Folder/   img/ labelcol/ [Val_text.xlsx]      (optional)
//!   Test_Folder/  img/ labelcol/ [Test_text.xlsx]
//!   [Train_Val_text.xlsx, …]                           (tables may also sit at the top level)
//! ```
//!
//! * Text tables: every `.xlsx`/`.xlsm`/`.xls`/`.csv` directly in a split folder or at the top
//!   level, each with the columns `Image` and `Description`. Rows are matched to images by name
//!   across all tables (a top-level workbook may cover Train and Val images together); a row
//!   may name the image (`covid_1.png`) or its mask (`mask_covid_1.png`). A name listed twice
//!   with the same text is accepted; with different texts it is an error.
//! * Masks: `labelcol/` holds the image's file name (MosMed) or `mask_` + it (QaTa), with any
//!   image extension.
//! * Sample names are image file names and must be unique across the splits.
//! * Samples are sorted by file name within each split. Without `Val_Folder`, the last
//!   `val_fraction` of the sorted training samples become validation.
//! * Folder names are matched case-insensitively.

use super::files::{self, match_key, KeyIndex};
use super::table::{read_table_rows, Table, TABLE_EXTENSIONS};
use super::{finish_plan, Planned, PlannedSample, Problems};
use crate::{DataError, Result, Split};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

const LAYOUT: &str = "LViT";

/// The split folders: name, split, required.
const SPLITS: [(&str, Split, bool); 3] = [
    ("Train_Folder", Split::Train, true),
    ("Val_Folder", Split::Val, false),
    ("Test_Folder", Split::Test, true),
];

struct SplitDir {
    split: Split,
    img: PathBuf,
    images: Vec<PathBuf>,
    masks: KeyIndex,
}

/// Lists the samples of an LViT-layout dataset at `input` and checks that tables, images and
/// masks agree (see the module docs). Reads no pixels.
pub(crate) fn plan_lvit(input: &Path, val_fraction: f32) -> Result<Planned> {
    files::require_input_dir(input)?;
    let mut dirs = Vec::new();
    let mut table_files = files::list_with_extensions(input, &TABLE_EXTENSIONS)?;
    for (name, split, required) in SPLITS {
        let dir = match files::find_dir(input, name)? {
            Some(d) => d,
            None if required => {
                return Err(DataError::bad(
                    input.join(name),
                    format!(
                        "missing folder '{name}' expected by the {LAYOUT} layout (in {}: {})",
                        input.display(),
                        files::describe_dir(input)
                    ),
                ))
            }
            None => continue,
        };
        let img = files::require_dir(&dir, "img", LAYOUT)?;
        let labelcol = files::require_dir(&dir, "labelcol", LAYOUT)?;
        let images = files::list_images(&img)?;
        if images.is_empty() {
            return Err(DataError::bad(&img, "the folder holds no images"));
        }
        table_files.extend(files::list_with_extensions(&dir, &TABLE_EXTENSIONS)?);
        dirs.push(SplitDir {
            split,
            img,
            images,
            masks: KeyIndex::new(&labelcol)?,
        });
    }
    if table_files.is_empty() {
        return Err(DataError::bad(
            input,
            format!(
                "no text table found: expected .xlsx or .csv files with the columns Image and \
                 Description in {} or its split folders (e.g. Train_Folder/Train_text.xlsx)",
                input.display()
            ),
        ));
    }

    let mut problems = Problems::default();
    let mut tables: Vec<Table> = Vec::new();
    for p in &table_files {
        if let Some((table, row_problems)) = problems.check(read_table_rows(p)) {
            row_problems.into_iter().for_each(|e| problems.push(e));
            tables.push(table);
        }
    }
    // Images named by rows already reported (an empty description).
    let flawed: HashSet<String> = tables
        .iter()
        .flat_map(|t| t.flawed.iter().map(|n| match_key(n)))
        .collect();

    // Text by key, from all tables.
    struct Text<'a> {
        report: &'a str,
        table: &'a Table,
        row: usize,
        image: &'a str,
    }
    let mut texts: HashMap<String, Text> = HashMap::new();
    for table in &tables {
        for row in &table.rows {
            let key = match_key(&row.image);
            if let Some(prev) = texts.get(&key) {
                if prev.report != row.report {
                    problems.push(DataError::bad(
                        &table.path,
                        format!(
                            "row {}: '{}' is described twice with different texts (also {})",
                            row.row,
                            row.image,
                            prev.table.at(prev.row)
                        ),
                    ));
                }
                continue;
            }
            texts.insert(
                key,
                Text {
                    report: &row.report,
                    table,
                    row: row.row,
                    image: &row.image,
                },
            );
        }
    }

    // Images by key, across splits.
    let mut seen: HashMap<String, &Path> = HashMap::new();
    let mut used: HashSet<String> = HashSet::new();
    let mut samples = Vec::new();
    let table_list = files::names(&table_files);
    for d in &dirs {
        for image in &d.images {
            let Some(name) = problems.check(files::file_name(image)) else {
                continue;
            };
            let key = match_key(&name);
            if let Some(prev) = seen.insert(key.clone(), image) {
                problems.push(DataError::bad(
                    image,
                    format!(
                        "duplicate image name: {} has the same name (compared without extension, \
                         case and mask_ prefix; names must be unique across the splits)",
                        prev.display()
                    ),
                ));
                continue;
            }
            let mask = problems.check(d.masks.find(&name, image, "mask"));
            let Some(text) = texts.get(&key) else {
                if flawed.contains(&key) {
                    continue;
                }
                problems.push(DataError::bad(
                    image,
                    format!("the image has no text row (no row for '{name}' in {table_list})"),
                ));
                continue;
            };
            used.insert(key);
            if let Some(mask) = mask {
                samples.push(PlannedSample {
                    name,
                    split: d.split,
                    image: image.clone(),
                    mask,
                    report: text.report.to_string(),
                });
            }
        }
    }

    // Text rows without an image.
    let img_dirs = files::names(&dirs.iter().map(|d| d.img.clone()).collect::<Vec<_>>());
    let mut orphans: Vec<&Text> = texts
        .iter()
        .filter(|(k, _)| !used.contains(*k) && !seen.contains_key(*k))
        .map(|(_, t)| t)
        .collect();
    orphans.sort_by(|a, b| (&a.table.path, a.row).cmp(&(&b.table.path, b.row)));
    for t in orphans {
        problems.push(DataError::bad(
            &t.table.path,
            format!(
                "row {}: the text row names '{}', but there is no such image in {img_dirs}",
                t.row, t.image
            ),
        ));
    }

    let has_val = dirs.iter().any(|d| d.split == Split::Val);
    Ok(finish_plan(samples, has_val, val_fraction, problems))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    /// QaTa-style: masks `mask_<image>`, per-split xlsx/csv tables keyed by mask name.
    fn qata(root: &Path, with_val: bool) {
        for (folder, names) in [
            (
                "Train_Folder",
                vec![
                    "covid_1.png",
                    "covid_2.png",
                    "covid_3.png",
                    "covid_4.png",
                    "covid_5.png",
                ],
            ),
            ("Test_Folder", vec!["covid_9.png"]),
        ] {
            for (i, n) in names.iter().enumerate() {
                write_image(&root.join(folder).join("img").join(n), i as u8);
                write_mask(
                    &root.join(folder).join("labelcol").join(format!("mask_{n}")),
                    7,
                    255,
                );
            }
        }
        write_xlsx(
            &root.join("Train_Folder/Train_text.xlsx"),
            &["Image", "Description"],
            &[
                ("mask_covid_1.png", "Bilateral pulmonary infection, two infected areas, all left lung and all right lung."),
                ("mask_covid_2.png", "one infected areas"),
                ("mask_covid_3.png", " all right lung.. "),
                ("mask_covid_4.png", "Unilateral pulmonary infection, one infected area, upper left lung."),
                ("mask_covid_5.png", "no infection, two infected areas"),
            ],
        );
        // csv with the description in the third column
        std::fs::write(
            root.join("Test_Folder/Test_text.csv"),
            "image,Other,DESCRIPTION\ncovid_9.png,x,test text\n",
        )
        .unwrap();
        if with_val {
            write_image(&root.join("Val_Folder/img/covid_7.png"), 3);
            write_mask(&root.join("Val_Folder/labelcol/mask_covid_7.png"), 3, 255);
            write_csv(
                &root.join("Val_Folder/Val_text.csv"),
                &["Image", "Description"],
                &[("covid_7.png", "val text")],
            );
        }
    }

    #[test]
    fn qata_without_val_folder() {
        let dir = tempfile::tempdir().unwrap();
        qata(dir.path(), false);
        let plan = plan_lvit(dir.path(), 0.2)
            .and_then(Planned::finish)
            .unwrap();
        assert!(plan.val_from_train);
        let got = plan_rows(&plan);
        assert_eq!(
            got,
            vec![
                ("covid_1.png", Split::Train, "Bilateral pulmonary infection, two infected areas, all left lung and all right lung."),
                ("covid_2.png", Split::Train, "one infected areas"),
                ("covid_3.png", Split::Train, "all right lung.."),
                ("covid_4.png", Split::Train, "Unilateral pulmonary infection, one infected area, upper left lung."),
                ("covid_5.png", Split::Val, "no infection, two infected areas"),
                ("covid_9.png", Split::Test, "test text"),
            ]
        );
        assert!(plan.samples[0]
            .mask
            .ends_with("Train_Folder/labelcol/mask_covid_1.png"));
        assert_eq!(plan.counts(), [4, 1, 1]);
    }

    #[test]
    fn qata_with_val_folder_and_top_level_table() {
        let dir = tempfile::tempdir().unwrap();
        qata(dir.path(), true);
        // Move the train table to the top level and let it cover the val image too.
        std::fs::remove_file(dir.path().join("Train_Folder/Train_text.xlsx")).unwrap();
        std::fs::remove_file(dir.path().join("Val_Folder/Val_text.csv")).unwrap();
        write_xlsx(
            &dir.path().join("Train_Val_text.xlsx"),
            &["Image", "Description"],
            &[
                ("covid_1.png", "a"),
                ("covid_2.png", "b"),
                ("covid_3.png", "c"),
                ("covid_4.png", "d"),
                ("covid_5.png", "e"),
                ("mask_covid_7.png", "v"),
            ],
        );
        let plan = plan_lvit(dir.path(), 0.2)
            .and_then(Planned::finish)
            .unwrap();
        assert!(!plan.val_from_train);
        assert_eq!(plan.counts(), [5, 1, 1]);
        let val = &plan.samples[5];
        assert_eq!(
            (val.name.as_str(), val.split, val.report.as_str()),
            ("covid_7.png", Split::Val, "v")
        );
    }

    /// MosMed-style: same name in img/ and labelcol/, mask with another extension.
    #[test]
    fn mosmed_same_names() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for (folder, n) in [
            ("Train_Folder", "a"),
            ("Train_Folder", "b"),
            ("Test_Folder", "c"),
        ] {
            write_image(&r.join(folder).join("img").join(format!("{n}.png")), 1);
        }
        write_mask(&r.join("Train_Folder/labelcol/a.png"), 4, 1);
        write_mask(&r.join("Train_Folder/labelcol/b.bmp"), 4, 255);
        write_mask(&r.join("Test_Folder/labelcol/c.png"), 4, 255);
        write_csv(
            &r.join("Train_Folder/Train_text.csv"),
            &["Image", "Description"],
            &[("a.png", "ta"), ("b.png", "tb")],
        );
        write_csv(
            &r.join("Test_Folder/Test_text.csv"),
            &["Image", "Description"],
            &[("c.png", "tc")],
        );
        let plan = plan_lvit(r, 0.0).and_then(Planned::finish).unwrap();
        assert_eq!(plan.counts(), [2, 0, 1]);
        assert!(plan.samples[1].mask.ends_with("labelcol/b.bmp"));
    }

    fn err(dir: &Path) -> String {
        plan_lvit(dir, 0.2)
            .and_then(Planned::finish)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn missing_folders_and_tables() {
        let dir = tempfile::tempdir().unwrap();
        qata(dir.path(), false);
        std::fs::rename(dir.path().join("Test_Folder"), dir.path().join("Tst")).unwrap();
        let e = err(dir.path());
        assert!(e.contains("Test_Folder") && e.contains("Tst/"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        qata(dir.path(), false);
        std::fs::remove_dir_all(dir.path().join("Train_Folder/labelcol")).unwrap();
        let e = err(dir.path());
        assert!(e.contains("labelcol"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        qata(dir.path(), false);
        std::fs::remove_file(dir.path().join("Train_Folder/Train_text.xlsx")).unwrap();
        std::fs::remove_file(dir.path().join("Test_Folder/Test_text.csv")).unwrap();
        let e = err(dir.path());
        assert!(e.contains("no text table"), "{e}");

        assert!(err(&dir.path().join("nope")).contains("does not exist"));
    }

    #[test]
    fn image_without_text_text_without_image_missing_mask() {
        let dir = tempfile::tempdir().unwrap();
        qata(dir.path(), false);
        write_image(&dir.path().join("Train_Folder/img/covid_6.png"), 0);
        write_mask(
            &dir.path().join("Train_Folder/labelcol/mask_covid_6.png"),
            2,
            255,
        );
        let e = err(dir.path());
        assert!(
            e.contains("covid_6.png") && e.contains("no text row"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        qata(dir.path(), false);
        std::fs::remove_file(dir.path().join("Train_Folder/img/covid_2.png")).unwrap();
        let e = err(dir.path());
        assert!(
            e.contains("Train_text.xlsx")
                && e.contains("row 3")
                && e.contains("mask_covid_2.png")
                && e.contains("no such image"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        qata(dir.path(), false);
        std::fs::remove_file(dir.path().join("Train_Folder/labelcol/mask_covid_3.png")).unwrap();
        let e = err(dir.path());
        assert!(e.contains("covid_3.png") && e.contains("no mask"), "{e}");
    }

    #[test]
    fn duplicates_and_conflicting_rows() {
        let dir = tempfile::tempdir().unwrap();
        qata(dir.path(), false);
        write_image(&dir.path().join("Test_Folder/img/covid_1.png"), 0);
        write_mask(
            &dir.path().join("Test_Folder/labelcol/mask_covid_1.png"),
            2,
            255,
        );
        let e = err(dir.path());
        assert!(
            e.contains("duplicate image name") && e.contains("covid_1.png"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        qata(dir.path(), false);
        write_csv(
            &dir.path().join("extra.csv"),
            &["Image", "Description"],
            &[("covid_1.png", "other text")],
        );
        let e = err(dir.path());
        assert!(
            e.contains("extra.csv") && e.contains("different texts"),
            "{e}"
        );
        // same text again is fine
        write_csv(
            &dir.path().join("extra.csv"),
            &["Image", "Description"],
            &[("covid_2.png", "one infected areas")],
        );
        assert!(plan_lvit(dir.path(), 0.2).and_then(Planned::finish).is_ok());
    }

    #[test]
    fn row_without_text() {
        let dir = tempfile::tempdir().unwrap();
        qata(dir.path(), false);
        std::fs::write(
            dir.path().join("Test_Folder/Test_text.csv"),
            "Image,Description\ncovid_9.png,\n",
        )
        .unwrap();
        let e = err(dir.path());
        assert!(
            e.contains("Test_text.csv") && e.contains("row 2") && e.contains("no text"),
            "{e}"
        );
        // One empty description is that row's problem alone: the table's other rows still
        // describe their images (no "has no text row" for them).
        let dir = tempfile::tempdir().unwrap();
        qata(dir.path(), false);
        write_xlsx(
            &dir.path().join("Train_Folder/Train_text.xlsx"),
            &["Image", "Description"],
            &[
                ("mask_covid_1.png", "a"),
                ("mask_covid_2.png", ""),
                ("mask_covid_3.png", "c"),
                ("mask_covid_4.png", "d"),
                ("mask_covid_5.png", "e"),
            ],
        );
        let e = err(dir.path());
        assert!(
            e.contains("row 3: image 'mask_covid_2.png' has no text"),
            "{e}"
        );
        assert!(
            !e.contains("no text row") && !e.contains("more problem"),
            "{e}"
        );
    }

    #[test]
    fn convert_end_to_end() {
        use crate::convert::{convert, ConvertOptions, Layout};
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("QaTa");
        qata(&input, false);
        let out = dir.path().join("qata.zarr");
        let mut opts =
            ConvertOptions::new(Layout::Lvit, &input, &out, "qata", crate::Modality::Xray);
        opts.height = 8;
        opts.width = 10;
        let summary = convert(&opts, &crate::NoProgress).unwrap();
        assert_eq!(summary.counts, [4, 1, 1]);
        let store = crate::store::Store::open(&out).unwrap();
        assert_eq!(store.len(), 6);
        let info = store.info();
        assert_eq!((info.channels, info.height, info.width), (1, 8, 10));
        assert_eq!(info.provenance["importer"], "lvit");
        assert_eq!(
            info.provenance["source"],
            std::fs::canonicalize(&input).unwrap().display().to_string()
        );
        let s = store.sample(2).unwrap();
        assert_eq!(
            (s.name.as_str(), s.split, s.report.as_str()),
            ("covid_3.png", Split::Train, "all right lung..")
        );
        assert_eq!(s.image.len(), 80);
        // 7 of 20 columns set -> 3 of 10 after nearest resizing
        assert!(s.mask.iter().all(|&v| v <= 1));
        assert_eq!(s.mask.iter().map(|&v| v as usize).sum::<usize>(), 24);
        assert_eq!(store.sample(5).unwrap().split, Split::Test);
    }
}
