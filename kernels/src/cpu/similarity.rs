//! Pixel–text cosine with fused pixel normalisation.
//!
//! Forward output (flat): `[cos B·HW | inverse pixel norm B·HW]`; backward output (flat):
//! `[dp B·D·HW | du B·D]`.

use super::PIXEL_CHUNK;
use crate::float::{dot, Real};
use rayon::prelude::*;

/// p: (B, D, HW), u: (B, D) → `[cos | 1/‖p_q‖]`, cos_q = Σ_d p_dq u_d / sqrt(Σ_d p_dq² + ε).
pub fn forward<T: Real>(p: &[T], u: &[T], b: usize, d: usize, hw: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; 2 * b * hw];
    let (cos, inv) = out.split_at_mut(b * hw);
    cos.par_chunks_mut(hw)
        .zip(inv.par_chunks_mut(hw))
        .enumerate()
        .for_each(|(i, (ci, ni))| {
            let pi = &p[i * d * hw..(i + 1) * d * hw];
            let ui = &u[i * d..(i + 1) * d];
            ci.par_chunks_mut(PIXEL_CHUNK)
                .zip(ni.par_chunks_mut(PIXEL_CHUNK))
                .enumerate()
                .for_each(|(c, (cq, nq))| {
                    let q0 = c * PIXEL_CHUNK;
                    let len = cq.len();
                    for (row, &uk) in pi.chunks_exact(hw).zip(ui) {
                        for (j, x) in row[q0..q0 + len].iter().enumerate() {
                            nq[j] += *x * *x;
                            cq[j] += *x * uk;
                        }
                    }
                    for (c, n) in cq.iter_mut().zip(nq.iter_mut()) {
                        *n = T::ONE / (*n + T::of(crate::NORM_EPS)).sqrt();
                        *c *= *n;
                    }
                });
        });
    out
}

/// From p, u and `pack` = `[g B·HW | cos B·HW | 1/‖p_q‖ B·HW]` (g the gradient of the cosine
/// map): dp_dq = a_q u_d − c_q p_dq with a = g/n, c = g·cos/n², and du_d = Σ_q a_q p_dq.
pub fn backward<T: Real>(p: &[T], u: &[T], pack: &[T], b: usize, d: usize, hw: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; b * d * hw + b * d];
    let (dp, du) = out.split_at_mut(b * d * hw);
    let (g, rest) = pack.split_at(b * hw);
    let (cos, inv) = rest.split_at(b * hw);
    dp.par_chunks_mut(d * hw)
        .zip(du.par_chunks_mut(d))
        .enumerate()
        .for_each(|(i, (dpi, dui))| {
            let s = i * hw..(i + 1) * hw;
            let a: Vec<T> = g[s.clone()]
                .iter()
                .zip(&inv[s.clone()])
                .map(|(g, n)| *g * *n)
                .collect();
            let c: Vec<T> = a
                .iter()
                .zip(&cos[s.clone()])
                .zip(&inv[s])
                .map(|((a, cs), n)| *a * *cs * *n)
                .collect();
            let pi = &p[i * d * hw..(i + 1) * d * hw];
            let ui = &u[i * d..(i + 1) * d];
            dpi.par_chunks_mut(hw)
                .zip(dui.par_iter_mut())
                .zip(pi.par_chunks_exact(hw))
                .zip(ui.par_iter())
                .with_min_len(8)
                .for_each(|(((out, du), row), &uk)| {
                    *du = dot(row, &a);
                    for q in 0..hw {
                        out[q] = a[q] * uk - c[q] * row[q];
                    }
                });
        });
    out
}
