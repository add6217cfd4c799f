//! Transposed 2-D convolution as a candle op (CPU): x (B, Cin, H, W), weight (Cin, Cout, k, k),
//! bias (Cout) → (B, Cout, Ho, Wo) with Ho = (H − 1)·stride − 2·padding + k + output_padding —
//! `nn.ConvTranspose2d`. It is the adjoint of the convolution whose weight is the same tensor
//! read as (Cout_c = Cin, Cin_c = Cout, k, k), so it runs on that convolution's kernels
//! (`cpu::conv`): forward = the convolution's input gradient, input gradient = the
//! convolution's forward, weight gradient = the convolution's with input and output swapped.
//! candle's own CPU transposed convolution is a direct loop, forward and backward.

use crate::check;
use crate::cpu::conv::{self as cpu, Geometry};
use crate::error::KernelError;
use crate::grads::{self, Grads3};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, WithDType};

const OP: &str = "conv_transpose2d";

/// The transposed convolution of `x` with `weight` (Cin, Cout, k, k) at `stride`, `padding`
/// and `output_padding` (< stride), plus `bias` (Cout). Differentiable with respect to all
/// three. CPU tensors only: on a GPU use candle's `conv_transpose2d`.
pub fn conv_transpose2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Result<Tensor> {
    check::float_dtype(OP, "x", x)?;
    let dims = check::rank(OP, "x", x, 4, "(B, Cin, H, W)")?;
    let (cin, h, w) = (dims[1], dims[2], dims[3]);
    check::same_kind(OP, "weight", weight, x)?;
    check::same_kind(OP, "bias", bias, x)?;
    let wd = check::rank(OP, "weight", weight, 4, "(Cin, Cout, k, k)")?;
    let (cout, k) = (wd[1], wd[2]);
    if wd[0] != cin || wd[3] != k || k == 0 {
        return Err(KernelError::Shape {
            op: OP,
            arg: "weight",
            got: wd,
            expected: format!("({cin}, Cout, k, k) with k ≥ 1"),
        }
        .into());
    }
    check::shape(OP, "bias", bias, &[cout], "(Cout)")?;
    if stride == 0 || output_padding >= stride {
        let msg = format!("stride {stride}, output_padding {output_padding} (need 0 ≤ op < s)");
        return Err(invalid("stride", msg));
    }
    let side = |n: usize| {
        ((n.max(1) - 1) * stride + k + output_padding)
            .checked_sub(2 * padding)
            .filter(|s| *s > 0 && n > 0)
    };
    let (Some(ho), Some(wo)) = (side(h), side(w)) else {
        let msg = format!("{h}×{w} input: padding {padding} leaves no output");
        return Err(invalid("padding", msg));
    };
    // The convolution this is the adjoint of: (Cout, Ho, Wo) → (Cin, H, W).
    let g = Geometry {
        cin: cout,
        h: ho,
        w: wo,
        cout: cin,
        k,
        stride,
        pad: padding,
    };
    if g.output() != Some((h, w)) {
        return Err(invalid(
            "padding",
            format!("{h}×{w} input ↔ {ho}×{wo} output"),
        ));
    }
    if !x.device().is_cpu() {
        let msg = "CPU tensors only (use candle's conv_transpose2d on a GPU)".into();
        return Err(invalid("x", msg));
    }
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, ConvT { g })
}

fn invalid(arg: &'static str, msg: String) -> candle_core::Error {
    KernelError::Invalid { op: OP, arg, msg }.into()
}

/// The forward op (x, weight, bias) → y; `g` is the adjoint convolution's geometry.
struct ConvT {
    g: Geometry,
}

impl CustomOp3 for ConvT {
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
        let g = self.g;
        check::with_slices!(OP, T,
            x = (s1, l1, "x"),
            w = (s2, l2, "weight"),
            b = (s3, l3, "bias")
        => {
            let mut y = cpu::input_grad(w, x, g);
            for (plane, i) in y.chunks_mut(g.h * g.w).zip(0..) {
                let bias = b[i % g.cin];
                plane.iter_mut().for_each(|v| *v += bias);
            }
            Ok((T::to_cpu_storage_owned(y), Shape::from((batch, g.cin, g.h, g.w))))
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
        let op = ConvTBackward { g: self.g, need_dx };
        let out = x.apply_op3_no_bwd(weight, &grad.contiguous()?, &op)?;
        grads::split(&out, x, weight, bias, need_dx)
    }
}

/// The backward op (x, weight, ∂y) → `[∂x (when needed) | ∂weight | ∂bias]`.
struct ConvTBackward {
    g: Geometry,
    need_dx: bool,
}

impl CustomOp3 for ConvTBackward {
    fn name(&self) -> &'static str {
        "conv_transpose2d_backward"
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
        let g = self.g;
        check::with_slices!(OP, T,
            x = (s1, l1, "x"),
            w = (s2, l2, "weight"),
            dy = (s3, l3, "grad")
        => {
            let out = cpu::transposed_backward(x, w, dy, g, self.need_dx);
            let shape = Shape::from(out.len());
            Ok((T::to_cpu_storage_owned(out), shape))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use candle_core::{DType, Device};

    /// Forward and every gradient equal candle's `conv_transpose2d`.
    #[test]
    fn equals_candle_conv_transpose2d_forward_and_backward() {
        // (batch, cin, h, w, cout, k, stride, padding, output_padding)
        let cases = [
            (2, 4, 3, 5, 3, 2, 2, 0, 0), // the decoder's exact ×2 upsampling
            (1, 2, 4, 4, 5, 3, 3, 0, 0),
            (2, 3, 4, 3, 2, 3, 2, 1, 1), // overlapping windows, padding, output padding
            (3, 2, 5, 2, 2, 3, 1, 1, 0),
        ];
        for dtype in [DType::F64, DType::F32] {
            let tol = if dtype == DType::F64 { 1e-10 } else { 1e-4 };
            for (b, cin, h, w, cout, k, s, p, op) in cases {
                let case = format!("{dtype:?} ({b}, {cin}, {h}, {w}) k{k} s{s} p{p} op{op}");
                let shapes: [&[usize]; 3] = [&[b, cin, h, w], &[cin, cout, k, k], &[cout]];
                testing::assert_agree(
                    &case,
                    dtype,
                    &shapes,
                    (tol, 10.0 * tol),
                    |t| conv_transpose2d(t[0], t[1], t[2], s, p, op),
                    |t| {
                        let y = t[0].conv_transpose2d(t[1], p, op, s, 1)?;
                        y.broadcast_add(&t[2].reshape((1, cout, 1, 1))?)
                    },
                );
            }
        }
    }

    #[test]
    fn bad_arguments_are_named() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 3, 4, 4), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((3, 2, 2, 2), DType::F32, &dev).unwrap();
        let b = Tensor::zeros(2, DType::F32, &dev).unwrap();
        let msg = |r: Result<Tensor>| r.unwrap_err().to_string();
        assert!(msg(conv_transpose2d(
            &x,
            &w.narrow(0, 0, 2).unwrap(),
            &b,
            2,
            0,
            0
        ))
        .contains("weight"));
        assert!(msg(conv_transpose2d(
            &x,
            &w,
            &b.narrow(0, 0, 1).unwrap(),
            2,
            0,
            0
        ))
        .contains("bias"));
        assert!(msg(conv_transpose2d(&x, &w, &b, 2, 0, 2)).contains("output_padding"));
        assert!(msg(conv_transpose2d(&x, &w, &b, 1, 5, 0)).contains("padding"));
        assert_eq!(
            conv_transpose2d(&x, &w, &b, 2, 0, 0).unwrap().dims(),
            &[1, 2, 8, 8]
        );
    }
}
