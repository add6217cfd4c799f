//! Multi-level symmetric multi-positive InfoNCE with background negatives. Each level's
//! similarity matrix S = V⁺Uᵀ is computed by matrix products in tiles of rows ([`tiled`]; one
//! tile per level at training sizes, N ≤ 1024), the row and column log-sum-exps are sweeps over
//! the tiles, and the gradients turn each tile in place into the logit gradient G and get
//! ∂target = s·G·U and ∂text = s·Gᵀ·V⁺ as two more products per tile. Memory is bounded by the
//! tile whatever N (up to the 4096 of a large gathered batch). The tests check it against a
//! streamed per-pair computation (`streamed`, test-only: each row and column recomputes its
//! N dot products, obviously right and slow).
//!
//! Inputs: `emb` = [target, text, background], each (Lv, N, D), `scales` (Lv),
//! `aux` (Lv + 2, N) = [dense group id; group size; has_background per level].
//! Forward output (flat): `[loss Lv | row LSE Lv·N | column LSE Lv·N]`.
//! Backward output (flat): `[d emb 3·Lv·N·D | d scales Lv]`.
//! When the loss will be differentiated, [`forward_with_grads`] returns both at once (the
//! gradients for a unit upstream gradient; the op's backward only scales them), which at one
//! tile per level saves the backward's recomputation of S.

#[cfg(test)]
mod streamed;
mod tiled;

use crate::float::{axpy, dot, Real};

/// The logit of a background negative: s·c where valid, −1e4 where not (as the composed loss).
#[inline]
fn background_logit<T: Real>(s: T, c: T, has: T) -> T {
    s * c * has + (has - T::ONE) * T::of(1e4)
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
    #[cfg(test)]
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
}

/// The saved forward statistics of one level, for the backward.
struct Saved<'a, T> {
    row_lse: &'a [T],
    col_lse: &'a [T],
    /// upstream gradient · ½ / N
    coef: T,
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

/// The packed forward output.
pub fn forward<T: Real>(
    emb: Emb<T>,
    scales: &[T],
    aux: &[T],
    dims: (usize, usize, usize),
    background: bool,
) -> Vec<T> {
    forward_tiled(tiled::TILE_ENTRIES, emb, scales, aux, dims, background)
}

/// [`forward`] with at most `budget` entries of S per level at once.
pub(crate) fn forward_tiled<T: Real>(
    budget: usize,
    emb: Emb<T>,
    scales: &[T],
    aux: &[T],
    dims: (usize, usize, usize),
    background: bool,
) -> Vec<T> {
    let (lv, n, _) = dims;
    let levels = levels(emb, scales, aux, dims);
    let (rows, cols) = tiled::forward(&levels, background, budget);
    pack_forward(&rows, &cols, lv, n)
}

/// The packed forward output and the packed backward output for a unit upstream gradient of
/// every level's loss (`[∂emb 3·Lv·N·D | ∂scales Lv]`), at once: a level that fits one tile
/// computes S once for both.
pub fn forward_with_grads<T: Real>(
    emb: Emb<T>,
    scales: &[T],
    aux: &[T],
    dims: (usize, usize, usize),
    background: bool,
) -> (Vec<T>, Vec<T>) {
    forward_with_grads_tiled(tiled::TILE_ENTRIES, emb, scales, aux, dims, background)
}

/// [`forward_with_grads`] with at most `budget` entries of S per level at once.
pub(crate) fn forward_with_grads_tiled<T: Real>(
    budget: usize,
    emb: Emb<T>,
    scales: &[T],
    aux: &[T],
    dims: (usize, usize, usize),
    background: bool,
) -> (Vec<T>, Vec<T>) {
    let (lv, n, d) = dims;
    let mut grads = vec![T::ZERO; 3 * lv * n * d + lv];
    if n * d == 0 {
        return (
            forward_tiled(budget, emb, scales, aux, dims, background),
            grads,
        );
    }
    let levels = levels(emb, scales, aux, dims);
    let (demb, dscale) = grads.split_at_mut(3 * lv * n * d);
    let (dt, rest) = demb.split_at_mut(lv * n * d);
    let (du, dv) = rest.split_at_mut(lv * n * d);
    let grads_of = Grads { dt, du, dv };
    let (rows, cols) = tiled::forward_backward(&levels, grads_of, dscale, background, budget);
    (pack_forward(&rows, &cols, lv, n), grads)
}

/// The packed backward output (`pack` as [`saved`]).
pub fn backward<T: Real>(
    emb: Emb<T>,
    pack: &[T],
    aux: &[T],
    dims: (usize, usize, usize),
    background: bool,
) -> Vec<T> {
    backward_tiled(tiled::TILE_ENTRIES, emb, pack, aux, dims, background)
}

/// [`backward`] with at most `budget` entries of S per level at once.
pub(crate) fn backward_tiled<T: Real>(
    budget: usize,
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
    tiled::backward(
        &levels,
        &saved,
        Grads { dt, du, dv },
        dscale,
        background,
        budget,
    );
    out
}

/// The (zeroed) gradients of every level's target, text and background, each (Lv, N, D).
struct Grads<'a, T> {
    dt: &'a mut [T],
    du: &'a mut [T],
    dv: &'a mut [T],
}

#[cfg(test)]
mod tests {
    //! The tiled computation (one tile per level, a few rows per tile, one row per tile) against
    //! the streamed per-pair one, and its fused forward-with-gradients against forward then
    //! backward.

    use super::{
        backward_tiled, forward_tiled, forward_with_grads_tiled, levels, saved, split, streamed,
        Grads,
    };
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

    /// The streamed forward and backward (with upstream `up`), packed like the tiled ones.
    fn reference<T: Real>(
        (emb, scales, aux): (&[T], &[T], &[T]),
        dims: (usize, usize, usize),
        up: &[T],
        background: bool,
    ) -> (Vec<T>, Vec<T>) {
        let (lv, n, d) = dims;
        let levels = levels(split(emb), scales, aux, dims);
        let (rows, cols) = streamed::forward(&levels, background);
        let fwd = super::pack_forward(&rows, &cols, lv, n);
        let pack = [scales, up, &fwd[lv..]].concat();
        let saved = saved(&pack, lv, n);
        let mut bwd = vec![T::ZERO; 3 * lv * n * d + lv];
        let (demb, dscale) = bwd.split_at_mut(3 * lv * n * d);
        let (dt, rest) = demb.split_at_mut(lv * n * d);
        let (du, dv) = rest.split_at_mut(lv * n * d);
        streamed::backward(&levels, &saved, Grads { dt, du, dv }, dscale, background);
        (fwd, bwd)
    }

    const CASES: [((usize, usize, usize), [f64; 4]); 5] = [
        ((4, 1, 37), [100.0, 0.1, 14.285, 1.0]),
        ((3, 70, 19), [100.0, 1.0, 0.1, 0.0]),
        ((1, 130, 64), [1.0 / 0.07, 0.0, 0.0, 0.0]),
        ((4, 32, 256), [1.0 / 0.07; 4]),
        ((2, 5, 1), [100.0, 0.5, 0.0, 0.0]),
    ];

    /// Worst (forward, backward) relative error of the tiled path against the streamed one.
    fn agree<T: Real + Into<f64>>(seed: u64, tol: (f64, f64)) -> (f64, f64) {
        let mut rng = Rng(seed);
        let mut worst = (0.0f64, 0.0f64);
        for (dims, scales) in CASES {
            let (lv, n, d) = dims;
            let (emb, scales, aux) = problem::<T>(&mut rng, dims, &scales[..lv]);
            let up: Vec<T> = (0..lv).map(|_| T::of(rng.normal())).collect();
            for background in [true, false] {
                let (fs, bs) = reference((&emb, &scales, &aux), dims, &up, background);
                // One tile per level, three rows per tile, one row per tile.
                for budget in [1 << 20, 3 * n, 1] {
                    let ctx = format!("{dims:?} bg {background} budget {budget}");
                    let fd = forward_tiled(budget, split(&emb), &scales, &aux, dims, background);
                    let ef = rel_err(&fd[..lv], &fs[..lv]).max(rel_err(&fd[lv..], &fs[lv..]));
                    assert!(ef <= tol.0, "{ctx}: forward {ef:e}");
                    // The backward from the tiled forward's own log-sum-exps, as in the op.
                    let pack = [&scales[..], &up, &fd[lv..]].concat();
                    let bd = backward_tiled(budget, split(&emb), &pack, &aux, dims, background);
                    let part = 3 * lv * n * d;
                    let mut eb = rel_err(&bd[part..], &bs[part..]);
                    for k in 0..3 {
                        let r = k * lv * n * d..(k + 1) * lv * n * d;
                        if !background && k == 2 {
                            assert!(bd[r.clone()].iter().all(|&x| x == T::ZERO), "{ctx}");
                        } else {
                            eb = eb.max(rel_err(&bd[r.clone()], &bs[r]));
                        }
                    }
                    assert!(eb <= tol.1, "{ctx}: backward {eb:e}");
                    worst = (worst.0.max(ef), worst.1.max(eb));
                }
            }
        }
        worst
    }

    #[test]
    fn tiled_and_streamed_agree_f32() {
        let (f, b) = agree::<f32>(31, (1e-5, 1e-4));
        println!("tiled vs streamed f32: forward {f:e}, backward {b:e}");
    }

    #[test]
    fn tiled_and_streamed_agree_f64() {
        let (f, b) = agree::<f64>(32, (1e-12, 1e-11));
        println!("tiled vs streamed f64: forward {f:e}, backward {b:e}");
    }

    /// The fused forward-with-gradients equals the forward then the backward with a unit
    /// upstream gradient, with one tile per level and with several.
    #[test]
    fn forward_with_grads_is_forward_then_unit_backward() {
        let mut rng = Rng(33);
        for (dims, scales) in [
            ((4, 32, 40), vec![1.0 / 0.07; 4]),
            ((2, 7, 3), vec![100.0, 0.1]),
            ((1, 1, 5), vec![2.0]),
            ((2, 6, 0), vec![1.0, 2.0]),
        ] {
            let (lv, n, d) = dims;
            let (emb, scales, aux) = problem::<f64>(&mut rng, dims, &scales);
            for (budget, background) in [(1 << 20, true), (2 * n, true), (1 << 20, false)] {
                let emb = split(&emb);
                let (fused, grads) =
                    forward_with_grads_tiled(budget, emb, &scales, &aux, dims, background);
                let fwd = forward_tiled(budget, emb, &scales, &aux, dims, background);
                let pack = [&scales[..], &vec![1.0; lv], &fwd[lv..]].concat();
                let bwd = backward_tiled(budget, emb, &pack, &aux, dims, background);
                assert_eq!(fused.len(), lv + 2 * lv * n);
                assert_eq!(grads.len(), 3 * lv * n * d + lv);
                let ef = rel_err(&fused, &fwd);
                let eb = rel_err(&grads, &bwd);
                let ctx = format!("{dims:?} budget {budget} bg {background}");
                assert!(ef <= 1e-13 && eb <= 1e-12, "{ctx}: {ef:e} {eb:e}");
            }
        }
    }
}
