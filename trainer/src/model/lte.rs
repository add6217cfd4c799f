//! Language-guided target enhancement at one decoder stage:
//! A = σ((cos(z, u) − b) / τ_a) from the contrastive branch's aligned projections, then
//! G' = G ⊙ (1 + A) + CrossAttn(G, T).

use super::tssd::Pixels;
use crate::nn::{LayerNorm, MultiHeadAttention};
use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// The enhancement of one stage.
#[derive(Debug, Clone)]
pub struct Lte {
    bias: Tensor,
    tau: f64,
    attn: Option<(LayerNorm, MultiHeadAttention)>,
}

impl Lte {
    pub fn new(
        dim: usize,
        text_dim: usize,
        tau: f64,
        cross_attention: bool,
        heads: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let attn = if cross_attention {
            Some((
                LayerNorm::new(dim, 1e-6, vb.pp("attn_norm"))?,
                MultiHeadAttention::new(dim, text_dim, dim, heads, vb.pp("attn"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            bias: vb.get_with_hints(1, "bias", Init::Const(0.0))?,
            tau,
            attn,
        })
    }

    /// The map A (B, 1, h, w) from the level's pixels (B, D, h, w) and normalised u (B, D);
    /// cos(z, u) by the fused kernel on raw pixels, from candle ops on normalised ones.
    pub fn map(&self, pixels: &Pixels, u: &Tensor) -> Result<Tensor> {
        let cos = match pixels {
            Pixels::Raw(p) => tmca_kernels::pixel_text_cos(p, u)?,
            Pixels::Normalized(z) => z
                .broadcast_mul(&u.unsqueeze(2)?.unsqueeze(3)?)?
                .sum_keepdim(1)?,
        };
        candle_nn::ops::sigmoid(&(cos.broadcast_sub(&self.bias)? / self.tau)?)
    }

    /// Enhances decoder features `g` (B, C, h, w) with the map `a` and the tokens
    /// `tokens` (B, L, Dt) under `attention` (B, L).
    pub fn forward(
        &self,
        g: &Tensor,
        a: &Tensor,
        tokens: &Tensor,
        attention: &Tensor,
    ) -> Result<Tensor> {
        let out = g.broadcast_mul(&(a + 1.0)?)?;
        match &self.attn {
            None => Ok(out),
            Some((norm, attn)) => {
                let (b, c, h, w) = g.dims4()?;
                let q = norm.forward(&g.flatten_from(2)?.transpose(1, 2)?)?; // (B, hw, C)
                let y = attn.forward(&q, tokens, Some(attention))?; // (B, hw, C)
                out + y.transpose(1, 2)?.reshape((b, c, h, w))?
            }
        }
    }
}
