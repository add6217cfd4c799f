//! One `tmca eval --per-image` file as `tmca compare` reads it, and the check that two such
//! files score the same images.

use crate::cli::CompareMetric;
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// (dataset, index): an image's place.
pub type Key = (String, usize);

/// The scores of one file.
#[derive(Debug, Clone)]
pub struct Scored {
    pub path: PathBuf,
    /// Datasets in file order.
    pub order: Vec<String>,
    pub scores: BTreeMap<Key, f64>,
    /// The image at each place (source name, report), where the file has those columns.
    pub images: BTreeMap<Key, (String, String)>,
    /// The model and evaluation protocol (its first row's), where the file has those columns.
    pub made: Option<(String, String)>,
}

/// Reads `path`'s `metric` column.
pub fn read(path: &Path, metric: CompareMetric) -> anyhow::Result<Scored> {
    let bad = |m: String| tmca_data::DataError::bad(path, m);
    // Opened first so that a missing file is an I/O error (exit code 4).
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut r = csv::Reader::from_reader(std::io::BufReader::new(file));
    let headers = r
        .headers()
        .with_context(|| format!("reading {}", path.display()))?
        .clone();
    let col = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            bad(format!(
                "no `{name}` column (not a `tmca eval --per-image` file?)"
            ))
        })
    };
    let (ds, ix) = (col("dataset")?, col("index")?);
    let sc = col(metric.column()).map_err(|e| {
        if metric.is_distance() {
            bad(format!(
                "no `{}` column (written by `tmca eval --per-image` since boundary distances were added; evaluate again)",
                metric.column()
            ))
        } else {
            e
        }
    })?;
    let who = (col("source_name").ok(), col("report").ok());
    let made = (col("model").ok(), col("protocol").ok());
    let mut out = Scored {
        path: path.to_path_buf(),
        order: Vec::new(),
        scores: BTreeMap::new(),
        images: BTreeMap::new(),
        made: None,
    };
    for (line, rec) in r.records().enumerate() {
        let rec = rec.with_context(|| format!("reading {}", path.display()))?;
        let row = line + 2;
        let field = |i: usize| rec.get(i).unwrap_or("");
        let index: usize = field(ix)
            .parse()
            .map_err(|_| bad(format!("line {row}: index {:?} is not a number", field(ix))))?;
        let v: f64 = field(sc)
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| {
                bad(format!(
                    "line {row}: score {:?} is not a finite number",
                    field(sc)
                ))
            })?;
        // Dice and IoU are fractions, distances are not negative: anything else is another
        // file's column, or an edited one.
        let (range, shown) = if metric.is_distance() {
            (0.0..=f64::MAX, "[0, ∞)")
        } else {
            (0.0..=1.0, "[0, 1]")
        };
        if !range.contains(&v) {
            let what = metric.column();
            return Err(bad(format!("line {row}: {what} {v} is outside {shown}")).into());
        }
        let name = field(ds).to_string();
        if !out.order.contains(&name) {
            out.order.push(name.clone());
        }
        if out.scores.insert((name.clone(), index), v).is_some() {
            return Err(bad(format!("line {row}: {name} image {index} appears twice")).into());
        }
        if let (Some(n), Some(r)) = who {
            out.images
                .insert((name, index), (field(n).to_string(), field(r).to_string()));
        }
        if let (Some(m), Some(p), None) = (made.0, made.1, &out.made) {
            out.made = Some((field(m).to_string(), field(p).to_string()));
        }
    }
    if out.scores.is_empty() {
        return Err(bad("no rows".into()).into());
    }
    Ok(out)
}

/// Refuses two files that do not score the same images: places only one of them has, or
/// another image or report at the same place (scores of different stores — another seed's
/// synthetic data, a store imported again — that only look paired).
pub fn same_images(a: &Scored, b: &Scored) -> anyhow::Result<()> {
    let only = |x: &Scored, y: &Scored| -> Vec<Key> {
        x.scores
            .keys()
            .filter(|k| !y.scores.contains_key(*k))
            .cloned()
            .collect()
    };
    let (only_a, only_b) = (only(a, b), only(b, a));
    if !only_a.is_empty() || !only_b.is_empty() {
        let show = |v: &[Key]| {
            v.iter()
                .take(5)
                .map(|(d, i)| format!("{d} #{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let side = |v: &[Key], f: &Path| {
            (!v.is_empty()).then(|| format!("{} only in {} ({})", v.len(), f.display(), show(v)))
        };
        let sides: Vec<String> = [side(&only_a, &a.path), side(&only_b, &b.path)]
            .into_iter()
            .flatten()
            .collect();
        anyhow::bail!(crate::cli::UsageError(format!(
            "the files score different images: {}; evaluate both runs on the same stores and split",
            sides.join(", ")
        )));
    }
    let differ: Vec<String> = a
        .images
        .iter()
        .filter_map(|(k, x)| {
            let y = b.images.get(k)?;
            (x != y).then(|| {
                format!(
                    "{} #{}: {} \"{}\" vs {} \"{}\"",
                    k.0, k.1, x.0, x.1, y.0, y.1
                )
            })
        })
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    anyhow::bail!(crate::cli::UsageError(format!(
        "{} and {} score different images at {} of the same places ({}{}): they were evaluated \
         on different stores; evaluate both runs on the same stores and split",
        a.path.display(),
        b.path.display(),
        differ.len(),
        differ[..differ.len().min(3)].join("; "),
        if differ.len() > 3 { "; …" } else { "" }
    )))
}
