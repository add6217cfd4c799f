//! Segmentation metrics on binary predictions and masks: plain Rust on `f32`/`u8` slices.
//!
//! Two protocols are in use by the methods TMCA is compared with, and they can differ a lot:
//!
//! * **per-image mean** (LViT): Dice / IoU per image, then averaged over images. An image
//!   whose prediction and mask are both empty scores 1; empty against non-empty scores 0.
//!   Small targets weigh as much as large ones.
//! * **pooled** (GuideDecoder, torchmetrics): TP, FP, FN summed over every pixel of every
//!   image, then `Dice = 2TP / (2TP + FP + FN)`, `IoU = TP / (TP + FP + FN)`; 1 if all is
//!   empty. Large targets dominate.
//!
//! [`SegMetrics`] accumulates both at once; [`dice()`] and [`iou()`] compute one value from
//! [`Confusion`] counts.

pub mod accumulator;
pub mod confusion;
pub mod dice;
pub mod error;
pub mod iou;
pub mod paired;
pub mod surface;
pub mod sweep;

#[cfg(test)]
mod tests;

pub use accumulator::{ImageScores, SegMetrics, SegSummary, MASK_THRESHOLD};
pub use confusion::Confusion;
pub use dice::dice;
pub use error::MetricsError;
pub use iou::iou;
pub use surface::{surface_distances, SurfaceDistances};
pub use sweep::{best_threshold, SweepDataset, SweepRow, ThresholdSweep};
