//! The streamed per-pair computation the tests check the tiled one against: every row
//! (image→text) and every column (text→image) recomputes its N dot products into an N-vector;
//! nothing N×N is stored.

use super::{background_grad, background_logit, Grads, Level, Saved, Stats};
use crate::float::{axpy, dot, Real};
use rayon::prelude::*;

fn log_sum_exp<T: Real>(x: &[T]) -> T {
    let m = x.iter().fold(x[0], |a, &b| a.fmax(b));
    let mut z = T::ZERO;
    for &v in x {
        z += (v - m).exp();
    }
    m + z.ln()
}

impl<T: Real> Level<'_, T> {
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

/// Rows and columns of every level in one parallel pass.
pub(super) fn forward<T: Real>(levels: &[Level<T>], background: bool) -> Stats<T> {
    let (lv, n) = (levels.len(), levels.first().map_or(0, Level::n));
    // k < Lv·N: row k % N of level k / N; then the columns likewise.
    let mut stats: Vec<(T, T)> = (0..2 * lv * n)
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
    let cols = stats.split_off(lv * n);
    (stats, cols)
}

/// The rows (∂target) and the columns (∂text, ∂background) of every level in two parallel
/// passes, each recomputing its N dot products.
pub(super) fn backward<T: Real>(
    levels: &[Level<T>],
    saved: &[Saved<T>],
    grads: Grads<T>,
    dscale: &mut [T],
    background: bool,
) {
    let n = levels.first().map_or(0, Level::n);
    let d = levels.first().map_or(0, |l| l.d);
    if n == 0 || d == 0 {
        return;
    }
    // ∂target rows and Σ_j G_ij S_ij, per (level, row).
    let ds_rows: Vec<T> = grads
        .dt
        .par_chunks_mut(d)
        .enumerate()
        .map(|(k, dt)| {
            let (lev, saved, i) = (&levels[k / n], &saved[k / n], k % n);
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
    let ds_cols: Vec<T> = grads
        .du
        .par_chunks_mut(d)
        .zip(grads.dv.par_chunks_mut(d))
        .enumerate()
        .map(|(k, (du, dv))| {
            let (lev, saved, j) = (&levels[k / n], &saved[k / n], k % n);
            for i in 0..n {
                let sij = dot(lev.t(i), lev.u(j));
                let g = saved.grad(lev, sij, i, j);
                axpy(lev.s * g, lev.t(i), du);
            }
            background_grad(lev, saved, j, du, dv, background)
        })
        .collect();
    for (k, (r, c)) in ds_rows.iter().zip(&ds_cols).enumerate() {
        dscale[k / n] += *r + *c;
    }
}
