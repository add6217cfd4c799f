//! Optimisation: AdamW with parameter groups, gradient clipping, the learning-rate schedule and
//! the moving average of the weights.

mod adamw;
pub mod ema;
mod grads;
mod schedule;

pub use adamw::{AdamW, AdamWConfig};
pub use ema::Ema;
pub use grads::Grads;
pub use schedule::Schedule;
