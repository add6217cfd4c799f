//! The composed candle-op references, copied from the trainer (`nn::l2_normalize`,
//! `model::tssd::masked_pool`, `model::lte::Lte::map` before its sigmoid,
//! `model::contrastive::ContrastiveLoss::level_loss`), so that the kernels crate does not depend
//! on tmca-trainer. Shared by the tests, the benches and the memory example.
#![allow(dead_code)]

use candle_core::{DType, Device, Result, Tensor, D};

/// x / sqrt(Σx² + 1e-12) over `dim`.
pub fn l2_normalize(x: &Tensor, dim: usize) -> Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(dim)? + 1e-12)?.sqrt()?;
    x.broadcast_div(&norm)
}

/// (target, background, has_background) of normalised z (B, D, h, w) and m (B, 1, h, w).
pub fn masked_pool(z: &Tensor, m: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, d, h, w) = z.dims4()?;
    let z = z.reshape((b, d, h * w))?;
    let m = m.reshape((b, 1, h * w))?;
    let area = m.sum(D::Minus1)?;
    let has = area.gt(0.0)?.to_dtype(z.dtype())?;
    let m_eff = m
        .broadcast_mul(&has.unsqueeze(2)?)?
        .broadcast_add(&(1.0 - &has)?.unsqueeze(2)?)?;
    let pool = |weights: &Tensor| -> Result<Tensor> {
        let s = z.broadcast_mul(weights)?.sum(D::Minus1)?;
        let n = weights.sum(D::Minus1)?.clamp(1e-6, f64::INFINITY)?;
        l2_normalize(&s.broadcast_div(&n)?, 1)
    };
    let target = pool(&m_eff)?;
    let inv = (1.0 - &m)?;
    let background = pool(&inv)?;
    let has_bg = inv
        .sum(D::Minus1)?
        .gt(0.0)?
        .to_dtype(z.dtype())?
        .mul(&has)?;
    Ok((target, background, has_bg.squeeze(1)?))
}

/// The composed path from the raw projection: normalise, then pool.
pub fn masked_pool_raw(p: &Tensor, m: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    masked_pool(&l2_normalize(p, 1)?, m)
}

/// cos(z, u) map (B, 1, h, w) of normalised z and u (the LTE map before bias and sigmoid).
pub fn cos_map(z: &Tensor, u: &Tensor) -> Result<Tensor> {
    z.broadcast_mul(&u.unsqueeze(2)?.unsqueeze(3)?)?
        .sum_keepdim(1)
}

/// The composed path from the raw projection.
pub fn pixel_text_cos_raw(p: &Tensor, u: &Tensor) -> Result<Tensor> {
    cos_map(&l2_normalize(p, 1)?, u)
}

/// Positive-pair matrix (N, N).
pub fn positives(groups: &[u64], dtype: DType, device: &Device) -> Result<Tensor> {
    let n = groups.len();
    let v: Vec<f32> = (0..n * n)
        .map(|k| (groups[k / n] == groups[k % n]) as u8 as f32)
        .collect();
    Tensor::from_vec(v, (n, n), device)?.to_dtype(dtype)
}

fn log_softmax(xs: &Tensor) -> Result<Tensor> {
    let max = xs.max_keepdim(D::Minus1)?;
    let diff = xs.broadcast_sub(&max)?;
    let sum_exp = diff.exp()?.sum_keepdim(D::Minus1)?;
    diff.broadcast_sub(&sum_exp.log()?)
}

fn multi_positive_nce(logits: &Tensor, pos: &Tensor) -> Result<Tensor> {
    let logp = log_softmax(logits)?;
    let per_row = (logp * pos)?
        .sum(D::Minus1)?
        .broadcast_div(&pos.sum(D::Minus1)?)?;
    per_row.mean_all()?.neg()
}

/// One level: target, text, background (N, D), has_background (N), scale (1).
pub fn level_loss(
    target: &Tensor,
    text: &Tensor,
    background: &Tensor,
    has_background: &Tensor,
    scale: &Tensor,
    pos: &Tensor,
    with_background: bool,
) -> Result<Tensor> {
    let sim = target.matmul(&text.t()?)?;
    let i2t = sim.broadcast_mul(scale)?;
    let t2i = sim.t()?.broadcast_mul(scale)?;
    let l_i2t = multi_positive_nce(&i2t, pos)?;
    let l_t2i = if with_background {
        let n = pos.dim(0)?;
        let bg = (text * background)?.sum_keepdim(1)?.broadcast_mul(scale)?;
        let has = has_background.unsqueeze(1)?;
        let bg = ((bg * &has)? + ((&has - 1.0)? * 1e4)?)?;
        let logits = Tensor::cat(&[&t2i, &bg], 1)?;
        let pos_ext = Tensor::cat(
            &[pos, &Tensor::zeros((n, 1), pos.dtype(), pos.device())?],
            1,
        )?;
        multi_positive_nce(&logits, &pos_ext)?
    } else {
        multi_positive_nce(&t2i, pos)?
    };
    (l_i2t + l_t2i)? * 0.5
}

/// Every level of (Lv, N, D) inputs, scales (Lv) → (Lv) losses.
pub fn multi_level(
    target: &Tensor,
    text: &Tensor,
    background: &Tensor,
    has_background: &Tensor,
    scales: &Tensor,
    groups: &[u64],
    with_background: bool,
) -> Result<Tensor> {
    let lv = target.dim(0)?;
    let pos = positives(groups, target.dtype(), target.device())?;
    let losses = (0..lv)
        .map(|l| {
            level_loss(
                &target.get(l)?,
                &text.get(l)?,
                &background.get(l)?,
                &has_background.get(l)?,
                &scales.narrow(0, l, 1)?,
                &pos,
                with_background,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::stack(&losses, 0)
}

/// Depthwise k×k convolution (zero padding k/2) as the sum of k² shifted, per-channel-scaled
/// copies — the composed form the trainer uses off the CPU.
pub fn depthwise_shifted(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (_, c, h, wd) = x.dims4()?;
    let k = w.dim(2)?;
    let p = k / 2;
    let xp = x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
    let wt = w.reshape((c, k * k))?;
    let mut out = b
        .reshape((1, c, 1, 1))?
        .broadcast_as(x.shape())?
        .contiguous()?;
    for i in 0..k {
        let rows = xp.narrow(2, i, h)?;
        for j in 0..k {
            let tap = wt.narrow(1, i * k + j, 1)?.reshape((1, c, 1, 1))?;
            out = (out + rows.narrow(3, j, wd)?.broadcast_mul(&tap)?)?;
        }
    }
    Ok(out)
}
