//! Linear layer as a candle op (CPU): x (…, Cin), weight (Cout, Cin), bias (Cout) →
//! (…, Cout) — `nn.Linear`. candle_nn's Linear broadcasts the weight over x's leading
//! dimensions, so its backward computes one weight gradient per leading index and sums them,
//! and the bias gradient is a reduction over every leading axis; here both are one product
//! and one column sum over all rows.

use crate::check;
use crate::cpu::linear as cpu;
use crate::error::KernelError;
use crate::grads::{self, Grads3};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, WithDType};

const OP: &str = "linear";

/// `x·weightᵀ + bias` over the last axis of `x` (rank ≥ 1). Differentiable with respect to all
/// three. CPU tensors only: on a GPU use candle_nn's `Linear`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    check::float_dtype(OP, "x", x)?;
    let cin = x.dims().last().copied().unwrap_or(0);
    if x.rank() == 0 {
        return Err(invalid("x", "a scalar (need (…, Cin))".into()));
    }
    check::same_kind(OP, "weight", weight, x)?;
    check::same_kind(OP, "bias", bias, x)?;
    let wd = check::rank(OP, "weight", weight, 2, "(Cout, Cin)")?;
    let cout = wd[0];
    if wd[1] != cin {
        return Err(KernelError::Shape {
            op: OP,
            arg: "weight",
            got: wd,
            expected: format!("(Cout, {cin})"),
        }
        .into());
    }
    check::shape(OP, "bias", bias, &[cout], "(Cout)")?;
    if !x.device().is_cpu() {
        return Err(invalid(
            "x",
            "CPU tensors only (use candle_nn's Linear on a GPU)".into(),
        ));
    }
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        Linear { cin, cout },
    )
}

fn invalid(arg: &'static str, msg: String) -> candle_core::Error {
    KernelError::Invalid { op: OP, arg, msg }.into()
}

/// The forward op (x, weight, bias) → y.
struct Linear {
    cin: usize,
    cout: usize,
}

impl CustomOp3 for Linear {
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
        let mut dims = l1.shape().dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = self.cout;
        }
        check::with_slices!(OP, T,
            x = (s1, l1, "x"),
            w = (s2, l2, "weight"),
            b = (s3, l3, "bias")
        => {
            let y = cpu::forward(x, w, b, self.cin, self.cout);
            Ok((T::to_cpu_storage_owned(y), Shape::from(dims)))
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
        let op = LinearBackward {
            cin: self.cin,
            cout: self.cout,
            need_dx,
        };
        let out = x.apply_op3_no_bwd(weight, &grad.contiguous()?, &op)?;
        grads::split(&out, x, weight, bias, need_dx)
    }
}

/// The backward op (x, weight, ∂y) → `[∂x (when needed) | ∂weight | ∂bias]`.
struct LinearBackward {
    cin: usize,
    cout: usize,
    need_dx: bool,
}

impl CustomOp3 for LinearBackward {
    fn name(&self) -> &'static str {
        "linear_backward"
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
        let dims = (self.cin, self.cout);
        check::with_slices!(OP, T,
            x = (s1, l1, "x"),
            w = (s2, l2, "weight"),
            dy = (s3, l3, "grad")
        => {
            let out = cpu::backward(x, w, dy, dims, self.need_dx);
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

    /// Forward and every gradient equal the composed x·Wᵀ + b, for inputs of rank 1 to 4.
    #[test]
    fn equals_composed_linear_forward_and_backward() {
        for dtype in [DType::F64, DType::F32] {
            let tol = if dtype == DType::F64 { 1e-10 } else { 1e-4 };
            for xs in [vec![5], vec![7, 5], vec![2, 3, 5], vec![2, 3, 4, 5]] {
                let mut out_dims = xs.clone();
                out_dims[xs.len() - 1] = 6;
                testing::assert_agree(
                    &format!("{dtype:?} {xs:?}"),
                    dtype,
                    &[&xs, &[6, 5], &[6]],
                    (tol, 10.0 * tol),
                    |t| linear(t[0], t[1], t[2]),
                    |t| {
                        let rows = t[0].reshape((t[0].elem_count() / 5, 5))?;
                        rows.matmul(&t[1].t()?)?
                            .broadcast_add(t[2])?
                            .reshape(out_dims.clone())
                    },
                );
            }
        }
    }

    #[test]
    fn bad_arguments_are_named() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 5), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((3, 5), DType::F32, &dev).unwrap();
        let b = Tensor::zeros(3, DType::F32, &dev).unwrap();
        let msg = |r: Result<Tensor>| r.unwrap_err().to_string();
        assert!(msg(linear(&x, &w.narrow(1, 0, 4).unwrap(), &b)).contains("weight"));
        assert!(msg(linear(&x, &w, &b.narrow(0, 0, 2).unwrap())).contains("bias"));
        let scalar = Tensor::new(1f32, &dev).unwrap();
        assert!(msg(linear(&scalar, &w, &b)).contains("scalar"));
    }
}
