//! Multi-head attention (queries from one sequence, keys/values from another), with a
//! key-padding mask.

use super::{conv::linear, softmax_last, Linear};
use crate::profile::{self, Part};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// softmax(q·kᵀ·scale + bias)·v for (B, heads, N, head_dim) `q`, `k`, `v`; `bias` broadcasts
/// onto the (B, heads, Nq, Nk) scores (0 for real keys, a large negative for padding).
pub fn scaled_dot_product(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let mut inputs = vec![q, k, v];
    inputs.extend(bias);
    profile::scope(
        Part::Attention,
        &inputs,
        || Box::new(move |i: &[Tensor]| Ok(vec![attend(&i[0], &i[1], &i[2], i.get(3), scale)?])),
        || attend(q, k, v, bias, scale),
    )
}

/// On the CPU tmca-kernels' `attention` (the bias, a constant key mask, as (B, Nk)); elsewhere
/// composed from candle ops.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    if !q.device().is_cpu() {
        return composed(q, k, v, bias, scale);
    }
    match bias.map(|b| (b, b.dims())) {
        None => tmca_kernels::attention(q, k, v, None, scale),
        Some((b, [_, 1, 1, _])) if !b.track_op() => {
            tmca_kernels::attention(q, k, v, Some(&b.squeeze(2)?.squeeze(1)?), scale)
        }
        Some(_) => composed(q, k, v, bias, scale),
    }
}

fn composed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let mut scores = (q.matmul(&k.transpose(2, 3)?.contiguous()?)? * scale)?;
    if let Some(b) = bias {
        scores = scores.broadcast_add(b)?;
    }
    softmax_last(&scores)?.matmul(v)
}

/// `q`, `k`, `v`, `o` projections; heads split the model width.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    head_dim: usize,
}

impl MultiHeadAttention {
    /// Attention of width `dim` from queries of `q_dim` to keys/values of `kv_dim`; output `q_dim`.
    pub fn new(
        q_dim: usize,
        kv_dim: usize,
        dim: usize,
        heads: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        if heads == 0 || !dim.is_multiple_of(heads) {
            candle_core::bail!("attention width {dim} is not divisible by {heads} heads");
        }
        Ok(Self {
            q: linear(q_dim, dim, vb.pp("q"))?,
            k: linear(kv_dim, dim, vb.pp("k"))?,
            v: linear(kv_dim, dim, vb.pp("v"))?,
            o: linear(dim, q_dim, vb.pp("o"))?,
            heads,
            head_dim: dim / heads,
        })
    }

    fn split(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, _) = x.dims3()?;
        x.reshape((b, n, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// `x` (B, Nq, q_dim) attends to `ctx` (B, Nk, kv_dim); `key_mask` (B, Nk) is 1 for real
    /// tokens and 0 for padding.
    pub fn forward(&self, x: &Tensor, ctx: &Tensor, key_mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, n, _) = x.dims3()?;
        let q = self.split(&self.q.forward(x)?)?;
        let k = self.split(&self.k.forward(ctx)?)?;
        let v = self.split(&self.v.forward(ctx)?)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        // 0 for real tokens, -1e4 for padding, broadcast over heads and queries.
        let bias = key_mask
            .map(|m| {
                ((m.to_dtype(x.dtype())? - 1.0)? * 1e4)?
                    .unsqueeze(1)?
                    .unsqueeze(1)
            })
            .transpose()?;
        let out = scaled_dot_product(&q, &k, &v, bias.as_ref(), scale)?
            .transpose(1, 2)?
            .reshape((b, n, self.heads * self.head_dim))?;
        self.o.forward(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The CPU kernel path equals the composed one, forward and the gradients of q, k, v, with
    /// the (B, 1, 1, Nk) key-padding bias the model builds.
    #[test]
    fn kernel_equals_composed() {
        let dev = Device::Cpu;
        let var =
            |s: &[usize]| Var::from_tensor(&Tensor::randn(0f64, 1.0, s, &dev).unwrap()).unwrap();
        let (q, k, v) = (var(&[2, 2, 6, 4]), var(&[2, 2, 5, 4]), var(&[2, 2, 5, 4]));
        let mask = Tensor::new(&[[1f64, 1., 1., 0., 0.], [1., 1., 1., 1., 1.]], &dev).unwrap();
        let bias = ((mask - 1.0).unwrap() * 1e4)
            .unwrap()
            .unsqueeze(1)
            .unwrap()
            .unsqueeze(1)
            .unwrap();
        let (q, k, v) = (q.as_tensor(), k.as_tensor(), v.as_tensor());
        let a = attend(q, k, v, Some(&bias), 0.5).unwrap();
        let b = composed(q, k, v, Some(&bias), 0.5).unwrap();
        let diff = |x: &Tensor, y: &Tensor| -> f64 {
            (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        assert!(diff(&a, &b) < 1e-10);
        let probe = Tensor::randn(0f64, 1.0, a.shape(), &dev).unwrap();
        let ga = (a * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        for t in [q, k, v] {
            assert!(diff(ga.get(t).unwrap(), gb.get(t).unwrap()) < 1e-9);
        }
    }
}
