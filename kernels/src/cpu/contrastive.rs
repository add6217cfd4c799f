//! Multi-level symmetric multi-positive InfoNCE with background negatives, on two paths:
//!
//! * dense (Lv·N² ≤ [`DENSE_MAX_ENTRIES`], the training sizes): each level's similarity matrix
//!   S = V⁺Uᵀ is one matrix product into an N×N scratch, the row and column log-sum-exps are
//!   single sweeps over it, and the backward turns it in place into the logit gradient G and
//!   gets ∂target = s·G·U and ∂text = s·Gᵀ·V⁺ as two more matrix products ([`dense`]);
//! * streamed (larger batches): the N×N logits are never stored, each row (image→text) and each
//!   column (text→image) recomputes its N dot products into an N-vector.
//!
//! Inputs: `emb` = [target, text, background], each (Lv, N, D), `scales` (Lv),
//! `aux` (Lv + 2, N) = [dense group id; group size; has_background per level].
//! Forward output (flat): `[loss Lv | row LSE Lv·N | column LSE Lv·N]`.
//! Backward output (flat): `[d emb 3·Lv·N·D | d scales Lv]`.
//! When the loss will be differentiated, [`forward_with_grads`] returns both at once (the
//! gradients for a unit upstream gradient; the op's backward only scales them), which on the
//! dense path saves the backward's recomputation of S.

mod dense;

use crate::float::{axpy, dot, Real};
use rayon::prelude::*;

/// The largest Lv·N² for the dense path: its scratch is one N×N matrix per level (16 MiB in f32
/// at the limit, e.g. Lv = 4 and N = 1024); above it the op streams.
pub(crate) const DENSE_MAX_ENTRIES: usize = 1 << 22;

/// How the N×N similarities are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    /// Once per level, as a matrix product kept in an N×N scratch.
    Dense,
    /// Recomputed per row and per column, never stored.
    Streamed,
}

impl Path {
    /// Dense while Lv·N² ≤ [`DENSE_MAX_ENTRIES`] (and the problem is not empty).
    pub(crate) fn of(lv: usize, n: usize, d: usize) -> Self {
        let entries = lv.saturating_mul(n).saturating_mul(n);
        if n > 0 && d > 0 && entries <= DENSE_MAX_ENTRIES {
            Self::Dense
        } else {
            Self::Streamed
        }
    }
}

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

/// The target, text and background embeddings, each (Lv, N, D) contiguous.
pub type Emb<'a, T> = [&'a [T]; 3];

/// The three equal parts of a packed (3, Lv, N, D) buffer.
pub fn split<T>(packed: &[T]) -> Emb<'_, T> {
    let k = packed.len() / 3;
    [&packed[..k], &packed[k..2 * k], &packed[2 * k..3 * k]]
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
    fn new(emb: Emb<'a, T>, scales: &[T], aux: &'a [T], l: usize, n: usize, d: usize) -> Self {
        let part = |e: usize| &emb[e][l * n * d..(l + 1) * n * d];
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

/// The per-level views of all levels.
fn levels<'a, T: Real>(
    emb: Emb<'a, T>,
    scales: &[T],
    aux: &'a [T],
    (lv, n, d): (usize, usize, usize),
) -> Vec<Level<'a, T>> {
    (0..lv)
        .map(|l| Level::new(emb, scales, aux, l, n, d))
        .collect()
}

/// The saved statistics of every level; `pack` = `[scales Lv | upstream grad Lv | row LSE Lv·N
/// | column LSE Lv·N]`.
fn saved<T: Real>(pack: &[T], lv: usize, n: usize) -> Vec<Saved<'_, T>> {
    (0..lv)
        .map(|l| Saved {
            row_lse: &pack[2 * lv + l * n..2 * lv + (l + 1) * n],
            col_lse: &pack[2 * lv + lv * n + l * n..2 * lv + lv * n + (l + 1) * n],
            coef: pack[lv + l] * T::of(0.5) / T::of(n as f64),
        })
        .collect()
}

/// The background negative's share of column j's gradient: adds it to ∂text_j and sets
/// ∂background_j; returns its ∂scale term (zero without background negatives).
fn background_grad<T: Real>(
    lev: &Level<T>,
    saved: &Saved<T>,
    j: usize,
    du: &mut [T],
    dv: &mut [T],
    background: bool,
) -> T {
    if !background {
        return T::ZERO;
    }
    let (s, has) = (lev.s, lev.has[j]);
    let c = dot(lev.u(j), lev.v(j));
    let gb = saved.coef * (background_logit(s, c, has) - saved.col_lse[j]).exp();
    axpy(s * has * gb, lev.v(j), du);
    axpy(s * has * gb, lev.u(j), dv);
    gb * has * c
}

/// The (LSE, term) pairs of every (level, row) and of every (level, column), level-major.
type Stats<T> = (Vec<(T, T)>, Vec<(T, T)>);

/// The packed output from the per-(level, row) and per-(level, column) (LSE, term) pairs, each
/// in level-major order.
fn pack_forward<T: Real>(rows: &[(T, T)], cols: &[(T, T)], lv: usize, n: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; lv + 2 * lv * n];
    for (k, (lse, term)) in rows.iter().chain(cols).enumerate() {
        out[lv + k] = *lse;
        out[(k % (lv * n)) / n] += *term;
    }
    for o in &mut out[..lv] {
        *o = T::of(0.5) * *o / T::of(n as f64);
    }
    out
}

/// The packed forward output, on the path the size calls for.
pub fn forward<T: Real>(
    emb: Emb<T>,
    scales: &[T],
    aux: &[T],
    dims: (usize, usize, usize),
    background: bool,
) -> Vec<T> {
    let (lv, n, d) = dims;
    forward_on(Path::of(lv, n, d), emb, scales, aux, dims, background)
}

/// The packed forward output on the given path.
pub(crate) fn forward_on<T: Real>(
    path: Path,
    emb: Emb<T>,
    scales: &[T],
    aux: &[T],
    dims: (usize, usize, usize),
    background: bool,
) -> Vec<T> {
    let (lv, n, _) = dims;
    let levels = levels(emb, scales, aux, dims);
    let (rows, cols) = match path {
        Path::Dense => dense::forward(&levels, background),
        Path::Streamed => streamed_forward(&levels, background),
    };
    pack_forward(&rows, &cols, lv, n)
}

/// The packed forward output and the packed backward output for a unit upstream gradient of
/// every level's loss (`[∂emb 3·Lv·N·D | ∂scales Lv]`), at once: the dense path reuses the
/// forward's similarities.
pub fn forward_with_grads<T: Real>(
    emb: Emb<T>,
    scales: &[T],
    aux: &[T],
    dims: (usize, usize, usize),
    background: bool,
) -> (Vec<T>, Vec<T>) {
    let (lv, n, d) = dims;
    forward_with_grads_on(Path::of(lv, n, d), emb, scales, aux, dims, background)
}

/// [`forward_with_grads`] on the given path.
pub(crate) fn forward_with_grads_on<T: Real>(
    path: Path,
    emb: Emb<T>,
    scales: &[T],
    aux: &[T],
    dims: (usize, usize, usize),
    background: bool,
) -> (Vec<T>, Vec<T>) {
    let (lv, n, d) = dims;
    if path == Path::Streamed {
        let out = forward_on(path, emb, scales, aux, dims, background);
        let mut pack = scales.to_vec();
        pack.extend((0..lv).map(|_| T::ONE));
        pack.extend_from_slice(&out[lv..]);
        let grads = backward_on(path, emb, &pack, aux, dims, background);
        return (out, grads);
    }
    let levels = levels(emb, scales, aux, dims);
    let mut grads = vec![T::ZERO; 3 * lv * n * d + lv];
    let (demb, dscale) = grads.split_at_mut(3 * lv * n * d);
    let (dt, rest) = demb.split_at_mut(lv * n * d);
    let (du, dv) = rest.split_at_mut(lv * n * d);
    let (rows, cols) = dense::forward_backward(&levels, Grads { dt, du, dv }, dscale, background);
    (pack_forward(&rows, &cols, lv, n), grads)
}

/// Rows and columns of every level in one parallel pass.
fn streamed_forward<T: Real>(levels: &[Level<T>], background: bool) -> Stats<T> {
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

/// The packed backward output (`pack` as [`saved`]), on the path the size calls for.
pub fn backward<T: Real>(
    emb: Emb<T>,
    pack: &[T],
    aux: &[T],
    dims: (usize, usize, usize),
    background: bool,
) -> Vec<T> {
    let (lv, n, d) = dims;
    backward_on(Path::of(lv, n, d), emb, pack, aux, dims, background)
}

/// The packed backward output on the given path.
pub(crate) fn backward_on<T: Real>(
    path: Path,
    emb: Emb<T>,
    pack: &[T],
    aux: &[T],
    dims: (usize, usize, usize),
    background: bool,
) -> Vec<T> {
    let (lv, n, d) = dims;
    let levels = levels(emb, &pack[..lv], aux, dims);
    let saved = saved(pack, lv, n);
    let mut out = vec![T::ZERO; 3 * lv * n * d + lv];
    let (demb, dscale) = out.split_at_mut(3 * lv * n * d);
    let (dt, rest) = demb.split_at_mut(lv * n * d);
    let (du, dv) = rest.split_at_mut(lv * n * d);
    let grads = Grads { dt, du, dv };
    match path {
        Path::Dense => dense::backward(&levels, &saved, grads, dscale, background),
        Path::Streamed => streamed_backward(&levels, &saved, grads, dscale, background),
    }
    out
}

/// The (zeroed) gradients of every level's target, text and background, each (Lv, N, D).
struct Grads<'a, T> {
    dt: &'a mut [T],
    du: &'a mut [T],
    dv: &'a mut [T],
}

/// The rows (∂target) and the columns (∂text, ∂background) of every level in two parallel
/// passes, each recomputing its N dot products.
fn streamed_backward<T: Real>(
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

#[cfg(test)]
mod tests {
    //! The dense and the streamed path on the same inputs.

    use super::{backward_on, forward_on, forward_with_grads_on, split, Path, DENSE_MAX_ENTRIES};
    use crate::float::Real;

    /// A small deterministic generator (SplitMix64), uniform in [0, 1).
    struct Rng(u64);

    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let (u1, u2) = (self.uniform().max(1e-300), self.uniform());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }
    }

    /// emb (3, Lv, N, D) of unit rows, scales (Lv), aux (Lv + 2, N) with duplicate groups.
    fn problem<T: Real>(
        rng: &mut Rng,
        (lv, n, d): (usize, usize, usize),
        scales: &[f64],
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let mut emb = Vec::with_capacity(3 * lv * n * d);
        for _ in 0..3 * lv * n {
            let row: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
            let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
            emb.extend(row.iter().map(|x| T::of(x / norm)));
        }
        let distinct = (n / 3).max(1);
        let gid: Vec<usize> = (0..n)
            .map(|_| (rng.uniform() * distinct as f64) as usize)
            .collect();
        let mut aux: Vec<T> = gid.iter().map(|&g| T::of(g as f64)).collect();
        aux.extend(
            gid.iter()
                .map(|g| T::of(gid.iter().filter(|h| *h == g).count() as f64)),
        );
        aux.extend((0..lv * n).map(|_| T::of((rng.uniform() > 0.3) as u8 as f64)));
        (emb, scales.iter().map(|&s| T::of(s)).collect(), aux)
    }

    fn rel_err<T: Real + Into<f64>>(a: &[T], b: &[T]) -> f64 {
        assert_eq!(a.len(), b.len());
        let diff = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (x.into() - y.into()).abs())
            .fold(0.0, f64::max);
        let scale = b.iter().map(|&y| y.into().abs()).fold(0.0, f64::max);
        assert!(diff.is_finite(), "non-finite values");
        if scale > 0.0 {
            diff / scale
        } else {
            diff
        }
    }

    /// Worst (forward, backward) relative error of the dense path against the streamed one.
    fn agree<T: Real + Into<f64>>(seed: u64, tol: (f64, f64)) -> (f64, f64) {
        let mut rng = Rng(seed);
        let mut worst = (0.0f64, 0.0f64);
        for (dims, scales) in [
            ((4, 1, 37), vec![100.0, 0.1, 14.285, 1.0]),
            ((3, 70, 19), vec![100.0, 1.0, 0.1]),
            ((1, 130, 64), vec![1.0 / 0.07]),
            ((4, 32, 256), vec![1.0 / 0.07; 4]),
            ((2, 5, 1), vec![100.0, 0.5]),
        ] {
            let (lv, n, d) = dims;
            let (emb, scales, aux) = problem::<T>(&mut rng, dims, &scales);
            for background in [true, false] {
                let run = |path| forward_on(path, split(&emb), &scales, &aux, dims, background);
                let (fd, fs) = (run(Path::Dense), run(Path::Streamed));
                let ef = rel_err(&fd[..lv], &fs[..lv]).max(rel_err(&fd[lv..], &fs[lv..]));
                assert!(ef <= tol.0, "{dims:?} bg {background}: forward {ef:e}");
                // Each path's backward from its own forward's log-sum-exps, as in the op.
                let mut pack = scales.clone();
                pack.extend((0..lv).map(|_| T::of(rng.normal())));
                let run = |path, fwd: &[T]| {
                    let pack = [&pack[..], &fwd[lv..]].concat();
                    backward_on(path, split(&emb), &pack, &aux, dims, background)
                };
                let (bd, bs) = (run(Path::Dense, &fd), run(Path::Streamed, &fs));
                let part = 3 * lv * n * d;
                let mut eb = rel_err(&bd[part..], &bs[part..]);
                for k in 0..3 {
                    let r = k * lv * n * d..(k + 1) * lv * n * d;
                    if !background && k == 2 {
                        assert!(bd[r.clone()].iter().all(|&x| x == T::ZERO));
                    } else {
                        eb = eb.max(rel_err(&bd[r.clone()], &bs[r]));
                    }
                }
                assert!(eb <= tol.1, "{dims:?} bg {background}: backward {eb:e}");
                worst = (worst.0.max(ef), worst.1.max(eb));
            }
        }
        worst
    }

    #[test]
    fn dense_and_streamed_agree_f32() {
        let (f, b) = agree::<f32>(31, (1e-5, 1e-4));
        println!("dense vs streamed f32: forward {f:e}, backward {b:e}");
    }

    #[test]
    fn dense_and_streamed_agree_f64() {
        let (f, b) = agree::<f64>(32, (1e-12, 1e-11));
        println!("dense vs streamed f64: forward {f:e}, backward {b:e}");
    }

    /// The fused forward-with-gradients equals the forward then the backward with a unit
    /// upstream gradient, on both paths.
    #[test]
    fn forward_with_grads_is_forward_then_unit_backward() {
        let mut rng = Rng(33);
        for (dims, scales) in [
            ((4, 32, 40), vec![1.0 / 0.07; 4]),
            ((2, 7, 3), vec![100.0, 0.1]),
            ((1, 1, 5), vec![2.0]),
        ] {
            let (lv, n, d) = dims;
            let (emb, scales, aux) = problem::<f64>(&mut rng, dims, &scales);
            for (path, background) in [
                (Path::Dense, true),
                (Path::Streamed, true),
                (Path::Dense, false),
            ] {
                let (fused, grads) =
                    forward_with_grads_on(path, split(&emb), &scales, &aux, dims, background);
                let fwd = forward_on(path, split(&emb), &scales, &aux, dims, background);
                let pack = [&scales[..], &vec![1.0; lv], &fwd[lv..]].concat();
                let bwd = backward_on(path, split(&emb), &pack, &aux, dims, background);
                assert_eq!(fused.len(), lv + 2 * lv * n);
                assert_eq!(grads.len(), 3 * lv * n * d + lv);
                let ef = rel_err(&fused, &fwd);
                let eb = rel_err(&grads, &bwd);
                assert!(
                    ef <= 1e-13 && eb <= 1e-12,
                    "{dims:?} {path:?}: {ef:e} {eb:e}"
                );
            }
        }
    }

    #[test]
    fn path_by_size() {
        assert_eq!(Path::of(4, 32, 256), Path::Dense);
        assert_eq!(Path::of(4, 1024, 256), Path::Dense);
        assert_eq!(Path::of(4, 1025, 256), Path::Streamed);
        assert_eq!(Path::of(2, 4096, 8), Path::Streamed);
        assert_eq!(Path::of(1, 2048, 8), Path::Dense);
        assert_eq!(Path::of(1, 0, 8), Path::Streamed);
        assert_eq!(Path::of(1, 8, 0), Path::Streamed);
        assert_eq!(4 * 1024 * 1024, DENSE_MAX_ENTRIES);
    }
}
