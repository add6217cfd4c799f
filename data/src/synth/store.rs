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
        writer.push(sample)?;
    }
    writer.finish()
}
