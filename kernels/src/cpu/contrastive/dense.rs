//! The dense path: each level's similarity matrix S = V⁺Uᵀ is one matrix product (the `gemm`
//! crate candle's CPU matmul uses) into an N×N scratch. The forward takes the row log-sum-exps
//! in one sweep over S's rows and the column ones in one sweep over blocks of its columns; the
//! backward turns S in place into s·G (G = ∂loss/∂logit), so ∂target = s·G·U and
//! ∂text = s·Gᵀ·V⁺ are two more products. Levels run in parallel, and inside a level the rows,
//! the column blocks and the products.

use super::{background_grad, background_logit, Grads, Level, Saved, Stats};
use crate::float::{dot, masked_sum, max_scaled, sum_exp, Real, LANES};
use crate::simd::avx2_dispatch;
use gemm::Parallelism;
use rayon::prelude::*;
use std::ops::Range;

/// Columns per block of the column sweep (a few cache lines of each row).
const COL_BLOCK: usize = 64;

/// Entries of S per parallel job in the row and column sweeps.
const MIN_JOB: usize = 1 << 14;

/// The products' own parallelism: none when the levels alone keep every thread busy.
fn parallelism(lv: usize) -> Parallelism {
    if lv >= rayon::current_num_threads() {
        Parallelism::None
    } else {
        Parallelism::Rayon(0)
    }
}

/// dst (m×n, row-major) = alpha · A · B with A(i, p) = `lhs[i·lrs + p·lcs]` and
/// B(p, j) = `rhs[p·rrs + j·rcs]`.
#[allow(clippy::too_many_arguments)]
fn matmul<T: Real>(
    dst: &mut [T],
    (m, n, k): (usize, usize, usize),
    lhs: &[T],
    (lrs, lcs): (usize, usize),
    rhs: &[T],
    (rrs, rcs): (usize, usize),
    alpha: T,
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst[..m * n].fill(T::ZERO);
        return;
    }
    // The last element each operand is read or written at must lie inside its slice.
    assert!(
        dst.len() >= m * n
            && lhs.len() > (m - 1) * lrs + (k - 1) * lcs
            && rhs.len() > (k - 1) * rrs + (n - 1) * rcs,
        "matmul operands out of bounds"
    );
    // SAFETY: every index the product touches is in bounds (checked above), `dst` does not
    // alias the operands (it is a unique borrow), and `T` is f32 or f64, which gemm supports.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            lcs as isize,
            lrs as isize,
            rhs.as_ptr(),
            rcs as isize,
            rrs as isize,
            T::ZERO,
            alpha,
            false,
            false,
            false,
            par,
        )
    }
}

/// S = V⁺Uᵀ of one level into `dst` (N×N, row i = image i against every text).
fn similarities<T: Real>(lev: &Level<T>, dst: &mut [T], par: Parallelism) {
    let (n, d) = (lev.n(), lev.d);
    matmul(dst, (n, n, d), lev.t, (d, 1), lev.u, (1, d), T::ONE, par);
}

/// Rows per parallel job in a sweep over N-long rows.
fn rows_per_job(n: usize) -> usize {
    (MIN_JOB / n.max(1)).max(1)
}

/// (LSE, term) of every row of one level's S: image i against all texts.
fn row_stats<T: Real>(lev: &Level<T>, sm: &[T]) -> Vec<(T, T)> {
    let n = lev.n();
    sm.par_chunks(n)
        .with_min_len(rows_per_job(n))
        .enumerate()
        .map(|(i, row)| row_stat(lev, row, i))
        .collect()
}

avx2_dispatch! {
    /// (LSE, term) of row i.
    fn row_stat<T: Real>(lev: &Level<T>, row: &[T], i: usize) -> (T, T) = row_stat_impl;
}

#[inline(always)]
fn row_stat_impl<T: Real>(lev: &Level<T>, row: &[T], i: usize) -> (T, T) {
    let s = lev.s;
    let m = max_scaled(row, s);
    let z = sum_exp(row, s, m);
    let pos = masked_sum(row, lev.gid, lev.gid[i]);
    let lse = m + z.ln();
    (lse, lse - s * pos / lev.cnt[i])
}

/// (LSE, term) of every column of one level's S: text j against all images and its background.
fn col_stats<T: Real>(lev: &Level<T>, sm: &[T], background: bool) -> Vec<(T, T)> {
    let n = lev.n();
    let blocks = n.div_ceil(COL_BLOCK);
    let per_block: Vec<Vec<(T, T)>> = (0..blocks)
        .into_par_iter()
        .with_min_len((MIN_JOB / (COL_BLOCK * n)).max(1))
        .map(|b| {
            col_block(
                lev,
                sm,
                b * COL_BLOCK..((b + 1) * COL_BLOCK).min(n),
                background,
            )
        })
        .collect();
    per_block.into_iter().flatten().collect()
}

avx2_dispatch! {
    /// (LSE, term) of the columns `cols`.
    fn col_block<T: Real>(
        lev: &Level<T>,
        sm: &[T],
        cols: Range<usize>,
        background: bool,
    ) -> Vec<(T, T)> = col_block_impl;
}

#[inline(always)]
fn col_block_impl<T: Real>(
    lev: &Level<T>,
    sm: &[T],
    cols: Range<usize>,
    background: bool,
) -> Vec<(T, T)> {
    let (n, s) = (lev.n(), lev.s);
    let block = |i: usize| &sm[i * n + cols.start..i * n + cols.end];
    let bg: Vec<T> = if background {
        cols.clone()
            .map(|j| background_logit(s, dot(lev.u(j), lev.v(j)), lev.has[j]))
            .collect()
    } else {
        Vec::new()
    };
    let mut m: Vec<T> = if background {
        bg.clone()
    } else {
        block(0).iter().map(|&x| s * x).collect()
    };
    for i in 0..n {
        for (mj, &x) in m.iter_mut().zip(block(i)) {
            *mj = mj.fmax(s * x);
        }
    }
    let mut z: Vec<T> = if background {
        bg.iter()
            .zip(&m)
            .map(|(&b, &mj)| (b - mj).fast_exp())
            .collect()
    } else {
        vec![T::ZERO; cols.len()]
    };
    let mut pos = vec![T::ZERO; cols.len()];
    let keys = &lev.gid[cols.clone()];
    for i in 0..n {
        let gi = lev.gid[i];
        for (((zk, pk), (&x, &mk)), &g) in z
            .iter_mut()
            .zip(&mut pos)
            .zip(block(i).iter().zip(&m))
            .zip(keys)
        {
            *zk += (s * x - mk).fast_exp();
            *pk += if g == gi { x } else { T::ZERO };
        }
    }
    cols.clone()
        .enumerate()
        .map(|(k, j)| {
            let lse = m[k] + z[k].ln();
            (lse, lse - s * pos[k] / lev.cnt[j])
        })
        .collect()
}

/// The per-(level, row) and per-(level, column) (LSE, term) pairs, level-major.
pub(super) fn forward<T: Real>(levels: &[Level<T>], background: bool) -> Stats<T> {
    let n = levels.first().map_or(0, Level::n);
    let par = parallelism(levels.len());
    let stats: Vec<Stats<T>> = levels
        .par_iter()
        .map(|lev| {
            let mut sm = vec![T::ZERO; n * n];
            similarities(lev, &mut sm, par);
            (row_stats(lev, &sm), col_stats(lev, &sm, background))
        })
        .collect();
    let (rows, cols): (Vec<_>, Vec<_>) = stats.into_iter().unzip();
    (rows.concat(), cols.concat())
}

/// The forward statistics and, from the same similarity scratch, every level's gradients for
/// a unit upstream gradient (into `grads` and `dscale`): one matrix product fewer than
/// [`forward`] then [`backward`], and one pass over the levels.
pub(super) fn forward_backward<T: Real>(
    levels: &[Level<T>],
    grads: Grads<T>,
    dscale: &mut [T],
    background: bool,
) -> Stats<T> {
    let n = levels.first().map_or(0, Level::n);
    let nd = levels.first().map_or(0, |l| l.n() * l.d);
    let par = parallelism(levels.len());
    let coef = T::of(0.5) / T::of(n as f64);
    let out: Vec<(Stats<T>, T)> = grads
        .dt
        .par_chunks_mut(nd.max(1))
        .zip(grads.du.par_chunks_mut(nd.max(1)))
        .zip(grads.dv.par_chunks_mut(nd.max(1)))
        .zip(levels.par_iter())
        .map(|(((dt, du), dv), lev)| {
            let mut sm = vec![T::ZERO; n * n];
            similarities(lev, &mut sm, par);
            let rows = row_stats(lev, &sm);
            let cols = col_stats(lev, &sm, background);
            let row_lse: Vec<T> = rows.iter().map(|r| r.0).collect();
            let col_lse: Vec<T> = cols.iter().map(|c| c.0).collect();
            let saved = Saved {
                row_lse: &row_lse,
                col_lse: &col_lse,
                coef,
            };
            let ds = level_backward(lev, &saved, sm, (dt, du, dv), background, par);
            ((rows, cols), ds)
        })
        .collect();
    let mut rows = Vec::with_capacity(levels.len() * n);
    let mut cols = Vec::with_capacity(levels.len() * n);
    for (l, ((r, c), ds)) in out.into_iter().enumerate() {
        rows.extend(r);
        cols.extend(c);
        dscale[l] = ds;
    }
    (rows, cols)
}

avx2_dispatch! {
    /// Row i of S → s·G in place; returns Σ_j G_ij S_ij.
    fn grad_row<T: Real>(lev: &Level<T>, saved: &Saved<T>, row: &mut [T], i: usize) -> T =
        grad_row_impl;
}

#[inline(always)]
fn grad_row_impl<T: Real>(lev: &Level<T>, saved: &Saved<T>, row: &mut [T], i: usize) -> T {
    let s = lev.s;
    let (ri, ci, gi) = (saved.row_lse[i], lev.cnt[i], lev.gid[i]);
    // G_ij from S_ij; returns G_ij·S_ij and leaves s·G_ij in place.
    let grad = |x: &mut T, g: T, c: T, cl: T| {
        let (sij, p) = (*x, if g == gi { T::ONE } else { T::ZERO });
        let logit = s * sij;
        let gij =
            saved.coef * (((logit - ri).fast_exp() - p / ci) + ((logit - cl).fast_exp() - p / c));
        *x = s * gij;
        gij * sij
    };
    let mut acc = [T::ZERO; LANES];
    let mut xs = row.chunks_exact_mut(LANES);
    let mut gs = lev.gid.chunks_exact(LANES);
    let mut cs = lev.cnt.chunks_exact(LANES);
    let mut ls = saved.col_lse.chunks_exact(LANES);
    for (((x, g), c), cl) in (&mut xs).zip(&mut gs).zip(&mut cs).zip(&mut ls) {
        for k in 0..LANES {
            acc[k] += grad(&mut x[k], g[k], c[k], cl[k]);
        }
    }
    let mut total = acc.iter().fold(T::ZERO, |a, &b| a + b);
    let rest = gs
        .remainder()
        .iter()
        .zip(cs.remainder())
        .zip(ls.remainder());
    for (x, ((&g, &c), &cl)) in xs.into_remainder().iter_mut().zip(rest) {
        total += grad(x, g, c, cl);
    }
    total
}

/// One level's gradients into `dt`, `du`, `dv` (each N×D) from its similarities `g` (N×N,
/// overwritten); returns its ∂scale.
fn level_backward<T: Real>(
    lev: &Level<T>,
    saved: &Saved<T>,
    mut g: Vec<T>,
    (dt, du, dv): (&mut [T], &mut [T], &mut [T]),
    background: bool,
    par: Parallelism,
) -> T {
    let (n, d) = (lev.n(), lev.d);
    // S → s·G in place, and Σ_j G_ij S_ij per row.
    let ds_rows: Vec<T> = g
        .par_chunks_mut(n)
        .with_min_len(rows_per_job(n))
        .enumerate()
        .map(|(i, row)| grad_row(lev, saved, row, i))
        .collect();
    // ∂target = s·G·U, ∂text = s·Gᵀ·V⁺.
    matmul(dt, (n, d, n), &g, (n, 1), lev.u, (d, 1), T::ONE, par);
    matmul(du, (n, d, n), &g, (1, n), lev.t, (d, 1), T::ONE, par);
    let ds_cols: Vec<T> = du
        .par_chunks_mut(d)
        .zip(dv.par_chunks_mut(d))
        .with_min_len(rows_per_job(d))
        .enumerate()
        .map(|(j, (du, dv))| background_grad(lev, saved, j, du, dv, background))
        .collect();
    let mut ds = T::ZERO;
    for (r, c) in ds_rows.iter().zip(&ds_cols) {
        ds += *r + *c;
    }
    ds
}

/// Every level's gradients into `grads` and its ∂scale into `dscale`.
pub(super) fn backward<T: Real>(
    levels: &[Level<T>],
    saved: &[Saved<T>],
    grads: Grads<T>,
    dscale: &mut [T],
    background: bool,
) {
    let nd = levels.first().map_or(0, |l| l.n() * l.d);
    if nd == 0 {
        return;
    }
    let par = parallelism(levels.len());
    let ds: Vec<T> = grads
        .dt
        .par_chunks_mut(nd)
        .zip(grads.du.par_chunks_mut(nd))
        .zip(grads.dv.par_chunks_mut(nd))
        .enumerate()
        .map(|(l, ((dt, du), dv))| {
            let lev = &levels[l];
            let mut g = vec![T::ZERO; lev.n() * lev.n()];
            similarities(lev, &mut g, par);
            level_backward(lev, &saved[l], g, (dt, du, dv), background, par)
        })
        .collect();
    dscale.copy_from_slice(&ds);
}
