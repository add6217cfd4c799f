//! Segmentation losses: soft Dice and numerically stable BCE-with-logits, per-image averaged.

use candle_core::{Result, Tensor, D};

/// `max(x,0) − x·y + log(1 + exp(−|x|))`, averaged over all elements.
pub fn bce_with_logits(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let relu = logits.relu()?;
    let softplus = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    ((relu - (logits * target)?)? + softplus)?.mean_all()
}

/// BCE on probabilities (the enhancement maps), clamped away from 0 and 1.
pub fn bce(prob: &Tensor, target: &Tensor) -> Result<Tensor> {
    let p = prob.clamp(1e-6, 1.0 - 1e-6)?;
    let l = ((target * p.log()?)? + ((1.0 - target)? * (1.0 - &p)?.log()?)?)?;
    l.mean_all()?.neg()
}

/// 1 − (2 Σ p·y + 1) / (Σ p + Σ y + 1) per image, averaged over the batch.
pub fn soft_dice(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let p = candle_nn::ops::sigmoid(logits)?.flatten_from(1)?;
    let y = target.flatten_from(1)?;
    let inter = (&p * &y)?.sum(D::Minus1)?;
    let denom = (p.sum(D::Minus1)? + y.sum(D::Minus1)?)?;
    let dice = ((inter * 2.0)? + 1.0)?.div(&(denom + 1.0)?)?;
    (1.0 - dice)?.mean_all()
}
