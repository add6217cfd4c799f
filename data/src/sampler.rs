//! Deterministic, epoch-seeded, sharded sampling with PyTorch `DistributedSampler` semantics,
//! over one or several datasets mixed by weights.
//!
//! For epoch `e` the global order is a pure function of `(seed, e)`; it is padded (by repeating
//! its beginning) to a multiple of the world size `R`, and rank `r` takes positions
//! `r, r+R, r+2R, …`. So `R` ranks with local batch `b` see exactly the samples one process sees
//! with batch `R·b`. Ranks come in as numbers: nothing here reads the environment.

use crate::{DataError, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One drawn sample: which source dataset and which sample index inside its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Item {
    pub source: usize,
    pub index: usize,
}

/// SplitMix64 step: a well-mixed seed from structured inputs.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed derived from several parts (seed, epoch, index, …).
pub fn derive_seed(parts: &[u64]) -> u64 {
    parts.iter().fold(0x5EED_u64, |acc, &p| mix(acc ^ mix(p)))
}

/// How an epoch is drawn and split across ranks.
#[derive(Debug, Clone)]
pub struct ShardedSampler {
    sources: Vec<Vec<usize>>,
    weights: Vec<f64>,
    epoch_len: usize,
    seed: u64,
    shuffle: bool,
    pad: bool,
    rank: usize,
    world: usize,
}

impl ShardedSampler {
    /// `sources[k]` lists the sample indices available in dataset `k` (e.g. its train split).
    ///
    /// * `weights`: relative draw probability of each dataset; `None` = proportional to size
    ///   (a plain shuffled concatenation). With weights, an epoch still has `Σ len` draws.
    /// * `shuffle = false` walks the datasets in order (evaluation); weights are then ignored.
    /// * `pad = true` pads to a multiple of `world` (training); `false` lets the last ranks
    ///   take one sample fewer (evaluation, where duplicates would bias the metrics).
    pub fn new(
        sources: Vec<Vec<usize>>,
        weights: Option<Vec<f64>>,
        seed: u64,
        shuffle: bool,
        pad: bool,
        rank: usize,
        world: usize,
    ) -> Result<Self> {
        let cfg = |field: &str, message: String| DataError::Config {
            field: field.into(),
            message,
        };
        if world == 0 || rank >= world {
            return Err(cfg(
                "rank",
                format!("rank {rank} is not in a world of {world}"),
            ));
        }
        let epoch_len: usize = sources.iter().map(Vec::len).sum();
        if epoch_len == 0 {
            return Err(cfg("data", "no samples to draw from".into()));
        }
        let weights = match weights {
            None => sources.iter().map(|s| s.len() as f64).collect(),
            Some(w) => {
                if w.len() != sources.len() {
                    return Err(cfg(
                        "data.weights",
                        format!("{} weights for {} datasets", w.len(), sources.len()),
                    ));
                }
                if w.iter().any(|&x| !x.is_finite() || x < 0.0) || w.iter().sum::<f64>() <= 0.0 {
                    return Err(cfg(
                        "data.weights",
                        format!("{w:?}: weights must be >= 0 and not all 0"),
                    ));
                }
                for (k, (&wk, s)) in w.iter().zip(&sources).enumerate() {
                    if wk > 0.0 && s.is_empty() {
                        return Err(cfg(
                            "data.weights",
                            format!("dataset {k} has weight {wk} but no samples"),
                        ));
                    }
                }
                w
            }
        };
        Ok(Self {
            sources,
            weights,
            epoch_len,
            seed,
            shuffle,
            pad,
            rank,
            world,
        })
    }

    /// The whole epoch in global order, before padding.
    pub fn global_order(&self, epoch: u64) -> Vec<Item> {
        if !self.shuffle {
            return self
                .sources
                .iter()
                .enumerate()
                .flat_map(|(s, idx)| idx.iter().map(move |&index| Item { source: s, index }))
                .collect();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(&[self.seed, epoch, 0xE90C]));
        // Each dataset is walked through its own permutation, reshuffled when exhausted.
        let mut perms: Vec<Vec<usize>> = self.sources.clone();
        let mut pos = vec![0usize; perms.len()];
        for p in &mut perms {
            p.shuffle(&mut rng);
        }
        let total: f64 = self.weights.iter().sum();
        let proportional = self
            .weights
            .iter()
            .zip(&self.sources)
            .all(|(&w, s)| (w - s.len() as f64).abs() < 1e-9);
        let mut order = Vec::with_capacity(self.epoch_len);
        if proportional {
            for (s, p) in perms.iter().enumerate() {
                order.extend(p.iter().map(|&index| Item { source: s, index }));
            }
            order.shuffle(&mut rng);
            return order;
        }
        for _ in 0..self.epoch_len {
            let s = pick_source(&self.weights, rng.random::<f64>() * total);
            if pos[s] == perms[s].len() {
                perms[s].shuffle(&mut rng);
                pos[s] = 0;
            }
            order.push(Item {
                source: s,
                index: perms[s][pos[s]],
            });
            pos[s] += 1;
        }
        order
    }

    /// Number of samples every rank gets per epoch (with padding; without, the largest share).
    pub fn len_per_rank(&self) -> usize {
        self.epoch_len.div_ceil(self.world)
    }

    /// Samples this rank gets per epoch: [`len_per_rank`](Self::len_per_rank) when padded;
    /// without padding the last ranks may get one fewer (or none, with more ranks than
    /// samples).
    pub fn len_this_rank(&self) -> usize {
        if self.pad {
            self.len_per_rank()
        } else {
            (self.epoch_len + self.world - 1 - self.rank) / self.world
        }
    }

    /// Samples in one epoch, over all ranks, padding included.
    pub fn global_len(&self) -> usize {
        if self.pad {
            self.len_per_rank() * self.world
        } else {
            self.epoch_len
        }
    }

    /// This rank's share of epoch `epoch`, in order.
    pub fn epoch(&self, epoch: u64) -> Vec<Item> {
        let mut order = self.global_order(epoch);
        if self.pad {
            let target = self.len_per_rank() * self.world;
            let mut k = 0;
            while order.len() < target {
                order.push(order[k % self.epoch_len]);
                k += 1;
            }
        }
        order
            .into_iter()
            .skip(self.rank)
            .step_by(self.world)
            .collect()
    }

    /// Rank of this sampler.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// World size of this sampler.
    pub fn world(&self) -> usize {
        self.world
    }
}

/// The source a draw `x` in [0, Σ weights) falls in: never one of weight 0, also when float
/// rounding carries `x` past the last positive weight (a weight-0 source may be empty).
fn pick_source(weights: &[f64], mut x: f64) -> usize {
    let last = weights.iter().rposition(|&w| w > 0.0).unwrap_or(0);
    let mut s = 0;
    while s < last && (x >= weights[s] || weights[s] == 0.0) {
        x -= weights[s];
        s += 1;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn sampler(
        sizes: &[usize],
        w: Option<Vec<f64>>,
        shuffle: bool,
        pad: bool,
        rank: usize,
        world: usize,
    ) -> ShardedSampler {
        let mut next = 0;
        let sources = sizes
            .iter()
            .map(|&n| {
                let v: Vec<usize> = (next..next + n).collect();
                next += n;
                v
            })
            .collect();
        ShardedSampler::new(sources, w, 7, shuffle, pad, rank, world).unwrap()
    }

    #[test]
    fn shards_are_disjoint_and_cover_the_epoch() {
        for world in [1, 2, 3, 4, 7] {
            let shards: Vec<Vec<Item>> = (0..world)
                .map(|r| sampler(&[10, 13], None, true, true, r, world).epoch(3))
                .collect();
            let len = shards[0].len();
            assert!(shards.iter().all(|s| s.len() == len), "equal shares");
            assert_eq!(len, 23usize.div_ceil(world));
            let all: Vec<Item> = shards.iter().flatten().copied().collect();
            let distinct: HashSet<Item> = all.iter().copied().collect();
            assert_eq!(
                distinct.len(),
                23,
                "every sample exactly covered (world {world})"
            );
            assert_eq!(
                all.len() - distinct.len(),
                len * world - 23,
                "only padding repeats"
            );
            // Interleaving the shards gives back the global order.
            let global = sampler(&[10, 13], None, true, true, 0, world).global_order(3);
            for (k, it) in global.iter().enumerate() {
                assert_eq!(shards[k % world][k / world], *it);
            }
        }
    }

    #[test]
    fn same_seed_same_order_new_epoch_new_order() {
        let a = sampler(&[50], None, true, true, 0, 1);
        assert_eq!(a.epoch(1), a.epoch(1));
        assert_ne!(a.epoch(1), a.epoch(2));
        let b = ShardedSampler::new(vec![(0..50).collect()], None, 8, true, true, 0, 1).unwrap();
        assert_ne!(a.epoch(1), b.epoch(1));
        let mut sorted = a.epoch(2);
        sorted.sort();
        assert_eq!(
            sorted,
            (0..50)
                .map(|index| Item { source: 0, index })
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn each_rank_knows_its_own_share() {
        for (n, world) in [(8usize, 3usize), (2, 5), (9, 3), (1, 1)] {
            for pad in [false, true] {
                let lens: Vec<usize> = (0..world)
                    .map(|r| {
                        let s = sampler(&[n], None, false, pad, r, world);
                        assert_eq!(s.len_this_rank(), s.epoch(0).len(), "{n} {world} {pad} {r}");
                        s.len_this_rank()
                    })
                    .collect();
                let total: usize = lens.iter().sum();
                assert_eq!(total, if pad { n.div_ceil(world) * world } else { n });
            }
        }
    }

    #[test]
    fn unpadded_evaluation_has_no_duplicates() {
        let all: Vec<Item> = (0..3)
            .flat_map(|r| sampler(&[4, 3], None, false, false, r, 3).epoch(0))
            .collect();
        assert_eq!(all.len(), 7);
        assert_eq!(all.iter().copied().collect::<HashSet<_>>().len(), 7);
    }

    #[test]
    fn weights_set_the_mix() {
        let s = sampler(&[100, 100], Some(vec![3.0, 1.0]), true, true, 0, 1);
        let mut frac = 0.0;
        for e in 0..10 {
            let o = s.global_order(e);
            assert_eq!(o.len(), 200);
            frac += o.iter().filter(|i| i.source == 0).count() as f64 / 2000.0;
        }
        assert!((frac - 0.75).abs() < 0.04, "{frac}");
        let only = sampler(&[5, 5], Some(vec![0.0, 1.0]), true, true, 0, 1);
        assert!(only.global_order(0).iter().all(|i| i.source == 1));
    }

    #[test]
    fn bad_arguments_are_named() {
        let e = ShardedSampler::new(vec![vec![1]], None, 0, true, true, 2, 2).unwrap_err();
        assert!(e.to_string().contains("rank 2"), "{e}");
        let e = ShardedSampler::new(
            vec![vec![1], vec![]],
            Some(vec![1.0, 1.0]),
            0,
            true,
            true,
            0,
            1,
        )
        .unwrap_err();
        assert!(e.to_string().contains("data.weights"), "{e}");
    }

    /// Draws fall in proportion to the weights, skip weight-0 sources, and a draw at the top
    /// of the range, where subtracting the weights in turn leaves a rounding residue, stays in
    /// the last source of positive weight.
    #[test]
    fn draws_never_land_in_a_source_of_weight_zero() {
        let w = [0.1, 0.0, 0.2, 0.0];
        let total: f64 = w.iter().sum();
        assert_eq!(pick_source(&w, 0.0), 0);
        assert_eq!(pick_source(&w, 0.0999), 0);
        assert_eq!(pick_source(&w, 0.1), 2);
        // 0.30000000000000004 − 0.1 − 0.2 > 0: walking on would reach source 3.
        assert!(total - 0.1 - 0.2 > 0.0);
        assert_eq!(pick_source(&w, total), 2);
        assert_eq!(pick_source(&[0.0, 1.0], 0.0), 1);
    }
}
