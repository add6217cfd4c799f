//! [`LazyEventWriter`]: an [`EventWriter`] whose event file is created by the first thing
//! recorded, so that a run refused or failing before its first metric (another process holds
//! the run directory, a missing store, a checkpoint that does not fit) leaves no empty event
//! file behind for TensorBoard to list.

use super::error::{Result, SinkError};
use super::hparams::HParam;
use super::metric_sink::MetricSink;
use super::writer::EventWriter;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Writes TensorBoard events into `dir`, opening its file on first use.
pub struct LazyEventWriter {
    dir: PathBuf,
    inner: Option<EventWriter>,
    /// A failure to create the file, returned by the next flush (as the writer's own errors).
    failed: Option<SinkError>,
}

impl LazyEventWriter {
    /// Nothing is created until the first record.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            inner: None,
            failed: None,
        }
    }

    fn writer(&mut self) -> Option<&mut EventWriter> {
        if self.inner.is_none() && self.failed.is_none() {
            match EventWriter::create(&self.dir) {
                Ok(w) => self.inner = Some(w),
                Err(e) => {
                    tracing::warn!("metrics not recorded: {e}");
                    self.failed = Some(e);
                }
            }
        }
        self.inner.as_mut()
    }
}

impl MetricSink for LazyEventWriter {
    fn scalar(&mut self, tag: &str, value: f64, step: u64) {
        if let Some(w) = self.writer() {
            w.scalar(tag, value, step);
        }
    }
    fn image(&mut self, tag: &str, rgb: &[u8], height: u32, width: u32, step: u64) {
        if let Some(w) = self.writer() {
            w.image(tag, rgb, height, width, step);
        }
    }
    fn text(&mut self, tag: &str, markdown: &str, step: u64) {
        if let Some(w) = self.writer() {
            w.text(tag, markdown, step);
        }
    }
    fn hparams(&mut self, values: &BTreeMap<String, HParam>, group: &str) {
        if let Some(w) = self.writer() {
            w.hparams(values, group);
        }
    }
    fn resumed_after(&mut self, step: u64) {
        if let Some(w) = self.writer() {
            w.resumed_after(step);
        }
    }
    fn flush(&mut self) -> Result<()> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        match &mut self.inner {
            Some(w) => MetricSink::flush(w),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_comes_with_the_first_record() {
        let dir = tempfile::tempdir().unwrap();
        let tb = dir.path().join("tensorboard");
        let mut w = LazyEventWriter::new(&tb);
        w.flush().unwrap();
        assert!(!tb.exists(), "nothing before the first record");
        w.scalar("a", 1.0, 1);
        w.flush().unwrap();
        let files: Vec<_> = std::fs::read_dir(&tb).unwrap().flatten().collect();
        assert_eq!(files.len(), 1);
        assert!(files[0].metadata().unwrap().len() > 0);
        // A folder that cannot be made: the error comes with the next flush.
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, "x").unwrap();
        let mut w = LazyEventWriter::new(blocked.join("tb"));
        w.scalar("a", 1.0, 1);
        assert!(w.flush().is_err());
    }
}
