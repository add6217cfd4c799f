//! What a checkpoint must agree on with the run that resumes from it: the model (by the hash
//! of its config, naming the fields that differ), the batch geometry the loader position
//! and the schedule are counted in, the seed, training data and vocabulary (else it would
//! continue another run), and the metric its best validation value is of.

use crate::checkpoint::{differing_fields, Manifest};
use crate::{Result, TrainError};

/// Refuses to resume from `saved` (at `path`) a run whose own manifest is `now`.
pub fn check(saved: &Manifest, now: &Manifest, path: &std::path::Path, world: usize) -> Result<()> {
    if saved.model_hash != now.model_hash {
        let fields = differing_fields(
            &named_sections(&saved.model_config),
            &named_sections(&now.model_config),
        );
        return Err(TrainError::OtherModel {
            path: path.to_path_buf(),
            fields,
        });
    }
    check_batch_geometry(saved, now, path, world)?;
    check_select(saved, now, path)?;
    check_data(saved, now, path)
}

/// The training data a run's loader position and sampling refer to (see [`Manifest::data`]).
/// Each dataset: its name, training samples, content digest (which data, whatever the path),
/// stored image channels and the bit depth its 16-bit images were imported at (how new images
/// are prepared for the model; absent when it had none).
pub fn data_config(
    cfg: &crate::config::Config,
    stores: &[std::sync::Arc<tmca_data::store::Store>],
    train_samples: &[Vec<usize>],
) -> Result<serde_json::Value> {
    let datasets = stores
        .iter()
        .zip(train_samples)
        .map(|(s, idx)| {
            let mut d = serde_json::json!({
                "name": s.info().name,
                "train_samples": idx.len(),
                "content": s.content_digest()?,
                "channels": s.info().channels,
            });
            if let Some(b) = s.info().provenance.get("bit_depth") {
                d["bit_depth"] = b.clone();
            }
            Ok(d)
        })
        .collect::<Result<Vec<serde_json::Value>>>()?;
    Ok(serde_json::json!({
        "datasets": datasets,
        "weights": cfg.data.weights,
        "folds": cfg.data.folds,
        "fold": cfg.data.fold,
        "fold_group": cfg.data.fold_group,
    }))
}

/// sha256 of the tokenizer's vocabulary in id order, tokens joined by newlines
/// ([`Manifest::vocabulary`]).
pub fn vocabulary_hash(tokenizer: &tmca_data::tokenize::TextTokenizer) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for t in tokenizer.vocab_in_order() {
        h.update(t.as_bytes());
        h.update(b"\n");
    }
    format!("{:x}", h.finalize())
}

/// A run continues with the seed, the training data (datasets, weights, fold) and the
/// vocabulary it started with: another seed or fold would continue a different run (a fold's
/// validation images may already have been trained on), other data makes the loader position
/// meaningless, and another vocabulary feeds the text encoder's embedding rows other words.
/// Fields absent from older manifests are not compared.
fn check_data(saved: &Manifest, now: &Manifest, path: &std::path::Path) -> Result<()> {
    let refuse = |field: &str, what: String| {
        Err(TrainError::config(
            field,
            format!(
                "{} {what}: resuming would continue another run; resume with the same settings, or train a new run.dir",
                path.display()
            ),
        ))
    };
    if saved.seed != now.seed {
        return refuse(
            "run.seed",
            format!(
                "was trained with run.seed = {}, this run has {}",
                saved.seed, now.seed
            ),
        );
    }
    if let (Some(a), Some(b)) = (&saved.data, &now.data) {
        // What older manifests did not record is not compared.
        let fields = crate::checkpoint::differing_shared_fields(a, b);
        // A store whose content changed, named before the field list says so.
        let stores = |d: &serde_json::Value| d["datasets"].as_array().cloned().unwrap_or_default();
        let changed = stores(a).into_iter().zip(stores(b)).find(
            |(x, y)| matches!((x.get("content"), y.get("content")), (Some(p), Some(q)) if p != q),
        );
        if let Some((then, now)) = changed {
            let short = |v: &serde_json::Value| {
                v["content"]
                    .as_str()
                    .unwrap_or("?")
                    .chars()
                    .take(12)
                    .collect::<String>()
            };
            return refuse(
                "data.stores",
                format!(
                    "was trained on other data: the store of {} now holds other samples (content \
                     sha256 {}… then, {}… now: written again, or another store at that path)",
                    then["name"].as_str().unwrap_or("?"),
                    short(&then),
                    short(&now)
                ),
            );
        }
        if !fields.is_empty() {
            let named = |f: &str| fields.iter().any(|d| d.starts_with(f));
            let field = if named("fold") {
                "data.fold"
            } else if named("weights") {
                "data.weights"
            } else {
                "data.stores"
            };
            return refuse(
                field,
                format!(
                    "was trained on other data; differing: {}",
                    fields.join(", ")
                ),
            );
        }
    }
    if let (Some(a), Some(b)) = (&saved.vocabulary, &now.vocabulary) {
        if a != b {
            return refuse(
                "text",
                "was trained with another tokenizer vocabulary than this run's tokenizer.json \
                 (the text encoder's embedding rows would stand for other words; a run resumed \
                 from another run's checkpoint takes that run's tokenizer.json when its own \
                 directory has none)"
                    .to_string(),
            );
        }
    }
    Ok(())
}

/// The recorded best validation value is of the checkpoint's `train.select`: compared with
/// another metric it would keep or replace `best` for no reason, so a change is refused.
/// Manifests from before the metric was recorded are taken as they are.
fn check_select(saved: &Manifest, now: &Manifest, path: &std::path::Path) -> Result<()> {
    match (saved.select, now.select) {
        (Some(s), Some(n)) if s != n => Err(TrainError::config(
            "train.select",
            format!(
                "{} chose its best checkpoint by train.select = \"{}\" (best so far {}); this run has \"{}\", whose values cannot be compared with it: resume with select = \"{}\", or train a new run.dir",
                path.display(),
                s.name(),
                saved.best_val.map_or_else(|| "none yet".into(), |v| format!("{v:.4}")),
                n.name(),
                s.name()
            ),
        )),
        _ => Ok(()),
    }
}

/// The model-defining config as the manifest records it, by section (`model`, `text`,
/// `data.image_size`), so that a refusal names the fields that differ.
pub fn model_config(cfg: &crate::config::Config) -> serde_json::Value {
    serde_json::json!({
        "model": cfg.model,
        "text": cfg.text,
        "data": { "image_size": cfg.data.image_size },
    })
}

/// Manifests written before [`model_config`] recorded the three parts as an array.
fn named_sections(v: &serde_json::Value) -> serde_json::Value {
    match v.as_array().map(Vec::as_slice) {
        Some([model, text, size]) => serde_json::json!({
            "model": model,
            "text": text,
            "data": { "image_size": size },
        }),
        _ => v.clone(),
    }
}

/// A checkpoint's loader position and schedule count micro-batches of the global batch it was
/// written with: resuming with another (other ranks × `data.batch_size`, or another
/// `optim.accumulate`) would skip or repeat samples and change the schedule, so it is refused
/// with the numbers that fit.
fn check_batch_geometry(
    saved: &Manifest,
    now: &Manifest,
    path: &std::path::Path,
    world: usize,
) -> Result<()> {
    if let (Some(g), Some(g_now)) = (saved.global_batch, now.global_batch) {
        if g != g_now {
            return Err(TrainError::config(
                "data.batch_size",
                format!(
                    "{} was written with {g} samples per micro-batch over all ranks; this run has {world} rank(s) x data.batch_size {} = {g_now}. Resuming would skip or repeat samples and change the schedule: resume with ranks x data.batch_size = {g}{}",
                    path.display(),
                    g_now / world.max(1),
                    if g % world.max(1) == 0 {
                        format!(" (here: data.batch_size = {})", g / world.max(1))
                    } else {
                        String::new()
                    }
                ),
            ));
        }
    }
    if let (Some(a), Some(a_now)) = (saved.accumulate, now.accumulate) {
        if a != a_now {
            return Err(TrainError::config(
                "optim.accumulate",
                format!(
                    "{} was written with optim.accumulate = {a}, this run has {a_now}: resume with {a}",
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}
