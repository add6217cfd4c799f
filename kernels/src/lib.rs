//! Fused candle custom ops for TMCA (DESIGN §3):
//!
//! * [`masked_pool`]: TSSD mask-weighted pooling of raw 1×1-projection outputs into normalised
//!   target and background embeddings (pixel normalisation fused in).
//! * [`pixel_text_cos`]: the LTE cosine map between raw pixel projections and a text embedding.
//! * [`multi_level_contrastive`]: every level's symmetric multi-positive InfoNCE with background
//!   negatives in one op: similarities by matrix products in bounded tiles (no logit, softmax
//!   or mask tensors), whatever the gathered batch.
//!
//! Every op has a multithreaded CPU implementation (the reference, always built), a CUDA
//! implementation behind the `cuda` feature (NVRTC-compiled at first use), and a backward pass,
//! so it stays in candle's autograd. f32 and f64 are supported.
//!
//! Seven CPU-only ops serve the backbone, where candle's CPU path is slow (callers compose them
//! from candle ops on other devices):
//!
//! * [`conv2d`]: dense convolution on matrix products, forward and backward (candle's CPU
//!   backward is a direct transposed convolution).
//! * [`conv_transpose2d`]: its adjoint, on the same kernels (candle's CPU one is a direct loop).
//! * [`depthwise_conv2d`]: depthwise k×k convolution (candle runs it as one conv per channel).
//! * [`linear`]: x·Wᵀ + b over all leading axes as one product (candle_nn's broadcasts W
//!   over them, so its weight gradient is a sum of per-index products).
//! * [`attention`]: softmax(q·kᵀ·scale + bias)·v, one job per (sample, head), both ways.
//! * [`gelu`]: erf-form GELU, vectorised, with a one-pass backward (candle's calls a scalar erf).
//! * [`layer_norm`]: layer norm over any axis with a closed-form backward.

mod attention;
mod check;
mod contrastive;
mod conv;
mod conv_transpose;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod depthwise;
mod error;
mod float;
mod gelu;
mod grads;
mod layer_norm;
mod linear;
mod masked_pool;
mod simd;
mod similarity;
#[cfg(test)]
mod testing;

pub use attention::attention;
pub use contrastive::{dense_groups, multi_level_contrastive};
pub use conv::conv2d;
pub use conv_transpose::conv_transpose2d;
pub use depthwise::depthwise_conv2d;
pub use error::KernelError;
pub use gelu::gelu;
pub use layer_norm::layer_norm;
pub use linear::linear;
pub use masked_pool::{masked_pool, Pooled};
pub use similarity::pixel_text_cos;

/// The ε under the square root of every L2 normalisation: x / sqrt(Σx² + ε), as the trainer's
/// `l2_normalize`.
pub const NORM_EPS: f64 = 1e-12;
