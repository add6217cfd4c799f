//! Layer normalisation over one axis as a candle op (CPU), with its closed-form backward:
//! one pass for the statistics and one for the output, forward; two passes backward. candle
//! composes it from ~10 ops each way (its own fused LayerNorm has no backward).

use crate::check;
use crate::cpu::layer_norm::{self as cpu, Dims};
use crate::error::KernelError;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, WithDType};

const OP: &str = "layer_norm";

/// (x − μ)/sqrt(σ² + eps)·weight + bias with μ, σ² over `axis` of `x` (any rank; weight and
/// bias have that axis's length): `axis` = last is PyTorch's `LayerNorm`, `axis` = 1 of
/// (B, C, H, W) ConvNeXt's channels-first one, without a transposed copy. Differentiable with
/// respect to all three. CPU tensors only: on a GPU, compose it from candle ops (as the trainer
/// does).
pub fn layer_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    axis: usize,
    eps: f64,
) -> Result<Tensor> {
    check::float_dtype(OP, "x", x)?;
    let dims = x.dims();
    if axis >= dims.len() {
        return Err(KernelError::Invalid {
            op: OP,
            arg: "axis",
            msg: format!("axis {axis} of a rank-{} tensor", dims.len()),
        }
        .into());
    }
    let d = dims[axis];
    for (arg, t) in [("weight", weight), ("bias", bias)] {
        check::same_kind(OP, arg, t, x)?;
        check::shape(OP, arg, t, &[d], "(D) of the normalised axis")?;
    }
    if !(eps > 0.0 && eps.is_finite()) {
        return Err(KernelError::Invalid {
            op: OP,
            arg: "eps",
            msg: format!("{eps} (must be positive)"),
        }
        .into());
    }
    if !x.device().is_cpu() {
        return Err(KernelError::Invalid {
            op: OP,
            arg: "x",
            msg: "CPU tensors only (compose it from candle ops on a GPU)".into(),
        }
        .into());
    }
    let shape = Dims {
        outer: dims[..axis].iter().product(),
        d,
        inner: dims[axis + 1..].iter().product(),
    };
    let op = LayerNorm { dims: shape, eps };
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)
}

/// The forward op (x, weight, bias) → y.
struct LayerNorm {
    dims: Dims,
    eps: f64,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        check::with_slices!(OP, T,
            x = (s1, l1, "x"),
            w = (s2, l2, "weight"),
            b = (s3, l3, "bias")
        => {
            let y = cpu::forward(x, w, b, self.dims, self.eps as T);
            Ok((T::to_cpu_storage_owned(y), l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let back = LayerNormBackward {
            dims: self.dims,
            eps: self.eps,
        };
        let out = x.apply_op3_no_bwd(weight, &grad.contiguous()?, &back)?;
        let (n, d) = (x.elem_count(), self.dims.d);
        let dx = out.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = out.narrow(0, n, d)?;
        let db = out.narrow(0, n + d, d)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The backward op (x, weight, ∂y) → `[∂x | ∂weight | ∂bias]` (statistics recomputed).
struct LayerNormBackward {
    dims: Dims,
    eps: f64,
}

impl CustomOp3 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "layer_norm_backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        check::with_slices!(OP, T,
            x = (s1, l1, "x"),
            w = (s2, l2, "weight"),
            dy = (s3, l3, "grad")
        => {
            let out = cpu::backward(x, w, dy, self.dims, self.eps as T);
            let shape = Shape::from(out.len());
            Ok((T::to_cpu_storage_owned(out), shape))
        })
    }
}
