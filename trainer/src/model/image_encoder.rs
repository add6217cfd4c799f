//! ConvNeXt-style image encoder: a stride-4 stem and four stages at strides 4/8/16/32.
//! LayerNorm only (no batch norm), so data-parallel training needs no synchronised statistics.

use super::config::ModelConfig;
use crate::nn::{conv2d, gelu, linear, Conv2d, DepthwiseConv2d, LayerNorm, LayerNorm2d, Linear};

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// One ConvNeXt block: depthwise conv, LayerNorm, MLP ×4, layer scale, residual.
#[derive(Debug, Clone)]
pub struct Block {
    dwconv: DepthwiseConv2d,
    norm: LayerNorm,
    pwconv1: Linear,
    pwconv2: Linear,
    gamma: Tensor,
}

impl Block {
    pub fn new(dim: usize, cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let k = cfg.kernel_size;
        Ok(Self {
            dwconv: DepthwiseConv2d::new(dim, k, vb.pp("dwconv"))?,
            norm: LayerNorm::new(dim, 1e-6, vb.pp("norm"))?,
            pwconv1: linear(dim, 4 * dim, vb.pp("pwconv1"))?,
            pwconv2: linear(4 * dim, dim, vb.pp("pwconv2"))?,
            gamma: vb.get_with_hints(dim, "gamma", Init::Const(cfg.layer_scale_init))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_scaled(x, None)
    }

    /// [`Self::forward`] with the residual branch scaled per sample by `scale` (B, 1, 1, 1):
    /// stochastic depth ([`super::drop_path`]).
    pub fn forward_scaled(&self, x: &Tensor, scale: Option<&Tensor>) -> Result<Tensor> {
        let y = self.dwconv.forward(x)?.permute((0, 2, 3, 1))?;
        let y = self.norm.forward(&y)?;
        let y = self.pwconv2.forward(&gelu(&self.pwconv1.forward(&y)?)?)?;
        let y = y.broadcast_mul(&self.gamma)?.permute((0, 3, 1, 2))?;
        match scale {
            Some(s) => x + y.broadcast_mul(s)?,
            None => x + y,
        }
    }
}

/// Downsampling between stages: LayerNorm then a 2×2 stride-2 convolution.
#[derive(Debug, Clone)]
pub struct Downsample {
    norm: LayerNorm2d,
    conv: Conv2d,
}

impl Downsample {
    pub fn new(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: LayerNorm2d::new(cin, 1e-6, vb.pp("norm"))?,
            conv: conv2d(cin, cout, 2, 2, 0, 1, vb.pp("conv"))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(&self.norm.forward(x)?)
    }
}

/// The encoder; `forward` returns the four feature maps F1..F4.
#[derive(Debug, Clone)]
pub struct ImageEncoder {
    stem_conv: Conv2d,
    stem_norm: LayerNorm2d,
    downsample: Vec<Downsample>,
    stages: Vec<Vec<Block>>,
}

impl ImageEncoder {
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let d = &cfg.dims;
        let stem_conv = conv2d(cfg.in_channels, d[0], 4, 4, 0, 1, vb.pp("stem.conv"))?;
        let stem_norm = LayerNorm2d::new(d[0], 1e-6, vb.pp("stem.norm"))?;
        let downsample = (1..4)
            .map(|i| Downsample::new(d[i - 1], d[i], vb.pp(format!("downsample.{}", i - 1))))
            .collect::<Result<_>>()?;
        let stages = (0..4)
            .map(|i| {
                (0..cfg.depths[i])
                    .map(|j| Block::new(d[i], cfg, vb.pp(format!("stages.{i}.{j}"))))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            stem_conv,
            stem_norm,
            downsample,
            stages,
        })
    }

    /// `x` (B, C, H, W) → [F1 (B,d0,H/4,W/4), F2, F3, F4 (B,d3,H/32,W/32)].
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        self.forward_dropping(x, None)
    }

    /// [`Self::forward`] with stochastic depth (training).
    pub fn forward_dropping(
        &self,
        x: &Tensor,
        drop: Option<&super::drop_path::DropPath>,
    ) -> Result<Vec<Tensor>> {
        let mut h = self.stem_norm.forward(&self.stem_conv.forward(x)?)?;
        let mut feats = Vec::with_capacity(4);
        let mut k = 0;
        for (i, stage) in self.stages.iter().enumerate() {
            if i > 0 {
                h = self.downsample[i - 1].forward(&h)?;
            }
            for block in stage {
                h = block.forward_scaled(&h, drop.and_then(|d| d.block(k)))?;
                k += 1;
            }
            feats.push(h.clone());
        }
        Ok(feats)
    }
}
