//! Multi-head attention (queries from one sequence, keys/values from another), with a
//! key-padding mask.

use super::{conv::linear, softmax_last};
use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

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
        if heads == 0 || dim % heads != 0 {
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
        let mut scores = (q.matmul(&k.transpose(2, 3)?.contiguous()?)? * scale)?;
        if let Some(m) = key_mask {
            // 0 for real tokens, -1e4 for padding, broadcast over heads and queries.
            let bias = ((m.to_dtype(x.dtype())? - 1.0)? * 1e4)?
                .unsqueeze(1)?
                .unsqueeze(1)?;
            scores = scores.broadcast_add(&bias)?;
        }
        let attn = softmax_last(&scores)?;
        let out = attn
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, n, self.heads * self.head_dim))?;
        self.o.forward(&out)
    }
}
