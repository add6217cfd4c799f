//! U-Net decoder: from F4 up through levels 3, 2, 1 with skip connections (transposed-conv
//! ×2 upsampling, exact and with a backward pass), then ×4 to full resolution, 1-channel logits.

use crate::nn::{conv2d, conv_transpose2d, gelu, Conv2d, ConvTranspose2d, LayerNorm2d};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// conv3×3 → LayerNorm → GELU, twice.
#[derive(Debug, Clone)]
pub struct ConvBlock {
    conv1: Conv2d,
    norm1: LayerNorm2d,
    conv2: Conv2d,
    norm2: LayerNorm2d,
}

impl ConvBlock {
    pub fn new(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: conv2d(cin, cout, 3, 1, 1, 1, vb.pp("conv1"))?,
            norm1: LayerNorm2d::new(cout, 1e-6, vb.pp("norm1"))?,
            conv2: conv2d(cout, cout, 3, 1, 1, 1, vb.pp("conv2"))?,
            norm2: LayerNorm2d::new(cout, 1e-6, vb.pp("norm2"))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = gelu(&self.norm1.forward(&self.conv1.forward(x)?)?)?;
        gelu(&self.norm2.forward(&self.conv2.forward(&x)?)?)
    }
}

/// One decoder step: upsample the deeper features, concatenate the skip, convolve.
#[derive(Debug, Clone)]
pub struct UpStage {
    up: ConvTranspose2d,
    block: ConvBlock,
}

impl UpStage {
    pub fn new(deep: usize, skip: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            up: conv_transpose2d(deep, skip, 2, 2, vb.pp("up"))?,
            block: ConvBlock::new(2 * skip, skip, vb.pp("block"))?,
        })
    }

    pub fn forward(&self, deep: &Tensor, skip: &Tensor) -> Result<Tensor> {
        let up = self.up.forward(deep)?;
        self.block.forward(&Tensor::cat(&[&up, skip], 1)?)
    }
}

/// From level 1 (stride 4) to full resolution and one logit channel.
#[derive(Debug, Clone)]
pub struct Head {
    up1: ConvTranspose2d,
    conv1: Conv2d,
    up2: ConvTranspose2d,
    out: Conv2d,
}

impl Head {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let half = (dim / 2).max(4);
        Ok(Self {
            up1: conv_transpose2d(dim, half, 2, 2, vb.pp("up1"))?,
            conv1: conv2d(half, half, 3, 1, 1, 1, vb.pp("conv1"))?,
            up2: conv_transpose2d(half, half, 2, 2, vb.pp("up2"))?,
            out: conv2d(half, 1, 1, 1, 0, 1, vb.pp("out"))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = gelu(&self.conv1.forward(&self.up1.forward(x)?)?)?;
        self.out.forward(&gelu(&self.up2.forward(&x)?)?)
    }
}
