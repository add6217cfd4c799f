//! [`MemorySink`]: keeps every record in memory, for tests.

use super::error::Result;
use super::hparams::HParam;
use super::metric_sink::MetricSink;
use std::collections::BTreeMap;

/// One record kept by [`MemorySink`].
#[derive(Debug, Clone, PartialEq)]
pub enum SinkRecord {
    /// A scalar.
    Scalar {
        /// Tag.
        tag: String,
        /// Value.
        value: f64,
        /// Step.
        step: u64,
    },
    /// An RGB image (HWC, interleaved).
    Image {
        /// Tag.
        tag: String,
        /// `height * width * 3` bytes.
        rgb: Vec<u8>,
        /// Rows.
        height: u32,
        /// Columns.
        width: u32,
        /// Step.
        step: u64,
    },
    /// Hyperparameters.
    HParams {
        /// The values by name.
        values: BTreeMap<String, HParam>,
        /// The session group.
        group: String,
    },
    /// Markdown text.
    Text {
        /// Tag.
        tag: String,
        /// The text.
        markdown: String,
        /// Step.
        step: u64,
    },
}

impl SinkRecord {
    /// The record's tag.
    pub fn tag(&self) -> &str {
        match self {
            Self::Scalar { tag, .. } | Self::Image { tag, .. } | Self::Text { tag, .. } => tag,
            Self::HParams { .. } => super::hparams::SESSION_START_INFO_TAG,
        }
    }
}

/// Keeps records in a `Vec`, in call order.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    /// Everything recorded, in order.
    pub records: Vec<SinkRecord>,
    /// How many times `flush` was called.
    pub flushes: usize,
    /// The steps `resumed_after` was called with.
    pub resumed_after: Vec<u64>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// `(step, value)` of every scalar with this tag, in call order.
    pub fn scalars(&self, tag: &str) -> Vec<(u64, f64)> {
        self.records
            .iter()
            .filter_map(|r| match r {
                SinkRecord::Scalar {
                    tag: t,
                    value,
                    step,
                } if t == tag => Some((*step, *value)),
                _ => None,
            })
            .collect()
    }

    /// The most recent value of a scalar tag.
    pub fn last_scalar(&self, tag: &str) -> Option<f64> {
        self.scalars(tag).last().map(|&(_, v)| v)
    }

    /// `(step, text)` of every text record with this tag.
    pub fn texts(&self, tag: &str) -> Vec<(u64, &str)> {
        self.records
            .iter()
            .filter_map(|r| match r {
                SinkRecord::Text {
                    tag: t,
                    markdown,
                    step,
                } if t == tag => Some((*step, markdown.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Distinct tags, in order of first appearance.
    pub fn tags(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for r in &self.records {
            if !out.contains(&r.tag()) {
                out.push(r.tag());
            }
        }
        out
    }
}

impl MetricSink for MemorySink {
    fn scalar(&mut self, tag: &str, value: f64, step: u64) {
        self.records.push(SinkRecord::Scalar {
            tag: tag.into(),
            value,
            step,
        });
    }
    fn image(&mut self, tag: &str, rgb: &[u8], height: u32, width: u32, step: u64) {
        self.records.push(SinkRecord::Image {
            tag: tag.into(),
            rgb: rgb.to_vec(),
            height,
            width,
            step,
        });
    }
    fn text(&mut self, tag: &str, markdown: &str, step: u64) {
        self.records.push(SinkRecord::Text {
            tag: tag.into(),
            markdown: markdown.into(),
            step,
        });
    }
    fn hparams(&mut self, values: &BTreeMap<String, HParam>, group: &str) {
        self.records.push(SinkRecord::HParams {
            values: values.clone(),
            group: group.into(),
        });
    }
    fn resumed_after(&mut self, step: u64) {
        self.resumed_after.push(step);
    }
    fn flush(&mut self) -> Result<()> {
        self.flushes += 1;
        Ok(())
    }
}
