//! Depthwise k×k convolution as a candle op (CPU): x (B, C, H, W), weight (C, 1, k, k),
//! bias (C) → (B, C, H, W), stride 1, zero padding k/2 — `nn.Conv2d(C, C, k, padding=k/2,
//! groups=C)`. candle runs a grouped convolution as one convolution per group; this is one pass
//! over each plane per tap, forward and backward, with no padded or shifted copies.

use crate::check;
use crate::cpu::depthwise::{self as cpu, Geometry};
use crate::error::KernelError;
use crate::grads::{self, Grads3};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, WithDType};

const OP: &str = "depthwise_conv2d";

/// The depthwise convolution of `x` with `weight` (C, 1, k, k), k odd, plus `bias` (C).
/// Differentiable with respect to all three. CPU tensors only: on a GPU, compose it from candle
/// ops (as the trainer does).
pub fn depthwise_conv2d(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    check::float_dtype(OP, "x", x)?;
    let dims = check::rank(OP, "x", x, 4, "(B, C, H, W)")?;
    let c = dims[1];
    check::same_kind(OP, "weight", weight, x)?;
    check::same_kind(OP, "bias", bias, x)?;
    let wd = check::rank(OP, "weight", weight, 4, "(C, 1, k, k)")?;
    let k = wd[2];
    if wd != [c, 1, k, k] || k % 2 == 0 {
        return Err(KernelError::Shape {
            op: OP,
            arg: "weight",
            got: wd,
            expected: format!("({c}, 1, k, k) with k odd"),
        }
        .into());
    }
    check::shape(OP, "bias", bias, &[c], "(C)")?;
    if !x.device().is_cpu() {
        return Err(KernelError::Invalid {
            op: OP,
            arg: "x",
            msg: "CPU tensors only (compose the convolution from candle ops on a GPU)".into(),
        }
        .into());
    }
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, Depthwise { k })
}

fn geometry(l: &Layout, k: usize) -> Result<(usize, Geometry)> {
    let (_, c, h, w) = l.shape().dims4()?;
    Ok((c, Geometry { h, w, k }))
}

/// The forward op (x, weight, bias) → y.
struct Depthwise {
    k: usize,
}

impl CustomOp3 for Depthwise {
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
        let (c, g) = geometry(l1, self.k)?;
        check::with_slices!(OP, T,
            x = (s1, l1, "x"),
            w = (s2, l2, "weight"),
            b = (s3, l3, "bias")
        => {
            let y = cpu::forward(x, w, b, c, g);
            Ok((T::to_cpu_storage_owned(y), l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<Grads3> {
        let op = DepthwiseBackward { k: self.k };
        let out = x.apply_op3_no_bwd(weight, &grad.contiguous()?, &op)?;
        grads::split(&out, x, weight, bias, true)
    }
}

/// The backward op (x, weight, ∂y) → `[∂x | ∂weight | ∂bias]`.
struct DepthwiseBackward {
    k: usize,
}

impl CustomOp3 for DepthwiseBackward {
    fn name(&self) -> &'static str {
        "depthwise_conv2d_backward"
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
        let (c, g) = geometry(l1, self.k)?;
        check::with_slices!(OP, T,
            x = (s1, l1, "x"),
            w = (s2, l2, "weight"),
            dy = (s3, l3, "grad")
        => {
            let out = cpu::backward(x, w, dy, c, g);
            let shape = Shape::from(out.len());
            Ok((T::to_cpu_storage_owned(out), shape))
        })
    }
}
