//! TSSD masked pooling as a candle op: raw projections p (B, D, H, W) and a soft mask
//! m (B, 1, H, W) → normalised target and background embeddings.

use crate::check;
use crate::cpu::masked_pool as cpu;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType, D};

const OP: &str = "masked_pool";

/// Target and background embeddings of one level (the trainer's `Pooled`).
#[derive(Debug, Clone)]
pub struct Pooled {
    /// v⁺ (B, D), normalised; the normalised mean of all pixels for samples whose mask is empty.
    pub target: Tensor,
    /// v⁻ (B, D), normalised mean over (1 − m); meaningless where `has_background` is 0.
    pub background: Tensor,
    /// (B,) 1.0 where the mask has both foreground and background (Σm > 0 and Σ(1−m) > 0).
    pub has_background: Tensor,
}

/// Fused masked pooling of the raw 1×1-projection output `p` (B, D, H, W) with the soft mask
/// `m` (B, 1, H, W), values in [0, 1]. Each pixel vector is normalised inside the op
/// (z = p / sqrt(Σ_d p² + 1e-12), never materialised), then exactly as the composed
/// `masked_pool(z, m)`:
///
/// * target = l2norm(Σ m_eff z / max(Σ m_eff, 1e-6)), m_eff = m if Σm > 0 else all ones;
/// * background = l2norm(Σ (1−m) z / max(Σ (1−m), 1e-6));
/// * has_background = (Σ(1−m) > 0 && Σm > 0).
///
/// Differentiable with respect to `p` (the mask gets no gradient, `has_background` none).
/// One op produces a flat buffer `[target B·D | background B·D | has_background B |
/// has_target B | 1/(count·‖mean‖) for target B and background B]`; the returned tensors are
/// contiguous narrows of it.
pub fn masked_pool(p: &Tensor, m: &Tensor) -> Result<Pooled> {
    check::float_dtype(OP, "p", p)?;
    let dims = check::rank(OP, "p", p, 4, "(B, D, H, W)")?;
    let (b, d, h, w) = (dims[0], dims[1], dims[2], dims[3]);
    check::same_kind(OP, "m", m, p)?;
    check::shape(OP, "m", m, &[b, 1, h, w], "(B, 1, H, W)")?;
    let out = p.contiguous()?.apply_op2(&m.contiguous()?, MaskedPool)?;
    Ok(Pooled {
        target: out.narrow(0, 0, b * d)?.reshape((b, d))?,
        background: out.narrow(0, b * d, b * d)?.reshape((b, d))?,
        has_background: out.narrow(0, 2 * b * d, b)?,
    })
}

/// Dims (B, D, HW) of a raw-op `p` argument.
fn dims(l: &Layout) -> Result<(usize, usize, usize)> {
    let (b, d, h, w) = l.shape().dims4()?;
    Ok((b, d, h * w))
}

/// The forward op (p, m) → packed output.
struct MaskedPool;

impl CustomOp2 for MaskedPool {
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
        let (b, d, hw) = dims(l1)?;
        let shape = Shape::from(2 * b * d + 4 * b);
        check::with_slices!(OP, T, p = (s1, l1, "p"), m = (s2, l2, "m") => {
            Ok((T::to_cpu_storage_owned(cpu::forward(p, m, b, d, hw)), shape))
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::masked_pool::forward(s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        p: &Tensor,
        m: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, d, _, _) = p.dims4()?;
        let bd = b * d;
        let part = |t: &Tensor, start: usize, len: usize, cols: usize| -> Result<Tensor> {
            t.narrow(0, start, len)?.reshape((len / cols, cols))
        };
        // Through y = a/r, a = s/count: ∂s = k (g − y (y·g)), k = 1/(count·r).
        let ds = |k: usize| -> Result<Tensor> {
            let y = part(res, k * bd, bd, d)?;
            let g = part(grad, k * bd, bd, d)?;
            let kk = part(res, 2 * bd + (2 + k) * b, b, 1)?;
            let yg = (&y * &g)?.sum_keepdim(D::Minus1)?;
            (g - y.broadcast_mul(&yg)?)?
                .broadcast_mul(&kk)?
                .flatten_all()
        };
        let has_target = res.narrow(0, 2 * bd + b, b)?;
        let pack = Tensor::cat(&[ds(0)?, ds(1)?, has_target], 0)?;
        let dp = p.apply_op3_no_bwd(m, &pack, &MaskedPoolBackward)?;
        Ok((Some(dp), None))
    }
}

/// The backward op (p, m, [∂s_target | ∂s_background | has_target]) → ∂p (B, D, H, W).
struct MaskedPoolBackward;

impl CustomOp3 for MaskedPoolBackward {
    fn name(&self) -> &'static str {
        "masked_pool_backward"
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
        let (b, d, hw) = dims(l1)?;
        let shape = l1.shape().clone();
        check::with_slices!(OP, T, p = (s1, l1, "p"), m = (s2, l2, "m"), ds = (s3, l3, "ds") => {
            Ok((T::to_cpu_storage_owned(cpu::backward(p, m, ds, b, d, hw)), shape))
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::masked_pool::backward(s1, l1, s2, l2, s3, l3)
    }
}
