//! Model configuration (`[model]` and `[text]`): presets plus every switch the ablations need.

use crate::{Result, TrainError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Longest `text.max_len`: BERT's 512 positions (reports are a few dozen tokens).
pub const MAX_TEXT_LEN: usize = 512;

/// `[model]`: image encoder size and the three TMCA modules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// `cpu-tiny` (tests), `cpu-small` (CPU training) or `tiny` (ConvNeXt-T, the paper setting).
    /// Fills `dims`, `depths`, `embed_dim` and the text sizes that are left empty / 0.
    pub preset: String,
    /// Channels of the four encoder stages (strides 4/8/16/32).
    pub dims: Vec<usize>,
    /// ConvNeXt blocks per stage.
    pub depths: Vec<usize>,
    /// Depthwise kernel of the ConvNeXt blocks.
    pub kernel_size: usize,
    /// Initial ConvNeXt layer scale.
    pub layer_scale_init: f64,
    /// Image channels fed to the model (1 = gray; 3 = RGB, gray images are replicated).
    pub in_channels: usize,
    /// Width of the shared image–text space D of the contrastive and enhancement branches.
    pub embed_dim: usize,
    /// `false` = the image-only baseline: no text encoder, no contrastive loss, no LTE.
    pub text_guidance: bool,
    /// Encoder levels (1..=4) aligned by the contrastive loss; `[]` disables it.
    pub contrastive_levels: Vec<usize>,
    /// Weight of each contrastive level (same length as `contrastive_levels`).
    pub contrastive_weights: Vec<f64>,
    /// λ, the weight of the contrastive loss in the total.
    pub lambda: f64,
    /// Initial temperature τ of every level (learnable, clamped to [tau_min, tau_max]).
    pub tau_init: f64,
    pub tau_min: f64,
    pub tau_max: f64,
    /// Use each sample's background embedding as an extra negative for its report.
    pub background_negatives: bool,
    /// `false` = the ablation without target-sensitive semantic distance: each report is
    /// contrasted with its image's mean embedding over all pixels instead of the mean over its
    /// target (the mask), so there is no background embedding and no background negative.
    /// Training only (inference never pools); left out of the model hash when `true`.
    pub target_sensitive: bool,
    /// Decoder stages (levels 1..=4) with language-guided target enhancement; `[]` disables LTE.
    pub lte_levels: Vec<usize>,
    /// Temperature τ_a of the enhancement map σ((cos − b)/τ_a).
    pub lte_tau: f64,
    /// Add text-token cross-attention to the enhanced decoder features.
    pub cross_attention: bool,
    /// Heads of the cross-attention.
    pub attn_heads: usize,
    /// μ, weight of the auxiliary BCE between each enhancement map and the mask (0 = off).
    pub aux_weight: f64,
    /// How TSSD pooling, the LTE map and the contrastive loss are computed: `fused` (the custom
    /// kernels of tmca-kernels, CPU and CUDA) or `composed` (the same maths from candle ops, the
    /// kernels' reference). Both compute the same function, so checkpoints move freely between
    /// them (not part of the model hash, which skips it as empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ops: String,
    /// Pretrained ConvNeXt weights the image encoder starts from (safetensors or PyTorch
    /// `.pth`/`.bin`; timm, Hugging Face, torchvision, original or tmca layout; a file or a
    /// folder holding one). Read when a run starts, not when it resumes; not part of the model
    /// hash (it sets initial values, not the architecture).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_weights: Option<PathBuf>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            preset: "cpu-small".into(),
            dims: vec![],
            depths: vec![],
            kernel_size: 7,
            layer_scale_init: 1e-2,
            in_channels: 3,
            embed_dim: 0,
            text_guidance: true,
            contrastive_levels: vec![1, 2, 3, 4],
            contrastive_weights: vec![1.0, 1.0, 1.0, 1.0],
            lambda: 0.1,
            tau_init: 0.07,
            tau_min: 0.01,
            tau_max: 1.0,
            background_negatives: true,
            target_sensitive: true,
            lte_levels: vec![1, 2, 3, 4],
            lte_tau: 0.1,
            cross_attention: true,
            attn_heads: 2,
            aux_weight: 0.0,
            ops: "fused".into(),
            image_weights: None,
        }
    }
}

/// `[text]`: the report encoder and tokenizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextConfig {
    /// `scratch` (a small BERT trained from scratch on a learned WordPiece vocabulary) or
    /// `bert` (a pretrained Hugging Face BERT from `bert_dir`).
    pub encoder: String,
    /// Folder with `config.json`, `model.safetensors` (or `pytorch_model.bin`) and `tokenizer.json` (or `vocab.txt`).
    pub bert_dir: Option<PathBuf>,
    /// Keep the pretrained BERT frozen (as GuideDecoder does).
    pub freeze: bool,
    /// Tokens per report (L).
    pub max_len: usize,
    /// Size of the learned vocabulary (scratch encoder without `tokenizer`).
    pub vocab_size: usize,
    /// A `tokenizer.json` or `vocab.txt` to use instead of learning one (scratch encoder).
    pub tokenizer: Option<PathBuf>,
    /// Scratch encoder width, layers, heads and feed-forward width (0 = from the preset).
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            encoder: "scratch".into(),
            bert_dir: None,
            freeze: true,
            max_len: 24,
            vocab_size: 1000,
            tokenizer: None,
            hidden: 0,
            layers: 0,
            heads: 0,
            intermediate: 0,
        }
    }
}

struct Preset {
    dims: [usize; 4],
    depths: [usize; 4],
    embed: usize,
    text: [usize; 4],
}

fn preset(name: &str) -> Option<Preset> {
    Some(match name {
        "cpu-tiny" => Preset {
            dims: [8, 16, 24, 32],
            depths: [1, 1, 1, 1],
            embed: 16,
            text: [16, 1, 2, 32],
        },
        "cpu-small" => Preset {
            dims: [16, 32, 64, 96],
            depths: [1, 1, 2, 1],
            embed: 32,
            text: [64, 2, 4, 128],
        },
        "tiny" => Preset {
            dims: [96, 192, 384, 768],
            depths: [3, 3, 9, 3],
            embed: 256,
            text: [256, 4, 4, 1024],
        },
        _ => return None,
    })
}

fn bad(field: &str, message: String) -> TrainError {
    TrainError::config(field, message)
}

impl ModelConfig {
    /// Fills preset-derived fields and checks every field; errors name the field.
    pub fn resolve(&mut self, text: &mut TextConfig) -> Result<()> {
        let p = preset(&self.preset).ok_or_else(|| {
            bad(
                "model.preset",
                format!("'{}' (expected cpu-tiny, cpu-small or tiny)", self.preset),
            )
        })?;
        if self.dims.is_empty() {
            self.dims = p.dims.to_vec();
        }
        if self.depths.is_empty() {
            self.depths = p.depths.to_vec();
        }
        if self.embed_dim == 0 {
            self.embed_dim = p.embed;
        }
        for (v, d) in [
            (&mut text.hidden, p.text[0]),
            (&mut text.layers, p.text[1]),
            (&mut text.heads, p.text[2]),
            (&mut text.intermediate, p.text[3]),
        ] {
            if *v == 0 {
                *v = d;
            }
        }
        if self.dims.len() != 4 || self.dims.contains(&0) {
            return Err(bad(
                "model.dims",
                format!("{:?}: need 4 positive stage widths", self.dims),
            ));
        }
        if self.depths.len() != 4 {
            return Err(bad(
                "model.depths",
                format!("{:?}: need 4 stage depths", self.depths),
            ));
        }
        if self.kernel_size.is_multiple_of(2) {
            return Err(bad(
                "model.kernel_size",
                format!("{} must be odd", self.kernel_size),
            ));
        }
        if !matches!(self.in_channels, 1 | 3) {
            return Err(bad(
                "model.in_channels",
                format!("{} (expected 1 or 3)", self.in_channels),
            ));
        }
        let levels_ok = |v: &[usize]| {
            let mut s = v.to_vec();
            s.sort_unstable();
            s.dedup();
            s.len() == v.len() && v.iter().all(|l| (1..=4).contains(l))
        };
        if !levels_ok(&self.contrastive_levels) {
            return Err(bad(
                "model.contrastive_levels",
                format!("{:?}: distinct levels in 1..=4", self.contrastive_levels),
            ));
        }
        if self.contrastive_weights.len() != self.contrastive_levels.len() {
            return Err(bad(
                "model.contrastive_weights",
                format!(
                    "{} weights for {} levels",
                    self.contrastive_weights.len(),
                    self.contrastive_levels.len()
                ),
            ));
        }
        if let Some(w) = self.contrastive_weights.iter().find(|w| **w < 0.0) {
            return Err(bad(
                "model.contrastive_weights",
                format!("{w}: the levels' weights must be >= 0 (model.lambda scales them all)"),
            ));
        }
        if !levels_ok(&self.lte_levels) {
            return Err(bad(
                "model.lte_levels",
                format!("{:?}: distinct levels in 1..=4", self.lte_levels),
            ));
        }
        if self.lambda.is_nan() || self.lambda < 0.0 {
            return Err(bad("model.lambda", format!("{} must be >= 0", self.lambda)));
        }
        if self.aux_weight.is_nan() || self.aux_weight < 0.0 {
            return Err(bad(
                "model.aux_weight",
                format!("{} must be >= 0", self.aux_weight),
            ));
        }
        if !(0.0 < self.tau_min && self.tau_min <= self.tau_init && self.tau_init <= self.tau_max) {
            return Err(bad(
                "model.tau_init",
                format!(
                    "need 0 < tau_min <= tau_init <= tau_max, got {} <= {} <= {}",
                    self.tau_min, self.tau_init, self.tau_max
                ),
            ));
        }
        if self.lte_tau <= 0.0 {
            return Err(bad("model.lte_tau", "must be > 0".into()));
        }
        if self.cross_attention
            && (self.attn_heads == 0 || self.dims.iter().any(|d| d % self.attn_heads != 0))
        {
            return Err(bad(
                "model.attn_heads",
                format!(
                    "{} must divide every stage width {:?}",
                    self.attn_heads, self.dims
                ),
            ));
        }
        if !matches!(self.ops.as_str(), "fused" | "composed") {
            return Err(bad(
                "model.ops",
                format!("'{}' (expected fused or composed)", self.ops),
            ));
        }
        match text.encoder.as_str() {
            "scratch" => {
                if !text.hidden.is_multiple_of(text.heads.max(1)) {
                    return Err(bad(
                        "text.heads",
                        format!("{} must divide text.hidden {}", text.heads, text.hidden),
                    ));
                }
            }
            "bert" => {
                if text.bert_dir.is_none() {
                    return Err(bad(
                        "text.bert_dir",
                        "required when text.encoder = \"bert\"".into(),
                    ));
                }
            }
            other => {
                return Err(bad(
                    "text.encoder",
                    format!("'{other}' (expected scratch or bert)"),
                ))
            }
        }
        if !(3..=MAX_TEXT_LEN).contains(&text.max_len) {
            return Err(bad(
                "text.max_len",
                format!("{} (3 to {MAX_TEXT_LEN} tokens)", text.max_len),
            ));
        }
        if text.encoder == "bert" && text.tokenizer.is_some() {
            return Err(bad(
                "text.tokenizer",
                "not used with text.encoder = \"bert\": the BERT's own vocabulary (text.bert_dir) tokenises; remove one of them".into(),
            ));
        }
        Ok(())
    }

    /// Settings that load but would train something other than asked: refused when a run
    /// starts afresh, not when a config is read (a run trained before these checks still
    /// evaluates and resumes).
    pub fn check_new_run(&self) -> Result<()> {
        if self.text_guidance && !self.uses_contrastive() && !self.uses_lte() {
            // The text encoder would be built and trained on nothing (no gradient reaches it).
            return Err(bad(
                "model.text_guidance",
                "neither the contrastive loss (model.lambda = 0 or contrastive_levels = []) \
                 nor LTE (model.lte_levels = []) reads the reports: set text_guidance = false \
                 for the image-only model"
                    .into(),
            ));
        }
        if !self.target_sensitive && !self.uses_contrastive() {
            return Err(bad(
                "model.target_sensitive",
                "false changes nothing without the contrastive loss (text_guidance, lambda > 0, \
                 contrastive_levels): leave it out"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Whether the contrastive loss is active.
    pub fn uses_contrastive(&self) -> bool {
        self.text_guidance && self.lambda > 0.0 && !self.contrastive_levels.is_empty()
    }

    /// Whether the fused kernels compute pooling, the LTE map and the contrastive loss.
    pub fn fused(&self) -> bool {
        self.ops != "composed"
    }

    /// Whether LTE is active.
    pub fn uses_lte(&self) -> bool {
        self.text_guidance && !self.lte_levels.is_empty()
    }

    /// Levels that need the image/text projections (contrastive ∪ LTE), ascending.
    pub fn projected_levels(&self) -> Vec<usize> {
        let mut v = Vec::new();
        if self.uses_contrastive() {
            v.extend(&self.contrastive_levels);
        }
        if self.uses_lte() {
            v.extend(&self.lte_levels);
        }
        v.sort_unstable();
        v.dedup();
        v
    }
}
