//! GELU (erf form, PyTorch's `nn.GELU()`) as a candle op (CPU) with a one-pass backward.
//! candle's `gelu_erf` calls a scalar erf per element and composes its backward from ~8 ops.

use crate::check;
use crate::cpu::gelu as cpu;
use crate::error::KernelError;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};

const OP: &str = "gelu";

/// x·Φ(x) elementwise, any shape. Differentiable. CPU tensors only: on a GPU use candle's
/// `gelu_erf`.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    check::float_dtype(OP, "x", x)?;
    if !x.device().is_cpu() {
        return Err(KernelError::Invalid {
            op: OP,
            arg: "x",
            msg: "CPU tensors only (use candle's gelu_erf on a GPU)".into(),
        }
        .into());
    }
    x.contiguous()?.apply_op1(Gelu)
}

/// The forward op x → y.
struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        check::by_dtype!(OP, "x", s, T => {
            let x = check::cpu_data::<T>(OP, "x", s, l)?;
            Ok((T::to_cpu_storage_owned(cpu::forward(x)), l.shape().clone()))
        })
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            x.apply_op2_no_bwd(&grad.contiguous()?, &GeluBackward)?,
        ))
    }
}

/// The backward op (x, ∂y) → ∂x.
struct GeluBackward;

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        "gelu_backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        check::by_dtype!(OP, "x", s1, T => {
            let x = check::cpu_data::<T>(OP, "x", s1, l1)?;
            let dy = check::cpu_data::<T>(OP, "grad", s2, l2)?;
            Ok((T::to_cpu_storage_owned(cpu::backward(x, dy)), l1.shape().clone()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// Forward and gradient equal candle's gelu_erf (whose backward uses 1/√(2π) ≈ 0.398942,
    /// hence the gradient tolerance), on a non-contiguous input.
    #[test]
    fn equals_candle_gelu_erf() {
        let dev = Device::Cpu;
        for dtype in [DType::F64, DType::F32] {
            let t = (Tensor::randn(0f64, 3.0, (3, 5, 7), &dev).unwrap())
                .to_dtype(dtype)
                .unwrap();
            let x = Var::from_tensor(&t).unwrap();
            let xt = x.as_tensor().transpose(1, 2).unwrap();
            let ours = gelu(&xt).unwrap();
            let theirs = xt.gelu_erf().unwrap();
            let diff = |a: &Tensor, b: &Tensor| -> f64 {
                (a - b)
                    .and_then(|d| {
                        d.abs()?
                            .flatten_all()?
                            .max(0)?
                            .to_dtype(DType::F64)?
                            .to_scalar()
                    })
                    .unwrap()
            };
            let tol = if dtype == DType::F64 { 1e-12 } else { 2e-6 };
            assert!(diff(&ours, &theirs) < tol, "{dtype:?} forward");
            let probe = Tensor::randn(0f64, 1.0, ours.shape(), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let ga = (ours * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let gb = (theirs * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let d = diff(ga.get(&x).unwrap(), gb.get(&x).unwrap());
            assert!(d < 1e-5, "{dtype:?} gradient differs by {d}");
        }
    }
}
