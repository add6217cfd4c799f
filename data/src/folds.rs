//! k-fold cross-validation over a store's training and validation samples: the pool of both
//! splits is dealt into `k` folds of near-equal size (a shuffle seeded by the store's name, so
//! every run, seed and rank sees the same folds); fold `f` validates and the others train. The
//! test split is never part of the pool.

use crate::sampler::derive_seed;
use crate::store::Store;
use crate::{DataError, Result, Split};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A choice of fold: `fold` (0-based) of `folds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Folds {
    pub folds: usize,
    pub fold: usize,
}

fn name_seed(name: &str) -> u64 {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    derive_seed(&[0xF01D, h])
}

/// Which fold each position of `pool` (ascending sample indices) falls in.
pub fn assign(pool: &[usize], folds: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..pool.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut fold_of = vec![0; pool.len()];
    for (rank, &pos) in order.iter().enumerate() {
        fold_of[pos] = rank % folds;
    }
    fold_of
}

/// The sample indices of `split` of `store` under `folds` (ascending): the validation fold,
/// the other folds for training, the store's own test split.
pub fn split_indices(store: &Store, split: Split, folds: Folds) -> Result<Vec<usize>> {
    let Folds { folds: k, fold } = folds;
    let bad = |m: String| DataError::Config {
        field: "data.folds".into(),
        message: m,
    };
    if k < 2 || fold >= k {
        return Err(bad(format!(
            "fold {fold} of {k}: need folds >= 2 and fold < folds"
        )));
    }
    if split == Split::Test {
        return store.require_split(Split::Test);
    }
    let mut pool = store.split_indices(Split::Train);
    pool.extend(store.split_indices(Split::Val));
    pool.sort_unstable();
    if pool.len() < k {
        return Err(bad(format!(
            "{}: {} training and validation samples cannot make {k} folds",
            store.path().display(),
            pool.len()
        )));
    }
    let fold_of = assign(&pool, k, name_seed(&store.info().name));
    Ok(pool
        .iter()
        .zip(fold_of)
        .filter(|(_, f)| (*f == fold) == (split == Split::Val))
        .map(|(i, _)| *i)
        .collect())
}

/// The samples of `split` of `store`: its own split, or under `folds` the cross-validation
/// fold ([`split_indices`]).
pub fn samples(store: &Store, split: Split, folds: Option<Folds>) -> Result<Vec<usize>> {
    match folds {
        Some(f) => split_indices(store, split, f),
        None => store.require_split(split),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_partition_the_pool_evenly_and_repeatably() {
        let pool: Vec<usize> = (0..23).collect();
        let a = assign(&pool, 5, 9);
        assert_eq!(a, assign(&pool, 5, 9), "seeded");
        assert_ne!(a, assign(&pool, 5, 10));
        let sizes: Vec<usize> = (0..5)
            .map(|f| a.iter().filter(|x| **x == f).count())
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), 23);
        assert!(sizes.iter().all(|s| *s == 4 || *s == 5), "{sizes:?}");
    }

    #[test]
    fn a_stores_folds_cover_train_and_val_and_leave_test_alone() {
        use crate::synth::{ensure_store, SynthConfig};
        let dir = tempfile::tempdir().unwrap();
        let mut c = SynthConfig::new(crate::Modality::Xray);
        (c.height, c.width, c.n_train, c.n_val, c.n_test) = (32, 32, 14, 6, 5);
        let path = dir.path().join("s");
        ensure_store(&c, &path, &crate::NoProgress).unwrap();
        let store = Store::open(&path).unwrap();
        let mut pool = store.split_indices(Split::Train);
        pool.extend(store.split_indices(Split::Val));
        pool.sort_unstable();
        let mut vals = Vec::new();
        for fold in 0..4 {
            let f = Folds { folds: 4, fold };
            let train = split_indices(&store, Split::Train, f).unwrap();
            let val = split_indices(&store, Split::Val, f).unwrap();
            assert!(val.len() == 5, "20 samples in 4 folds: {val:?}");
            let mut all: Vec<usize> = train.iter().chain(&val).copied().collect();
            all.sort_unstable();
            assert_eq!(all, pool, "fold {fold}: train and val partition the pool");
            assert_eq!(
                split_indices(&store, Split::Test, f).unwrap(),
                store.split_indices(Split::Test)
            );
            vals.extend(val);
        }
        vals.sort_unstable();
        assert_eq!(vals, pool, "every sample validates exactly once");
        let err = split_indices(&store, Split::Val, Folds { folds: 21, fold: 0 })
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot make 21 folds"), "{err}");
    }
}
