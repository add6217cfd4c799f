//! Multi-level symmetric multi-positive InfoNCE with background negatives, streamed: the N×N
//! logits are never stored, each row (image→text) and each column (text→image) recomputes its
//! N dot products into an N-vector.
//!
//! Inputs: `emb` (3, Lv, N, D) = [target; text; background], `scales` (Lv),
//! `aux` (Lv + 2, N) = [dense group id; group size; has_background per level].
//! Forward output (flat): `[loss Lv | row LSE Lv·N | column LSE Lv·N]`.
//! Backward output (flat): `[d emb 3·Lv·N·D | d scales Lv]`.

use crate::float::{axpy, dot, Real};
use rayon::prelude::*;

/// The logit of a background negative: s·c where valid, −1e4 where not (as the composed loss).
#[inline]
fn background_logit<T: Real>(s: T, c: T, has: T) -> T {
    s * c * has + (has - T::ONE) * T::of(1e4)
}

fn log_sum_exp<T: Real>(x: &[T]) -> T {
    let m = x.iter().fold(x[0], |a, &b| a.fmax(b));
    let mut z = T::ZERO;
    for &v in x {
        z += (v - m).exp();
    }
    m + z.ln()
}

/// The views of one level.
struct Level<'a, T> {
    t: &'a [T],
    u: &'a [T],
    v: &'a [T],
    s: T,
    gid: &'a [T],
    cnt: &'a [T],
    has: &'a [T],
    d: usize,
}

impl<'a, T: Real> Level<'a, T> {
    fn new(
        emb: &'a [T],
        scales: &[T],
        aux: &'a [T],
        l: usize,
        lv: usize,
        n: usize,
        d: usize,
    ) -> Self {
        let part = |e: usize| &emb[(e * lv + l) * n * d..(e * lv + l + 1) * n * d];
        Self {
            t: part(0),
            u: part(1),
            v: part(2),
            s: scales[l],
            gid: &aux[..n],
            cnt: &aux[n..2 * n],
            has: &aux[(2 + l) * n..(3 + l) * n],
            d,
        }
    }
    fn t(&self, i: usize) -> &[T] {
        &self.t[i * self.d..(i + 1) * self.d]
    }
    fn u(&self, j: usize) -> &[T] {
        &self.u[j * self.d..(j + 1) * self.d]
    }
    fn v(&self, j: usize) -> &[T] {
        &self.v[j * self.d..(j + 1) * self.d]
    }
    fn n(&self) -> usize {
        self.gid.len()
    }
    /// (row LSE, row term LSE − s·Σ_pos S / |pos|) of image i against all texts.
    fn row(&self, i: usize) -> (T, T) {
        let mut x = Vec::with_capacity(self.n());
        let mut pos = T::ZERO;
        for j in 0..self.n() {
            let sij = dot(self.t(i), self.u(j));
            if self.gid[j] == self.gid[i] {
                pos += sij;
            }
            x.push(self.s * sij);
        }
        let lse = log_sum_exp(&x);
        (lse, lse - self.s * pos / self.cnt[i])
    }
    /// (column LSE, column term) of text j against all images (and its background).
    fn col(&self, j: usize, background: bool) -> (T, T) {
        let mut x = Vec::with_capacity(self.n() + 1);
        let mut pos = T::ZERO;
        for i in 0..self.n() {
            let sij = dot(self.t(i), self.u(j));
            if self.gid[j] == self.gid[i] {
                pos += sij;
            }
            x.push(self.s * sij);
        }
        if background {
            let c = dot(self.u(j), self.v(j));
            x.push(background_logit(self.s, c, self.has[j]));
        }
        let lse = log_sum_exp(&x);
        (lse, lse - self.s * pos / self.cnt[j])
    }
}

/// The saved forward statistics of one level, for the backward.
struct Saved<'a, T> {
    row_lse: &'a [T],
    col_lse: &'a [T],
    /// upstream gradient · ½ / N
    coef: T,
}

impl<T: Real> Saved<'_, T> {
    /// ∂loss/∂logit_ij.
    #[inline]
    fn grad(&self, lev: &Level<T>, sij: T, i: usize, j: usize) -> T {
        let x = lev.s * sij;
        let p = if lev.gid[i] == lev.gid[j] {
            T::ONE
        } else {
            T::ZERO
        };
        self.coef
            * (((x - self.row_lse[i]).exp() - p / lev.cnt[i])
                + ((x - self.col_lse[j]).exp() - p / lev.cnt[j]))
    }
}

/// The packed forward output.
pub fn forward<T: Real>(
    emb: &[T],
    scales: &[T],
    aux: &[T],
    (lv, n, d): (usize, usize, usize),
    background: bool,
) -> Vec<T> {
    let mut out = vec![T::ZERO; lv + 2 * lv * n];
    for l in 0..lv {
        let lev = Level::new(emb, scales, aux, l, lv, n, d);
        let rows: Vec<(T, T)> = (0..n).into_par_iter().map(|i| lev.row(i)).collect();
        let cols: Vec<(T, T)> = (0..n)
            .into_par_iter()
            .map(|j| lev.col(j, background))
            .collect();
        let mut total = T::ZERO;
        for (k, (r, c)) in rows.iter().zip(&cols).enumerate() {
            out[lv + l * n + k] = r.0;
            out[lv + lv * n + l * n + k] = c.0;
            total += r.1 + c.1;
        }
        out[l] = T::of(0.5) * total / T::of(n as f64);
    }
    out
}

/// The packed backward output; `pack` = `[scales Lv | upstream grad Lv | row LSE Lv·N |
/// column LSE Lv·N]`.
pub fn backward<T: Real>(
    emb: &[T],
    pack: &[T],
    aux: &[T],
    (lv, n, d): (usize, usize, usize),
    background: bool,
) -> Vec<T> {
    let mut out = vec![T::ZERO; 3 * lv * n * d + lv];
    let (demb, dscale) = out.split_at_mut(3 * lv * n * d);
    let (dt_all, rest) = demb.split_at_mut(lv * n * d);
    let (du_all, dv_all) = rest.split_at_mut(lv * n * d);
    let scales = &pack[..lv];
    for l in 0..lv {
        let lev = Level::new(emb, scales, aux, l, lv, n, d);
        let saved = Saved {
            row_lse: &pack[2 * lv + l * n..2 * lv + (l + 1) * n],
            col_lse: &pack[2 * lv + lv * n + l * n..2 * lv + lv * n + (l + 1) * n],
            coef: pack[lv + l] * T::of(0.5) / T::of(n as f64),
        };
        let s = lev.s;
        let level = l * n * d..(l + 1) * n * d;
        let ds_rows: T = dt_all[level.clone()]
            .par_chunks_mut(d)
            .enumerate()
            .map(|(i, dt)| {
                let mut acc = T::ZERO;
                for j in 0..n {
                    let sij = dot(lev.t(i), lev.u(j));
                    let g = saved.grad(&lev, sij, i, j);
                    axpy(s * g, lev.u(j), dt);
                    acc += g * sij;
                }
                acc
            })
            .reduce(|| T::ZERO, |a, b| a + b);
        let ds_cols: T = du_all[level.clone()]
            .par_chunks_mut(d)
            .zip(dv_all[level].par_chunks_mut(d))
            .enumerate()
            .map(|(j, (du, dv))| {
                for i in 0..n {
                    let sij = dot(lev.t(i), lev.u(j));
                    let g = saved.grad(&lev, sij, i, j);
                    axpy(s * g, lev.t(i), du);
                }
                if !background {
                    return T::ZERO;
                }
                let has = lev.has[j];
                let c = dot(lev.u(j), lev.v(j));
                let gb = saved.coef * (background_logit(s, c, has) - saved.col_lse[j]).exp();
                axpy(s * has * gb, lev.v(j), du);
                axpy(s * has * gb, lev.u(j), dv);
                gb * has * c
            })
            .reduce(|| T::ZERO, |a, b| a + b);
        dscale[l] = ds_rows + ds_cols;
    }
    out
}
