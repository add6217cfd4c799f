//! Optimisation: AdamW with parameter groups, gradient clipping and the learning-rate schedule.

mod adamw;
mod grads;
mod schedule;

pub use adamw::{AdamW, AdamWConfig};
pub use grads::Grads;
pub use schedule::Schedule;
