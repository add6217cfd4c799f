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

/// Runs `f(m, x)` as one profiled call of `part`.
fn profiled<M: Clone + 'static>(
    part: Part,
    m: &M,
    x: &Tensor,
    f: fn(&M, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    profile::scope(
        part,
        &[x],
        || {
            let m = m.clone();
            Box::new(move |i: &[Tensor]| Ok(vec![f(&m, &i[0])?]))
        },
        || f(m, x),
    )
}

/// A 2-D convolution (profiled): on the CPU, ungrouped, tmca-kernels' `conv2d` (products
/// over unfolded windows, backward included; candle's CPU backward is a direct transposed
/// convolution); otherwise candle_nn's.
#[derive(Debug, Clone)]
pub struct Conv2d(candle_nn::Conv2d);

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let part = if self.0.config().groups > 1 {
            Part::DepthwiseConv
        } else {
            Part::Conv2d
        };
        profiled(part, self, x, Self::conv)
    }
}

impl Conv2d {
    fn conv(&self, x: &Tensor) -> Result<Tensor> {
        let cfg = self.0.config();
        match self.0.bias() {
            Some(bias) if x.device().is_cpu() && cfg.groups == 1 && cfg.dilation == 1 => {
                tmca_kernels::conv2d(x, self.0.weight(), bias, cfg.stride, cfg.padding)
            }
            _ => self.0.forward(x),
        }
    }
}

/// A transposed 2-D convolution (profiled). On the CPU, tmca-kernels' `conv_transpose2d`
/// (candle's CPU transposed convolution is a direct loop, forward and backward). Elsewhere,
/// with non-overlapping windows (kernel = stride, no padding: the decoder's exact ×k
/// upsampling), one matrix product and a pixel shuffle, since every input pixel writes its own
/// k×k output block; other configurations are candle_nn's.
#[derive(Debug, Clone)]
pub struct ConvTranspose2d(candle_nn::ConvTranspose2d);

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        profiled(Part::ConvTranspose, self, x, Self::conv)
    }
}

impl ConvTranspose2d {
    fn conv(&self, x: &Tensor) -> Result<Tensor> {
        let cfg = self.0.config();
        let (_, _, k, k2) = self.0.weight().dims4()?;
        let blocks = k == k2 && cfg.stride == k && cfg.padding == 0 && cfg.output_padding == 0;
        match self.0.bias() {
            Some(bias) if x.device().is_cpu() && cfg.dilation == 1 => {
                let (w, s) = (self.0.weight(), cfg.stride);
                tmca_kernels::conv_transpose2d(x, w, bias, s, cfg.padding, cfg.output_padding)
            }
            Some(bias) if blocks && cfg.dilation == 1 => self.blocks(x, bias, k),
            _ => self.0.forward(x),
        }
    }

    /// (B, Cin, H, W) → (B, Cout, kH, kW): y[b, o, ky + k·i, kx + k·j] = Σ_c x[b, c, i, j] ·
    /// weight[c, o, ky, kx] + bias[o].
    fn blocks(&self, x: &Tensor, bias: &Tensor, k: usize) -> Result<Tensor> {
        let (b, cin, h, w) = x.dims4()?;
        let cout = bias.dim(0)?;
        let pixels = x.permute((0, 2, 3, 1))?.reshape((b * h * w, cin))?;
        let y = pixels.matmul(&self.0.weight().reshape((cin, cout * k * k))?)?;
        y.reshape((b, h, w, cout, k, k))?
            .permute((0, 3, 1, 4, 2, 5))?
            .reshape((b, cout, h * k, w * k))?
            .broadcast_add(&bias.reshape((1, cout, 1, 1))?)
    }
}

/// A linear layer (profiled): on the CPU tmca-kernels' `linear` (one product over all leading
/// axes, backward included), otherwise candle_nn's.
#[derive(Debug, Clone)]
pub struct Linear(candle_nn::Linear);

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        profiled(Part::Linear, self, x, Self::apply)
    }
}

impl Linear {
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match self.0.bias() {
            Some(bias) if x.device().is_cpu() => tmca_kernels::linear(x, self.0.weight(), bias),
            _ => self.0.forward(x),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ParamStore;
    use candle_core::{DType, Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>())
            .unwrap()
    }

    /// `ours` and `reference` (the same parameters) agree in value and in every gradient.
    fn agree(store: &ParamStore, ours: &dyn Module, reference: &dyn Module, x: &[usize]) {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, x, &dev).unwrap()).unwrap();
        let a = ours.forward(x.as_tensor()).unwrap();
        let b = reference.forward(x.as_tensor()).unwrap();
        assert_eq!(a.dims(), b.dims());
        let d = max_diff(&a, &b);
        assert!(d < 1e-10, "forward differs by {d}");
        let probe = Tensor::randn(0f64, 1.0, a.shape(), &dev).unwrap();
        let ga = (a * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let mut vars: Vec<(String, Tensor)> = store
            .vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        vars.push(("input".into(), x.as_tensor().clone()));
        for (name, t) in vars {
            let d = max_diff(ga.get(&t).unwrap(), gb.get(&t).unwrap());
            assert!(d < 1e-9, "{name}: gradient differs by {d}");
        }
    }

    /// The CPU kernel path against candle's conv2d: the decoder's 3×3, the stem's 4×4/4, the
    /// 2×2/2 downsampling and the 1×1 projections.
    #[test]
    fn conv2d_equals_candle() {
        for (cin, cout, k, stride, pad, x) in [
            (3, 4, 3, 1, 1, [2, 3, 9, 7]),
            (3, 5, 4, 4, 0, [2, 3, 8, 12]),
            (4, 3, 2, 2, 0, [1, 4, 6, 6]),
            (4, 1, 1, 1, 0, [2, 4, 5, 3]),
        ] {
            let store = ParamStore::new(7);
            let vb = store.var_builder_dtype(DType::F64, &Device::Cpu);
            let ours = conv2d(cin, cout, k, stride, pad, 1, vb.pp("c")).unwrap();
            agree(&store, &ours, &ours.0, &x);
        }
    }

    /// The CPU kernel against candle_nn's Linear, for the encoders' ranks (3: tokens, 4:
    /// channels-last pixels).
    #[test]
    fn linear_equals_candle() {
        for x in [[2, 3, 5].as_slice(), &[2, 3, 4, 5]] {
            let store = ParamStore::new(5);
            let vb = store.var_builder_dtype(DType::F64, &Device::Cpu);
            let ours = linear(5, 6, vb.pp("fc")).unwrap();
            agree(&store, &ours, &ours.0, x);
        }
    }

    /// The matrix product + pixel shuffle used off the CPU.
    struct Blocks(ConvTranspose2d);

    impl Module for Blocks {
        fn forward(&self, x: &Tensor) -> Result<Tensor> {
            let (_, _, k, _) = self.0 .0.weight().dims4()?;
            self.0.blocks(x, self.0 .0.bias().unwrap(), k)
        }
    }

    /// The CPU kernel and the matrix product + pixel shuffle against candle's transposed
    /// convolution.
    #[test]
    fn conv_transpose2d_equals_candle() {
        for (cin, cout, k, x) in [(4, 3, 2, [2, 4, 3, 5]), (2, 5, 3, [1, 2, 4, 4])] {
            let store = ParamStore::new(11);
            let vb = store.var_builder_dtype(DType::F64, &Device::Cpu);
            let ours = conv_transpose2d(cin, cout, k, k, vb.pp("up")).unwrap();
            agree(&store, &ours, &ours.0, &x);
            agree(&store, &Blocks(ours.clone()), &ours.0, &x);
        }
    }
}
