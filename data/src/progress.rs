//! Progress reporting without a UI dependency: binaries plug in a progress bar.

/// Receives progress of long operations (conversion, generation, validation).
pub trait Progress: Sync {
    /// Starts a phase of `total` units, described by `what`.
    fn start(&self, what: &str, total: u64);
    /// `n` more units are done.
    fn inc(&self, n: u64);
    /// The phase is over.
    fn finish(&self);
    /// A short status shown beside the bar (e.g. the current loss).
    fn message(&self, _msg: &str) {}
    /// Whether the user asked to stop (a signal): long writes end early with
    /// [`DataError::Interrupted`](crate::DataError::Interrupted), keeping nothing half-written.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _what: &str, _total: u64) {}
    fn inc(&self, _n: u64) {}
    fn finish(&self) {}
}
