//! What a checkpoint must agree on with the run that resumes from it: the model (by the hash
//! of its config, naming the fields that differ), the batch geometry the loader position
//! and the schedule are counted in, and the metric its best validation value is of.

use crate::checkpoint::{differing_fields, Manifest};
use crate::{Result, TrainError};

/// Refuses to resume from `saved` (at `path`) a run whose own manifest is `now`.
pub fn check(saved: &Manifest, now: &Manifest, path: &std::path::Path, world: usize) -> Result<()> {
    if saved.model_hash != now.model_hash {
        let fields = differing_fields(&saved.model_config, &now.model_config);
        return Err(TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: format!(
                "was written by another model configuration; differing fields: {}",
                fields.join(", ")
            ),
        });
    }
    check_batch_geometry(saved, now, path, world)?;
    check_select(saved, now, path)
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
