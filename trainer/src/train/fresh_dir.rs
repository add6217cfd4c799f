//! A run directory this process creates is removed again when the run fails before training
//! starts (a config value only the data can refute, a pretrained file of the wrong shape, …),
//! so that a refused start leaves nothing behind: no `.lock`, no `tokenizer.json` that a later
//! run could take for its own. Once training starts, the directory stays, whatever happens.

use std::path::{Path, PathBuf};

pub struct FreshDir {
    /// The directory, while this process created it and training has not started.
    created: Option<PathBuf>,
}

impl FreshDir {
    /// Notes whether `dir` exists before the run writes into it.
    pub fn note(dir: &Path) -> Self {
        Self {
            created: (!dir.exists()).then(|| dir.to_path_buf()),
        }
    }

    /// Training starts: the directory is the run's from now on.
    pub fn keep(&mut self) {
        self.created = None;
    }
}

impl Drop for FreshDir {
    fn drop(&mut self) {
        if let Some(dir) = self.created.take() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("{}: could not remove ({e})", dir.display());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_a_directory_it_saw_created_and_not_kept() {
        let root = tempfile::tempdir().unwrap();
        let new = root.path().join("run");
        {
            let _g = FreshDir::note(&new);
            std::fs::create_dir_all(new.join("sub")).unwrap();
            std::fs::write(new.join("tokenizer.json"), "{}").unwrap();
        }
        assert!(!new.exists(), "a failed fresh start leaves nothing");

        {
            let mut g = FreshDir::note(&new);
            std::fs::create_dir_all(&new).unwrap();
            g.keep();
        }
        assert!(new.is_dir(), "kept once training started");

        std::fs::write(new.join("notes.txt"), "mine").unwrap();
        {
            let _g = FreshDir::note(&new);
        }
        assert!(
            new.join("notes.txt").is_file(),
            "a directory that existed is left alone"
        );
    }
}
