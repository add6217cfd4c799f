//! Seeding and small random helpers. None of them panics, whatever the arguments.
//!
//! Every sample has its own [`ChaCha8Rng`], seeded from `(seed, modality, index)` through
//! splitmix64, so a sample does not depend on which thread made it or on the samples before it.

use crate::Modality;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The splitmix64 finaliser: a bijective mix of 64 bits.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable tag per modality (not the enum discriminant, which could be reordered).
fn modality_tag(m: Modality) -> u64 {
    match m {
        Modality::Xray => 0x7872_6179, // "xray"
        Modality::Ct => 0x6374,        // "ct"
        Modality::Endoscopy => 0x656e_646f,
        Modality::Histopathology => 0x6869_7374,
    }
}

/// The 64-bit seed of sample `index`.
pub(crate) fn sample_seed(seed: u64, modality: Modality, index: usize) -> u64 {
    let a = splitmix64(seed);
    let b = splitmix64(a ^ modality_tag(modality));
    splitmix64(b ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// The random stream of sample `index`.
pub(crate) fn sample_rng(seed: u64, modality: Modality, index: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(sample_seed(seed, modality, index))
}

/// Uniform in `[lo, hi)`; `lo` when the range is empty.
pub(crate) fn uni(rng: &mut impl Rng, lo: f32, hi: f32) -> f32 {
    if hi > lo {
        lo + (hi - lo) * rng.random::<f32>()
    } else {
        lo
    }
}

/// Uniform in `[-a, a)`.
pub(crate) fn jitter(rng: &mut impl Rng, a: f32) -> f32 {
    uni(rng, -a, a)
}

/// True with probability `p`.
pub(crate) fn chance(rng: &mut impl Rng, p: f32) -> bool {
    rng.random::<f32>() < p
}

/// Uniform in `0..n`; 0 when `n == 0`.
pub(crate) fn below(rng: &mut impl Rng, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        rng.random_range(0..n)
    }
}

/// One element of a non-empty array.
pub(crate) fn pick<'a, T, const N: usize>(rng: &mut impl Rng, items: &'a [T; N]) -> &'a T {
    const { assert!(N > 0) };
    &items[below(rng, N)]
}

/// An index drawn with the given (non-negative) weights; 0 when they sum to nothing.
pub(crate) fn weighted(rng: &mut impl Rng, weights: &[f32]) -> usize {
    let total: f32 = weights.iter().map(|w| w.max(0.0)).sum();
    if total.is_nan() || total <= 0.0 {
        return 0;
    }
    let mut r = uni(rng, 0.0, total);
    for (i, w) in weights.iter().enumerate() {
        r -= w.max(0.0);
        if r < 0.0 {
            return i;
        }
    }
    weights.len().saturating_sub(1)
}

/// A standard normal variate (Box–Muller).
pub(crate) fn normal(rng: &mut impl Rng) -> f32 {
    let u1 = rng.random::<f32>().max(1e-7);
    let u2 = rng.random::<f32>();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// `k` distinct indices of `0..n` in random order (fewer if `n < k`).
pub(crate) fn choose_distinct(rng: &mut impl Rng, n: usize, k: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    // Partial Fisher–Yates.
    let k = k.min(n);
    for i in 0..k {
        let j = i + below(rng, n - i);
        all.swap(i, j);
    }
    all.truncate(k);
    all
}

/// Probability that an image gets no distractor at all when `max_distractors > 0`.
pub(crate) const NO_DISTRACTOR_RATE: f32 = 0.15;

/// How many distractors an image gets: 0 with probability [`NO_DISTRACTOR_RATE`], else uniform in
/// `1..=max`; never more than `free` (the zones the report does not name).
pub(crate) fn distractor_count(rng: &mut impl Rng, max: usize, free: usize) -> usize {
    if max == 0 || free == 0 || chance(rng, NO_DISTRACTOR_RATE) {
        return 0;
    }
    (1 + below(rng, max)).min(free)
}

/// Draws `n_targets` target zones and the distractor zones among `n_zones` zones, all distinct
/// and uniformly placed. Targets come back sorted (canonical report order).
pub(crate) fn plan_zones(
    rng: &mut impl Rng,
    n_zones: usize,
    n_targets: usize,
    max_distractors: usize,
) -> (Vec<usize>, Vec<usize>) {
    let n_targets = n_targets.min(n_zones);
    let nd = distractor_count(rng, max_distractors, n_zones - n_targets);
    let mut zones = choose_distinct(rng, n_zones, n_targets + nd);
    let distractors = zones.split_off(n_targets);
    zones.sort_unstable();
    (zones, distractors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_by_every_input() {
        let base = sample_seed(0, Modality::Xray, 0);
        assert_ne!(base, sample_seed(1, Modality::Xray, 0));
        assert_ne!(base, sample_seed(0, Modality::Ct, 0));
        assert_ne!(base, sample_seed(0, Modality::Xray, 1));
        assert_eq!(base, sample_seed(0, Modality::Xray, 0));
    }

    #[test]
    fn helpers_tolerate_degenerate_ranges() {
        let mut rng = sample_rng(3, Modality::Ct, 9);
        assert_eq!(uni(&mut rng, 2.0, 1.0), 2.0);
        assert_eq!(below(&mut rng, 0), 0);
        assert_eq!(weighted(&mut rng, &[]), 0);
        assert_eq!(choose_distinct(&mut rng, 3, 5).len(), 3);
        let d = choose_distinct(&mut rng, 10, 4);
        let mut s = d.clone();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), 4);
        assert_eq!(distractor_count(&mut rng, 0, 5), 0);
        for _ in 0..100 {
            assert!(distractor_count(&mut rng, 3, 2) <= 2);
        }
    }
}
