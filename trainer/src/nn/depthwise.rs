//! Depthwise k×k convolution.
//!
//! candle runs a grouped convolution as one convolution per group (`chunk` + `cat`), which
//! for ConvNeXt's depthwise 7×7 means C tiny im2col convolutions forward and more backward.
//! On the CPU it is tmca-kernels' `depthwise_conv2d` (one pass per tap over each plane, forward
//! and backward); elsewhere a sum of k² shifted, per-channel-scaled copies, which uses only
//! `pad`, `narrow`, `mul` and `add`, whose gradients are exact. Key names match
//! `nn.Conv2d(groups=C)`.

use crate::profile::{self, Part};
use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// `nn.Conv2d(dim, dim, k, padding=k/2, groups=dim)`.
#[derive(Debug, Clone)]
pub struct DepthwiseConv2d {
    weight: Tensor,
    bias: Tensor,
    k: usize,
}

impl DepthwiseConv2d {
    pub fn new(dim: usize, k: usize, vb: VarBuilder) -> Result<Self> {
        let bound = 1.0 / ((k * k) as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(Self {
            weight: vb.get_with_hints((dim, 1, k, k), "weight", init)?,
            bias: vb.get_with_hints(dim, "bias", init)?,
            k,
        })
    }

    /// `x` (B, C, H, W) → (B, C, H, W), zero padding.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        profile::scope(
            Part::DepthwiseConv,
            &[x],
            || {
                let m = self.clone();
                Box::new(move |i: &[Tensor]| Ok(vec![m.conv(&i[0])?]))
            },
            || self.conv(x),
        )
    }

    fn conv(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() {
            tmca_kernels::depthwise_conv2d(x, &self.weight, &self.bias)
        } else {
            self.shifted_sum(x)
        }
    }

    fn shifted_sum(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        let p = self.k / 2;
        let xp = x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
        let wt = self.weight.reshape((c, self.k * self.k))?;
        let mut out = self
            .bias
            .reshape((1, c, 1, 1))?
            .broadcast_as(x.shape())?
            .contiguous()?;
        for i in 0..self.k {
            let rows = xp.narrow(2, i, h)?;
            for j in 0..self.k {
                let tap = wt.narrow(1, i * self.k + j, 1)?.reshape((1, c, 1, 1))?;
                out = (out + rows.narrow(3, j, w)?.broadcast_mul(&tap)?)?;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ParamStore;
    use candle_core::{DType, Device, Module};

    /// Both implementations (the CPU kernel, and the shifted sum used on other devices).
    #[test]
    fn equals_grouped_convolution_forward_and_backward() {
        for kernel in [true, false] {
            equals_grouped_convolution(kernel);
        }
    }

    fn equals_grouped_convolution(kernel: bool) {
        let dev = Device::Cpu;
        let store = ParamStore::new(3);
        let vb = store.var_builder_dtype(DType::F64, &dev);
        let dw = DepthwiseConv2d::new(5, 7, vb.pp("dw")).unwrap();
        let reference = crate::nn::conv2d(5, 5, 7, 1, 3, 5, vb.pp("dw")).unwrap(); // same parameters
        let x =
            candle_core::Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 5, 9, 6), &dev).unwrap())
                .unwrap();
        let a = if kernel {
            dw.forward(x.as_tensor()).unwrap()
        } else {
            dw.shifted_sum(x.as_tensor()).unwrap()
        };
        let b = reference.forward(x.as_tensor()).unwrap();
        let diff = (&a - &b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(diff < 1e-10, "forward differs by {diff}");
        let probe = Tensor::randn(0f64, 1.0, a.shape(), &dev).unwrap();
        let ga = (a * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, var) in store.vars() {
            let d = (ga.get(var.as_tensor()).unwrap() - gb.get(var.as_tensor()).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(d < 1e-9, "{name}: gradient differs by {d}");
        }
        let d = (ga.get(x.as_tensor()).unwrap() - gb.get(x.as_tensor()).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(d < 1e-9, "input gradient differs by {d}");
    }
}
