//! Layer normalisation from elementary ops (candle's fused versions have no backward).

use crate::profile::{self, Part};
use candle_core::{Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

/// LayerNorm over the last dimension, `weight`/`bias` keys as PyTorch and Hugging Face.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// A LayerNorm of `dim` features.
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, "bias", Init::Const(0.0))?;
        Ok(Self { weight, bias, eps })
    }

    /// Normalises `x` over its last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        profile::scope(
            Part::Norm,
            &[x],
            || {
                let m = self.clone();
                Box::new(move |i: &[Tensor]| Ok(vec![m.normalise(&i[0])?]))
            },
            || self.normalise(x),
        )
    }

    fn normalise(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        xn.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// LayerNorm over the channels of a `(B, C, H, W)` tensor (ConvNeXt's "channels first").
#[derive(Debug, Clone)]
pub struct LayerNorm2d(LayerNorm);

impl LayerNorm2d {
    /// A channels-first LayerNorm of `dim` channels.
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self(LayerNorm::new(dim, eps, vb)?))
    }

    /// Normalises each pixel's channel vector.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        profile::scope(
            Part::Norm,
            &[x],
            || {
                let m = self.clone();
                Box::new(move |i: &[Tensor]| Ok(vec![m.normalise(&i[0])?]))
            },
            || self.normalise(x),
        )
    }

    fn normalise(&self, x: &Tensor) -> Result<Tensor> {
        self.0
            .normalise(&x.permute((0, 2, 3, 1))?)?
            .permute((0, 3, 1, 2))
    }
}
