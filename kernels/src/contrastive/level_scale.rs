//! Per-level scaling of precomputed unit gradients: the host contrastive op's whole backward
//! (its forward already computed the gradients for a unit upstream gradient).

use crate::check;
use crate::error::KernelError;
use crate::float::Real;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const OP: &str = "contrastive_level_scale";

/// Elements per parallel job.
const MIN_JOB: usize = 1 << 14;

/// `unit` (P, Lv, M) · `upstream` (Lv) broadcast over P and M → (P, Lv, M), one pass.
pub(crate) fn scale_levels(unit: &Tensor, upstream: &Tensor) -> Result<Tensor> {
    unit.apply_op2_no_bwd(&upstream.contiguous()?, &LevelScale)
}

fn scale<T: Real>(unit: &[T], upstream: &[T], m: usize) -> Vec<T> {
    let lv = upstream.len();
    let mut out = vec![T::ZERO; unit.len()];
    out.par_chunks_mut(m.max(1))
        .zip(unit.par_chunks(m.max(1)))
        .with_min_len((MIN_JOB / m.max(1)).max(1))
        .enumerate()
        .for_each(|(k, (o, u))| {
            let g = upstream[k % lv];
            for (o, &u) in o.iter_mut().zip(u) {
                *o = g * u;
            }
        });
    out
}

struct LevelScale;

impl CustomOp2 for LevelScale {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, lv, m) = l1.shape().dims3()?;
        if l2.shape().dims() != [lv] {
            return Err(KernelError::Shape {
                op: OP,
                arg: "upstream",
                got: l2.shape().dims().to_vec(),
                expected: format!("(Lv) = ({lv})"),
            }
            .into());
        }
        macro_rules! run {
            ($t:ty, $v:ident) => {{
                let unit = check::cpu_data::<$t>(OP, "unit", s1, l1)?;
                let up = check::cpu_data::<$t>(OP, "upstream", s2, l2)?;
                Ok((CpuStorage::$v(scale(unit, up, m)), l1.shape().clone()))
            }};
        }
        match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => run!(f32, F32),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => run!(f64, F64),
            _ => Err(KernelError::UnsupportedDType {
                op: OP,
                arg: "unit",
                dtype: s1.dtype(),
            }
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scale_levels;
    use candle_core::{Device, Tensor};

    #[test]
    fn scales_each_level_by_its_upstream_gradient() -> candle_core::Result<()> {
        let unit = Tensor::arange(0f32, 24., &Device::Cpu)?.reshape((3, 2, 4))?;
        let up = Tensor::new(&[2f32, -0.5], &Device::Cpu)?;
        let got = scale_levels(&unit, &up)?;
        let want = unit.broadcast_mul(&up.reshape((1, 2, 1))?)?;
        assert_eq!(got.to_vec3::<f32>()?, want.to_vec3::<f32>()?);
        assert!(scale_levels(&unit, &Tensor::new(&[1f32], &Device::Cpu)?).is_err());
        Ok(())
    }
}
