//! Multi-level contrastive alignment: symmetric multi-positive InfoNCE between target
//! embeddings and report embeddings over the (gathered) global batch, with each sample's
//! background as an extra negative for its own report, and a learnable temperature per level.

use super::config::ModelConfig;
use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

/// One level's inputs over the global batch of N samples.
#[derive(Debug, Clone)]
pub struct LevelBatch {
    /// v⁺ (N, D), normalised.
    pub target: Tensor,
    /// u (N, D), normalised.
    pub text: Tensor,
    /// v⁻ (N, D), normalised.
    pub background: Tensor,
    /// (N,) 1.0 where the sample's background negative is valid (target and background present).
    pub has_background: Tensor,
}

/// Learnable log inverse temperatures, one per contrastive level.
#[derive(Debug, Clone)]
pub struct ContrastiveLoss {
    logit_scale: Tensor,
    levels: Vec<usize>,
    weights: Vec<f64>,
    min_scale: f64,
    max_scale: f64,
    background: bool,
    fused: bool,
}

/// Positive-pair matrix (N, N): 1 where the reports are identical after normalisation.
pub fn positives(groups: &[u64], dtype: DType, device: &candle_core::Device) -> Result<Tensor> {
    let n = groups.len();
    let v: Vec<f32> = (0..n * n)
        .map(|k| (groups[k / n] == groups[k % n]) as u8 as f32)
        .collect();
    Tensor::from_vec(v, (n, n), device)?.to_dtype(dtype)
}

/// Mean over rows of −Σ_j P_ij log softmax(logits)_ij / Σ_j P_ij.
fn multi_positive_nce(logits: &Tensor, pos: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let per_row = (logp * pos)?
        .sum(D::Minus1)?
        .broadcast_div(&pos.sum(D::Minus1)?)?;
    per_row.mean_all()?.neg()
}

impl ContrastiveLoss {
    /// The loss of `cfg`'s contrastive levels (weights, temperatures, background negatives,
    /// fused or composed ops).
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let levels = &cfg.contrastive_levels;
        let logit_scale = vb.get_with_hints(
            levels.len(),
            "logit_scale",
            Init::Const((1.0 / cfg.tau_init).ln()),
        )?;
        Ok(Self {
            logit_scale,
            levels: levels.clone(),
            weights: cfg.contrastive_weights.clone(),
            min_scale: (1.0 / cfg.tau_max).ln(),
            max_scale: (1.0 / cfg.tau_min).ln(),
            background: cfg.background_negatives,
            fused: cfg.fused(),
        })
    }

    /// Levels in order of the per-level losses.
    pub fn levels(&self) -> &[usize] {
        &self.levels
    }

    /// Current temperatures τ_l (after clamping), in level order.
    pub fn temperatures(&self) -> Result<Vec<f32>> {
        let s = self
            .logit_scale
            .clamp(self.min_scale, self.max_scale)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        Ok(s.iter().map(|x| (-x).exp()).collect())
    }

    /// The inverse temperatures exp(clamped logit scale), one per level.
    fn scales(&self) -> Result<Tensor> {
        self.logit_scale
            .clamp(self.min_scale, self.max_scale)?
            .exp()
    }

    /// The loss of level index `k` over the global batch, from candle ops (the reference of
    /// the fused kernel).
    pub fn level_loss(&self, k: usize, b: &LevelBatch, pos: &Tensor) -> Result<Tensor> {
        let scale = self.scales()?.narrow(0, k, 1)?;
        let sim = b.target.matmul(&b.text.t()?)?; // (N, N): image i vs text j
        let i2t = sim.broadcast_mul(&scale)?;
        let t2i = sim.t()?.broadcast_mul(&scale)?;
        let l_i2t = multi_positive_nce(&i2t, pos)?;
        let l_t2i = if self.background {
            let n = pos.dim(0)?;
            // cos(u_i, v⁻_i), masked out (−1e4) where there is no target or no background.
            let bg = (&b.text * &b.background)?
                .sum_keepdim(1)?
                .broadcast_mul(&scale)?;
            let has = b.has_background.unsqueeze(1)?;
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

    /// Σ_l w_l L_l and the per-level losses; `batches[k]` belongs to `levels()[k]`.
    pub fn forward(&self, batches: &[LevelBatch], groups: &[u64]) -> Result<(Tensor, Vec<Tensor>)> {
        if self.fused {
            return self.forward_fused(batches, groups);
        }
        let dev = self.logit_scale.device();
        let pos = positives(groups, self.logit_scale.dtype(), dev)?;
        let mut per_level = Vec::with_capacity(batches.len());
        let mut total = Tensor::zeros((), self.logit_scale.dtype(), dev)?;
        for (k, b) in batches.iter().enumerate() {
            let l = self.level_loss(k, b, &pos)?;
            total = (total + (&l * self.weights[k])?)?;
            per_level.push(l);
        }
        Ok((total, per_level))
    }

    /// All levels in one launch of the fused kernel.
    fn forward_fused(
        &self,
        batches: &[LevelBatch],
        groups: &[u64],
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let stack = |f: fn(&LevelBatch) -> &Tensor| {
            Tensor::stack(&batches.iter().map(f).collect::<Vec<_>>(), 0)
        };
        let losses = tmca_kernels::multi_level_contrastive(
            &stack(|b| &b.target)?,
            &stack(|b| &b.text)?,
            &stack(|b| &b.background)?,
            &stack(|b| &b.has_background)?,
            &self.scales()?.narrow(0, 0, batches.len())?,
            groups,
            self.background,
        )?;
        let w = Tensor::new(&self.weights[..batches.len()], losses.device())?
            .to_dtype(losses.dtype())?;
        let total = (&losses * &w)?.sum_all()?;
        let per_level = (0..batches.len())
            .map(|k| losses.get(k))
            .collect::<Result<_>>()?;
        Ok((total, per_level))
    }
}
