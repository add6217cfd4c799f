//! What a training step exchanges between data-parallel ranks besides the gradients: the
//! contrastive embeddings of the global batch (gather-with-grad) and the loss values.
//!
//! With R ranks of local batch b, every rank computes the contrastive loss L over the gathered
//! global batch of N = R·b samples, the same value on every rank. Only this rank's slice of the
//! gathered embeddings stays in the graph, so rank r's backward yields ∂L/∂e_r·∂e_r/∂θ: its own
//! samples' share of the gradient. The gradients are then averaged over ranks, which would
//! divide each share by R, so the local slice's gradient is scaled by R on the way back (its
//! value is unchanged). The temperatures reach L through every row on every rank, get the whole
//! ∂L/∂τ on each, and the average leaves that as it is. The result is the gradient one process
//! computes with batch R·b; the local segmentation and auxiliary losses are means over b, and
//! their average over ranks is the mean over R·b.

use crate::model::contrastive::LevelBatch;
use crate::model::Losses;
use crate::sync::GradSync;
use crate::{Result, TrainError};
use candle_core::{DType, Tensor};

/// `x` with its gradient multiplied by `k` on the way back; the value is exactly `x`.
fn scale_grad(x: &Tensor, k: f64) -> Result<Tensor> {
    if k == 1.0 {
        return Ok(x.clone());
    }
    let extra = (x * (k - 1.0))?;
    Ok(x.add(&(&extra - extra.detach())?)?)
}

/// The four tensors of a level, in a fixed order.
fn fields(b: &LevelBatch) -> [&Tensor; 4] {
    [&b.target, &b.text, &b.background, &b.has_background]
}

/// The global batch's contrastive embeddings (rank order) and report groups, with this rank's
/// slice still differentiable (gradient scaled by the world size) and the others constants.
pub fn gather_with_grad(
    local: &[LevelBatch],
    groups: &[u64],
    sync: &mut dyn GradSync,
) -> Result<(Vec<LevelBatch>, Vec<u64>)> {
    let (rank, world) = (sync.rank(), sync.world());
    let mut flat = Vec::new();
    for b in local {
        for t in fields(b) {
            flat.extend(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
        }
    }
    let all = sync.all_gather(&flat)?;
    let all_groups = sync.all_gather_u64(groups)?;
    if all.len() != flat.len() * world || all_groups.len() != groups.len() * world {
        return Err(TrainError::Collective(format!(
            "gathered {} embedding values and {} report groups from {world} ranks, expected \
             {} and {} (every rank must run the same local batch size)",
            all.len(),
            all_groups.len(),
            flat.len() * world,
            groups.len() * world
        )));
    }
    let mut offset = 0;
    let mut gathered = Vec::with_capacity(local.len());
    for b in local {
        let mut out: Vec<Tensor> = Vec::with_capacity(4);
        for (f, t) in fields(b).into_iter().enumerate() {
            let n = t.elem_count();
            let parts = (0..world)
                .map(|r| {
                    if r == rank {
                        // The constant `has_background` needs no gradient.
                        if f == 3 {
                            Ok(t.clone())
                        } else {
                            scale_grad(t, world as f64)
                        }
                    } else {
                        let at = r * flat.len() + offset;
                        Ok(Tensor::from_slice(&all[at..at + n], t.shape(), t.device())?
                            .to_dtype(t.dtype())?)
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            out.push(Tensor::cat(&parts, 0)?);
            offset += n;
        }
        let [target, text, background, has_background]: [Tensor; 4] =
            out.try_into().map_err(|_| {
                TrainError::Collective("a contrastive level lost one of its fields".into())
            })?;
        gathered.push(LevelBatch {
            target,
            text,
            background,
            has_background,
        });
    }
    Ok((gathered, all_groups))
}

/// Runs `setup` on rank 0 first, then on the others: rank 0 writes what is missing (synthetic
/// stores, the run's tokenizer), the others read it once it is complete. A failure on rank 0
/// fails every rank instead of leaving them waiting.
pub fn prepare<T>(sync: &mut dyn GradSync, setup: impl FnOnce() -> Result<T>) -> Result<T> {
    if sync.world() == 1 {
        return setup();
    }
    if sync.rank() == 0 {
        let done = setup();
        let mut failed = [done.is_err() as u8 as f64];
        sync.all_reduce_sum_f64(&mut failed)?;
        return done;
    }
    let mut failed = [0.0];
    sync.all_reduce_sum_f64(&mut failed)?;
    if failed[0] > 0.0 {
        return Err(TrainError::Collective(
            "rank 0 could not prepare the data and the tokenizer (its error says why)".into(),
        ));
    }
    setup()
}

/// A step's loss terms as numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossValues {
    pub total: f64,
    pub dice: f64,
    pub bce: f64,
    pub contrastive: Option<f64>,
    pub per_level: Vec<f64>,
    pub aux: Option<f64>,
    /// A stop was requested (on any rank, after [`LossValues::mean_over_ranks`]).
    pub stop: bool,
}

impl LossValues {
    /// The values of `l` on this rank (one device-to-host copy), and whether this rank was
    /// asked to stop.
    pub fn of(l: &Losses, stop: bool) -> Result<Self> {
        let mut terms = vec![&l.total, &l.dice, &l.bce];
        terms.extend(&l.contrastive);
        terms.extend(&l.per_level);
        terms.extend(&l.aux);
        let terms: Vec<Tensor> = terms
            .into_iter()
            .map(|t| t.to_dtype(DType::F64))
            .collect::<candle_core::Result<_>>()?;
        let shape = Self {
            contrastive: l.contrastive.as_ref().map(|_| 0.0),
            per_level: vec![0.0; l.per_level.len()],
            aux: l.aux.as_ref().map(|_| 0.0),
            ..Self::default()
        };
        Ok(shape.refill(Tensor::stack(&terms, 0)?.to_vec1::<f64>()?, stop))
    }

    /// The values in a fixed order: total, dice, bce, contrastive, per level, aux.
    fn to_vec(&self) -> Vec<f64> {
        let mut v = vec![self.total, self.dice, self.bce];
        v.extend(self.contrastive);
        v.extend(&self.per_level);
        v.extend(self.aux);
        v
    }

    /// Values of `self`'s shape taken from `v`, in [`LossValues::to_vec`]'s order.
    fn refill(&self, v: impl IntoIterator<Item = f64>, stop: bool) -> Self {
        let mut it = v.into_iter();
        let mut next = || it.next().unwrap_or(f64::NAN);
        Self {
            total: next(),
            dice: next(),
            bce: next(),
            contrastive: self.contrastive.map(|_| next()),
            per_level: self.per_level.iter().map(|_| next()).collect(),
            aux: self.aux.map(|_| next()),
            stop,
        }
    }

    /// The mean of every rank's values (the global batch's losses) and whether any rank was
    /// asked to stop: one small all-reduce. Every rank gets the same answer, so decisions taken
    /// on it (skipping a non-finite step, stopping) agree across ranks.
    pub fn mean_over_ranks(self, sync: &mut dyn GradSync) -> Result<Self> {
        let world = sync.world();
        if world == 1 {
            return Ok(self);
        }
        let mut v = vec![self.stop as u8 as f64];
        v.extend(self.to_vec());
        sync.all_reduce_sum_f64(&mut v)?;
        let stop = v[0] > 0.0;
        Ok(self.refill(v.into_iter().skip(1).map(|x| x / world as f64), stop))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::ThreadGroup;
    use candle_core::{Device, Var};

    #[test]
    fn rank_zero_prepares_first_and_its_failure_reaches_every_rank() {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let run = |fail: bool| {
            let handles: Vec<_> = ThreadGroup::new(3)
                .into_iter()
                .map(|mut g| {
                    let log = log.clone();
                    std::thread::spawn(move || {
                        let r = g.rank();
                        prepare(&mut g, || {
                            log.lock().unwrap().push(r);
                            if fail && r == 0 {
                                return Err(TrainError::config("data", "broken"));
                            }
                            Ok(r)
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        };
        let ok = run(false);
        assert_eq!(log.lock().unwrap()[0], 0, "rank 0 runs first");
        assert_eq!(
            ok.into_iter().map(|r| r.unwrap()).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        log.lock().unwrap().clear();
        let failed = run(true);
        assert_eq!(*log.lock().unwrap(), [0], "the others do not start");
        assert!(failed[0]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("broken"));
        for r in &failed[1..] {
            let e = r.as_ref().unwrap_err().to_string();
            assert!(e.contains("rank 0 could not prepare"), "{e}");
        }
    }

    #[test]
    fn loss_values_are_averaged_and_a_stop_on_one_rank_stops_all() {
        let handles: Vec<_> = ThreadGroup::new(2)
            .into_iter()
            .map(|mut g| {
                std::thread::spawn(move || {
                    let r = g.rank() as f64;
                    let v = LossValues {
                        total: 1.0 + r,
                        dice: 2.0,
                        bce: r,
                        contrastive: Some(4.0),
                        per_level: vec![5.0, 6.0 * r],
                        aux: None,
                        stop: r == 1.0,
                    };
                    v.mean_over_ranks(&mut g).unwrap()
                })
            })
            .collect();
        for h in handles {
            let v = h.join().unwrap();
            let want = LossValues {
                total: 1.5,
                dice: 2.0,
                bce: 0.5,
                contrastive: Some(4.0),
                per_level: vec![5.0, 3.0],
                aux: None,
                stop: true,
            };
            assert_eq!(v, want);
        }
    }

    #[test]
    fn scale_grad_keeps_the_value_and_scales_the_gradient() {
        let x = Var::new(&[1.5f32, -2.25, 3.0e-8], &Device::Cpu).unwrap();
        let y = scale_grad(x.as_tensor(), 3.0).unwrap();
        assert_eq!(
            y.to_vec1::<f32>().unwrap(),
            x.as_tensor().to_vec1::<f32>().unwrap()
        );
        let g = (y.sqr().unwrap().sum_all().unwrap())
            .backward()
            .unwrap()
            .get(x.as_tensor())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (g, want) in g.iter().zip([9.0f32, -13.5, 1.8e-7]) {
            assert!((g - want).abs() <= 1e-6 * want.abs(), "{g} vs {want}");
        }
    }
}
