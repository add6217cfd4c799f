//! One training process per run directory: rank 0 holds an exclusive advisory lock on
//! `<run.dir>/.lock` (flock) while it trains, so a second `tmca train` on the same directory is
//! refused instead of interleaving its checkpoints, TensorBoard events and `validation.jsonl`
//! with the first. The lock goes with the process, however it ends; the file keeps the holder's
//! pid and host for the message. On a file system that cannot lock, a warning is all.

use crate::{Result, TrainError};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

/// Held while it lives.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Locks `dir` (created if missing), or says who holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let path = dir.join(".lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        let locked = try_lock(&file).unwrap_or_else(|e| {
            // Some cluster file systems (Lustre without `-o flock`, …) do not lock: train
            // unguarded rather than not at all.
            tracing::warn!(
                "{}: cannot lock ({e}); not guarding the run directory against a second tmca train",
                path.display()
            );
            true
        });
        if !locked {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(TrainError::config(
                "run.dir",
                format!(
                    "{} is in use by another tmca train ({}); wait for it to end, or choose another run.dir (--run-dir)",
                    dir.display(),
                    if holder.is_empty() { "holder unknown" } else { holder }
                ),
            ));
        }
        let me = format!("pid {} on {}", std::process::id(), hostname());
        let _ = file
            .set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(me.as_bytes()));
        Ok(Self { _file: file })
    }
}

/// Ok(false) when another process holds the lock.
#[cfg(unix)]
fn try_lock(file: &File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor this process owns; no memory is passed.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(false),
        _ => Err(e),
    }
}

#[cfg(not(unix))]
fn try_lock(_: &File) -> std::io::Result<bool> {
    Ok(true)
}

fn hostname() -> String {
    crate::host::name().unwrap_or_else(|| "this host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use by another tmca train"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        RunLock::acquire(dir.path()).unwrap();
    }
}
