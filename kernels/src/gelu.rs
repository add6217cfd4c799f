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
        check::with_slices!(OP, T, x = (s1, l1, "x"), dy = (s2, l2, "grad") => {
            Ok((T::to_cpu_storage_owned(cpu::backward(x, dy)), l1.shape().clone()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use candle_core::DType;

    /// Forward and gradient equal candle's gelu_erf (whose backward uses 1/√(2π) ≈ 0.398942,
    /// hence the gradient tolerance), on a non-contiguous input.
    #[test]
    fn equals_candle_gelu_erf() {
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 2e-6)] {
            testing::assert_agree(
                &format!("{dtype:?}"),
                dtype,
                &[&[3, 5, 7]],
                (tol, 1e-5),
                |t| gelu(&(t[0] * 3.0)?.transpose(1, 2)?),
                |t| (t[0] * 3.0)?.transpose(1, 2)?.gelu_erf(),
            );
        }
    }
}
