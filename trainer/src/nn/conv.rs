//! Convolutions and linear layers with PyTorch's default initialisation and key names.

use candle_core::Result;
use candle_nn::{
    Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig, Init, Linear, VarBuilder,
};

fn uniform(bound: f64) -> Init {
    Init::Uniform {
        lo: -bound,
        up: bound,
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
    Ok(Conv2d::new(weight, Some(bias), cfg))
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
    Ok(ConvTranspose2d::new(weight, Some(bias), cfg))
}

/// `nn.Linear(cin, cout)` with bias.
pub fn linear(cin: usize, cout: usize, vb: VarBuilder) -> Result<Linear> {
    let bound = 1.0 / (cin as f64).sqrt();
    let weight = vb.get_with_hints((cout, cin), "weight", uniform(bound))?;
    let bias = vb.get_with_hints(cout, "bias", uniform(bound))?;
    Ok(Linear::new(weight, Some(bias)))
}
