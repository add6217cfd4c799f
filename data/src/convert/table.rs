//! Reading the text tables (`.xlsx`/`.xls` workbooks and `.csv` files) that pair images with
//! reports.
//!
//! A table needs the columns `Image` and `Description` (matched case-insensitively, surrounding
//! whitespace ignored; `Report` or `Text` also name the description when there is no
//! `Description`); other columns are ignored. The header is the first non-empty row
//! (of the first worksheet of a workbook). Rows that are entirely empty are skipped. A row with an
//! image name but no description, or a description but no image name, is an error naming the
//! file and the row (1-based, as a spreadsheet numbers it). Descriptions are kept verbatim
//! except for surrounding whitespace.

use super::Problems;
use crate::{DataError, Result};
use std::path::{Path, PathBuf};

/// Extensions (lower case) of the table files the importers read.
pub(crate) const TABLE_EXTENSIONS: [&str; 4] = ["csv", "xlsx", "xlsm", "xls"];

/// One row of a text table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextRow {
    /// Row number as a spreadsheet shows it (the header is usually row 1).
    pub row: usize,
    /// The `Image` cell, trimmed.
    pub image: String,
    /// The `Description` cell, with surrounding whitespace trimmed.
    pub report: String,
}

/// A text table read from `path`.
#[derive(Debug, Clone)]
pub struct Table {
    pub path: PathBuf,
    pub rows: Vec<TextRow>,
    /// Image names of rows left out for a problem (an empty description), so that their
    /// images are not reported a second time as having no row.
    pub flawed: Vec<String>,
}

impl Table {
    /// `"<file> row <n>"`, for messages.
    pub fn at(&self, row: usize) -> String {
        format!("{} row {row}", self.path.display())
    }
}

/// Reads a table (`.csv`, otherwise a workbook); a problem in any row is an error (all of
/// them listed).
pub fn read_table(path: &Path) -> Result<Table> {
    let (table, row_problems) = read_table_rows(path)?;
    let mut problems = Problems::default();
    for e in row_problems {
        problems.push(e);
    }
    problems.finish()?;
    Ok(table)
}

/// Reads a table, keeping its good rows when some rows have problems (returned beside, each
/// naming its row), so that an importer lists them with its other findings instead of losing
/// the whole table to one empty cell. An unreadable file or header is an error.
pub(crate) fn read_table_rows(path: &Path) -> Result<(Table, Vec<DataError>)> {
    rows_from_cells(path, read_cells(path)?)
}

/// Cells of a table: (row number, cells).
pub(crate) type Cells = Vec<(usize, Vec<String>)>;

/// Every row of a table (`.csv`, otherwise the first sheet of a workbook) with its number as a
/// spreadsheet shows it; cells as text, untrimmed.
pub(crate) fn read_cells(path: &Path) -> Result<Cells> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "csv" => read_csv_cells(path),
        e if TABLE_EXTENSIONS.contains(&e) => read_workbook_cells(path),
        _ => Err(DataError::bad(
            path,
            format!(
                "not a table tmca reads: use a comma-separated .csv (UTF-8) or a workbook ({})",
                TABLE_EXTENSIONS[1..].join(", ")
            ),
        )),
    }
}

fn read_csv_cells(path: &Path) -> Result<Cells> {
    let bytes = std::fs::read(path).map_err(|e| {
        if path.exists() {
            DataError::io(path, e)
        } else {
            DataError::bad(path, "the table does not exist")
        }
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes.as_slice());
    let mut out = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.map_err(|e| csv_error(path, e))?;
        let row = rec
            .position()
            .map(|p| line_at(&bytes, p.byte() as usize))
            .unwrap_or(i + 1);
        out.push((row, rec.iter().map(str::to_string).collect()));
    }
    Ok(out)
}

/// The 1-based line (as an editor or a spreadsheet counts rows) of the record that starts at
/// byte `start`: csv's own line count is one short after Windows line ends (CRLF), where a
/// record's position can point at the `\n` that ends the line before it.
fn line_at(bytes: &[u8], start: usize) -> usize {
    let start = start.min(bytes.len());
    let first = bytes[start..]
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .map_or(bytes.len(), |k| start + k);
    1 + bytes[..first].iter().filter(|b| **b == b'\n').count()
}

fn csv_error(path: &Path, e: csv::Error) -> DataError {
    match e.kind() {
        csv::ErrorKind::Io(_) if !path.exists() => DataError::bad(path, "the table does not exist"),
        csv::ErrorKind::Utf8 { pos, .. } => DataError::bad(
            path,
            format!(
                "{}: the text is not UTF-8 (Excel's plain \"CSV\" is Windows-1252 or Latin-1): save it as \"CSV UTF-8\" or as .xlsx",
                pos.as_ref()
                    .map_or_else(|| "a line".into(), |p| format!("line {}", p.line()))
            ),
        ),
        _ => DataError::bad(path, format!("cannot read the CSV table: {e}")),
    }
}

fn read_workbook_cells(path: &Path) -> Result<Cells> {
    use calamine::Reader;
    let mut wb = calamine::open_workbook_auto(path)
        .map_err(|e| DataError::bad(path, format!("cannot read the workbook: {e}")))?;
    let range = match wb.worksheet_range_at(0) {
        Some(r) => {
            r.map_err(|e| DataError::bad(path, format!("cannot read the first sheet: {e}")))?
        }
        None => return Err(DataError::bad(path, "the workbook has no worksheet")),
    };
    let first_row = range.start().map(|(r, _)| r as usize).unwrap_or(0);
    let first_col = range.start().map(|(_, c)| c as usize).unwrap_or(0);
    Ok(range
        .rows()
        .enumerate()
        .map(|(i, cells)| {
            // Keep absolute column positions so that the header and data line up.
            let mut v = vec![String::new(); first_col];
            v.extend(cells.iter().map(|c| c.to_string()));
            (first_row + i + 1, v)
        })
        .collect())
}

/// The non-empty header cells, quoted, for messages (`'Image', 'Text'`, or `none`).
pub(crate) fn found_columns(header: &[String]) -> String {
    let found: Vec<String> = header
        .iter()
        .map(|c| c.trim_start_matches('\u{feff}').trim())
        .filter(|c| !c.is_empty())
        .map(|c| format!("'{c}'"))
        .collect();
    if found.is_empty() {
        "none".to_string()
    } else {
        found.join(", ")
    }
}

/// When a CSV header came out as one cell holding `;` or tabs: the file uses another
/// delimiter than the comma.
pub(crate) fn delimiter_hint(header: &[String]) -> String {
    let cells: Vec<&String> = header.iter().filter(|c| !c.trim().is_empty()).collect();
    match cells.as_slice() {
        [one] if one.contains(';') => {
            " (the file looks semicolon-separated; tmca reads comma-separated CSV: save it with commas, or as .xlsx)".into()
        }
        [one] if one.contains('\t') => {
            " (the file looks tab-separated; tmca reads comma-separated CSV: save it with commas, or as .xlsx)".into()
        }
        _ => String::new(),
    }
}

/// A header cell as matched: without a byte-order mark, trimmed, lower-cased.
pub(crate) fn header_name(cell: &str) -> String {
    cell.trim_start_matches('\u{feff}').trim().to_lowercase()
}

fn rows_from_cells(path: &Path, cells: Cells) -> Result<(Table, Vec<DataError>)> {
    let mut it = cells
        .into_iter()
        .filter(|(_, c)| c.iter().any(|s| !s.trim().is_empty()));
    let Some((header_row, header)) = it.next() else {
        return Err(DataError::bad(
            path,
            "the table is empty (expected the columns Image and Description)",
        ));
    };
    let names: Vec<String> = header.iter().map(|c| header_name(c)).collect();
    let col = |want: &str| names.iter().position(|n| n == want);
    // The table layout's names for the report are understood too (a listing of new images in
    // that layout's form can be given to `tmca predict --table`).
    let desc = col("description")
        .or_else(|| col("report"))
        .or_else(|| col("text"));
    let (Some(img_col), Some(desc_col)) = (col("image"), desc) else {
        return Err(DataError::bad(
            path,
            format!(
                "row {header_row}: the header needs the columns 'Image' and 'Description'; found {}{}",
                found_columns(&header),
                delimiter_hint(&header)
            ),
        ));
    };
    let mut problems = Vec::new();
    let mut flawed = Vec::new();
    let mut rows = Vec::new();
    for (row, cells) in it {
        let get = |i: usize| cells.get(i).map(|s| s.trim()).unwrap_or("");
        let (image, report) = (get(img_col), get(desc_col));
        match (image.is_empty(), report.is_empty()) {
            (true, true) => continue,
            (true, false) => problems.push(DataError::bad(
                path,
                format!("row {row}: a description without an image name in the 'Image' column"),
            )),
            (false, true) => {
                problems.push(DataError::bad(
                    path,
                    format!("row {row}: image '{image}' has no text (empty 'Description')"),
                ));
                flawed.push(image.to_string());
            }
            (false, false) => rows.push(TextRow {
                row,
                image: image.to_string(),
                report: report.to_string(),
            }),
        }
    }
    let table = Table {
        path: path.to_path_buf(),
        rows,
        flawed,
    };
    Ok((table, problems))
}

/// One field of a CSV row written by tmca (RFC 4180): quoted, with inner quotes doubled, when
/// it holds a comma, quote or line break; as is otherwise. The tables [`read_table`] reads
/// read it back unchanged.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{write_csv, write_xlsx};
    use super::*;

    #[test]
    fn written_fields_read_back_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("w.csv");
        let reports = ["plain", "a, comma", "a \"quote\"", "two\nlines"];
        let mut text = String::from("Image,Description\n");
        for (i, r) in reports.iter().enumerate() {
            text.push_str(&format!(
                "{},{}\n",
                csv_field(&format!("{i}.png")),
                csv_field(r)
            ));
        }
        std::fs::write(&csv, text).unwrap();
        let t = read_table(&csv).unwrap();
        let back: Vec<&str> = t.rows.iter().map(|r| r.report.as_str()).collect();
        assert_eq!(back, reports);
        assert_eq!(csv_field("plain"), "plain");
    }

    #[test]
    fn csv_and_xlsx_with_extra_columns_and_case() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("t.csv");
        std::fs::write(
            &csv,
            "\u{feff} IMAGE ,Extra,description\nA.png,x,  one infected areas \n,,\nb.png,y,\"all right lung..,\n left\"\n",
        )
        .unwrap();
        let t = read_table(&csv).unwrap();
        assert_eq!(
            t.rows,
            vec![
                TextRow {
                    row: 2,
                    image: "A.png".into(),
                    report: "one infected areas".into()
                },
                TextRow {
                    row: 4,
                    image: "b.png".into(),
                    report: "all right lung..,\n left".into()
                },
            ]
        );

        let xlsx = dir.path().join("t.xlsx");
        write_xlsx(
            &xlsx,
            &["Image", "Description"],
            &[("a.png", "x "), ("b.png", "y")],
        );
        let t = read_table(&xlsx).unwrap();
        assert_eq!(t.rows.len(), 2);
        assert_eq!(
            t.rows[0],
            TextRow {
                row: 2,
                image: "a.png".into(),
                report: "x".into()
            }
        );

        let alias = dir.path().join("alias.csv");
        write_csv(&alias, &["image", "Report", "Text"], &[("a.png", "x")]);
        assert_eq!(read_table(&alias).unwrap().rows[0].report, "x");

        let bad = dir.path().join("bad.csv");
        write_csv(&bad, &["Image", "Caption"], &[("a.png", "x")]);
        let err = read_table(&bad).unwrap_err().to_string();
        assert!(
            err.contains("bad.csv") && err.contains("'Caption'"),
            "{err}"
        );

        let bad = dir.path().join("bad.xlsx");
        write_xlsx(&bad, &["Name", "Description"], &[("a.png", "x")]);
        let err = read_table(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.xlsx") && err.contains("'Name'"), "{err}");
    }

    #[test]
    fn rows_without_text_or_image() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("t.csv");
        write_csv(
            &csv,
            &["Image", "Description"],
            &[("a.png", "  "), ("", "text"), ("c.png", "ok")],
        );
        let err = read_table(&csv).unwrap_err().to_string();
        assert!(
            err.contains("t.csv") && err.contains("row 2") && err.contains("a.png"),
            "{err}"
        );
        assert!(err.contains("row 3"), "{err}");
        // Windows line ends (Excel's "CSV UTF-8", Python's csv module) count the same rows,
        // also after a report that spans two lines.
        let crlf = dir.path().join("crlf.csv");
        std::fs::write(
            &crlf,
            "Image,Description\r\na.png,\"two\r\nlines\"\r\nb.png,ok\r\nc.png,\r\n",
        )
        .unwrap();
        let err = read_table(&crlf).unwrap_err().to_string();
        assert!(err.contains("row 5") && err.contains("c.png"), "{err}");

        let junk = dir.path().join("j.xlsx");
        std::fs::write(&junk, b"not a workbook").unwrap();
        let err = read_table(&junk).unwrap_err().to_string();
        assert!(err.contains("j.xlsx") && err.contains("workbook"), "{err}");
    }
}
