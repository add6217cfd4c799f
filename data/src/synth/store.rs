//! Writing a generated dataset to a store.

use super::{generate, store_info, SynthConfig};
use crate::store::{StoreWriter, WriteOptions};
use crate::{Progress, Result};
use std::path::{Path, PathBuf};

/// Generates `cfg`'s dataset into a new store at `path` (atomic: temp name, then rename).
pub fn write_store(
    cfg: &SynthConfig,
    path: &Path,
    opts: &WriteOptions,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    cfg.validate()?;
    let mut writer = StoreWriter::create(path, &store_info(cfg), cfg.total(), opts)?;
    for sample in generate(cfg, progress)? {
        if progress.cancelled() {
            // The writer's temporary store goes with it.
            return Err(crate::DataError::Interrupted { path: path.into() });
        }
        writer.push(sample)?;
    }
    writer.finish()
}

/// Makes sure `path` holds `cfg`'s dataset: an existing store generated with identical settings
/// is kept, anything else there is replaced (once the new store is complete). Returns whether
/// the store was generated now.
pub fn ensure_store(cfg: &SynthConfig, path: &Path, progress: &dyn Progress) -> Result<bool> {
    if let Ok(store) = crate::store::Store::open(path) {
        if store.info() == &store_info(cfg) {
            return Ok(false);
        }
    }
    write_store(
        cfg,
        path,
        &WriteOptions {
            force: true,
            ..Default::default()
        },
        progress,
    )?;
    Ok(true)
}
