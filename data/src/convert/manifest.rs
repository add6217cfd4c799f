//! The table layout: one table (`.csv`, `.xlsx`, `.xls`) that lists every sample, for datasets
//! in no peer's folder layout (Kvasir-SEG with reports, a hospital's own export, …):
//!
//! ```text
//! image,mask,report,split
//! images/cju0qkwl35piu0993l0dewei2.jpg,masks/cju0qkwl35piu0993l0dewei2.jpg,"one polyp, medium size, top left",train
//! ```
//!
//! * Columns (header names matched case-insensitively, others ignored): `image` and `mask` —
//!   file paths, relative to the table's folder or absolute; the report under `report`,
//!   `description` or `text` (exactly one of them); optional `split` (`train`, `val`/`valid`/
//!   `validation`, `test`) and optional `name` (the sample's name in the store; default the
//!   image's file name).
//! * Samples keep the table's row order within each split. Without a `split` column every row is
//!   training data. Without validation rows, the last `val_fraction` of the training rows
//!   become validation.
//! * Every row must name an existing image and mask and have a non-empty report and a known
//!   split; each problem names the table and the row (1-based, as a spreadsheet numbers it).
//!   Names must be unique (give a `name` column when images in different folders share a file
//!   name).

use super::table::{delimiter_hint, found_columns, header_name, read_cells};
use super::{files, finish_plan, Planned, PlannedSample, Problems};
use crate::{DataError, Result, Split};
use std::path::{Path, PathBuf};

/// Column positions in the header.
struct Columns {
    image: usize,
    mask: usize,
    report: usize,
    split: Option<usize>,
    name: Option<usize>,
}

/// Finds the columns in the header row `header` (row number `row`) of `path`.
fn columns(path: &Path, row: usize, header: &[String]) -> Result<Columns> {
    let names: Vec<String> = header.iter().map(|c| header_name(c)).collect();
    let find = |want: &[&str]| -> Result<Option<usize>> {
        let hits: Vec<usize> = (0..names.len())
            .filter(|&i| want.contains(&names[i].as_str()))
            .collect();
        match hits.as_slice() {
            [] => Ok(None),
            [i] => Ok(Some(*i)),
            _ => Err(DataError::bad(
                path,
                format!(
                    "row {row}: more than one column for {} ({})",
                    want[0],
                    hits.iter()
                        .map(|&i| format!("'{}'", header[i].trim()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    };
    let image = find(&["image"])?;
    let mask = find(&["mask"])?;
    let report = find(&["report", "description", "text"])?;
    let (Some(image), Some(mask), Some(report)) = (image, mask, report) else {
        return Err(DataError::bad(
            path,
            format!(
                "row {row}: the table layout needs the columns 'image', 'mask' and 'report' \
                 (or 'description'/'text'), optionally 'split' and 'name'; found {}{}",
                found_columns(header),
                delimiter_hint(header)
            ),
        ));
    };
    Ok(Columns {
        image,
        mask,
        report,
        split: find(&["split"])?,
        name: find(&["name"])?,
    })
}

/// A path cell, relative to `base` unless absolute. A table written on Windows
/// (`images\a.png`) is read with `/` for its separators when the cell does not name a file
/// as it stands.
fn resolve(base: &Path, cell: &str) -> PathBuf {
    let at = |cell: &str| {
        let p = Path::new(cell);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let p = at(cell);
    if p.exists() || !cell.contains('\\') || std::path::MAIN_SEPARATOR == '\\' {
        return p;
    }
    at(&cell.replace('\\', "/"))
}

/// Checks that `table` is a file (the table layout's input), naming what is there instead.
pub(crate) fn require_table(table: &Path) -> Result<()> {
    if table.is_dir() {
        return Err(DataError::bad(
            table,
            format!(
                "the table layout takes the table file as --input, not a folder ({})",
                files::describe_dir(table)
            ),
        ));
    }
    if !table.is_file() {
        return Err(DataError::bad(table, "the table does not exist"));
    }
    Ok(())
}

/// Lists the samples of the table at `table` (see the module docs) and checks that every row
/// is complete and its files exist. Reads no pixels.
pub(crate) fn plan_manifest(table: &Path, val_fraction: f32) -> Result<Planned> {
    require_table(table)?;
    let base = table.parent().unwrap_or(Path::new("."));
    let mut rows = read_cells(table)?
        .into_iter()
        .filter(|(_, c)| c.iter().any(|s| !s.trim().is_empty()));
    let Some((header_row, header)) = rows.next() else {
        return Err(DataError::bad(
            table,
            "the table is empty (expected the columns image, mask, report and optionally split)",
        ));
    };
    let cols = columns(table, header_row, &header)?;

    let mut problems = Problems::default();
    let mut samples = Vec::new();
    let mut names: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (row, cells) in rows {
        let get = |i: usize| cells.get(i).map(|s| s.trim()).unwrap_or("");
        let at = |message: String| DataError::bad(table, format!("row {row}: {message}"));
        let (image, mask, report) = (get(cols.image), get(cols.mask), get(cols.report));
        let mut row_ok = true;
        for (value, column) in [(image, "image"), (mask, "mask"), (report, "report")] {
            if value.is_empty() {
                problems.push(at(format!("the '{column}' cell is empty")));
                row_ok = false;
            }
        }
        let split = match cols.split.map(get) {
            None => Split::Train,
            Some("") => {
                problems.push(at("the 'split' cell is empty (train, val or test)".into()));
                row_ok = false;
                Split::Train
            }
            Some(s) => match s.parse::<Split>() {
                Ok(split) => split,
                Err(e) => {
                    problems.push(at(e));
                    row_ok = false;
                    Split::Train
                }
            },
        };
        if !row_ok {
            continue;
        }
        let (image, mask) = (resolve(base, image), resolve(base, mask));
        let mut files_ok = true;
        for (path, what) in [(&image, "image"), (&mask, "mask")] {
            if !path.is_file() {
                problems.push(at(format!("the {what} {} does not exist", path.display())));
                files_ok = false;
            }
        }
        if !files_ok {
            continue;
        }
        let name = match cols.name.map(get).filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => match problems.check(files::file_name(&image)) {
                Some(n) => n,
                None => continue,
            },
        };
        if let Some(first) = names.insert(name.clone(), row) {
            problems.push(at(format!(
                "the name '{name}' is row {first}'s too (images of one file name in different \
                 folders need a 'name' column)"
            )));
            continue;
        }
        samples.push(PlannedSample {
            name,
            split,
            image,
            mask,
            report: report.to_string(),
        });
    }

    let has_val = samples.iter().any(|s| s.split == Split::Val);
    Ok(finish_plan(samples, has_val, val_fraction, problems))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn rows_in_order_paths_relative_to_the_table_and_val_carved() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for n in ["a", "b", "c", "d", "t"] {
            write_image(&root.join(format!("data/img/{n}.png")), 0);
            write_mask(&root.join(format!("data/gt/{n}.png")), 4, 255);
        }
        let abs = root.join("data/img/t.png");
        write(
            &root.join("data/list.csv"),
            &format!(
                "Report,IMAGE,Mask,Split,extra\n\
                 report d,img/d.png,gt/d.png,train,x\n\
                 \"report, a\",img/a.png,gt/a.png,TRAIN,\n\
                 test t,{},gt/t.png,test,\n\
                 ,,,,\n\
                 report c,img/c.png,gt/c.png,train,\n\
                 report b,img/b.png,gt/b.png,train,\n",
                abs.display()
            ),
        );
        let plan = plan_manifest(&root.join("data/list.csv"), 0.25)
            .and_then(Planned::finish)
            .unwrap();
        let got = plan_rows(&plan);
        assert_eq!(
            got,
            vec![
                ("d.png", Split::Train, "report d"),
                ("a.png", Split::Train, "report, a"),
                ("c.png", Split::Train, "report c"),
                ("b.png", Split::Val, "report b"),
                ("t.png", Split::Test, "test t"),
            ]
        );
        assert!(plan.val_from_train);
        assert_eq!(plan.samples[0].image, root.join("data/img/d.png"));
        assert_eq!(plan.samples[0].mask, root.join("data/gt/d.png"));
        assert_eq!(plan.samples[4].image, abs);
    }

    #[test]
    fn without_split_column_all_train_and_names_from_the_name_column() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["p1", "p2"] {
            write_image(&root.join(format!("{d}/image.png")), 0);
            write_mask(&root.join(format!("{d}/mask.png")), 4, 1);
        }
        let xlsx = root.join("list.xlsx");
        let mut wb = rust_xlsxwriter::Workbook::new();
        let ws = wb.add_worksheet();
        let rows = [
            ["name", "image", "mask", "description"],
            ["case 1", "p1/image.png", "p1/mask.png", "left"],
            ["case 2", "p2/image.png", "p2/mask.png", "right"],
        ];
        for (r, cells) in rows.iter().enumerate() {
            for (c, v) in cells.iter().enumerate() {
                ws.write_string(r as u32, c as u16, *v).unwrap();
            }
        }
        wb.save(&xlsx).unwrap();
        let plan = plan_manifest(&xlsx, 0.0).and_then(Planned::finish).unwrap();
        let names: Vec<(&str, Split)> = plan
            .samples
            .iter()
            .map(|s| (s.name.as_str(), s.split))
            .collect();
        assert_eq!(
            names,
            vec![("case 1", Split::Train), ("case 2", Split::Train)]
        );
    }

    #[test]
    fn every_bad_row_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_image(&root.join("a.png"), 0);
        write_mask(&root.join("a_mask.png"), 4, 255);
        let csv = root.join("t.csv");
        write(
            &csv,
            "image,mask,text,split\n\
             a.png,a_mask.png,fine,train\n\
             a.png,,no mask,train\n\
             b.png,a_mask.png,missing image,train\n\
             a.png,a_mask.png,bad split,holdout\n\
             a.png,a_mask.png,,test\n",
        );
        let err = plan_manifest(&csv, 0.2)
            .and_then(Planned::finish)
            .unwrap_err()
            .to_string();
        for want in [
            "row 3: the 'mask' cell is empty",
            "row 4: the image",
            "b.png does not exist",
            "row 5: unknown split 'holdout'",
            "row 6: the 'report' cell is empty",
            "t.csv",
        ] {
            assert!(err.contains(want), "{want}: {err}");
        }

        std::fs::create_dir_all(root.join("b")).unwrap();
        std::fs::copy(root.join("a.png"), root.join("b/a.png")).unwrap();
        write(
            &csv,
            "image,mask,report\na.png,a_mask.png,x\nb/a.png,a_mask.png,y\n",
        );
        let err = plan_manifest(&csv, 0.2)
            .and_then(Planned::finish)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("row 3: the name 'a.png' is row 2's too"),
            "{err}"
        );

        write(&csv, "image,report,split\na.png,x,train\n");
        let err = plan_manifest(&csv, 0.2)
            .and_then(Planned::finish)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'mask'") && err.contains("found 'image', 'report', 'split'"),
            "{err}"
        );
        write(&csv, "image,mask,report,text\na.png,a_mask.png,x,y\n");
        let err = plan_manifest(&csv, 0.2)
            .and_then(Planned::finish)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than one column for report"), "{err}");
        let err = plan_manifest(root, 0.2)
            .and_then(Planned::finish)
            .unwrap_err()
            .to_string();
        assert!(err.contains("table file as --input"), "{err}");
        let err = plan_manifest(&root.join("none.csv"), 0.2)
            .and_then(Planned::finish)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("none.csv") && err.contains("does not exist"),
            "{err}"
        );
    }

    /// Tables as spreadsheets on other systems save them: Windows paths, Latin-1 text,
    /// semicolons, other extensions, spelled-out splits.
    #[test]
    fn tables_from_other_systems() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_image(&root.join("img/a.png"), 0);
        write_mask(&root.join("gt/a.png"), 4, 255);
        let csv = root.join("t.csv");
        write(
            &csv,
            "image,mask,report,split
img\\a.png,gt\\a.png,x,Training
",
        );
        let plan = plan_manifest(&csv, 0.0).and_then(Planned::finish).unwrap();
        assert_eq!(plan.samples[0].image, root.join("img/a.png"));
        assert_eq!(plan.samples[0].split, Split::Train);
        std::fs::write(&csv, b"image,mask,report\nimg/a.png,gt/a.png,caf\xe9\n").unwrap();
        let err = plan_manifest(&csv, 0.0)
            .and_then(Planned::finish)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("CSV UTF-8"), "{err}");
        write(&csv, "image;mask;report\nimg/a.png;gt/a.png;x\n");
        let err = plan_manifest(&csv, 0.0)
            .and_then(Planned::finish)
            .unwrap_err()
            .to_string();
        assert!(err.contains("semicolon-separated"), "{err}");
        let tsv = root.join("t.tsv");
        write(&tsv, "image\tmask\treport\n");
        let err = plan_manifest(&tsv, 0.0)
            .and_then(Planned::finish)
            .unwrap_err()
            .to_string();
        assert!(err.contains("comma-separated .csv"), "{err}");
    }
}
