//! BERT-style report encoder with Hugging Face key names, so it loads pretrained BERTs (e.g.
//! CXR-BERT's `model.safetensors`) and also serves as the small from-scratch encoder.
//!
//! Not candle-transformers' `BertModel`: that one uses candle's fused LayerNorm, which has no
//! backward pass, so an unfrozen BERT would silently not train. This one is tested to produce
//! the same outputs on a Hugging Face checkpoint (see `tests`).

use crate::nn::{gelu, linear, scaled_dot_product, LayerNorm, Linear};
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Embedding, Init, VarBuilder};
use serde::Deserialize;

/// The fields of a Hugging Face BERT `config.json` this encoder uses.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

impl BertConfig {
    /// The from-scratch encoder of `[text]` over a vocabulary of `vocab_size`.
    pub fn scratch(text: &super::TextConfig, vocab_size: usize) -> Self {
        Self {
            vocab_size,
            hidden_size: text.hidden,
            num_hidden_layers: text.layers,
            num_attention_heads: text.heads,
            intermediate_size: text.intermediate,
            max_position_embeddings: text.max_len,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".into(),
        }
    }
}

fn default_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

fn embedding(n: usize, dim: usize, vb: VarBuilder) -> Result<Embedding> {
    let w = vb.get_with_hints(
        (n, dim),
        "weight",
        Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        },
    )?;
    Ok(Embedding::new(w, dim))
}

/// Self-attention with BERT's key names (`attention.self.{query,key,value}`, `attention.output`).
#[derive(Debug, Clone)]
struct SelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    out: Linear,
    norm: LayerNorm,
    heads: usize,
}

impl SelfAttention {
    fn new(c: &BertConfig, vb: VarBuilder) -> Result<Self> {
        let h = c.hidden_size;
        Ok(Self {
            query: linear(h, h, vb.pp("self.query"))?,
            key: linear(h, h, vb.pp("self.key"))?,
            value: linear(h, h, vb.pp("self.value"))?,
            out: linear(h, h, vb.pp("output.dense"))?,
            norm: LayerNorm::new(h, c.layer_norm_eps, vb.pp("output.LayerNorm"))?,
            heads: c.num_attention_heads,
        })
    }

    fn forward(&self, x: &Tensor, mask_bias: &Tensor) -> Result<Tensor> {
        let (b, l, h) = x.dims3()?;
        let hd = h / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, l, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        // Scaling by 1/√hd is the same op candle runs for `scores / √hd` (affine(1/√hd, 0)).
        let ctx = scaled_dot_product(&q, &k, &v, Some(mask_bias), 1.0 / (hd as f64).sqrt())?
            .transpose(1, 2)?
            .reshape((b, l, h))?;
        self.norm.forward(&(self.out.forward(&ctx)? + x)?)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    attention: SelfAttention,
    intermediate: Linear,
    output: Linear,
    norm: LayerNorm,
}

impl Layer {
    fn new(c: &BertConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            attention: SelfAttention::new(c, vb.pp("attention"))?,
            intermediate: linear(
                c.hidden_size,
                c.intermediate_size,
                vb.pp("intermediate.dense"),
            )?,
            output: linear(c.intermediate_size, c.hidden_size, vb.pp("output.dense"))?,
            norm: LayerNorm::new(c.hidden_size, c.layer_norm_eps, vb.pp("output.LayerNorm"))?,
        })
    }

    fn forward(&self, x: &Tensor, mask_bias: &Tensor) -> Result<Tensor> {
        let a = self.attention.forward(x, mask_bias)?;
        let y = self
            .output
            .forward(&gelu(&self.intermediate.forward(&a)?)?)?;
        self.norm.forward(&(y + a)?)
    }
}

/// The encoder: embeddings, `num_hidden_layers` post-LN transformer layers.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
    layers: Vec<Layer>,
    pub hidden: usize,
}

impl TextEncoder {
    /// Builds under `vb` (Hugging Face names: `embeddings.*`, `encoder.layer.N.*`).
    pub fn new(c: &BertConfig, vb: VarBuilder) -> Result<Self> {
        if c.hidden_act != "gelu" {
            candle_core::bail!(
                "BERT hidden_act '{}' is not supported (only gelu)",
                c.hidden_act
            );
        }
        let e = vb.pp("embeddings");
        Ok(Self {
            word: embedding(c.vocab_size, c.hidden_size, e.pp("word_embeddings"))?,
            position: embedding(
                c.max_position_embeddings,
                c.hidden_size,
                e.pp("position_embeddings"),
            )?,
            token_type: embedding(
                c.type_vocab_size,
                c.hidden_size,
                e.pp("token_type_embeddings"),
            )?,
            norm: LayerNorm::new(c.hidden_size, c.layer_norm_eps, e.pp("LayerNorm"))?,
            layers: (0..c.num_hidden_layers)
                .map(|i| Layer::new(c, vb.pp(format!("encoder.layer.{i}"))))
                .collect::<Result<_>>()?,
            hidden: c.hidden_size,
        })
    }

    /// `ids`, `attention` (B, L) u32 → token features T (B, L, H) and sentence embedding
    /// t (B, H), the mean over non-pad tokens.
    pub fn forward(&self, ids: &Tensor, attention: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, l) = ids.dims2()?;
        let dev = ids.device();
        let pos = Tensor::arange(0u32, l as u32, dev)?
            .unsqueeze(0)?
            .broadcast_as((b, l))?
            .contiguous()?;
        let types = Tensor::zeros((b, l), DType::U32, dev)?;
        let x = self
            .word
            .forward(ids)?
            .add(&self.position.forward(&pos)?)?
            .add(&self.token_type.forward(&types)?)?;
        let mut x = self.norm.forward(&x)?;
        let am = attention.to_dtype(self.word.embeddings().dtype())?;
        let mask_bias = ((&am - 1.0)? * 1e4)?.unsqueeze(1)?.unsqueeze(1)?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask_bias)?;
        }
        let w = am.unsqueeze(D::Minus1)?;
        let count = w.sum(1)?.clamp(1.0, f64::INFINITY)?;
        let t = x.broadcast_mul(&w)?.sum(1)?.broadcast_div(&count)?;
        Ok((x, t))
    }
}
