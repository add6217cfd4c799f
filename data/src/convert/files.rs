//! Finding folders, images and masks on disk, and matching file names to one another.
//!
//! Names are matched by a *key*: the bare file name, lower-cased, without an image extension
//! and without a `mask_` prefix. So `covid_1.png`, `mask_covid_1.png`, `COVID_1.jpg` and
//! `covid_1` all have the key `covid_1`; this is how text rows find their images and images
//! find their masks in every layout.

use crate::imageops::{is_image_file, IMAGE_EXTENSIONS};
use crate::{DataError, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The matching key of a file name or table value (see the module docs).
pub(crate) fn match_key(name: &str) -> String {
    let base = name.trim();
    let base = base.rsplit(['/', '\\']).next().unwrap_or(base).trim();
    let lower = base.to_lowercase();
    let stem = match lower.rsplit_once('.') {
        Some((stem, ext)) if IMAGE_EXTENSIONS.contains(&ext) => stem,
        _ => lower.as_str(),
    };
    stem.strip_prefix("mask_").unwrap_or(stem).to_string()
}

/// The file name of `path` as UTF-8.
pub(crate) fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| DataError::bad(path, "the file name is not valid UTF-8"))
}

/// The file stem of `path` as UTF-8 (everything before the last dot).
pub(crate) fn file_stem(path: &Path) -> Result<String> {
    path.file_stem()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| DataError::bad(path, "the file name is not valid UTF-8"))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.starts_with('.') || n.starts_with("~$") || n.eq_ignore_ascii_case("Thumbs.db"))
        .unwrap_or(false)
}

/// Names of the entries of `dir`, for error messages.
pub(crate) fn describe_dir(dir: &Path) -> String {
    match read_dir_sorted(dir) {
        Ok(entries) => {
            let names: Vec<String> = entries
                .iter()
                .filter(|p| !is_hidden(p))
                .take(20)
                .map(|p| {
                    let n = p.file_name().map(|n| n.to_string_lossy().into_owned());
                    let n = n.unwrap_or_default();
                    if p.is_dir() {
                        format!("{n}/")
                    } else {
                        n
                    }
                })
                .collect();
            if names.is_empty() {
                "it is empty".into()
            } else {
                format!("found: {}", names.join(", "))
            }
        }
        Err(e) => format!("cannot list it: {e}"),
    }
}

/// Checks that `input` is a folder.
pub(crate) fn require_input_dir(input: &Path) -> Result<()> {
    if input.is_dir() {
        Ok(())
    } else if input.exists() {
        Err(DataError::bad(
            input,
            "the input is not a folder (a table listing the samples? use --layout table)",
        ))
    } else {
        Err(DataError::bad(input, "the input folder does not exist"))
    }
}

/// The subfolder of `parent` called `name` (exact, else case-insensitive), if any.
pub(crate) fn find_dir(parent: &Path, name: &str) -> Result<Option<PathBuf>> {
    let exact = parent.join(name);
    if exact.is_dir() {
        return Ok(Some(exact));
    }
    for p in read_dir_sorted(parent)? {
        if p.is_dir()
            && p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// Like [`find_dir`], but a missing folder is an error naming `parent` and what it holds.
pub(crate) fn require_dir(parent: &Path, name: &str, layout: &str) -> Result<PathBuf> {
    find_dir(parent, name)?.ok_or_else(|| {
        DataError::bad(
            parent.join(name),
            format!(
                "missing folder '{name}' expected by the {layout} layout (in {}: {})",
                parent.display(),
                describe_dir(parent)
            ),
        )
    })
}

/// Image files directly in `dir`, sorted by name. Hidden files and documents (tables, text:
/// the reports a folder of images often holds too) are skipped; other files (a `.dcm`, a
/// `.gif`: images tmca does not read) are skipped with a warning.
pub(crate) fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in read_dir_sorted(dir)? {
        if is_hidden(&p) || p.is_dir() {
            continue;
        }
        if is_image_file(&p) {
            file_name(&p)?;
            out.push(p);
        } else if !is_document(&p) {
            tracing::warn!(file = %p.display(), "skipping a file that is not an image");
        }
    }
    Ok(out)
}

/// A table or text file (by extension).
fn is_document(p: &Path) -> bool {
    const DOCUMENTS: [&str; 7] = ["csv", "xlsx", "xls", "txt", "json", "md", "tsv"];
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| DOCUMENTS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Files directly in `dir` with one of `extensions` (lower case), sorted by name.
pub(crate) fn list_with_extensions(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>> {
    Ok(read_dir_sorted(dir)?
        .into_iter()
        .filter(|p| !is_hidden(p) && p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect())
}

/// The files of a folder of images grouped by [`match_key`].
pub(crate) struct KeyIndex {
    pub dir: PathBuf,
    pub by_key: HashMap<String, Vec<PathBuf>>,
}

impl KeyIndex {
    /// Indexes the image files of `dir`.
    pub fn new(dir: &Path) -> Result<Self> {
        let mut by_key: HashMap<String, Vec<PathBuf>> = HashMap::new();
        for p in list_images(dir)? {
            by_key
                .entry(match_key(&file_name(&p)?))
                .or_default()
                .push(p);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            by_key,
        })
    }

    /// The file matching `name`: exact file name first, then `mask_` + name, then any file with
    /// the same key if it is the only one. `owner` names the file the match is for (errors).
    pub fn find(&self, name: &str, owner: &Path, what: &str) -> Result<PathBuf> {
        let key = match_key(name);
        let candidates = self.by_key.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        let base = name.rsplit(['/', '\\']).next().unwrap_or(name).trim();
        let prefixed = format!("mask_{base}");
        for wanted in [base, prefixed.as_str()] {
            if let Some(p) = candidates
                .iter()
                .find(|p| p.file_name().and_then(|n| n.to_str()) == Some(wanted))
            {
                return Ok(p.clone());
            }
        }
        match candidates {
            [one] => Ok(one.clone()),
            [] => Err(DataError::bad(
                owner,
                format!(
                    "no {what} for '{base}' in {} (looked for '{base}', '{prefixed}' and the same \
                     names with any of the extensions {})",
                    self.dir.display(),
                    IMAGE_EXTENSIONS.join("/")
                ),
            )),
            many => Err(DataError::bad(
                owner,
                format!(
                    "several possible {what}s for '{base}' in {}: {}",
                    self.dir.display(),
                    names(many)
                ),
            )),
        }
    }
}

/// File names of `paths`, comma separated.
pub(crate) fn names(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(match_key("covid_1.png"), "covid_1");
        assert_eq!(match_key(" mask_covid_1.PNG "), "covid_1");
        assert_eq!(match_key("img/Covid_1.jpg"), "covid_1");
        assert_eq!(match_key("study.10"), "study.10");
        assert_eq!(match_key("study.10.tif"), "study.10");
    }

    /// Reports beside the images are no stray files; an unreadable image format is.
    #[test]
    fn documents_are_told_from_other_files() {
        assert!(is_document(Path::new("new/reports.CSV")) && is_document(Path::new("a.xlsx")));
        assert!(!is_document(Path::new("scan.dcm")) && !is_document(Path::new("a.png")));
        let dir = tempfile::tempdir().unwrap();
        for n in ["b.png", "reports.csv", "a.jpg", "x.dcm"] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        let names: Vec<_> = list_images(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.jpg", "b.png"]);
    }

    #[test]
    fn find_prefers_exact_then_mask_prefix() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "a.png",
            "mask_a.png",
            "mask_b.png",
            "c.jpg",
            "d.png",
            "d.tif",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let idx = KeyIndex::new(dir.path()).unwrap();
        let owner = Path::new("owner.png");
        let f = |n: &str| {
            idx.find(n, owner, "mask")
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        };
        assert_eq!(f("a.png").unwrap(), "a.png");
        assert_eq!(f("b.png").unwrap(), "mask_b.png");
        assert_eq!(f("c.png").unwrap(), "c.jpg");
        let err = f("d.jpg").unwrap_err().to_string();
        assert!(
            err.contains("several") && err.contains("owner.png"),
            "{err}"
        );
        let err = f("e.png").unwrap_err().to_string();
        assert!(err.contains("no mask for 'e.png'"), "{err}");
    }
}
