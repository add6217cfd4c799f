//! Masked pooling with fused pixel normalisation.
//!
//! Forward output (flat): `[target B·D | background B·D | has_background B | has_target B |
//! k_target B | k_background B]`, where k = 1 / (count · ‖mean‖) is what the backward needs.

use super::PIXEL_CHUNK;
use crate::float::{dot, Real};
use rayon::prelude::*;

/// Per-sample statistics besides the two embeddings.
#[derive(Clone, Copy)]
struct Stats<T> {
    has_background: T,
    has_target: T,
    k_target: T,
    k_background: T,
}

/// 1 / sqrt(Σ_d p_dq² + ε) for every pixel q of one sample `p` (D × HW).
fn inverse_norms<T: Real>(p: &[T], d: usize, hw: usize) -> Vec<T> {
    let mut inv = vec![T::ZERO; hw];
    inv.par_chunks_mut(PIXEL_CHUNK)
        .enumerate()
        .for_each(|(c, acc)| {
            let q0 = c * PIXEL_CHUNK;
            let len = acc.len();
            for row in p.chunks_exact(hw).take(d) {
                for (a, x) in acc.iter_mut().zip(&row[q0..q0 + len]) {
                    *a += *x * *x;
                }
            }
            let eps = T::of(crate::NORM_EPS);
            for a in acc.iter_mut() {
                *a = T::ONE / (*a + eps).sqrt();
            }
        });
    inv
}

/// Σ_q w_q z_dq / max(Σ w, 1e-6), normalised, into `out`; returns k = 1 / (count · ‖mean‖).
fn pooled<T: Real>(p: &[T], w: &[T], count: T, out: &mut [T], hw: usize) -> T {
    out.par_iter_mut()
        .zip(p.par_chunks_exact(hw))
        .with_min_len(8)
        .for_each(|(o, row)| *o = dot(row, w));
    let c = count.fmax(T::of(1e-6));
    let mut r2 = T::ZERO;
    for o in out.iter_mut() {
        *o /= c;
        r2 += *o * *o;
    }
    let r = (r2 + T::of(crate::NORM_EPS)).sqrt();
    for o in out.iter_mut() {
        *o /= r;
    }
    T::ONE / (c * r)
}

fn sample<T: Real>(p: &[T], m: &[T], target: &mut [T], background: &mut [T]) -> Stats<T> {
    let (d, hw) = (target.len(), m.len());
    let inv = inverse_norms(p, d, hw);
    let (mut area, mut rest) = (T::ZERO, T::ZERO);
    for &x in m {
        area += x;
        rest += T::ONE - x;
    }
    let has_t = area > T::ZERO;
    let wt: Vec<T> = if has_t {
        m.iter().zip(&inv).map(|(a, b)| *a * *b).collect()
    } else {
        inv.clone()
    };
    let wb: Vec<T> = m
        .iter()
        .zip(&inv)
        .map(|(a, b)| (T::ONE - *a) * *b)
        .collect();
    let count_t = if has_t { area } else { T::of(hw as f64) };
    let k_target = pooled(p, &wt, count_t, target, hw);
    let k_background = pooled(p, &wb, rest, background, hw);
    let flag = |b: bool| if b { T::ONE } else { T::ZERO };
    Stats {
        has_background: flag(has_t && rest > T::ZERO),
        has_target: flag(has_t),
        k_target,
        k_background,
    }
}

/// p: (B, D, HW), m: (B, HW) → the packed forward output.
pub fn forward<T: Real>(p: &[T], m: &[T], b: usize, d: usize, hw: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; 2 * b * d + 4 * b];
    let (emb, stats_out) = out.split_at_mut(2 * b * d);
    let (target, background) = emb.split_at_mut(b * d);
    let stats: Vec<Stats<T>> = target
        .par_chunks_mut(d)
        .zip(background.par_chunks_mut(d))
        .enumerate()
        .map(|(i, (t, g))| {
            sample(
                &p[i * d * hw..(i + 1) * d * hw],
                &m[i * hw..(i + 1) * hw],
                t,
                g,
            )
        })
        .collect();
    for (i, s) in stats.iter().enumerate() {
        stats_out[i] = s.has_background;
        stats_out[b + i] = s.has_target;
        stats_out[2 * b + i] = s.k_target;
        stats_out[3 * b + i] = s.k_background;
    }
    out
}

/// dp (B, D, HW) from p, m and `ds` = `[ds_target B·D | ds_background B·D | has_target B]`, the
/// gradients with respect to the un-normalised pooled sums Σ w z (count and norm already applied).
pub fn backward<T: Real>(p: &[T], m: &[T], ds: &[T], b: usize, d: usize, hw: usize) -> Vec<T> {
    let mut dp = vec![T::ZERO; b * d * hw];
    dp.par_chunks_mut(d * hw).enumerate().for_each(|(i, dpi)| {
        let pi = &p[i * d * hw..(i + 1) * d * hw];
        let mi = &m[i * hw..(i + 1) * hw];
        let dst = &ds[i * d..(i + 1) * d];
        let dsb = &ds[b * d + i * d..b * d + (i + 1) * d];
        let has_t = ds[2 * b * d + i] > T::ZERO;
        // Per pixel: a_t = w_t/n, a_b = w_b/n, c = (w_t p·ds_t + w_b p·ds_b)/n³ (the three
        // vectors first accumulate Σp², p·ds_t and p·ds_b).
        let mut at = vec![T::ZERO; hw];
        let mut ab = vec![T::ZERO; hw];
        let mut cc = vec![T::ZERO; hw];
        at.par_chunks_mut(PIXEL_CHUNK)
            .zip(ab.par_chunks_mut(PIXEL_CHUNK))
            .zip(cc.par_chunks_mut(PIXEL_CHUNK))
            .enumerate()
            .for_each(|(c, ((n2, al), be))| {
                let q0 = c * PIXEL_CHUNK;
                let len = n2.len();
                for (k, row) in pi.chunks_exact(hw).enumerate() {
                    let (gt, gb) = (dst[k], dsb[k]);
                    for (j, x) in row[q0..q0 + len].iter().enumerate() {
                        n2[j] += *x * *x;
                        al[j] += *x * gt;
                        be[j] += *x * gb;
                    }
                }
                for j in 0..len {
                    let inv = T::ONE / (n2[j] + T::of(crate::NORM_EPS)).sqrt();
                    let mq = mi[q0 + j];
                    let wt = if has_t { mq } else { T::ONE };
                    let wb = T::ONE - mq;
                    let c3 = (wt * al[j] + wb * be[j]) * inv * inv * inv;
                    n2[j] = wt * inv;
                    al[j] = wb * inv;
                    be[j] = c3;
                }
            });
        dpi.par_chunks_mut(hw)
            .zip(pi.par_chunks_exact(hw))
            .enumerate()
            .with_min_len(8)
            .for_each(|(k, (out, row))| {
                let (gt, gb) = (dst[k], dsb[k]);
                for q in 0..hw {
                    out[q] = at[q] * gt + ab[q] * gb - cc[q] * row[q];
                }
            });
    });
    dp
}
