//! Target-sensitive semantic distance: per-level projections of pixels and reports into a
//! shared space, and mask-weighted pooling into target and background embeddings.

use crate::nn::{conv2d, l2_normalize, linear, Conv2d, Linear};
use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// The projections g_l (1×1 conv on F_l) and h_l (linear on t) of one level.
#[derive(Debug, Clone)]
pub struct LevelProjection {
    image: Conv2d,
    text: Linear,
}

impl LevelProjection {
    pub fn new(
        image_dim: usize,
        text_dim: usize,
        embed_dim: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            image: conv2d(image_dim, embed_dim, 1, 1, 0, 1, vb.pp("image"))?,
            text: linear(text_dim, embed_dim, vb.pp("text"))?,
        })
    }

    /// The level's pixel embeddings (B, D, h, w): raw for the fused kernels (which normalise
    /// inside, so the normalised copy is never materialised), z_l otherwise.
    pub fn pixels(&self, f: &Tensor, fused: bool) -> Result<Pixels> {
        let p = self.image.forward(f)?;
        Ok(if fused {
            Pixels::Raw(p)
        } else {
            Pixels::Normalized(l2_normalize(&p, 1)?)
        })
    }

    /// u_l: (B, D), L2-normalised.
    pub fn text(&self, t: &Tensor) -> Result<Tensor> {
        l2_normalize(&self.text.forward(t)?, 1)
    }
}

/// A level's pixel embeddings in the form the chosen ops take.
#[derive(Debug, Clone)]
pub enum Pixels {
    /// The raw projection p_l; z_l = p_l / ‖p_l‖ is computed inside the fused kernels.
    Raw(Tensor),
    /// z_l, L2-normalised over D (composed candle ops).
    Normalized(Tensor),
}

impl Pixels {
    /// The tensor, raw or normalised.
    pub fn tensor(&self) -> &Tensor {
        match self {
            Pixels::Raw(t) | Pixels::Normalized(t) => t,
        }
    }

    /// The same variant around another tensor (replays of recorded calls).
    pub fn like(&self, t: Tensor) -> Self {
        match self {
            Pixels::Raw(_) => Pixels::Raw(t),
            Pixels::Normalized(_) => Pixels::Normalized(t),
        }
    }
}

/// Target/background pooling of the pixels under the level's soft mask `m` (B, 1, h, w): the
/// fused kernel on raw pixels, [`masked_pool`] on normalised ones.
pub fn pool(pixels: &Pixels, m: &Tensor) -> Result<Pooled> {
    match pixels {
        Pixels::Raw(p) => {
            let k = tmca_kernels::masked_pool(p, m)?;
            Ok(Pooled {
                target: k.target,
                background: k.background,
                has_background: k.has_background,
            })
        }
        Pixels::Normalized(z) => masked_pool(z, m),
    }
}

/// Target and background embeddings of one level.
#[derive(Debug, Clone)]
pub struct Pooled {
    /// v⁺ (B, D), normalised; the global mean for samples without target.
    pub target: Tensor,
    /// v⁻ (B, D), normalised; meaningless where `has_background` is 0.
    pub background: Tensor,
    /// (B,) 1.0 where the mask has both foreground and background at this level, so v⁻ is a
    /// valid negative (empty masks have no target, full masks no background).
    pub has_background: Tensor,
}

/// Area-downsamples `mask` (B, 1, H, W) to the level's (h, w) (soft values in [0, 1]).
pub fn downsample_mask(mask: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (_, _, mh, mw) = mask.dims4()?;
    if mh % h != 0 || mw % w != 0 || mh / h != mw / w {
        candle_core::bail!("mask {mh}x{mw} cannot be area-downsampled to {h}x{w}");
    }
    let k = mh / h;
    if k == 1 {
        Ok(mask.clone())
    } else {
        mask.avg_pool2d(k)
    }
}

/// Mask-weighted pooling of z (B, D, h, w) with the soft mask m (B, 1, h, w), composed from
/// candle ops (the reference for the fused kernel).
pub fn masked_pool(z: &Tensor, m: &Tensor) -> Result<Pooled> {
    let (b, d, h, w) = z.dims4()?;
    let z = z.reshape((b, d, h * w))?;
    let m = m.reshape((b, 1, h * w))?;
    let area = m.sum(D::Minus1)?; // (B, 1)
    let has = area.gt(0.0)?.to_dtype(z.dtype())?; // (B, 1)
                                                  // Samples without target pool over the whole image (m = 1 everywhere).
    let m_eff = m
        .broadcast_mul(&has.unsqueeze(2)?)?
        .broadcast_add(&(1.0 - &has)?.unsqueeze(2)?)?;
    let pool = |weights: &Tensor| -> Result<Tensor> {
        let s = z.broadcast_mul(weights)?.sum(D::Minus1)?; // (B, D)
        let n = weights.sum(D::Minus1)?.clamp(1e-6, f64::INFINITY)?; // (B, 1)
        l2_normalize(&s.broadcast_div(&n)?, 1)
    };
    let target = pool(&m_eff)?;
    let inv = (1.0 - &m)?;
    let background = pool(&inv)?;
    let has_bg = inv
        .sum(D::Minus1)?
        .gt(0.0)?
        .to_dtype(z.dtype())?
        .mul(&has)?;
    Ok(Pooled {
        target,
        background,
        has_background: has_bg.squeeze(1)?,
    })
}
