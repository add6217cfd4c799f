//! A trained model loaded from a run directory (`config.toml`, `tokenizer.json`,
//! `checkpoints/`), for evaluation and prediction.

use crate::checkpoint::Checkpointer;
use crate::config::Config;
use crate::model::{Inputs, Tmca};
use crate::params::ParamStore;
use crate::train::setup;
use crate::{Result, TrainError};
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tmca_data::augment::{self, InputSpec, Planar};
use tmca_data::store::Store;
use tmca_data::tokenize::TextTokenizer;

/// What the model predicts for one image and report.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Foreground probabilities, H·W at the model's input size.
    pub probs: Vec<f32>,
    /// The target enhancement maps A_l (where the report points, per level) of the direct
    /// pass, in the decoder's order (coarsest level first); none for an image-only model.
    pub maps: Vec<EnhancementMap>,
}

/// One enhancement map A_l ∈ [0, 1] at its level's resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct EnhancementMap {
    pub level: usize,
    pub height: usize,
    pub width: usize,
    pub values: Vec<f32>,
}

/// Model, tokenizer and config of a finished (or running) training run.
pub struct Trained {
    pub cfg: Config,
    pub model: Tmca,
    pub tokenizer: Arc<TextTokenizer>,
    pub checkpoint: PathBuf,
    /// Optimiser steps the loaded weights had taken.
    pub step: u64,
    pub device: Device,
    /// The datasets the checkpoint was trained on, as its manifest recorded them (empty for
    /// checkpoints written before they were recorded).
    pub trained_on: Vec<TrainedStore>,
}

/// One dataset a checkpoint was trained on ([`crate::checkpoint::Manifest::data`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainedStore {
    pub name: String,
    /// Training samples (its train split, or a cross-validation's training folds).
    #[serde(default)]
    pub train_samples: Option<usize>,
    /// The store's content digest (absent in older manifests).
    #[serde(default)]
    pub content: Option<String>,
    /// Channels of its stored images (absent in older manifests).
    #[serde(default)]
    pub channels: Option<usize>,
    /// The bit depth its 16-bit images were imported at (absent without 16-bit images, and
    /// in older manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit_depth: Option<u32>,
}

impl TrainedStore {
    /// The datasets of a manifest's `data` record.
    pub fn from_manifest(data: Option<&serde_json::Value>) -> Vec<Self> {
        data.and_then(|d| d.get("datasets"))
            .and_then(|d| serde_json::from_value(d.clone()).ok())
            .unwrap_or_default()
    }
}

/// Checks that `members` take the same inputs (size, channels, normalisation), so their
/// probabilities can be averaged; the error names the first run that differs.
pub fn check_same_inputs(members: &[Trained]) -> Result<()> {
    let Some(first) = members.first() else {
        return Err(TrainError::config("ensemble", "no runs given"));
    };
    let y = first.input_spec();
    for m in &members[1..] {
        let x = m.input_spec();
        let prepared = |t: &Trained| (t.prepared_channels(), t.imported_bit_depth());
        if prepared(m) != prepared(first) {
            return Err(TrainError::config(
                "ensemble",
                format!(
                    "{} was trained on {} images, {} on {}: an ensemble reads each image once, \
                     prepared as its members' training images were",
                    m.checkpoint.display(),
                    describe(prepared(m)),
                    first.checkpoint.display(),
                    describe(prepared(first))
                ),
            ));
        }
        if x != y {
            return Err(TrainError::config(
                "ensemble",
                format!(
                    "{} takes other inputs than {} ({} channels of {}x{}, mean {:?}, std {:?} vs \
                     {} of {}x{}, mean {:?}, std {:?}): an ensemble needs one input size, channel \
                     count and normalisation",
                    m.checkpoint.display(),
                    first.checkpoint.display(),
                    x.channels,
                    x.height,
                    x.width,
                    x.mean,
                    x.std,
                    y.channels,
                    y.height,
                    y.width,
                    y.mean,
                    y.std
                ),
            ));
        }
    }
    Ok(())
}

/// How a run's training images were stored, in words (`gray 12-bit`).
fn describe((channels, bits): (usize, Option<u32>)) -> String {
    let kind = if channels == 1 { "gray" } else { "colour" };
    match bits {
        Some(b) => format!("{kind} {b}-bit"),
        None => kind.to_string(),
    }
}

/// One or more runs predicting together (an ensemble, e.g. a cross-validation's fold models),
/// checked once to take the same inputs ([`check_same_inputs`]).
pub struct Ensemble {
    members: Vec<Trained>,
}

impl Ensemble {
    pub fn new(members: Vec<Trained>) -> Result<Self> {
        check_same_inputs(&members)?;
        Ok(Self { members })
    }

    /// Every member; the first sets threshold, batch size and configuration of the whole.
    pub fn members(&self) -> &[Trained] {
        &self.members
    }

    pub fn first(&self) -> &Trained {
        &self.members[0]
    }

    pub fn first_mut(&mut self) -> &mut Trained {
        &mut self.members[0]
    }

    /// The mean prediction: each member's probabilities from its own [`Trained::predict`],
    /// averaged; the enhancement maps are the first member's.
    pub fn predict(&self, items: &[(Planar<'_>, &str)], tta: bool) -> Result<Vec<Prediction>> {
        let mut preds = self.first().predict(items, tta)?;
        for m in &self.members[1..] {
            for (acc, p) in preds.iter_mut().zip(m.predict(items, tta)?) {
                acc.probs
                    .iter_mut()
                    .zip(&p.probs)
                    .for_each(|(a, b)| *a += b);
            }
        }
        if self.members.len() > 1 {
            let n = self.members.len() as f32;
            for p in &mut preds {
                p.probs.iter_mut().for_each(|x| *x /= n);
            }
        }
        Ok(preds)
    }
}

/// The checkpoint directory `given` for the run `run_dir`: a path, or the name of one of the
/// run's own checkpoints (`step-00000120`). A checkpoint inside another run directory is
/// refused: its config, tokenizer and records belong to that run.
fn own_checkpoint(run_dir: &Path, ckpt: &Checkpointer, given: &str) -> Result<PathBuf> {
    let path = Path::new(given);
    let path = if !path.exists() && ckpt.dir().join(given).is_dir() {
        ckpt.dir().join(given)
    } else {
        path.to_path_buf()
    };
    if ckpt.holds(&path) {
        return Ok(path);
    }
    let its_run = std::fs::canonicalize(&path)
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.to_path_buf()));
    if let Some(other) = its_run {
        if other.join("config.toml").is_file() {
            return Err(TrainError::config(
                "--checkpoint",
                format!(
                    "{} belongs to the run {}, not to {}: name that run (its config and tokenizer go with its checkpoints)",
                    path.display(),
                    other.display(),
                    run_dir.display()
                ),
            ));
        }
    }
    if !path.exists() {
        let mut names: Vec<String> = ckpt
            .steps()
            .iter()
            .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
            .collect();
        if ckpt.dir().join("best").is_dir() {
            names.push("best".into());
        }
        return Err(TrainError::config(
            "--checkpoint",
            format!(
                "{given}: no such checkpoint in {}; it has: {} (or say best / latest)",
                run_dir.display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        ));
    }
    Ok(path)
}

impl Trained {
    /// Loads `run_dir` with `checkpoint` (`best`, `latest`, or a checkpoint directory).
    pub fn load(run_dir: &Path, checkpoint: &str, device: &Device) -> Result<Self> {
        let cfg_path = run_dir.join("config.toml");
        if !cfg_path.is_file() {
            return Err(TrainError::file(
                run_dir,
                "not a tmca run directory (no config.toml)",
            ));
        }
        let cfg = Config::load(&cfg_path)?;
        cfg.run.apply_precision(device);
        let tok_path = run_dir.join("tokenizer.json");
        let tokenizer = Arc::new(TextTokenizer::from_file(&tok_path, cfg.text.max_len, true)?);
        let ckpt = Checkpointer::new(run_dir, cfg.train.keep_last);
        let loaded = match checkpoint {
            "best" => {
                let best = ckpt.dir().join("best");
                let aside = (!best.is_dir()).then(|| ckpt.moved_aside("best")).flatten();
                if let Some(aside) = aside {
                    return Err(TrainError::file(
                        &best,
                        format!(
                            "is missing: a run was stopped while replacing it, and the previous one is {}; `tmca train --resume` in the run puts it back, or evaluate that folder with --checkpoint",
                            aside.display()
                        ),
                    ));
                }
                if !best.is_dir() && !ckpt.steps().is_empty() {
                    return Err(TrainError::file(
                        &best,
                        "the run has no best checkpoint yet (it is written at the first validation); evaluate its newest one with --checkpoint latest",
                    ));
                }
                Checkpointer::load(&best, device)?
            }
            "latest" => ckpt
                .latest(device)?
                .ok_or_else(|| TrainError::file(ckpt.dir(), "no valid checkpoint"))?,
            other => Checkpointer::load(&own_checkpoint(run_dir, &ckpt, other)?, device)?,
        };
        if let Some(v) = &loaded.manifest.vocabulary {
            if *v != crate::train::vocabulary_hash(&tokenizer) {
                return Err(TrainError::Checkpoint {
                    path: loaded.path,
                    message: format!(
                        "was trained with another vocabulary than {} (its text encoder would read other words); evaluate it with the tokenizer.json of the run that wrote it",
                        tok_path.display()
                    ),
                });
            }
        }
        if loaded.manifest.model_hash != cfg.model_hash()? {
            return Err(TrainError::Checkpoint {
                path: loaded.path,
                message: "does not belong to this run's model configuration".into(),
            });
        }
        let params = ParamStore::new(cfg.run.seed);
        let model = setup::build_model(&cfg, tokenizer.vocab_size(), &params, device, true)?;
        params
            .assign_all(&loaded.model_weights(cfg.optim.ema > 0.0))
            .map_err(|e| TrainError::Checkpoint {
                path: loaded.path.clone(),
                message: e.to_string(),
            })?;
        Ok(Self {
            cfg,
            model,
            tokenizer,
            checkpoint: loaded.path,
            step: loaded.manifest.step,
            device: device.clone(),
            trained_on: TrainedStore::from_manifest(loaded.manifest.data.as_ref()),
        })
    }

    /// Channels a new image is prepared with before it goes to the model, as the training
    /// images were stored: 1 when every training store was gray (a colour file then reaches
    /// a 3-channel model as its Rec. 709 gray in every channel, as training gave it the stored
    /// gray — not in colours it never saw), else the model's. Older checkpoints, which did not
    /// record their stores' channels, are asked of the stores the config names (where they
    /// open; else the model's channels).
    pub fn prepared_channels(&self) -> usize {
        let model = self.cfg.model.in_channels;
        let recorded: Option<Vec<usize>> = self.trained_on.iter().map(|t| t.channels).collect();
        let stored = match recorded {
            Some(c) if !c.is_empty() => Some(c),
            _ => self.config_store_channels(),
        };
        match stored {
            Some(c) if !c.is_empty() && c.iter().all(|&c| c == 1) => 1,
            _ => model,
        }
    }

    /// The bit depth a new 16-bit image is read at: the one the training stores' 16-bit images
    /// were imported at, when they agree (older checkpoints: from the stores the config names,
    /// where they open); else `None`, each image its own.
    pub fn imported_bit_depth(&self) -> Option<u32> {
        let recorded: Vec<u32> = if self.trained_on.iter().any(|t| t.content.is_some()) {
            self.trained_on.iter().filter_map(|t| t.bit_depth).collect()
        } else {
            let mut out = vec![];
            for p in &self.cfg.data.stores {
                let store = Store::open(p).ok()?;
                out.extend(store.info().provenance.get("bit_depth")?.as_u64());
            }
            out.into_iter()
                .filter_map(|b| u32::try_from(b).ok())
                .collect()
        };
        let first = *recorded.first()?;
        recorded.iter().all(|&b| b == first).then_some(first)
    }

    /// Channels of the stores the config names (`None` if one does not open).
    fn config_store_channels(&self) -> Option<Vec<usize>> {
        let mut out: Vec<usize> = self
            .cfg
            .synth_modalities()
            .iter()
            .map(|m| m.channels())
            .collect();
        for p in &self.cfg.data.stores {
            out.push(Store::open(p).ok()?.info().channels);
        }
        Some(out)
    }

    /// Whether `store` holds the data of one the checkpoint was trained on (same content
    /// digest); `None` when the manifest recorded no digests.
    pub fn trained_on_store(&self, store: &Store) -> Result<Option<bool>> {
        if self.trained_on.iter().all(|t| t.content.is_none()) {
            return Ok(None);
        }
        let d = store.content_digest()?;
        Ok(Some(
            self.trained_on
                .iter()
                .any(|t| t.content.as_deref() == Some(d.as_str())),
        ))
    }

    /// Refuses a store opened from the run's own config (`data.stores`, `data.synth`) that holds
    /// other data than the checkpoint was trained on under that name: a store written again
    /// since, or another one at a relative path read from another directory. Its results would
    /// be recorded as the run's.
    pub fn check_own_store(&self, store: &Store) -> Result<()> {
        let name = &store.info().name;
        let recorded: Vec<&str> = self
            .trained_on
            .iter()
            .filter(|t| &t.name == name)
            .filter_map(|t| t.content.as_deref())
            .collect();
        let Some(&first) = recorded.first() else {
            return Ok(());
        };
        let now = store.content_digest()?;
        if recorded.contains(&now.as_str()) {
            return Ok(());
        }
        let recorded = first;
        Err(TrainError::file(
            store.path(),
            format!(
                "holds other data than {} was trained on as {name} (content sha256 {}… then, {}… \
                 now): the store was written again since, or this is another one (relative paths \
                 in the run's config.toml are taken from the current directory). Evaluate it as \
                 another store with --store {} (not recorded in the run), or restore the original",
                self.checkpoint.display(),
                &recorded[..recorded.len().min(12)],
                &now[..now.len().min(12)],
                store.path().display()
            ),
        ))
    }

    /// Input geometry and normalisation of the model.
    pub fn input_spec(&self) -> InputSpec {
        self.cfg.input_spec()
    }

    /// The prediction for each planar image and its report, in one forward pass (two with
    /// `tta`: [`crate::train::tta`]).
    pub fn predict(&self, items: &[(Planar<'_>, &str)], tta: bool) -> Result<Vec<Prediction>> {
        if items.is_empty() {
            return Ok(vec![]);
        }
        let spec = self.input_spec();
        let (c, h, w) = (spec.channels, spec.height, spec.width);
        let n = items.len();
        let mut x = vec![0f32; n * c * h * w];
        let mut m = vec![0f32; h * w];
        let (mut ids, mut att) = (vec![], vec![]);
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        for (k, (image, report)) in items.iter().enumerate() {
            let dummy = vec![0u8; image.height * image.width];
            let out = augment::SampleOut {
                image: &mut x[k * c * h * w..(k + 1) * c * h * w],
                mask: &mut m,
            };
            augment::process(*image, &dummy, report, &spec, None, &mut rng, out);
            let t = self.tokenizer.encode(report)?;
            ids.extend(t.ids);
            att.extend(t.attention);
        }
        let l = ids.len() / n;
        let inputs = Inputs {
            images: Tensor::from_vec(x, (n, c, h, w), &self.device)?,
            token_ids: Tensor::from_vec(ids, (n, l), &self.device)?,
            attention: Tensor::from_vec(att, (n, l), &self.device)?,
            masks: None,
            drop_path: None,
        };
        let mirrored = if tta {
            let reports: Vec<String> = items.iter().map(|(_, r)| r.to_string()).collect();
            Some(crate::train::tta::mirrored_tokens(
                &self.tokenizer,
                &reports,
                &self.device,
            )?)
        } else {
            None
        };
        let (probs, maps) =
            crate::train::tta::probabilities_and_maps(&self.model, &inputs, mirrored)?;
        let mut out: Vec<Prediction> = probs
            .flatten_from(1)?
            .to_vec2()?
            .into_iter()
            .map(|probs| Prediction {
                probs,
                maps: Vec::new(),
            })
            .collect();
        for (level, a) in maps {
            let (_, _, height, width) = a.dims4()?;
            for (p, values) in out.iter_mut().zip(a.flatten_from(1)?.to_vec2::<f32>()?) {
                p.maps.push(EnhancementMap {
                    level,
                    height,
                    width,
                    values,
                });
            }
        }
        Ok(out)
    }
}
