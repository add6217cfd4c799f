//! Building blocks with gradients that are complete under candle 0.11's autograd.
//!
//! candle's fused `LayerNorm`, `ops::layer_norm`, `rms_norm` and `softmax_last_dim` have no
//! backward pass, so they would silently stop training; `max_pool2d`'s backward is wrong and
//! bilinear upsampling has none. These modules use only ops whose backward exists and is
//! tested (see the gradient tests in `model`).

mod attention;
mod conv;
mod depthwise;
mod norm;

pub use attention::{scaled_dot_product, MultiHeadAttention};
pub use conv::{conv2d, conv_transpose2d, linear, Conv2d, ConvTranspose2d, Linear};
pub use depthwise::DepthwiseConv2d;

pub use norm::{LayerNorm, LayerNorm2d};

use crate::profile::{self, Part};
use candle_core::{Result, Tensor, D};

/// Softmax over the last dimension built from ops with a backward pass.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(x, D::Minus1)
}

/// GELU with the exact (erf) form, as PyTorch's `nn.GELU()`: tmca-kernels' vectorised op on
/// the CPU, candle's `gelu_erf` elsewhere.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    profile::scope(
        Part::Activation,
        &[x],
        || Box::new(|i: &[Tensor]| Ok(vec![gelu_raw(&i[0])?])),
        || gelu_raw(x),
    )
}

fn gelu_raw(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        tmca_kernels::gelu(x)
    } else {
        x.gelu_erf()
    }
}

/// L2-normalises along `dim`: `x / sqrt(Σx² + 1e-12)`. Unlike `max(‖x‖, ε)` this is smooth at
/// 0, so an all-zero vector gets a zero gradient instead of NaN.
pub fn l2_normalize(x: &Tensor, dim: usize) -> Result<Tensor> {
    profile::scope(
        Part::Contrastive,
        &[x],
        || Box::new(move |i: &[Tensor]| Ok(vec![l2_normalize_raw(&i[0], dim)?])),
        || l2_normalize_raw(x, dim),
    )
}

fn l2_normalize_raw(x: &Tensor, dim: usize) -> Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(dim)? + 1e-12)?.sqrt()?;
    x.broadcast_div(&norm)
}
