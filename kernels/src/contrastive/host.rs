//! The CPU path of the multi-level contrastive loss: one op over the three embedding tensors
//! as they are (no stacked copy), the scales and groups carried as host values, and — when a
//! backward will follow — the gradients computed in the forward for a unit upstream gradient
//! (reusing the similarity matrices) and kept in the op, so the backward only scales them. The
//! op's output is just `[loss Lv | ∂loss/∂s Lv]`; ∂scales reaches the graph through
//! `loss + (s − sg(s))·sg(∂loss/∂s)`, which is `loss` in value and has exactly that gradient.

use super::level_scale::scale_levels;
use super::OP;
use crate::check;
use crate::cpu::contrastive as cpu;
use crate::error::KernelError;
use crate::float::Real;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor, WithDType};
use std::sync::Mutex;

/// Per-level losses (Lv) from CPU tensors already checked by the caller; `aux` is
/// `[dense group id N | group size N | has_background Lv·N]`.
pub(super) fn multi_level_contrastive(
    (target, text, background): (&Tensor, &Tensor, &Tensor),
    scales: &Tensor,
    aux: Vec<f64>,
    background_negatives: bool,
) -> Result<Tensor> {
    let lv = scales.dim(0)?;
    let grads = [target, text, background, scales]
        .iter()
        .any(|t| t.track_op());
    let op = HostContrastive {
        scales: scales.to_dtype(DType::F64)?.to_vec1()?,
        aux,
        background: background_negatives,
        grads,
        saved: Mutex::new(None),
    };
    let out = target
        .contiguous()?
        .apply_op3(&text.contiguous()?, &background.contiguous()?, op)?;
    let loss = out.narrow(0, 0, lv)?;
    if !(grads && scales.track_op()) {
        return Ok(loss);
    }
    let dscales = out.narrow(0, lv, lv)?.detach();
    loss + ((scales - scales.detach())? * dscales)?
}

struct HostContrastive {
    scales: Vec<f64>,
    aux: Vec<f64>,
    background: bool,
    /// Whether to compute the unit-upstream gradients (a backward will follow).
    grads: bool,
    /// ∂loss_l/∂(target, text, background) for a unit upstream gradient, (3, Lv, N·D); the
    /// backward takes it and scales it in place (a second backward recomputes it).
    saved: Mutex<Option<CpuStorage>>,
}

impl HostContrastive {
    /// `[loss Lv | ∂loss/∂s Lv]` (zero ∂s without gradients); saves the embeddings' gradients.
    fn run<T: Real>(&self, emb: cpu::Emb<T>, (lv, n, d): (usize, usize, usize)) -> Result<Vec<T>> {
        let scales: Vec<T> = self.scales.iter().map(|&s| T::of(s)).collect();
        let aux: Vec<T> = self.aux.iter().map(|&a| T::of(a)).collect();
        let dims = (lv, n, d);
        if !self.grads {
            let mut out = cpu::forward(emb, &scales, &aux, dims, self.background);
            out.truncate(lv);
            out.resize(2 * lv, T::ZERO);
            return Ok(out);
        }
        let (fwd, mut grads) = cpu::forward_with_grads(emb, &scales, &aux, dims, self.background);
        // Return the losses and [∂scales]; keep [∂emb] for the backward.
        let mut out = fwd[..lv].to_vec();
        out.extend_from_slice(&grads[3 * lv * n * d..]);
        grads.truncate(3 * lv * n * d);
        *self.saved.lock().map_err(|_| poisoned())? = Some(T::to_cpu_storage_owned(grads));
        Ok(out)
    }
}

impl CustomOp3 for HostContrastive {
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
        let dims = l1.shape().dims3()?;
        check::by_dtype!(OP, "target", s1, T => {
            let emb = [
                check::cpu_data::<T>(OP, "target", s1, l1)?,
                check::cpu_data::<T>(OP, "text", s2, l2)?,
                check::cpu_data::<T>(OP, "background", s3, l3)?,
            ];
            let out = self.run(emb, dims)?;
            let shape = Shape::from(out.len());
            Ok((T::to_cpu_storage_owned(out), shape))
        })
    }

    fn bwd(
        &self,
        target: &Tensor,
        text: &Tensor,
        background: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (lv, n, d) = target.dims3()?;
        let taken = self.saved.lock().map_err(|_| poisoned())?.take();
        let unit = match taken {
            Some(unit) => unit,
            None => {
                // Taken by an earlier backward through the same graph: recompute.
                let again = HostContrastive {
                    scales: self.scales.clone(),
                    aux: self.aux.clone(),
                    background: self.background,
                    grads: true,
                    saved: Mutex::new(None),
                };
                target.apply_op3_no_bwd(text, background, &again)?;
                let saved = again.saved.lock().map_err(|_| poisoned())?.take();
                saved.ok_or_else(|| KernelError::Invalid {
                    op: OP,
                    arg: "target",
                    msg: "the forward saved no gradients".into(),
                })?
            }
        };
        let upstream = grad.narrow(0, 0, lv)?;
        let shape = (3, lv, n * d);
        let demb = match unit {
            CpuStorage::F32(mut v) => {
                scale_levels(&mut v, &upstream.to_vec1::<f32>()?, n * d);
                Tensor::from_vec(v, shape, &Device::Cpu)?
            }
            CpuStorage::F64(mut v) => {
                scale_levels(&mut v, &upstream.to_vec1::<f64>()?, n * d);
                Tensor::from_vec(v, shape, &Device::Cpu)?
            }
            other => return Err(check::unsupported(OP, "target", other.dtype())),
        };
        let part = |k: usize| demb.get(k)?.reshape((lv, n, d)).map(Some);
        Ok((part(0)?, part(1)?, part(2)?))
    }
}

fn poisoned() -> candle_core::Error {
    KernelError::Invalid {
        op: OP,
        arg: "saved gradients",
        msg: "lock poisoned by a panic in another thread".into(),
    }
    .into()
}
