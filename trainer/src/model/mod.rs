//! TMCA: ConvNeXt image encoder, BERT-style report encoder, target-sensitive semantic distance,
//! multi-level contrastive alignment, language-guided target enhancement and a U-Net decoder.
//! One file per part, each a struct built by `new(…, vb)` (its config section, or the few sizes
//! and switches it takes) with a `forward`; `vb.pp` names are checkpoint keys.

pub mod config;
pub mod contrastive;
pub mod decoder;
pub mod drop_path;
pub mod image_encoder;
pub mod loss;
pub mod lte;
mod profiled;
pub mod text_encoder;
pub mod tssd;

#[cfg(test)]
pub(crate) mod tests;

pub use config::{ModelConfig, TextConfig};
pub use text_encoder::BertConfig;

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use contrastive::{ContrastiveLoss, LevelBatch};
use decoder::{Head, UpStage};
use image_encoder::ImageEncoder;
use lte::Lte;
use text_encoder::TextEncoder;
use tssd::{downsample_mask, LevelProjection, Pixels};

/// One training or inference batch as tensors.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// (B, C, H, W) normalised images.
    pub images: Tensor,
    /// (B, L) u32 token ids and attention mask.
    pub token_ids: Tensor,
    pub attention: Tensor,
    /// (B, 1, H, W) 0/1 masks (training and evaluation only).
    pub masks: Option<Tensor>,
    /// Training only: the image encoder blocks' stochastic depth for this batch.
    pub drop_path: Option<drop_path::DropPath>,
}

/// What a forward pass produces.
#[derive(Debug, Clone)]
pub struct Output {
    /// (B, 1, H, W) segmentation logits.
    pub logits: Tensor,
    /// Per contrastive level (in `contrastive_levels` order): this batch's embeddings
    /// (present when masks were given).
    pub contrastive: Vec<LevelBatch>,
    /// Enhancement maps A_l (B, 1, h, w) with their level.
    pub maps: Vec<(usize, Tensor)>,
}

/// The loss terms of one step.
#[derive(Debug, Clone)]
pub struct Losses {
    pub total: Tensor,
    pub dice: Tensor,
    pub bce: Tensor,
    /// Σ_l w_l L_con,l (before λ), if active.
    pub contrastive: Option<Tensor>,
    /// L_con,l in `contrastive_levels` order.
    pub per_level: Vec<Tensor>,
    /// Σ_l BCE(A_l, m_l) (before μ), if active.
    pub aux: Option<Tensor>,
}

/// The whole model.
#[derive(Debug, Clone)]
pub struct Tmca {
    cfg: ModelConfig,
    image: ImageEncoder,
    text: Option<TextEncoder>,
    projections: Vec<(usize, LevelProjection)>,
    contrastive: Option<ContrastiveLoss>,
    lte: Vec<(usize, Lte)>,
    up: Vec<UpStage>,
    head: Head,
}

impl Tmca {
    /// Builds the model under `vb`; the text encoder under `text_vb` (normally `vb.pp("text")`,
    /// or a frozen pretrained BERT's weights).
    pub fn new(
        cfg: &ModelConfig,
        bert: &BertConfig,
        vb: VarBuilder,
        text_vb: VarBuilder,
    ) -> Result<Self> {
        let d = &cfg.dims;
        let image = ImageEncoder::new(cfg, vb.pp("image_encoder"))?;
        let text = if cfg.text_guidance {
            Some(TextEncoder::new(bert, text_vb)?)
        } else {
            None
        };
        let td = bert.hidden_size;
        let projections = cfg
            .projected_levels()
            .into_iter()
            .map(|l| {
                Ok((
                    l,
                    LevelProjection::new(d[l - 1], td, cfg.embed_dim, vb.pp(format!("tssd.{l}")))?,
                ))
            })
            .collect::<Result<_>>()?;
        let contrastive = if cfg.uses_contrastive() {
            Some(ContrastiveLoss::new(cfg, vb.pp("contrastive"))?)
        } else {
            None
        };
        let lte = if cfg.uses_lte() {
            cfg.lte_levels
                .iter()
                .map(|&l| {
                    Ok((
                        l,
                        Lte::new(
                            d[l - 1],
                            td,
                            cfg.lte_tau,
                            cfg.cross_attention,
                            cfg.attn_heads,
                            vb.pp(format!("lte.{l}")),
                        )?,
                    ))
                })
                .collect::<Result<_>>()?
        } else {
            vec![]
        };
        let up = (1..4)
            .map(|i| UpStage::new(d[i], d[i - 1], vb.pp(format!("decoder.up.{}", i - 1))))
            .collect::<Result<_>>()?;
        let head = Head::new(d[0], vb.pp("decoder.head"))?;
        Ok(Self {
            cfg: cfg.clone(),
            image,
            text,
            projections,
            contrastive,
            lte,
            up,
            head,
        })
    }

    /// The resolved configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Current contrastive temperatures, in `contrastive_levels` order.
    pub fn temperatures(&self) -> Result<Vec<f32>> {
        self.contrastive
            .as_ref()
            .map_or(Ok(vec![]), |c| c.temperatures())
    }

    /// Runs the model. With masks, also returns the contrastive embeddings of this batch.
    pub fn forward(&self, x: &Inputs) -> Result<Output> {
        let feats = self
            .image
            .forward_dropping(&x.images, x.drop_path.as_ref())?;
        let text = match &self.text {
            Some(enc) => Some(enc.forward(&x.token_ids, &x.attention)?),
            None => None,
        };
        // Aligned projections z_l (raw for the fused kernels), u_l of every level that needs them.
        let fused = self.cfg.fused();
        let mut proj: Vec<(usize, Pixels, Tensor)> = Vec::new();
        if let Some((_, t)) = &text {
            for (l, p) in &self.projections {
                proj.push((*l, p.pixels(&feats[l - 1], fused)?, p.text(t)?));
            }
        }
        let zu = |l: usize| {
            proj.iter()
                .find(|(k, _, _)| *k == l)
                .map(|(_, z, u)| (z, u))
        };

        let mut contrastive = Vec::new();
        if let (Some(c), Some(masks)) = (&self.contrastive, &x.masks) {
            // Without target sensitivity every pixel is "target": the image's mean embedding,
            // and no background (a full mask has none).
            let pool_masks = if self.cfg.target_sensitive {
                masks.clone()
            } else {
                masks.ones_like()?
            };
            for &l in c.levels() {
                if let Some((z, u)) = zu(l) {
                    let pooled = profiled::pool(z, &pool_masks)?;
                    contrastive.push(LevelBatch {
                        target: pooled.target,
                        text: u.clone(),
                        background: pooled.background,
                        has_background: pooled.has_background,
                    });
                }
            }
        }

        let mut maps = Vec::new();
        let mut enhance = |level: usize, g: Tensor| -> Result<Tensor> {
            match (self.lte.iter().find(|(l, _)| *l == level), zu(level), &text) {
                (Some((_, lte)), Some((z, u)), Some((tokens, _))) => {
                    let a = profiled::lte_map(lte, z, u)?;
                    let g = lte.forward(&g, &a, tokens, &x.attention)?;
                    maps.push((level, a));
                    Ok(g)
                }
                _ => Ok(g),
            }
        };
        let mut g = enhance(4, feats[3].clone())?;
        for l in (1..4).rev() {
            g = self.up[l - 1].forward(&g, &feats[l - 1])?;
            g = enhance(l, g)?;
        }
        let logits = self.head.forward(&g)?;
        Ok(Output {
            logits,
            contrastive,
            maps,
        })
    }

    /// Loss of `out` against `masks` (B,1,H,W). `gathered` replaces this batch's contrastive
    /// embeddings by the global batch's (data-parallel), with `groups` for the global batch.
    pub fn loss(
        &self,
        out: &Output,
        masks: &Tensor,
        groups: &[u64],
        gathered: Option<&[LevelBatch]>,
    ) -> Result<Losses> {
        let (dice, bce) = profiled::seg_loss(&out.logits, masks)?;
        let mut total = (&dice + &bce)?;
        let (mut contrastive, mut per_level, mut aux) = (None, vec![], None);
        if let Some(c) = &self.contrastive {
            let batches = gathered.unwrap_or(&out.contrastive);
            if !batches.is_empty() {
                let (l, levels) = profiled::contrastive(c, batches, groups)?;
                total = (total + (&l * self.cfg.lambda)?)?;
                contrastive = Some(l);
                per_level = levels;
            }
        }
        if self.cfg.aux_weight > 0.0 && !out.maps.is_empty() {
            let mut a = Tensor::zeros((), masks.dtype(), masks.device())?;
            for (_, map) in &out.maps {
                let (_, _, h, w) = map.dims4()?;
                a = (a + loss::bce(map, &downsample_mask(masks, h, w)?)?)?;
            }
            total = (total + (&a * self.cfg.aux_weight)?)?;
            aux = Some(a);
        }
        Ok(Losses {
            total,
            dice,
            bce,
            contrastive,
            per_level,
            aux,
        })
    }
}
