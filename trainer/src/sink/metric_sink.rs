//! [`MetricSink`]: where the training loop sends its metrics, and [`NullSink`].

use super::error::Result;
use super::hparams::HParam;
use super::writer::EventWriter;
use std::collections::BTreeMap;

/// A destination for training metrics, so the training loop does not depend on TensorBoard.
///
/// Recording calls do not return errors (a full disk should not stop training between
/// checkpoints); an implementation that can fail keeps its first error and returns it from the
/// next [`MetricSink::flush`], which the loop calls at checkpoints and at the end.
pub trait MetricSink {
    /// Records a scalar.
    fn scalar(&mut self, tag: &str, value: f64, step: u64);
    /// Records an RGB image: `rgb` is `height * width * 3` bytes, interleaved (HWC), row-major.
    fn image(&mut self, tag: &str, rgb: &[u8], height: u32, width: u32, step: u64);
    /// Records Markdown text.
    fn text(&mut self, tag: &str, markdown: &str, step: u64);
    /// Records the run's hyperparameters (once per session; `group` names the run).
    fn hparams(&mut self, values: &BTreeMap<String, HParam>, group: &str);
    /// Says that the run resumed after `step`: what was recorded for later steps is being
    /// redone (TensorBoard drops the old records). Nothing by default.
    fn resumed_after(&mut self, _step: u64) {}
    /// Makes everything recorded so far durable; returns the first error since the last flush.
    fn flush(&mut self) -> Result<()>;
}

/// Discards everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullSink;

impl MetricSink for NullSink {
    fn scalar(&mut self, _tag: &str, _value: f64, _step: u64) {}
    fn image(&mut self, _tag: &str, _rgb: &[u8], _height: u32, _width: u32, _step: u64) {}
    fn text(&mut self, _tag: &str, _markdown: &str, _step: u64) {}
    fn hparams(&mut self, _values: &BTreeMap<String, HParam>, _group: &str) {}
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

impl<T: MetricSink + ?Sized> MetricSink for Box<T> {
    fn scalar(&mut self, tag: &str, value: f64, step: u64) {
        (**self).scalar(tag, value, step)
    }
    fn image(&mut self, tag: &str, rgb: &[u8], height: u32, width: u32, step: u64) {
        (**self).image(tag, rgb, height, width, step)
    }
    fn text(&mut self, tag: &str, markdown: &str, step: u64) {
        (**self).text(tag, markdown, step)
    }
    fn hparams(&mut self, values: &BTreeMap<String, HParam>, group: &str) {
        (**self).hparams(values, group)
    }
    fn resumed_after(&mut self, step: u64) {
        (**self).resumed_after(step)
    }
    fn flush(&mut self) -> Result<()> {
        (**self).flush()
    }
}

/// TensorBoard steps are `int64`; larger `u64` steps saturate.
fn tb_step(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX)
}

impl EventWriter {
    fn defer(&mut self, r: Result<()>) {
        if let Err(e) = r {
            if self.deferred.is_none() {
                tracing::warn!("metrics not recorded: {e}");
                self.deferred = Some(e);
            }
        }
    }
}

/// Scalars are stored as `f32` (`simple_value`).
impl MetricSink for EventWriter {
    fn scalar(&mut self, tag: &str, value: f64, step: u64) {
        let r = self.add_scalar(tag, value as f32, tb_step(step));
        self.defer(r);
    }
    fn image(&mut self, tag: &str, rgb: &[u8], height: u32, width: u32, step: u64) {
        let r = self.add_image(tag, rgb, height, width, tb_step(step));
        self.defer(r);
    }
    fn text(&mut self, tag: &str, markdown: &str, step: u64) {
        let r = self.add_text(tag, markdown, tb_step(step));
        self.defer(r);
    }
    fn hparams(&mut self, values: &BTreeMap<String, HParam>, group: &str) {
        let r = self.add_hparams(values, group);
        self.defer(r);
    }
    fn resumed_after(&mut self, step: u64) {
        let r = self.add_session_start(tb_step(step.saturating_add(1)));
        self.defer(r);
    }
    fn flush(&mut self) -> Result<()> {
        let flushed = EventWriter::flush(self);
        match self.deferred.take() {
            Some(e) => Err(e),
            None => flushed,
        }
    }
}
