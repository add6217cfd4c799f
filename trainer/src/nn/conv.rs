//! Convolutions and linear layers with PyTorch's default initialisation and key names.
//!
//! Thin wrappers of candle_nn's layers (same `forward` through [`Module`]) that report their
//! calls to [`crate::profile`] when it records.

use crate::profile::{self, Part};
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, ConvTranspose2dConfig, Init, VarBuilder};

fn uniform(bound: f64) -> Init {
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// Runs `m` on `x` as one profiled call of `part`.
fn profiled<M: Module + Clone + 'static>(part: Part, m: &M, x: &Tensor) -> Result<Tensor> {
    profile::scope(
        part,
        &[x],
        || {
            let m = m.clone();
            Box::new(move |i: &[Tensor]| Ok(vec![m.forward(&i[0])?]))
        },
        || m.forward(x),
    )
}

/// A 2-D convolution (candle_nn's, profiled).
#[derive(Debug, Clone)]
pub struct Conv2d(candle_nn::Conv2d);

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let part = if self.0.config().groups > 1 {
            Part::DepthwiseConv
        } else {
            Part::Conv2d
        };
        profiled(part, &self.0, x)
    }
}

/// A transposed 2-D convolution (candle_nn's, profiled).
#[derive(Debug, Clone)]
pub struct ConvTranspose2d(candle_nn::ConvTranspose2d);

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        profiled(Part::ConvTranspose, &self.0, x)
    }
}

/// A linear layer (candle_nn's, profiled).
#[derive(Debug, Clone)]
pub struct Linear(candle_nn::Linear);

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        profiled(Part::Linear, &self.0, x)
    }
}

/// `nn.Conv2d(cin, cout, k, stride, padding, groups)` with bias.
pub fn conv2d(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
    groups: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let fan_in = (cin / groups * k * k) as f64;
    let bound = 1.0 / fan_in.sqrt();
    let weight = vb.get_with_hints((cout, cin / groups, k, k), "weight", uniform(bound))?;
    let bias = vb.get_with_hints(cout, "bias", uniform(bound))?;
    let cfg = Conv2dConfig {
        padding,
        stride,
        dilation: 1,
        groups,
        cudnn_fwd_algo: None,
    };
    Ok(Conv2d(candle_nn::Conv2d::new(weight, Some(bias), cfg)))
}

/// `nn.ConvTranspose2d(cin, cout, k, stride)` with bias (used for exact ×k upsampling).
pub fn conv_transpose2d(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    vb: VarBuilder,
) -> Result<ConvTranspose2d> {
    let bound = 1.0 / ((cout * k * k) as f64).sqrt();
    let weight = vb.get_with_hints((cin, cout, k, k), "weight", uniform(bound))?;
    let bias = vb.get_with_hints(cout, "bias", uniform(bound))?;
    let cfg = ConvTranspose2dConfig {
        padding: 0,
        output_padding: 0,
        stride,
        dilation: 1,
    };
    Ok(ConvTranspose2d(candle_nn::ConvTranspose2d::new(
        weight,
        Some(bias),
        cfg,
    )))
}

/// `nn.Linear(cin, cout)` with bias.
pub fn linear(cin: usize, cout: usize, vb: VarBuilder) -> Result<Linear> {
    let bound = 1.0 / (cin as f64).sqrt();
    let weight = vb.get_with_hints((cout, cin), "weight", uniform(bound))?;
    let bias = vb.get_with_hints(cout, "bias", uniform(bound))?;
    Ok(Linear(candle_nn::Linear::new(weight, Some(bias))))
}
