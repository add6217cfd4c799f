//! Paired comparison of two models scored on the same images (`tmca compare`): the mean
//! difference with a paired bootstrap confidence interval, and the two-sided Wilcoxon
//! signed-rank test.
//!
//! The test follows Wilcoxon's treatment of zeros (pairs with equal scores are dropped) and
//! ranks ties by their average. With at most [`EXACT_MAX`] non-zero differences and no ties the
//! p-value comes from the exact null distribution of the signed-rank sum, else from the normal
//! approximation with the tie correction of the variance and no continuity correction: the
//! values `scipy.stats.wilcoxon(d[d != 0], method="exact" | "asymptotic", correction=False)`
//! gives (checked in CI).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Largest number of non-zero differences tested with the exact distribution.
pub const EXACT_MAX: usize = 50;

/// The Wilcoxon signed-rank test of paired differences.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Wilcoxon {
    /// Non-zero differences tested.
    pub n: usize,
    /// Rank sums of the positive and negative differences; the statistic is their minimum.
    pub rank_sum_plus: f64,
    pub rank_sum_minus: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// Exact distribution (else the normal approximation).
    pub exact: bool,
}

/// Average ranks (1-based) of `v` and the sizes of its groups of ties.
fn average_ranks(v: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut ties = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = r;
        }
        ties.push(j - i + 1);
        i = j + 1;
    }
    (ranks, ties)
}

/// Number of subsets of {1, …, n} with each rank sum 0 ..= n(n+1)/2 (as f64: exact up to
/// 2^53, and n ≤ 50 keeps every count below 2^50).
fn rank_sum_counts(n: usize) -> Vec<f64> {
    let max = n * (n + 1) / 2;
    let mut c = vec![0.0; max + 1];
    c[0] = 1.0;
    for i in 1..=n {
        for k in (i..=i * (i + 1) / 2).rev() {
            c[k] += c[k - i];
        }
    }
    c
}

/// The test of the differences `d` (`b − a` per image); `None` when every difference is 0.
pub fn wilcoxon(d: &[f64]) -> Option<Wilcoxon> {
    let nz: Vec<f64> = d.iter().copied().filter(|x| *x != 0.0).collect();
    let n = nz.len();
    if n == 0 {
        return None;
    }
    let abs: Vec<f64> = nz.iter().map(|x| x.abs()).collect();
    let (ranks, ties) = average_ranks(&abs);
    let plus: f64 = nz
        .iter()
        .zip(&ranks)
        .filter(|(x, _)| **x > 0.0)
        .map(|(_, r)| r)
        .sum();
    let minus: f64 = nz
        .iter()
        .zip(&ranks)
        .filter(|(x, _)| **x < 0.0)
        .map(|(_, r)| r)
        .sum();
    let has_ties = ties.iter().any(|&t| t > 1);
    let nf = n as f64;
    let (p, exact) = if n <= EXACT_MAX && !has_ties {
        let c = rank_sum_counts(n);
        let total: f64 = c.iter().sum();
        let k = plus.round() as usize;
        let cdf: f64 = c[..=k].iter().sum::<f64>() / total;
        let sf: f64 = c[k..].iter().sum::<f64>() / total;
        ((2.0 * cdf.min(sf)).min(1.0), true)
    } else {
        let mean = nf * (nf + 1.0) / 4.0;
        let tie: f64 = ties.iter().map(|&t| (t * t * t - t) as f64).sum();
        let var = (nf * (nf + 1.0) * (2.0 * nf + 1.0) - tie / 2.0) / 24.0;
        let p = if var > 0.0 {
            let z = (plus - mean) / var.sqrt();
            libm::erfc(z.abs() / std::f64::consts::SQRT_2)
        } else {
            1.0
        };
        (p.min(1.0), false)
    };
    Some(Wilcoxon {
        n,
        // `+ 0.0`: an empty sum is 0, not the -0 a sum of negated ranks can give.
        rank_sum_plus: plus + 0.0,
        rank_sum_minus: minus + 0.0,
        p_value: p,
        exact,
    })
}

/// A paired comparison of scores `a` and `b` of the same images.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Paired {
    pub images: usize,
    pub mean_a: f64,
    pub mean_b: f64,
    /// mean(b − a) and its 95% paired-bootstrap percentile interval.
    pub mean_diff: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    /// Images where b scores better (higher; lower for a distance), equal, worse.
    pub b_better: usize,
    pub equal: usize,
    pub b_worse: usize,
    pub wilcoxon: Option<Wilcoxon>,
}

/// Compares `b` against `a` (same length, same images in the same order) with `resamples`
/// bootstrap draws from a generator seeded by `seed`. `lower_is_better` for distances (HD95):
/// it only decides which images count as better and worse.
pub fn compare(a: &[f64], b: &[f64], resamples: usize, seed: u64, lower_is_better: bool) -> Paired {
    let n = a.len().min(b.len());
    let d: Vec<f64> = (0..n).map(|i| b[i] - a[i]).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let mean_diff = mean(&d);
    let (ci_low, ci_high) = if n == 0 || resamples == 0 {
        (f64::NAN, f64::NAN)
    } else {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut means: Vec<f64> = (0..resamples)
            .map(|_| (0..n).map(|_| d[rng.random_range(0..n)]).sum::<f64>() / n as f64)
            .collect();
        means.sort_by(f64::total_cmp);
        let at = |q: f64| means[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
        (at(0.025), at(0.975))
    };
    Paired {
        images: n,
        mean_a: mean(&a[..n]),
        mean_b: mean(&b[..n]),
        mean_diff,
        ci_low,
        ci_high,
        b_better: d
            .iter()
            .filter(|x| (**x > 0.0) != lower_is_better && **x != 0.0)
            .count(),
        equal: d.iter().filter(|x| **x == 0.0).count(),
        b_worse: d
            .iter()
            .filter(|x| (**x < 0.0) != lower_is_better && **x != 0.0)
            .count(),
        wilcoxon: wilcoxon(&d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_ties() {
        let (r, t) = average_ranks(&[0.3, 0.1, 0.3, 0.2]);
        assert_eq!(r, [3.5, 1.0, 3.5, 2.0]);
        assert_eq!(t, [1, 1, 2]);
    }

    #[test]
    fn exact_distribution_counts_subsets() {
        // n = 3: sums 0..6 of subsets of {1,2,3}: 1,1,1,2,1,1,1.
        assert_eq!(rank_sum_counts(3), [1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0]);
        assert_eq!(rank_sum_counts(20).iter().sum::<f64>(), (1u64 << 20) as f64);
    }

    #[test]
    fn known_values() {
        // All five differences positive: P(W+ = 15) = 1/32, two-sided 2/32.
        let w = wilcoxon(&[0.1, 0.2, 0.3, 0.4, 0.5]).unwrap();
        assert!(w.exact);
        assert_eq!((w.rank_sum_plus, w.rank_sum_minus), (15.0, 0.0));
        assert!((w.p_value - 0.0625).abs() < 1e-15);
        // Zeros are dropped; a tie switches to the normal approximation.
        let w = wilcoxon(&[0.0, 0.1, -0.1, 0.2]).unwrap();
        assert!(!w.exact);
        assert_eq!(w.n, 3);
        assert!(wilcoxon(&[0.0, 0.0]).is_none());
    }

    #[test]
    fn bootstrap_interval_brackets_the_mean() {
        let a: Vec<f64> = (0..200).map(|i| (i % 7) as f64 / 10.0).collect();
        let b: Vec<f64> = a
            .iter()
            .enumerate()
            .map(|(i, x)| x + 0.05 + ((i % 5) as f64 - 2.0) / 100.0)
            .collect();
        let p = compare(&a, &b, 2000, 1, false);
        assert!((p.mean_diff - 0.05).abs() < 1e-12);
        assert!(p.ci_low <= p.mean_diff && p.mean_diff <= p.ci_high);
        assert!(p.ci_high - p.ci_low < 0.01, "{p:?}");
        assert_eq!(p.b_better + p.equal + p.b_worse, 200);
        assert_eq!(compare(&a, &b, 2000, 1, false), p, "seeded");
        let lower = compare(&a, &b, 2000, 1, true);
        assert_eq!(
            (lower.b_better, lower.equal, lower.b_worse),
            (p.b_worse, p.equal, p.b_better)
        );
        assert_eq!(lower.mean_diff, p.mean_diff);
    }
}
