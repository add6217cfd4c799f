//! The multi-level contrastive loss as one candle op over all levels.

use crate::check;
use crate::cpu::contrastive as cpu;
use crate::error::KernelError;
use crate::level_scale;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use std::collections::HashMap;

const OP: &str = "multi_level_contrastive";

/// Dense ids 0..G for arbitrary group keys (equal keys ↔ equal ids, first occurrence order),
/// and the size of each sample's group.
pub fn dense_groups(groups: &[u64]) -> (Vec<u32>, Vec<u32>) {
    let mut ids = HashMap::new();
    let dense: Vec<u32> = groups
        .iter()
        .map(|g| {
            let next = ids.len() as u32;
            *ids.entry(*g).or_insert(next)
        })
        .collect();
    let mut sizes = vec![0u32; ids.len()];
    for &g in &dense {
        sizes[g as usize] += 1;
    }
    let counts = dense.iter().map(|&g| sizes[g as usize]).collect();
    (dense, counts)
}

/// Per-level losses (Lv) of the symmetric multi-positive InfoNCE of every level at once, each
/// exactly the trainer's `ContrastiveLoss::level_loss`:
///
/// * `target`, `text`, `background`: (Lv, N, D) normalised v⁺, u, v⁻ of the global batch;
/// * `has_background`: (Lv, N), 1.0 where v⁻ is a valid negative;
/// * `scales`: (Lv) inverse temperatures s_l = exp(clamped logit scale), computed by the caller;
/// * `groups`: N keys, samples with equal keys are positives of each other;
/// * `background_negatives`: add cos(u_i, v⁻_i)·s as an extra text→image logit (−1e4 where
///   `has_background` is 0), as the composed loss with `background = true`.
///
/// loss_l = ½ (mean_i −Σ_j P_ij log softmax_j(s S)_ij / |P_i| + same over columns), S = v⁺ uᵀ.
/// Streamed: the N×N logits are never stored. Differentiable with respect to `target`,
/// `text`, `background` and `scales`. The op's flat output is `[loss Lv | row LSE Lv·N |
/// column LSE Lv·N]` (the log-sum-exps are kept for the backward), on the CPU followed by the
/// gradients for a unit upstream gradient when any input is tracked (the backward then only
/// scales them); the result is a narrow.
pub fn multi_level_contrastive(
    target: &Tensor,
    text: &Tensor,
    background: &Tensor,
    has_background: &Tensor,
    scales: &Tensor,
    groups: &[u64],
    background_negatives: bool,
) -> Result<Tensor> {
    let dtype = check::float_dtype(OP, "target", target)?;
    let dims = check::rank(OP, "target", target, 3, "(Lv, N, D)")?;
    let (lv, n) = (dims[0], dims[1]);
    for (arg, t) in [("text", text), ("background", background)] {
        check::same_kind(OP, arg, t, target)?;
        check::shape(OP, arg, t, &dims, "(Lv, N, D) of target")?;
    }
    check::same_kind(OP, "scales", scales, target)?;
    check::shape(OP, "scales", scales, &[lv], "(Lv)")?;
    if !has_background.device().same_device(target.device()) {
        return Err(KernelError::Device {
            op: OP,
            arg: "has_background",
        }
        .into());
    }
    check::shape(OP, "has_background", has_background, &[lv, n], "(Lv, N)")?;
    if groups.len() != n {
        return Err(KernelError::Shape {
            op: OP,
            arg: "groups",
            got: vec![groups.len()],
            expected: format!("N = {n} keys"),
        }
        .into());
    }
    let (ids, counts) = dense_groups(groups);
    let mut head: Vec<f64> = ids.iter().map(|&g| g as f64).collect();
    head.extend(counts.iter().map(|&c| c as f64));
    let head = Tensor::from_vec(head, (2, n), target.device())?.to_dtype(dtype)?;
    let aux = Tensor::cat(&[head, has_background.detach().to_dtype(dtype)?], 0)?;
    let grads = [target, text, background, scales]
        .iter()
        .any(|t| t.track_op());
    let emb = Tensor::stack(&[target, text, background], 0)?;
    let op = MultiLevelContrastive {
        background: background_negatives,
        grads,
    };
    let out = emb.apply_op3(&scales.contiguous()?, &aux, op)?;
    out.narrow(0, 0, lv)
}

fn dims(l: &Layout) -> Result<(usize, usize, usize)> {
    let (_, lv, n, d) = l.shape().dims4()?;
    Ok((lv, n, d))
}

fn unsupported(dtype: DType) -> candle_core::Error {
    KernelError::UnsupportedDType {
        op: OP,
        arg: "target",
        dtype,
    }
    .into()
}

/// The forward op (emb (3, Lv, N, D), scales (Lv), aux (Lv + 2, N)) → packed output.
struct MultiLevelContrastive {
    background: bool,
    /// Whether a backward will follow: the CPU forward then also computes the gradients for a
    /// unit upstream gradient (appended to its output), and the backward only scales them.
    grads: bool,
}

impl CustomOp3 for MultiLevelContrastive {
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
        let (lv, n, d) = dims(l1)?;
        macro_rules! run {
            ($t:ty, $v:ident) => {{
                let emb = check::cpu_data::<$t>(OP, "embeddings", s1, l1)?;
                let scales = check::cpu_data::<$t>(OP, "scales", s2, l2)?;
                let aux = check::cpu_data::<$t>(OP, "groups", s3, l3)?;
                let dims = (lv, n, d);
                let out = if self.grads {
                    cpu::forward_with_grads(cpu::split(emb), scales, aux, dims, self.background)
                } else {
                    cpu::forward(cpu::split(emb), scales, aux, dims, self.background)
                };
                let shape = Shape::from(out.len());
                Ok((CpuStorage::$v(out), shape))
            }};
        }
        match s1 {
            CpuStorage::F32(_) => run!(f32, F32),
            CpuStorage::F64(_) => run!(f64, F64),
            _ => Err(unsupported(s1.dtype())),
        }
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
        crate::cuda::contrastive::forward(s1, l1, s2, l2, s3, l3, self.background)
    }

    fn bwd(
        &self,
        emb: &Tensor,
        scales: &Tensor,
        aux: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, lv, n, d) = emb.dims4()?;
        let head = lv + 2 * lv * n;
        let upstream = grad.narrow(0, 0, lv)?;
        if res.dim(0)? == head + 3 * lv * n * d + lv {
            // The forward computed the gradients for a unit upstream gradient: scale them.
            let unit = res
                .narrow(0, head, 3 * lv * n * d)?
                .reshape((3, lv, n * d))?;
            let demb = level_scale::scale_levels(&unit, &upstream)?.reshape((3, lv, n, d))?;
            let dscales = (res.narrow(0, head + 3 * lv * n * d, lv)? * &upstream)?;
            return Ok((Some(demb), Some(dscales), None));
        }
        let pack = Tensor::cat(&[scales, &upstream, &res.narrow(0, lv, 2 * lv * n)?], 0)?;
        let op = ContrastiveBackward {
            background: self.background,
        };
        let out = emb.apply_op3_no_bwd(&pack, aux, &op)?;
        let demb = out.narrow(0, 0, 3 * lv * n * d)?.reshape((3, lv, n, d))?;
        let dscales = out.narrow(0, 3 * lv * n * d, lv)?;
        Ok((Some(demb), Some(dscales), None))
    }
}

/// The backward op (emb, [scales | upstream | row LSE | column LSE], aux) → `[∂emb | ∂scales]`.
struct ContrastiveBackward {
    background: bool,
}

impl CustomOp3 for ContrastiveBackward {
    fn name(&self) -> &'static str {
        "multi_level_contrastive_backward"
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
        let (lv, n, d) = dims(l1)?;
        let shape = Shape::from(3 * lv * n * d + lv);
        macro_rules! run {
            ($t:ty, $v:ident) => {{
                let emb = check::cpu_data::<$t>(OP, "embeddings", s1, l1)?;
                let pack = check::cpu_data::<$t>(OP, "saved", s2, l2)?;
                let aux = check::cpu_data::<$t>(OP, "groups", s3, l3)?;
                let out = cpu::backward(cpu::split(emb), pack, aux, (lv, n, d), self.background);
                Ok((CpuStorage::$v(out), shape))
            }};
        }
        match s1 {
            CpuStorage::F32(_) => run!(f32, F32),
            CpuStorage::F64(_) => run!(f64, F64),
            _ => Err(unsupported(s1.dtype())),
        }
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
        crate::cuda::contrastive::backward(s1, l1, s2, l2, s3, l3, self.background)
    }
}
