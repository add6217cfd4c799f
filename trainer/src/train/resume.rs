//! What a checkpoint must agree on with the run that resumes from it: the model (by the hash
//! of its config, naming the fields that differ) and the batch geometry the loader position
//! and the schedule are counted in.

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
    check_batch_geometry(saved, now, path, world)
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
