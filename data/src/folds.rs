//! k-fold cross-validation over a store's training and validation samples: the pool of both
//! splits is dealt into `k` folds of near-equal size (a shuffle seeded by the store's name, so
//! every run, seed and rank sees the same folds); fold `f` validates and the others train. The
//! test split is never part of the pool. With a group pattern, samples are dealt by group
//! (e.g. the patient a slice's name names), so one patient's slices never sit on both sides.

use crate::sampler::derive_seed;
use crate::store::Store;
use crate::{DataError, Result, Split};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A choice of fold: `fold` (0-based) of `folds`, dealing samples one by one, or by the group
/// `group` finds in their source names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folds {
    pub folds: usize,
    pub fold: usize,
    /// A regular expression over source names: its first capture group (else the whole match)
    /// is the sample's group; `None` deals samples one by one.
    pub group: Option<String>,
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

/// The group of each sample of `pool`: the first capture of `pattern` in its source name (the
/// whole match without a capture group). A name it does not match is an error naming it.
fn group_keys(store: &Store, pool: &[usize], pattern: &str) -> Result<Vec<String>> {
    let bad = |m: String| DataError::Config {
        field: "data.fold_group".into(),
        message: m,
    };
    let re = regex::Regex::new(pattern).map_err(|e| bad(format!("{pattern:?}: {e}")))?;
    let names = store.names();
    pool.iter()
        .map(|&i| {
            let c = re.captures(&names[i]).ok_or_else(|| {
                bad(format!(
                    "{}: sample {i}'s name {:?} does not match {pattern:?} (every training and validation sample needs a group)",
                    store.path().display(),
                    names[i]
                ))
            })?;
            Ok(c.get(1).or(c.get(0)).map_or("", |m| m.as_str()).to_string())
        })
        .collect()
}

/// The fold of each sample given its group `keys`: the groups, shuffled by `seed`, each go to
/// the fold with the fewest samples so far (the lowest of equals), so folds stay near-equal in
/// samples while no group is split.
fn assign_groups(keys: &[String], folds: usize, seed: u64, store: &Store) -> Result<Vec<usize>> {
    let mut groups: Vec<&str> = keys.iter().map(String::as_str).collect();
    groups.sort_unstable();
    groups.dedup();
    if groups.len() < folds {
        return Err(DataError::Config {
            field: "data.fold_group".into(),
            message: format!(
                "{}: {} group(s) cannot make {folds} folds",
                store.path().display(),
                groups.len()
            ),
        });
    }
    groups.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut size: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for k in keys {
        *size.entry(k.as_str()).or_default() += 1;
    }
    let mut load = vec![0usize; folds];
    let mut fold_of_group = std::collections::HashMap::new();
    for g in groups {
        let f = (0..folds).min_by_key(|&f| (load[f], f)).unwrap_or(0);
        load[f] += size[g];
        fold_of_group.insert(g, f);
    }
    Ok(keys.iter().map(|k| fold_of_group[k.as_str()]).collect())
}

/// The sample indices of `split` of `store` under `folds` (ascending): the validation fold,
/// the other folds for training, the store's own test split.
pub fn split_indices(store: &Store, split: Split, folds: &Folds) -> Result<Vec<usize>> {
    let Folds {
        folds: k,
        fold,
        ref group,
    } = *folds;
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
    let seed = name_seed(&store.info().name);
    let fold_of = match group {
        None => assign(&pool, k, seed),
        Some(pattern) => assign_groups(&group_keys(store, &pool, pattern)?, k, seed, store)?,
    };
    Ok(pool
        .iter()
        .zip(fold_of)
        .filter(|(_, f)| (*f == fold) == (split == Split::Val))
        .map(|(i, _)| *i)
        .collect())
}

/// The samples of `split` of `store`: its own split, or under `folds` the cross-validation
/// fold ([`split_indices`]).
pub fn samples(store: &Store, split: Split, folds: Option<&Folds>) -> Result<Vec<usize>> {
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
            let f = &Folds {
                folds: 4,
                fold,
                group: None,
            };
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
        let f21 = Folds {
            folds: 21,
            fold: 0,
            group: None,
        };
        let err = split_indices(&store, Split::Val, &f21)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot make 21 folds"), "{err}");

        // By group (here the last digit of the name, as a patient id): no group on both sides,
        // every sample validates once, folds near-equal; a name without a group is named.
        let names = store.names();
        let group = |i: usize| names[i].chars().last().unwrap();
        let grouped = |fold| Folds {
            folds: 4,
            fold,
            group: Some(r"-\d+(\d)$".into()),
        };
        let mut vals = Vec::new();
        for fold in 0..4 {
            let train = split_indices(&store, Split::Train, &grouped(fold)).unwrap();
            let val = split_indices(&store, Split::Val, &grouped(fold)).unwrap();
            assert!((4..=6).contains(&val.len()), "{val:?}");
            for &v in &val {
                assert!(
                    train.iter().all(|&t| group(t) != group(v)),
                    "fold {fold}: group split"
                );
            }
            vals.extend(val);
        }
        vals.sort_unstable();
        assert_eq!(vals, pool, "every sample validates exactly once");
        let odd = Folds {
            group: Some("-00000[01]$".into()),
            ..grouped(0)
        };
        let err = split_indices(&store, Split::Val, &odd)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not match") && err.contains("xray-000002"),
            "{err}"
        );
        let bad = Folds {
            group: Some("(".into()),
            ..grouped(0)
        };
        let err = split_indices(&store, Split::Val, &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("data.fold_group"), "{err}");
    }
}
