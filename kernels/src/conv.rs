//! Dense 2-D convolution as a candle op (CPU): x (B, Cin, H, W), weight (Cout, Cin, k, k),
//! bias (Cout) → (B, Cout, Ho, Wo) — `nn.Conv2d(Cin, Cout, k, stride, padding)`. Forward and
//! backward are matrix products over unfolded windows (`cpu::conv`); candle's own CPU backward
//! runs the input gradient as a direct transposed convolution and the weight gradient as a
//! convolution over transposed copies.

use crate::check;
use crate::cpu::conv::{self as cpu, Geometry};
use crate::error::KernelError;
use crate::grads::{self, Grads3};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, WithDType};

const OP: &str = "conv2d";

/// The convolution of `x` with `weight` (Cout, Cin, k, k) at `stride` with zero `padding`, plus
/// `bias` (Cout). Differentiable with respect to all three. CPU tensors only: on a GPU use
/// candle's `conv2d` (as the trainer does).
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    check::float_dtype(OP, "x", x)?;
    let dims = check::rank(OP, "x", x, 4, "(B, Cin, H, W)")?;
    let (cin, h, w) = (dims[1], dims[2], dims[3]);
    check::same_kind(OP, "weight", weight, x)?;
    check::same_kind(OP, "bias", bias, x)?;
    let wd = check::rank(OP, "weight", weight, 4, "(Cout, Cin, k, k)")?;
    let (cout, k) = (wd[0], wd[2]);
    if wd[1] != cin || wd[3] != k || k == 0 {
        return Err(KernelError::Shape {
            op: OP,
            arg: "weight",
            got: wd,
            expected: format!("(Cout, {cin}, k, k) with k ≥ 1"),
        }
        .into());
    }
    check::shape(OP, "bias", bias, &[cout], "(Cout)")?;
    if stride == 0 {
        return Err(invalid("stride", "0 (must be at least 1)".into()));
    }
    let g = Geometry {
        cin,
        h,
        w,
        cout,
        k,
        stride,
        pad: padding,
    };
    if g.output().is_none() {
        let msg = format!("{h}×{w} input padded by {padding} is smaller than the {k}×{k} kernel");
        return Err(invalid("x", msg));
    }
    if !x.device().is_cpu() {
        let msg = "CPU tensors only (use candle's conv2d on a GPU)".into();
        return Err(invalid("x", msg));
    }
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, Conv { g })
}

fn invalid(arg: &'static str, msg: String) -> candle_core::Error {
    KernelError::Invalid { op: OP, arg, msg }.into()
}

/// The forward op (x, weight, bias) → y.
struct Conv {
    g: Geometry,
}

impl CustomOp3 for Conv {
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
        let batch = l1.shape().dims()[0];
        let (ho, wo) = self.g.output().unwrap_or((0, 0));
        check::with_slices!(OP, T,
            x = (s1, l1, "x"),
            w = (s2, l2, "weight"),
            b = (s3, l3, "bias")
        => {
            let y = cpu::forward(x, w, Some(b), self.g);
            Ok((T::to_cpu_storage_owned(y), Shape::from((batch, self.g.cout, ho, wo))))
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
        let need_dx = x.track_op();
        let op = ConvBackward { g: self.g, need_dx };
        let out = x.apply_op3_no_bwd(weight, &grad.contiguous()?, &op)?;
        grads::split(&out, x, weight, bias, need_dx)
    }
}

/// The backward op (x, weight, ∂y) → `[∂x (when needed) | ∂weight | ∂bias]`.
struct ConvBackward {
    g: Geometry,
    need_dx: bool,
}

impl CustomOp3 for ConvBackward {
    fn name(&self) -> &'static str {
        "conv2d_backward"
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
            let out = cpu::backward(x, w, dy, self.g, self.need_dx);
            let shape = Shape::from(out.len());
            Ok((T::to_cpu_storage_owned(out), shape))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use candle_core::{DType, Device, Var};

    /// Forward and every gradient equal candle's `conv2d` (whose f64 backward is exact, if slow).
    #[test]
    fn equals_candle_conv2d_forward_and_backward() {
        // (batch, cin, h, w, cout, k, stride, padding)
        let cases = [
            (2, 3, 9, 7, 4, 3, 1, 1),
            (3, 2, 8, 8, 5, 4, 4, 0),
            (1, 4, 6, 10, 3, 2, 2, 0),
            (2, 5, 5, 4, 1, 1, 1, 0),
            (2, 2, 7, 9, 3, 3, 2, 1),
        ];
        for dtype in [DType::F64, DType::F32] {
            let tol = if dtype == DType::F64 { 1e-10 } else { 1e-4 };
            for (b, cin, h, w, cout, k, s, p) in cases {
                let case = format!("{dtype:?} ({b}, {cin}, {h}, {w}) k{k} s{s} p{p}");
                let shapes: [&[usize]; 3] = [&[b, cin, h, w], &[cout, cin, k, k], &[cout]];
                testing::assert_agree(
                    &case,
                    dtype,
                    &shapes,
                    (tol, 10.0 * tol),
                    |t| conv2d(t[0], t[1], t[2], s, p),
                    |t| {
                        t[0].conv2d(t[1], p, s, 1, 1)?
                            .broadcast_add(&t[2].reshape((1, cout, 1, 1))?)
                    },
                );
            }
        }
    }

    /// An untracked input (the image into the stem) gets no gradient; the weights still do.
    #[test]
    fn untracked_input_gets_no_gradient() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 8, 8), &dev).unwrap();
        let wt = Var::randn(0f32, 1.0, (4, 3, 4, 4), &dev).unwrap();
        let bias = Var::randn(0f32, 1.0, 4, &dev).unwrap();
        let y = conv2d(&x, &wt, &bias, 4, 0).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        assert!(g.get(&x).is_none());
        assert_eq!(g.get(wt.as_tensor()).unwrap().dims(), &[4, 3, 4, 4]);
        assert_eq!(g.get(bias.as_tensor()).unwrap().dims(), &[4]);
    }

    #[test]
    fn bad_arguments_are_named() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 3, 4, 4), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((2, 3, 3, 3), DType::F32, &dev).unwrap();
        let b = Tensor::zeros(2, DType::F32, &dev).unwrap();
        let wrong_w = Tensor::zeros((2, 4, 3, 3), DType::F32, &dev).unwrap();
        let msg = |r: Result<Tensor>| r.unwrap_err().to_string();
        assert!(msg(conv2d(&x, &wrong_w, &b, 1, 1)).contains("weight"));
        assert!(msg(conv2d(&x, &w, &b.narrow(0, 0, 1).unwrap(), 1, 1)).contains("bias"));
        assert!(msg(conv2d(&x, &w, &b, 0, 1)).contains("stride"));
        let small = Tensor::zeros((1, 3, 2, 2), DType::F32, &dev).unwrap();
        assert!(msg(conv2d(&small, &w, &b, 1, 0)).contains("smaller than"));
    }
}
