//! The TMCA-specific steps of the forward pass and the loss as [`crate::profile`] calls, so
//! the step benchmark can replay them; each is exactly the plain call when not recording.

use super::contrastive::{ContrastiveLoss, LevelBatch};
use super::loss;
use super::lte::Lte;
use super::tssd::{self, downsample_mask, Pixels, Pooled};
use crate::profile::{self, Part};
use candle_core::{Result, Tensor};

fn pool_raw(z: &Pixels, masks: &Tensor) -> Result<Pooled> {
    let (_, _, h, w) = z.tensor().dims4()?;
    tssd::pool(z, &downsample_mask(masks, h, w)?)
}

/// Target/background pooling of the level's pixels (B, D, h, w) under `masks` (B, 1, H, W).
pub fn pool(z: &Pixels, masks: &Tensor) -> Result<Pooled> {
    profile::scope(
        Part::Contrastive,
        &[z.tensor(), masks],
        || {
            let z = z.clone();
            Box::new(move |i: &[Tensor]| {
                let p = pool_raw(&z.like(i[0].clone()), &i[1])?;
                Ok(vec![p.target, p.background])
            })
        },
        || pool_raw(z, masks),
    )
}

/// The enhancement map of `lte` from the level's pixels and u.
pub fn lte_map(lte: &Lte, z: &Pixels, u: &Tensor) -> Result<Tensor> {
    profile::scope(
        Part::Contrastive,
        &[z.tensor(), u],
        || {
            let (lte, z) = (lte.clone(), z.clone());
            Box::new(move |i: &[Tensor]| Ok(vec![lte.map(&z.like(i[0].clone()), &i[1])?]))
        },
        || lte.map(z, u),
    )
}

fn batches_from(i: &[Tensor]) -> Vec<LevelBatch> {
    i.chunks_exact(4)
        .map(|c| LevelBatch {
            target: c[0].clone(),
            text: c[1].clone(),
            background: c[2].clone(),
            has_background: c[3].clone(),
        })
        .collect()
}

/// The multi-level contrastive loss (total and per level).
pub fn contrastive(
    c: &ContrastiveLoss,
    batches: &[LevelBatch],
    groups: &[u64],
) -> Result<(Tensor, Vec<Tensor>)> {
    let inputs: Vec<&Tensor> = batches
        .iter()
        .flat_map(|b| [&b.target, &b.text, &b.background, &b.has_background])
        .collect();
    profile::scope(
        Part::Contrastive,
        &inputs,
        || {
            let (c, groups) = (c.clone(), groups.to_vec());
            Box::new(move |i: &[Tensor]| Ok(vec![c.forward(&batches_from(i), &groups)?.0]))
        },
        || c.forward(batches, groups),
    )
}

fn seg_loss_raw(logits: &Tensor, masks: &Tensor) -> Result<(Tensor, Tensor)> {
    Ok((
        loss::soft_dice(logits, masks)?,
        loss::bce_with_logits(logits, masks)?,
    ))
}

/// Soft Dice and BCE of the logits.
pub fn seg_loss(logits: &Tensor, masks: &Tensor) -> Result<(Tensor, Tensor)> {
    profile::scope(
        Part::Loss,
        &[logits, masks],
        || {
            Box::new(|i: &[Tensor]| {
                let (d, b) = seg_loss_raw(&i[0], &i[1])?;
                Ok(vec![d, b])
            })
        },
        || seg_loss_raw(logits, masks),
    )
}
