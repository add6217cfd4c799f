//! Metric sinks: where training sends scalars, images and text.
//!
//! * [`MetricSink`] is the interface the training loop uses (scalars, images, text and the
//!   run's hyperparameters); [`NullSink`] drops everything,
//!   [`MemorySink`] keeps it for tests, and [`EventWriter`] writes TensorBoard event files
//!   ([`LazyEventWriter`]: from the first record on).
//! * [`EventWriter`] is self-contained: TFRecord framing ([`record`]) with masked CRC-32C
//!   ([`crc`]), a hand-written protobuf encoder ([`proto`]) for the `Event`/`Summary` messages
//!   ([`event`]), PNG images ([`png`]) and collision-free file names ([`filename`]).
//!
//! Files it writes are read by TensorBoard's own `EventAccumulator`; see
//! `tests/python/check_tensorboard.py` and `trainer/examples/tb_fixture.rs`.

pub mod crc;
pub mod error;
pub mod event;
pub mod filename;
pub mod hparams;
pub mod lazy;
pub mod memory;
pub mod metric_sink;
pub mod png;
pub mod proto;
pub mod record;
pub mod writer;

#[cfg(test)]
mod tests;

pub use error::{Result, SinkError};
pub use hparams::HParam;
pub use lazy::LazyEventWriter;
pub use memory::{MemorySink, SinkRecord};
pub use metric_sink::{MetricSink, NullSink};
pub use writer::EventWriter;
