//! Layer normalisation: on the CPU tmca-kernels' `layer_norm` (one op with a closed-form
//! backward, channels-first without a transposed copy), elsewhere composed from elementary ops
//! (candle's fused versions have no backward).

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
        if x.device().is_cpu() {
            let axis = x.rank().saturating_sub(1);
            return tmca_kernels::layer_norm(x, &self.weight, &self.bias, axis, self.eps);
        }
        self.composed(x)
    }

    /// The same from candle ops (the path off the CPU, and the kernel's reference in tests).
    fn composed(&self, x: &Tensor) -> Result<Tensor> {
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
        if x.device().is_cpu() {
            let ln = &self.0;
            return tmca_kernels::layer_norm(x, &ln.weight, &ln.bias, 1, ln.eps);
        }
        self.composed(x)
    }

    fn composed(&self, x: &Tensor) -> Result<Tensor> {
        self.0
            .composed(&x.permute((0, 2, 3, 1))?)?
            .permute((0, 3, 1, 2))
    }
}

#[cfg(test)]
mod tests {
    //! The CPU kernel path against the composed one, forward and every gradient.

    use super::{LayerNorm, LayerNorm2d};
    use crate::params::ParamStore;
    use candle_core::{DType, Device, Result, Tensor, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
        (a - b)?.abs()?.max_all()?.to_scalar::<f64>()
    }

    fn check(
        shape: &[usize],
        kernel: impl Fn(&Tensor) -> Result<Tensor>,
        composed: impl Fn(&Tensor) -> Result<Tensor>,
        store: &ParamStore,
    ) -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, shape, &dev)?.affine(3.0, 0.5)?)?;
        let (a, b) = (kernel(x.as_tensor())?, composed(x.as_tensor())?);
        assert!(max_diff(&a, &b)? < 1e-12, "forward");
        let probe = Tensor::randn(0f64, 1.0, a.shape(), &dev)?;
        let ga = (a * &probe)?.sum_all()?.backward()?;
        let gb = (b * &probe)?.sum_all()?.backward()?;
        let mut tensors: Vec<(String, Tensor)> = vec![("x".into(), x.as_tensor().clone())];
        tensors.extend(
            store
                .vars()
                .into_iter()
                .map(|(n, v)| (n, v.as_tensor().clone())),
        );
        for (name, t) in tensors {
            let (Some(p), Some(q)) = (ga.get(&t), gb.get(&t)) else {
                panic!("{name}: no gradient")
            };
            assert!(max_diff(p, q)? < 1e-10, "{name}: gradients differ");
        }
        Ok(())
    }

    #[test]
    fn kernel_equals_composed_last_axis_and_channels_first() -> Result<()> {
        let dev = Device::Cpu;
        let store = ParamStore::new(5);
        let vb = store.var_builder_dtype(DType::F64, &dev);
        let ln = LayerNorm::new(6, 1e-5, vb.pp("ln"))?;
        // Non-trivial affine parameters.
        for (_, v) in store.vars() {
            v.set(&Tensor::randn(0f64, 1.0, v.shape(), &dev)?)?;
        }
        check(&[2, 3, 6], |x| ln.normalise(x), |x| ln.composed(x), &store)?;
        let store = ParamStore::new(6);
        let vb = store.var_builder_dtype(DType::F64, &dev);
        let ln2 = LayerNorm2d::new(4, 1e-6, vb.pp("ln2"))?;
        for (_, v) in store.vars() {
            v.set(&Tensor::randn(0f64, 1.0, v.shape(), &dev)?)?;
        }
        check(
            &[2, 4, 3, 5],
            |x| ln2.normalise(x),
            |x| ln2.composed(x),
            &store,
        )
    }
}
