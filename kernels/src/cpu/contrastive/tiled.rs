//! The blocked path: each level's similarity matrix S = V⁺Uᵀ is computed in tiles of rows, each
//! one matrix product (the `gemm` crate candle's CPU matmul uses) into a scratch of at most
//! [`TILE_ENTRIES`]; at training sizes (N ≤ 1024) a level is one tile. The forward takes each
//! tile's row log-sum-exps in one sweep over its rows and merges its columns into running
//! per-column (max, sum, positive-sum) accumulators, one sweep over blocks of columns. The
//! backward turns each tile in place into s·G (G = ∂loss/∂logit): ∂target of the tile's rows is
//! s·G·U and ∂text accumulates s·Gᵀ·V⁺ — two more products per tile. With one tile, the forward's
//! S is reused by the gradients computed in the same call. Levels run in parallel, and inside a
//! level the rows, the column blocks and the products.

use super::{background_grad, background_logit, Grads, Level, Saved, Stats};
use crate::cpu::gemm::matmul;
use crate::float::{dot, masked_sum, max_scaled, sum_exp, Real, LANES};
use crate::simd::avx2_dispatch;
use gemm::Parallelism;
use rayon::prelude::*;
use std::ops::Range;

/// The most entries of S one level holds at once (4 MiB in f32): N ≤ 1024 is a single tile.
pub(crate) const TILE_ENTRIES: usize = 1 << 20;

/// Columns per block of the column sweep (a few cache lines of each row).
const COL_BLOCK: usize = 64;

/// Entries of S per parallel job in the row and column sweeps.
const MIN_JOB: usize = 1 << 14;

/// Rows per tile for N columns under `budget` entries (at least one).
fn tile_rows(n: usize, budget: usize) -> usize {
    (budget / n.max(1)).clamp(1, n.max(1))
}

/// The products' own parallelism: none when the levels alone keep every thread busy.
fn parallelism(lv: usize) -> Parallelism {
    if lv >= rayon::current_num_threads() {
        Parallelism::None
    } else {
        Parallelism::Rayon(0)
    }
}

/// Rows `rows` of S = V⁺Uᵀ into `dst` (|rows|×N, row i = image i against every text).
fn similarities<T: Real>(lev: &Level<T>, rows: Range<usize>, dst: &mut [T], par: Parallelism) {
    let (n, d) = (lev.n(), lev.d);
    let t = &lev.t[rows.start * d..rows.end * d];
    matmul(
        dst,
        (rows.len(), n, d),
        t,
        (d, 1),
        lev.u,
        (1, d),
        T::ONE,
        false,
        par,
    );
}

/// Rows per parallel job in a sweep over N-long rows.
fn rows_per_job(n: usize) -> usize {
    (MIN_JOB / n.max(1)).max(1)
}

/// (LSE, term) of the rows of a tile starting at row `r0`: image i against all texts.
fn row_stats<T: Real>(lev: &Level<T>, tile: &[T], r0: usize) -> Vec<(T, T)> {
    let n = lev.n();
    tile.par_chunks(n)
        .with_min_len(rows_per_job(n))
        .enumerate()
        .map(|(i, row)| row_stat(lev, row, r0 + i))
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

/// Running per-column statistics over the tiles seen so far: the max logit, the sum of
/// e^(logit − max) and the sum of S over the column's positives.
struct Columns<T> {
    m: Vec<T>,
    z: Vec<T>,
    pos: Vec<T>,
}

impl<T: Real> Columns<T> {
    /// Before any tile: only the background logit (when used).
    fn new(lev: &Level<T>, background: bool) -> Self {
        let n = lev.n();
        let (m, z) = if background {
            let bg = (0..n)
                .map(|j| background_logit(lev.s, dot(lev.u(j), lev.v(j)), lev.has[j]))
                .collect();
            (bg, vec![T::ONE; n])
        } else {
            (vec![T::of(f64::NEG_INFINITY); n], vec![T::ZERO; n])
        };
        Self {
            m,
            z,
            pos: vec![T::ZERO; n],
        }
    }

    /// Merges the tile of rows `rows` into every column, a block of columns per job.
    fn merge(&mut self, lev: &Level<T>, tile: &[T], rows: Range<usize>) {
        let n = lev.n();
        self.m
            .par_chunks_mut(COL_BLOCK)
            .zip(self.z.par_chunks_mut(COL_BLOCK))
            .zip(self.pos.par_chunks_mut(COL_BLOCK))
            .with_min_len((MIN_JOB / (COL_BLOCK * rows.len().max(1))).max(1))
            .enumerate()
            .for_each(|(b, ((m, z), pos))| {
                let c0 = b * COL_BLOCK;
                let acc = ColumnBlock {
                    cols: c0..(c0 + m.len()).min(n),
                    m,
                    z,
                    pos,
                };
                merge_block(lev, tile, rows.clone(), acc);
            });
    }

    /// (LSE, term) of every column.
    fn finish(self, lev: &Level<T>) -> Vec<(T, T)> {
        (0..lev.n())
            .map(|j| {
                let lse = self.m[j] + self.z[j].ln();
                (lse, lse - lev.s * self.pos[j] / lev.cnt[j])
            })
            .collect()
    }
}

/// One block of columns' running statistics.
struct ColumnBlock<'a, T> {
    cols: Range<usize>,
    m: &'a mut [T],
    z: &'a mut [T],
    pos: &'a mut [T],
}

avx2_dispatch! {
    /// Merges the tile (rows `rows` of S) into one block of columns.
    fn merge_block<T: Real>(
        lev: &Level<T>,
        tile: &[T],
        rows: Range<usize>,
        acc: ColumnBlock<T>,
    ) -> () = merge_block_impl;
}

#[inline(always)]
fn merge_block_impl<T: Real>(lev: &Level<T>, tile: &[T], rows: Range<usize>, acc: ColumnBlock<T>) {
    let (n, s) = (lev.n(), lev.s);
    let ColumnBlock { cols, m, z, pos } = acc;
    let block = |i: usize| &tile[i * n + cols.start..i * n + cols.end];
    // The tile's max per column, then the running sums rescaled to the new max.
    let mut mt: Vec<T> = block(0).iter().map(|&x| s * x).collect();
    for i in 1..rows.len() {
        for (mk, &x) in mt.iter_mut().zip(block(i)) {
            *mk = mk.fmax(s * x);
        }
    }
    for ((mk, zk), &tk) in m.iter_mut().zip(z.iter_mut()).zip(&mt) {
        let new = mk.fmax(tk);
        *zk *= (*mk - new).fast_exp();
        *mk = new;
    }
    let keys = &lev.gid[cols.clone()];
    for (li, i) in rows.enumerate() {
        let gi = lev.gid[i];
        for (((zk, pk), (&x, &mk)), &g) in z
            .iter_mut()
            .zip(pos.iter_mut())
            .zip(block(li).iter().zip(m.iter()))
            .zip(keys)
        {
            *zk += (s * x - mk).fast_exp();
            *pk += if g == gi { x } else { T::ZERO };
        }
    }
}

/// A level's row and column (LSE, term) pairs, and its whole S when it was one tile.
type LevelStats<T> = (Vec<(T, T)>, Vec<(T, T)>, Option<Vec<T>>);

/// One level's (row, column) statistics, and its S when it was a single tile.
fn level_stats<T: Real>(
    lev: &Level<T>,
    background: bool,
    par: Parallelism,
    budget: usize,
) -> LevelStats<T> {
    let n = lev.n();
    let r = tile_rows(n, budget);
    let mut tile = vec![T::ZERO; r.min(n) * n];
    let mut rows = Vec::with_capacity(n);
    let mut cols = Columns::new(lev, background);
    for r0 in (0..n).step_by(r) {
        let range = r0..(r0 + r).min(n);
        let t = &mut tile[..range.len() * n];
        similarities(lev, range.clone(), t, par);
        rows.extend(row_stats(lev, t, r0));
        cols.merge(lev, t, range);
    }
    let single = (r >= n).then_some(tile);
    (rows, cols.finish(lev), single)
}

/// The per-(level, row) and per-(level, column) (LSE, term) pairs, level-major.
pub(super) fn forward<T: Real>(levels: &[Level<T>], background: bool, budget: usize) -> Stats<T> {
    let par = parallelism(levels.len());
    let stats: Vec<Stats<T>> = levels
        .par_iter()
        .map(|lev| {
            let (rows, cols, _) = level_stats(lev, background, par, budget);
            (rows, cols)
        })
        .collect();
    let (rows, cols): (Vec<_>, Vec<_>) = stats.into_iter().unzip();
    (rows.concat(), cols.concat())
}

/// The forward statistics and every level's gradients for a unit upstream gradient (into
/// `grads` and `dscale`) in one pass over the levels; a single-tile level's S is computed once.
pub(super) fn forward_backward<T: Real>(
    levels: &[Level<T>],
    grads: Grads<T>,
    dscale: &mut [T],
    background: bool,
    budget: usize,
) -> Stats<T> {
    let n = levels.first().map_or(0, Level::n);
    let nd = levels.first().map_or(0, |l| l.n() * l.d).max(1);
    let par = parallelism(levels.len());
    let coef = T::of(0.5) / T::of(n as f64);
    let out: Vec<(Stats<T>, T)> = grads
        .dt
        .par_chunks_mut(nd)
        .zip(grads.du.par_chunks_mut(nd))
        .zip(grads.dv.par_chunks_mut(nd))
        .zip(levels.par_iter())
        .map(|(((dt, du), dv), lev)| {
            let (rows, cols, single) = level_stats(lev, background, par, budget);
            let row_lse: Vec<T> = rows.iter().map(|r| r.0).collect();
            let col_lse: Vec<T> = cols.iter().map(|c| c.0).collect();
            let saved = Saved {
                row_lse: &row_lse,
                col_lse: &col_lse,
                coef,
            };
            let tiles = Tiles { single, budget };
            let ds = level_backward(lev, &saved, tiles, (dt, du, dv), background, par);
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

/// How a level's backward gets its tiles of S.
struct Tiles<T> {
    /// The whole S, already computed by the forward.
    single: Option<Vec<T>>,
    /// Otherwise: recomputed under this many entries at once.
    budget: usize,
}

/// One level's gradients into `dt`, `du`, `dv` (each N×D), tile by tile; returns its ∂scale.
fn level_backward<T: Real>(
    lev: &Level<T>,
    saved: &Saved<T>,
    tiles: Tiles<T>,
    (dt, du, dv): (&mut [T], &mut [T], &mut [T]),
    background: bool,
    par: Parallelism,
) -> T {
    let (n, d) = (lev.n(), lev.d);
    let fresh = tiles.single.is_none();
    let r = if fresh { tile_rows(n, tiles.budget) } else { n };
    let mut tile = tiles.single.unwrap_or_else(|| vec![T::ZERO; r.min(n) * n]);
    let mut ds = T::ZERO;
    for r0 in (0..n).step_by(r.max(1)) {
        let range = r0..(r0 + r).min(n);
        let g = &mut tile[..range.len() * n];
        if fresh {
            similarities(lev, range.clone(), g, par);
        }
        // S → s·G in place, and Σ_j G_ij S_ij per row.
        let rows: Vec<T> = g
            .par_chunks_mut(n)
            .with_min_len(rows_per_job(n))
            .enumerate()
            .map(|(i, row)| grad_row(lev, saved, row, r0 + i))
            .collect();
        ds += rows.iter().fold(T::ZERO, |a, &b| a + b);
        // ∂target rows = s·G·U; ∂text += s·Gᵀ·V⁺ of these rows.
        let t = &lev.t[range.start * d..range.end * d];
        let k = range.len();
        matmul(
            &mut dt[range.start * d..range.end * d],
            (k, d, n),
            g,
            (n, 1),
            lev.u,
            (d, 1),
            T::ONE,
            false,
            par,
        );
        matmul(du, (n, d, k), g, (1, n), t, (d, 1), T::ONE, r0 > 0, par);
    }
    let ds_cols: Vec<T> = du
        .par_chunks_mut(d)
        .zip(dv.par_chunks_mut(d))
        .with_min_len(rows_per_job(d))
        .enumerate()
        .map(|(j, (du, dv))| background_grad(lev, saved, j, du, dv, background))
        .collect();
    ds + ds_cols.iter().fold(T::ZERO, |a, &b| a + b)
}

/// Every level's gradients into `grads` and its ∂scale into `dscale`.
pub(super) fn backward<T: Real>(
    levels: &[Level<T>],
    saved: &[Saved<T>],
    grads: Grads<T>,
    dscale: &mut [T],
    background: bool,
    budget: usize,
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
            let tiles = Tiles {
                single: None,
                budget,
            };
            level_backward(&levels[l], &saved[l], tiles, (dt, du, dv), background, par)
        })
        .collect();
    dscale.copy_from_slice(&ds);
}
