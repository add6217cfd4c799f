//! Stochastic depth (`optim.drop_path`): while training, each ConvNeXt block's residual branch
//! is dropped for a random subset of the batch's samples and scaled by 1/(1 − p) for the rest,
//! with p rising linearly from 0 at the first block to the rate at the last (timm's ConvNeXt,
//! `drop_path_rate`). Evaluation and inference use every branch unscaled, which is the
//! expectation of training's. The draws come from the caller's RNG, so a run resumes exactly.

use candle_core::{Device, Result, Tensor};
use rand::Rng;

/// The (B, 1, 1, 1) branch scales of one batch, one per block in encoder order (`None`: a
/// block whose rate is 0 keeps every branch).
#[derive(Debug, Clone)]
pub struct DropPath {
    scales: Vec<Option<Tensor>>,
}

impl DropPath {
    /// The blocks' rates for `depths` (stage block counts) at `rate`: linear from 0 to `rate`.
    pub fn rates(rate: f64, depths: &[usize]) -> Vec<f64> {
        let n: usize = depths.iter().sum();
        (0..n)
            .map(|k| {
                if n > 1 {
                    rate * k as f64 / (n - 1) as f64
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Draws the scales of a batch of `batch` samples; `None` at rate 0.
    pub fn sample(
        rate: f64,
        depths: &[usize],
        batch: usize,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Result<Option<Self>> {
        if rate <= 0.0 {
            return Ok(None);
        }
        let scales = Self::rates(rate, depths)
            .into_iter()
            .map(|p| {
                if p <= 0.0 {
                    return Ok(None);
                }
                let keep = 1.0 - p;
                let s: Vec<f32> = (0..batch)
                    .map(|_| {
                        if rng.random_bool(keep) {
                            (1.0 / keep) as f32
                        } else {
                            0.0
                        }
                    })
                    .collect();
                Tensor::from_vec(s, (batch, 1, 1, 1), device).map(Some)
            })
            .collect::<Result<_>>()?;
        Ok(Some(Self { scales }))
    }

    /// The scales of block number `k` (in encoder order), if it drops anything.
    pub fn block(&self, k: usize) -> Option<&Tensor> {
        self.scales.get(k).and_then(Option::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn rates_rise_linearly_and_scales_keep_the_expectation() {
        let r = DropPath::rates(0.3, &[1, 1, 2]);
        assert_eq!(r.len(), 4);
        assert!((r[0] - 0.0).abs() < 1e-12 && (r[3] - 0.3).abs() < 1e-12);
        assert!((r[1] - 0.1).abs() < 1e-12 && (r[2] - 0.2).abs() < 1e-12);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        assert!(DropPath::sample(0.0, &[1, 1], 4, &mut rng, &Device::Cpu)
            .unwrap()
            .is_none());
        let d = DropPath::sample(0.5, &[1, 1], 4000, &mut rng, &Device::Cpu)
            .unwrap()
            .unwrap();
        assert!(d.block(0).is_none(), "the first block's rate is 0");
        let s: Vec<f32> = d
            .block(1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(s.iter().all(|&v| v == 0.0 || v == 2.0));
        let mean = s.iter().sum::<f32>() / s.len() as f32;
        assert!((mean - 1.0).abs() < 0.05, "E[scale] = {mean}");
        // The same draws from the same seed: a resumed run drops the same branches.
        let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut b = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let da = DropPath::sample(0.2, &[2, 2], 8, &mut a, &Device::Cpu)
            .unwrap()
            .unwrap();
        let db = DropPath::sample(0.2, &[2, 2], 8, &mut b, &Device::Cpu)
            .unwrap()
            .unwrap();
        for k in 0..4 {
            let v = |d: &DropPath| {
                d.block(k)
                    .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            };
            assert_eq!(v(&da), v(&db));
        }
    }
}
