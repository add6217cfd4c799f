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

/// The packed forward output. Rows and columns of every level run in one parallel pass.
pub fn forward<T: Real>(
    emb: &[T],
    scales: &[T],
    aux: &[T],
    (lv, n, d): (usize, usize, usize),
    background: bool,
) -> Vec<T> {
    let levels: Vec<Level<T>> = (0..lv)
        .map(|l| Level::new(emb, scales, aux, l, lv, n, d))
        .collect();
    // k < Lv·N: row k % N of level k / N; then the columns likewise.
    let stats: Vec<(T, T)> = (0..2 * lv * n)
        .into_par_iter()
        .map(|k| {
            let (l, idx) = ((k % (lv * n)) / n, k % n);
            if k < lv * n {
                levels[l].row(idx)
            } else {
                levels[l].col(idx, background)
            }
        })
        .collect();
    let mut out = vec![T::ZERO; lv + 2 * lv * n];
    for (k, (lse, term)) in stats.iter().enumerate() {
        out[lv + k] = *lse;
        out[(k % (lv * n)) / n] += *term;
    }
    for o in &mut out[..lv] {
        *o = T::of(0.5) * *o / T::of(n as f64);
    }
    out
}

/// The packed backward output; `pack` = `[scales Lv | upstream grad Lv | row LSE Lv·N |
/// column LSE Lv·N]`. The rows (∂target) and the columns (∂text, ∂background) of every level
/// run in two parallel passes.
pub fn backward<T: Real>(
    emb: &[T],
    pack: &[T],
    aux: &[T],
    (lv, n, d): (usize, usize, usize),
    background: bool,
) -> Vec<T> {
    let scales = &pack[..lv];
    let levels: Vec<(Level<T>, Saved<T>)> = (0..lv)
        .map(|l| {
            let saved = Saved {
                row_lse: &pack[2 * lv + l * n..2 * lv + (l + 1) * n],
                col_lse: &pack[2 * lv + lv * n + l * n..2 * lv + lv * n + (l + 1) * n],
                coef: pack[lv + l] * T::of(0.5) / T::of(n as f64),
            };
            (Level::new(emb, scales, aux, l, lv, n, d), saved)
        })
        .collect();
    let mut out = vec![T::ZERO; 3 * lv * n * d + lv];
    let (demb, dscale) = out.split_at_mut(3 * lv * n * d);
    let (dt_all, rest) = demb.split_at_mut(lv * n * d);
    let (du_all, dv_all) = rest.split_at_mut(lv * n * d);
    // ∂target rows and Σ_j G_ij S_ij, per (level, row).
    let ds_rows: Vec<T> = dt_all
        .par_chunks_mut(d)
        .enumerate()
        .map(|(k, dt)| {
            let ((lev, saved), i) = (&levels[k / n], k % n);
            let mut acc = T::ZERO;
            for j in 0..n {
                let sij = dot(lev.t(i), lev.u(j));
                let g = saved.grad(lev, sij, i, j);
                axpy(lev.s * g, lev.u(j), dt);
                acc += g * sij;
            }
            acc
        })
        .collect();
    // ∂text, ∂background columns and the background's ∂scale, per (level, column).
    let ds_cols: Vec<T> = du_all
        .par_chunks_mut(d)
        .zip(dv_all.par_chunks_mut(d))
        .enumerate()
        .map(|(k, (du, dv))| {
            let ((lev, saved), j) = (&levels[k / n], k % n);
            let s = lev.s;
            for i in 0..n {
                let sij = dot(lev.t(i), lev.u(j));
                let g = saved.grad(lev, sij, i, j);
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
        .collect();
    for (k, (r, c)) in ds_rows.iter().zip(&ds_cols).enumerate() {
        dscale[k / n] += *r + *c;
    }
    out
}
