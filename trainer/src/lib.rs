//! tmca-trainer: the TMCA model, its losses and metrics, optimisation, checkpoints, evaluation
//! and metric sinks. No environment reads, no MPI/NCCL: gradient synchronisation comes in
//! through a trait implemented by the worker.
//!
//! * [`model`]: TMCA in candle, one file per part.
//! * [`nn`]: building blocks whose gradients candle 0.11 gets right.
//! * [`params`]: seeded, name-ordered parameters.
//! * [`pretrained`]: the image encoder initialised from a pretrained ConvNeXt (timm, Hugging
//!   Face, torchvision, original or tmca layout).
//! * [`profile`]: a call recorder the step benchmark switches on to profile the model.
//! * [`sink`]: where training metrics go ([`sink::MetricSink`]): a self-contained TensorBoard
//!   event writer ([`sink::EventWriter`]), plus null and in-memory sinks.
//! * [`metrics`]: segmentation metrics (Dice, IoU) under both evaluation protocols in use:
//!   per-image mean (LViT) and dataset-level pixel-pooled (GuideDecoder / torchmetrics).

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod export;
mod host;
pub mod inference;

pub mod metrics;
pub mod model;
pub mod nn;
pub mod optim;
pub mod params;
pub mod postprocess;
pub mod pretrained;
pub mod profile;
pub mod provenance;
pub mod runs;
pub mod sink;
pub mod state_error;
pub mod sync;
pub mod train;
pub mod viz;

pub use error::{Result, TrainError};
