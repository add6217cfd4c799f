//! The multi-level contrastive loss as one candle op over all levels.

use crate::check;
use crate::cpu::contrastive as cpu;
use crate::error::KernelError;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType};
use std::collections::HashMap;

mod host;
mod level_scale;

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
/// No logit, softmax or mask tensors: on the CPU at most 1M entries of the similarities per
/// level at once (a tile of rows; N ≤ 1024 is one tile), on a device none. Differentiable with respect
/// to `target`, `text`, `background` and `scales`. On the CPU the op works on the three tensors
/// in place and computes the gradients in its forward when any input is tracked (module
/// `host`); on a device it
/// works on their stack and its flat output is `[loss Lv | row LSE Lv·N | column LSE Lv·N]`
/// (the log-sum-exps are kept for the backward op); the result is a narrow.
pub fn multi_level_contrastive(
    target: &Tensor,
    text: &Tensor,
    background: &Tensor,
    has_background: &Tensor,
    scales: &Tensor,
    groups: &[u64],
    background_negatives: bool,
) -> Result<Tensor> {
    check::float_dtype(OP, "target", target)?;
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
    let mut aux: Vec<f64> = ids.iter().map(|&g| g as f64).collect();
    aux.extend(counts.iter().map(|&c| c as f64));
    let emb = (target, text, background);
    if target.device().is_cpu() {
        aux.extend(
            has_background
                .to_dtype(DType::F64)?
                .flatten_all()?
                .to_vec1::<f64>()?,
        );
        return host::multi_level_contrastive(emb, scales, aux, background_negatives);
    }
    packed(emb, has_background, scales, aux, background_negatives)
}

/// The device path (and its CPU twin, tested beside the host path): one op over the stacked
/// (3, Lv, N, D) embeddings, scales and `aux` (Lv + 2, N) = [`aux`; has_background] as
/// tensors; its backward is a second op from the saved log-sum-exps.
fn packed(
    (target, text, background): (&Tensor, &Tensor, &Tensor),
    has_background: &Tensor,
    scales: &Tensor,
    aux: Vec<f64>,
    background_negatives: bool,
) -> Result<Tensor> {
    let (lv, n) = has_background.dims2()?;
    let dtype = target.dtype();
    let head = Tensor::from_vec(aux, (2, n), target.device())?.to_dtype(dtype)?;
    let aux = Tensor::cat(&[head, has_background.detach().to_dtype(dtype)?], 0)?;
    let emb = Tensor::stack(&[target, text, background], 0)?;
    let op = MultiLevelContrastive {
        background: background_negatives,
    };
    let out = emb.apply_op3(&scales.contiguous()?, &aux, op)?;
    out.narrow(0, 0, lv)
}

fn dims(l: &Layout) -> Result<(usize, usize, usize)> {
    let (_, lv, n, d) = l.shape().dims4()?;
    Ok((lv, n, d))
}

/// The forward op (emb (3, Lv, N, D), scales (Lv), aux (Lv + 2, N)) → packed output.
struct MultiLevelContrastive {
    background: bool,
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
        check::with_slices!(OP, T,
            emb = (s1, l1, "embeddings"),
            scales = (s2, l2, "scales"),
            aux = (s3, l3, "groups")
        => {
            let out = cpu::forward(cpu::split(emb), scales, aux, (lv, n, d), self.background);
            let shape = Shape::from(out.len());
            Ok((T::to_cpu_storage_owned(out), shape))
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
        let upstream = grad.narrow(0, 0, lv)?;
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
        check::with_slices!(OP, T,
            emb = (s1, l1, "embeddings"),
            pack = (s2, l2, "saved"),
            aux = (s3, l3, "groups")
        => {
            let out = cpu::backward(cpu::split(emb), pack, aux, (lv, n, d), self.background);
            Ok((T::to_cpu_storage_owned(out), shape))
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
        crate::cuda::contrastive::backward(s1, l1, s2, l2, s3, l3, self.background)
    }
}

#[cfg(test)]
mod tests {
    //! The host path against the packed (device) path run on the CPU: same losses, same
    //! gradients for every input, with and without background negatives.

    use super::{dense_groups, host, packed};
    use candle_core::{DType, Device, Result, Tensor, Var};

    fn unit(dims: (usize, usize, usize)) -> Result<Var> {
        let x = Tensor::randn(0f64, 1., dims, &Device::Cpu)?;
        Var::from_tensor(&x.broadcast_div(&x.sqr()?.sum_keepdim(2)?.sqrt()?)?)
    }

    fn rel_err(a: &Tensor, b: &Tensor) -> Result<f64> {
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f64>()?;
        let scale = b.abs()?.max_all()?.to_scalar::<f64>()?.max(1e-300);
        Ok(diff / scale)
    }

    #[test]
    fn host_and_packed_paths_agree() -> Result<()> {
        let (lv, n, d) = (3, 9, 17);
        let dev = Device::Cpu;
        let (t, u, v) = (unit((lv, n, d))?, unit((lv, n, d))?, unit((lv, n, d))?);
        let has = Tensor::rand(0f64, 1., (lv, n), &dev)?
            .ge(0.3)?
            .to_dtype(DType::F64)?;
        let log_s = Var::from_tensor(&Tensor::new(&[0.5f64, 2.6, 4.6], &dev)?)?;
        let w = Tensor::new(&[0.7f64, -1.3, 2.0], &dev)?;
        let groups: Vec<u64> = (0..n as u64).map(|i| i % 4).collect();
        let (ids, counts) = dense_groups(&groups);
        let mut aux: Vec<f64> = ids.iter().map(|&g| g as f64).collect();
        aux.extend(counts.iter().map(|&c| c as f64));
        let mut host_aux = aux.clone();
        host_aux.extend(has.flatten_all()?.to_vec1::<f64>()?);
        for background in [true, false] {
            let emb = (t.as_tensor(), u.as_tensor(), v.as_tensor());
            let s = log_s.exp()?;
            let a = host::multi_level_contrastive(emb, &s, host_aux.clone(), background)?;
            let b = packed(emb, &has, &s, aux.clone(), background)?;
            assert!(rel_err(&a, &b)? < 1e-12, "losses differ");
            let ga = (&a * &w)?.sum_all()?.backward()?;
            let gb = (&b * &w)?.sum_all()?.backward()?;
            // A second backward through the same host op recomputes what the first took.
            let again = (&a * &w)?.sum_all()?.backward()?;
            for x in [&t, &u, &v, &log_s] {
                let (Some(g1), Some(g2)) = (ga.get(x), again.get(x)) else {
                    panic!("no gradient on the second backward")
                };
                assert!(rel_err(g2, g1)? < 1e-14, "second backward differs");
            }
            for (name, x) in [("target", &t), ("text", &u), ("bg", &v), ("scales", &log_s)] {
                let (Some(ga), Some(gb)) = (ga.get(x), gb.get(x)) else {
                    panic!("no gradient for {name}")
                };
                let e = rel_err(ga, gb)?;
                assert!(e < 1e-11, "{name} (background {background}): {e:e}");
            }
        }
        Ok(())
    }
}
