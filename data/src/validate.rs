//! `tmca data validate`: checks every sample and names each offending one.
//!
//! Checks: the image and mask of every sample decode with the expected shape and type; mask
//! values are 0/1; reports are non-empty (UTF-8 is checked when the store opens); source names
//! are unique; no two samples hold byte-identical images; the content digest recorded when the
//! store was written matches its samples (a store changed in place since is named as such).

use crate::store::Store;
use crate::{Progress, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;

/// One problem with one sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub index: usize,
    pub name: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sample {} ({}): {}", self.index, self.name, self.message)
    }
}

/// The outcome of a validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    pub checked: usize,
    pub problems: Vec<Problem>,
    /// The content digest of the samples as read (`None` when one was unreadable).
    pub content: Option<String>,
}

impl Validation {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every sample of `store`.
pub fn validate(store: &Store, progress: &dyn Progress) -> Result<Validation> {
    let names = store.names();
    let reports = store.reports();
    progress.start("validating", store.len() as u64);
    type Checked = (Vec<Problem>, Option<[u8; 32]>, Option<[u8; 32]>);
    let per_sample: Vec<Checked> = (0..store.len())
        .into_par_iter()
        .map(|i| {
            let mut problems = Vec::new();
            let mut p = |message: String| {
                problems.push(Problem {
                    index: i,
                    name: names[i].clone(),
                    message,
                });
            };
            let image = store.image(i);
            let digest = match &image {
                Ok(img) => Some(Sha256::digest(img).into()),
                Err(e) => {
                    p(format!("image unreadable: {e}"));
                    None
                }
            };
            let mask = store.mask(i);
            match &mask {
                Ok(m) => {
                    let bad = m.iter().filter(|&&v| v > 1).count();
                    if bad > 0 {
                        let v = m.iter().find(|&&v| v > 1).copied().unwrap_or(0);
                        p(format!("mask has {bad} pixels outside {{0,1}} (e.g. {v})"));
                    }
                }
                Err(e) => p(format!("mask unreadable: {e}")),
            }
            let content = match (&image, &mask) {
                (Ok(img), Ok(m)) => store.sample_digest(i, img, m).ok(),
                _ => None,
            };
            if reports[i].trim().is_empty() {
                p("empty report".into());
            }
            if names[i].is_empty() {
                p("empty source name".into());
            }
            progress.inc(1);
            (problems, digest, content)
        })
        .collect();
    progress.finish();
    let contents: Option<Vec<[u8; 32]>> = per_sample.iter().map(|s| s.2).collect();
    let mut problems = Vec::new();
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    let mut by_image: HashMap<[u8; 32], usize> = HashMap::new();
    for (i, (mut ps, digest, _)) in per_sample.into_iter().enumerate() {
        problems.append(&mut ps);
        if let Some(&first) = by_name.get(names[i].as_str()) {
            problems.push(Problem {
                index: i,
                name: names[i].clone(),
                message: format!("duplicate source name (also sample {first})"),
            });
        } else {
            by_name.insert(&names[i], i);
        }
        if let Some(d) = digest {
            if let Some(&first) = by_image.get(&d) {
                // Across splits it is leakage: a test image the model trained on.
                let splits = store.splits();
                let (a, b) = (splits[first], splits[i]);
                let leak = if a == b {
                    String::new()
                } else {
                    format!(", the same image in {} and {}", a.name(), b.name())
                };
                problems.push(Problem {
                    index: i,
                    name: names[i].clone(),
                    message: format!("image identical to sample {first} ({}){leak}", names[first]),
                });
            } else {
                by_image.insert(d, i);
            }
        }
    }
    for (range, file) in store.missing_image_shards()? {
        problems.push(Problem {
            index: range.start,
            name: names[range.start].clone(),
            message: format!(
                "the image data of samples {}..={} is missing ({} is absent; they read as black images): the store is damaged, convert it again",
                range.start,
                range.end - 1,
                file.display()
            ),
        });
    }
    // With every sample readable, their content against the digest recorded at writing.
    let content = contents.map(|c| store.combine_digests(&c));
    if let (Some(now), true) = (content.clone(), store.content_digest_recorded()) {
        let recorded = store.content_digest()?;
        if now != recorded && !store.is_empty() {
            problems.push(Problem {
                index: 0,
                name: names[0].clone(),
                message: format!(
                    "the store's content has changed since it was written (content_sha256 {} recorded, {} now): \
                     something rewrote samples in place, and the recorded digest, by which runs recognise \
                     the store, no longer describes it. Write it again (tmca data convert / synth)",
                    &recorded[..12],
                    &now[..12]
                ),
            });
        }
    }
    Ok(Validation {
        checked: store.len(),
        problems,
        content,
    })
}
