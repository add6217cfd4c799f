//! LTE pixel–text similarity as a candle op: raw projections p (B, D, H, W) and a text
//! embedding u (B, D) → the cosine map (B, 1, H, W).

use crate::check;
use crate::cpu::similarity as cpu;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType};

const OP: &str = "pixel_text_cos";

/// Fused cos(z_q, u) map: out[b, 0, q] = Σ_d p_dq u_d / sqrt(Σ_d p_dq² + 1e-12), for the raw
/// 1×1-projection output `p` (B, D, H, W) and `u` (B, D) used **as given**: pass the
/// L2-normalised text embedding (as the model does) to get a cosine; the pixel normalisation is
/// fused in, z is never materialised. Differentiable with respect to `p` and `u`.
///
/// One op produces a flat buffer `[cos B·H·W | 1/‖p_q‖ B·H·W]` (the norms are kept for the
/// backward); the returned map is a contiguous narrow of it.
pub fn pixel_text_cos(p: &Tensor, u: &Tensor) -> Result<Tensor> {
    check::float_dtype(OP, "p", p)?;
    let dims = check::rank(OP, "p", p, 4, "(B, D, H, W)")?;
    let (b, d, h, w) = (dims[0], dims[1], dims[2], dims[3]);
    check::same_kind(OP, "u", u, p)?;
    check::shape(OP, "u", u, &[b, d], "(B, D)")?;
    let out = p.contiguous()?.apply_op2(&u.contiguous()?, PixelTextCos)?;
    out.narrow(0, 0, b * h * w)?.reshape((b, 1, h, w))
}

fn dims(l: &Layout) -> Result<(usize, usize, usize)> {
    let (b, d, h, w) = l.shape().dims4()?;
    Ok((b, d, h * w))
}

/// The forward op (p, u) → `[cos | 1/‖p_q‖]`.
struct PixelTextCos;

impl CustomOp2 for PixelTextCos {
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
        let shape = Shape::from(2 * b * hw);
        check::with_slices!(OP, T, p = (s1, l1, "p"), u = (s2, l2, "u") => {
            Ok((T::to_cpu_storage_owned(cpu::forward(p, u, b, d, hw)), shape))
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
        crate::cuda::similarity::forward(s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        p: &Tensor,
        u: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, d, h, w) = p.dims4()?;
        let bhw = b * h * w;
        let pack = Tensor::cat(&[&grad.narrow(0, 0, bhw)?, res], 0)?;
        let out = p.apply_op3_no_bwd(u, &pack, &PixelTextCosBackward)?;
        let dp = out.narrow(0, 0, b * d * h * w)?.reshape((b, d, h, w))?;
        let du = out.narrow(0, b * d * h * w, b * d)?.reshape((b, d))?;
        Ok((Some(dp), Some(du)))
    }
}

/// The backward op (p, u, [g | cos | 1/‖p_q‖]) → `[∂p | ∂u]`.
struct PixelTextCosBackward;

impl CustomOp3 for PixelTextCosBackward {
    fn name(&self) -> &'static str {
        "pixel_text_cos_backward"
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
        let shape = Shape::from(b * d * hw + b * d);
        check::with_slices!(OP, T,
            p = (s1, l1, "p"),
            u = (s2, l2, "u"),
            pack = (s3, l3, "grad")
        => {
            Ok((T::to_cpu_storage_owned(cpu::backward(p, u, pack, b, d, hw)), shape))
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
        crate::cuda::similarity::backward(s1, l1, s2, l2, s3, l3)
    }
}
