//! One side of a comparison: one model's per-image file, or several files of repeats of one
//! model (seeds, folds) averaged image by image — the paired tests then compare the models
//! over the images with each image's score averaged over the repeats.

use super::file::{read, same_images, Scored};
use crate::cli::CompareMetric;
use std::path::PathBuf;

/// The files of one side, read, checked and averaged.
pub struct Side {
    pub files: Vec<Scored>,
    /// The per-image mean over the files (the one file's scores when there is one).
    pub mean: Scored,
}

impl Side {
    /// Reads `paths`: every file must score the same images, and no run may appear twice.
    pub fn read(paths: &[PathBuf], metric: CompareMetric) -> anyhow::Result<Side> {
        let files = paths
            .iter()
            .map(|p| read(p, metric))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let Some(first) = files.first() else {
            anyhow::bail!(crate::cli::UsageError("no file for one side".into()));
        };
        for f in &files[1..] {
            same_images(first, f)?;
        }
        for (k, f) in files.iter().enumerate() {
            let Some((model, _)) = &f.made else {
                continue;
            };
            if let Some(again) = files[..k]
                .iter()
                .find(|g| g.made.as_ref().is_some_and(|m| &m.0 == model))
            {
                anyhow::bail!(crate::cli::UsageError(format!(
                    "{} and {} are both of {model}: the files of one side are repeats of one \
                     model (other seeds or folds), each once",
                    again.path.display(),
                    f.path.display()
                )));
            }
        }
        let mut mean = first.clone();
        if files.len() > 1 {
            let n = files.len() as f64;
            for (k, v) in mean.scores.iter_mut() {
                *v = files.iter().map(|f| f.scores[k]).sum::<f64>() / n;
            }
        }
        Ok(Side { files, mean })
    }

    /// The protocol every file names, if they all name the same one.
    pub fn protocol(&self) -> Option<&str> {
        let first = self.files[0].made.as_ref()?.1.as_str();
        self.files
            .iter()
            .all(|f| f.made.as_ref().is_some_and(|m| m.1 == first))
            .then_some(first)
    }

    /// Whether the files name different protocols among themselves.
    pub fn mixed_protocols(&self) -> bool {
        let named: Vec<&str> = self
            .files
            .iter()
            .filter_map(|f| f.made.as_ref().map(|m| m.1.as_str()))
            .collect();
        named.windows(2).any(|w| w[0] != w[1])
    }

    /// How the side is shown: `a.csv (runs/a, best t=0.50)`, or for several files
    /// `the per-image mean of 3 files: a0.csv (runs/a0), …; best t=0.50`.
    pub fn label(&self) -> String {
        let one = |f: &Scored, with_protocol: bool| match &f.made {
            Some((m, p)) if with_protocol => format!("{} ({m}, {p})", f.path.display()),
            Some((m, _)) => format!("{} ({m})", f.path.display()),
            None => f.path.display().to_string(),
        };
        if self.files.len() == 1 {
            return one(&self.files[0], true);
        }
        let all: Vec<String> = self.files.iter().map(|f| one(f, false)).collect();
        format!(
            "the per-image mean of {} files: {}{}",
            self.files.len(),
            all.join(", "),
            self.protocol()
                .map(|p| format!("; {p}"))
                .unwrap_or_default()
        )
    }
}
