//! Scaled dot-product attention as a candle op (CPU): softmax(q·kᵀ·scale + bias)·v with one
//! job per (sample, head), forward and backward, instead of candle's batched products, a
//! broadcast bias add, a composed softmax and their composed backward passes.

use crate::check;
use crate::cpu::attention::{self as cpu, Dims};
use crate::error::KernelError;
use crate::grads;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, WithDType};

const OP: &str = "attention";

/// softmax(q·kᵀ·`scale` + bias)·v for q (B, H, Lq, D) and k, v (B, H, Lk, D); `bias` (B, Lk), a
/// constant per key (0 for real tokens, a large negative for padding), is broadcast over heads
/// and queries and gets no gradient (it must not be tracked). Differentiable with respect to
/// q, k and v. CPU tensors only: on a GPU compose it from candle ops (as the trainer does).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    check::float_dtype(OP, "q", q)?;
    let qd = check::rank(OP, "q", q, 4, "(B, H, Lq, D)")?;
    let (b, h, lq, d) = (qd[0], qd[1], qd[2], qd[3]);
    check::same_kind(OP, "k", k, q)?;
    check::same_kind(OP, "v", v, q)?;
    let lk = check::rank(OP, "k", k, 4, "(B, H, Lk, D)")?[2];
    check::shape(OP, "k", k, &[b, h, lk, d], "(B, H, Lk, D) matching q")?;
    check::shape(OP, "v", v, &[b, h, lk, d], "(B, H, Lk, D) matching k")?;
    let bias = match bias {
        Some(t) => {
            check::same_kind(OP, "bias", t, q)?;
            check::shape(OP, "bias", t, &[b, lk], "(B, Lk)")?;
            if t.track_op() {
                return Err(invalid(
                    "bias",
                    "is tracked; it is a constant mask here".into(),
                ));
            }
            Some(t.contiguous()?)
        }
        None => None,
    };
    if !q.device().is_cpu() {
        return Err(invalid(
            "q",
            "CPU tensors only (compose it from candle ops on a GPU)".into(),
        ));
    }
    let dims = Dims {
        pairs: b * h,
        heads: h,
        lq,
        lk,
        d,
    };
    let op = Attention { bias, scale, dims };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

fn invalid(arg: &'static str, msg: String) -> candle_core::Error {
    KernelError::Invalid { op: OP, arg, msg }.into()
}

/// Runs `f` with the bias's data, if any.
fn with_bias<T: crate::float::Real, R>(
    bias: &Option<Tensor>,
    f: impl FnOnce(Option<&[T]>) -> Result<R>,
) -> Result<R> {
    match bias {
        Some(t) => check::with_cpu_data(OP, "bias", t, |b| f(Some(b))),
        None => f(None),
    }
}

/// The forward op (q, k, v) → o.
struct Attention {
    bias: Option<Tensor>,
    scale: f64,
    dims: Dims,
}

impl CustomOp3 for Attention {
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
        check::with_slices!(OP, T, q = (s1, l1, "q"), k = (s2, l2, "k"), v = (s3, l3, "v") => {
            let scale = self.scale as T;
            let o = with_bias(&self.bias, |b| Ok(cpu::forward(q, k, v, b, scale, self.dims)))?;
            Ok((T::to_cpu_storage_owned(o), l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = AttentionBackward {
            bias: self.bias.clone(),
            dout: grad.contiguous()?,
            scale: self.scale,
            dims: self.dims,
        };
        let out = q.apply_op3_no_bwd(k, v, &op)?;
        // `[∂q | ∂k | ∂v]`, the layout of the layer ops' `[∂x | ∂weight | ∂bias]`.
        grads::split(&out, q, k, v, true)
    }
}

/// The backward op (q, k, v) → `[∂q | ∂k | ∂v]`, holding the upstream gradient ∂o.
struct AttentionBackward {
    bias: Option<Tensor>,
    dout: Tensor,
    scale: f64,
    dims: Dims,
}

impl CustomOp3 for AttentionBackward {
    fn name(&self) -> &'static str {
        "attention_backward"
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
        check::with_slices!(OP, T, q = (s1, l1, "q"), k = (s2, l2, "k"), v = (s3, l3, "v") => {
            let out = check::with_cpu_data(OP, "grad", &self.dout, |dout| {
                with_bias(&self.bias, |b| {
                    Ok(cpu::backward(q, k, v, b, dout, self.scale as T, self.dims))
                })
            })?;
            let shape = Shape::from(out.len());
            Ok((T::to_cpu_storage_owned(out), shape))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use candle_core::{DType, Device, D};

    /// The composed form: candle's products, broadcast bias and softmax.
    fn composed(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: Option<&Tensor>,
        scale: f64,
    ) -> Result<Tensor> {
        let mut s = (q.matmul(&k.transpose(2, 3)?.contiguous()?)? * scale)?;
        if let Some(b) = bias {
            s = s.broadcast_add(&b.unsqueeze(1)?.unsqueeze(1)?)?;
        }
        let e = (s.broadcast_sub(&s.max_keepdim(D::Minus1)?)?).exp()?;
        e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?.matmul(v)
    }

    #[test]
    fn equals_composed_attention_forward_and_backward() {
        let dev = Device::Cpu;
        for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 1e-4)] {
            // (B, H, Lq, Lk, D): the LTE's pixels → tokens, and self-attention.
            for (b, h, lq, lk, d) in [(2, 2, 7, 5, 3), (3, 1, 4, 4, 6)] {
                let mask = Tensor::from_iter(
                    (0..b * lk).map(|i| if i % 4 == 3 { -1e4 } else { 0.0 }),
                    &dev,
                )
                .and_then(|t| t.reshape((b, lk))?.to_dtype(dtype))
                .unwrap();
                for bias in [None, Some(&mask)] {
                    let case = format!(
                        "{dtype:?} ({b}, {h}, {lq}, {lk}, {d}) bias {}",
                        bias.is_some()
                    );
                    testing::assert_agree(
                        &case,
                        dtype,
                        &[&[b, h, lq, d], &[b, h, lk, d], &[b, h, lk, d]],
                        (tol, 10.0 * tol),
                        |t| attention(t[0], t[1], t[2], bias, 0.4),
                        |t| composed(t[0], t[1], t[2], bias, 0.4),
                    );
                }
            }
        }
    }

    #[test]
    fn bad_arguments_are_named() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((2, 2, 3, 4), DType::F32, &dev).unwrap();
        let k = Tensor::zeros((2, 2, 5, 4), DType::F32, &dev).unwrap();
        let msg = |r: Result<Tensor>| r.unwrap_err().to_string();
        assert!(msg(attention(&q, &k, &q, None, 1.0)).contains("argument `v`"));
        let bias = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
        assert!(msg(attention(&q, &k, &k, Some(&bias), 1.0)).contains("argument `bias`"));
        let tracked = candle_core::Var::zeros((2, 5), DType::F32, &dev).unwrap();
        assert!(msg(attention(&q, &k, &k, Some(tracked.as_tensor()), 1.0)).contains("tracked"));
    }
}
