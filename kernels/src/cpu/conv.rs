//! Dense 2-D convolution (groups 1, dilation 1) on `gemm`, on contiguous slices.
//!
//! Per sample, the input's k×k windows are unfolded into a (Cin·k², Ho·Wo) column matrix
//! (im2col; a 1×1 stride-1 convolution uses the input itself), and the output is one product
//! W (Cout, Cin·k²) · cols. The backward recomputes the columns instead of keeping them:
//! ∂W = Σ_b ∂Y_b · cols_bᵀ, ∂cols = Wᵀ · ∂Y_b folded back onto the input (col2im, adding where
//! windows overlap), ∂bias = Σ ∂Y. Samples are split into one contiguous group per thread,
//! each with its own column buffer and weight-gradient partial; with fewer samples than
//! threads the products themselves run in parallel instead.

use crate::cpu::accumulate;
use crate::cpu::gemm::matmul;
use crate::float::Real;
use gemm::Parallelism;
use rayon::prelude::*;

/// One sample's geometry: input (Cin, H, W), weight (Cout, Cin, k, k), stride, zero padding.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Geometry {
    /// Output (Ho, Wo); `None` when the padded input is smaller than the kernel.
    pub fn output(&self) -> Option<(usize, usize)> {
        let side = |n: usize| {
            (n + 2 * self.pad)
                .checked_sub(self.k)
                .map(|s| s / self.stride + 1)
        };
        Some((side(self.h)?, side(self.w)?))
    }

    fn ho_wo(&self) -> (usize, usize) {
        self.output().unwrap_or((0, 0))
    }

    /// Rows of the column matrix (Cin·k²).
    fn rows(&self) -> usize {
        self.cin * self.k * self.k
    }

    /// Output pixels per channel (Ho·Wo).
    fn pixels(&self) -> usize {
        let (ho, wo) = self.ho_wo();
        ho * wo
    }

    fn input_len(&self) -> usize {
        self.cin * self.h * self.w
    }

    fn output_len(&self) -> usize {
        self.cout * self.pixels()
    }

    /// The input is its own column matrix.
    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// The outputs o in 0..n whose input coordinate o·stride + tap − pad lies in 0..len.
    fn valid(&self, tap: usize, len: usize, n: usize) -> std::ops::Range<usize> {
        let (s, p) = (self.stride, self.pad);
        let lo = p.saturating_sub(tap).div_ceil(s).min(n);
        let hi = if len + p > tap {
            ((len + p - tap - 1) / s + 1).min(n)
        } else {
            0
        };
        lo..hi.max(lo)
    }

    /// Visits every (column-matrix row, output row) pair with the input row it reads, and the
    /// output columns that read inside the input (`cols`) at input column `cols.start·stride +
    /// kj − pad` onwards: `f(r, c, iy, oy, kj, cols)`; `f` handles the rest of the row as padding.
    fn for_each_window_row(
        &self,
        mut f: impl FnMut(usize, usize, Option<usize>, usize, std::ops::Range<usize>),
    ) {
        let (ho, wo) = self.ho_wo();
        let k = self.k;
        for c in 0..self.cin {
            for ki in 0..k {
                let rows = self.valid(ki, self.h, ho);
                for kj in 0..k {
                    let r = (c * k + ki) * k + kj;
                    let cols = self.valid(kj, self.w, wo);
                    for oy in 0..ho {
                        let iy = rows
                            .contains(&oy)
                            .then(|| c * self.h + oy * self.stride + ki - self.pad);
                        f(r, oy, iy, kj, cols.clone());
                    }
                }
            }
        }
    }
}

/// Unfolds one sample `x` (Cin·H·W) into `cols` (Cin·k² × Ho·Wo).
fn im2col<T: Real>(x: &[T], g: &Geometry, cols: &mut [T]) {
    let (_, wo) = g.ho_wo();
    let p = g.pixels();
    g.for_each_window_row(|r, oy, iy, kj, valid| {
        let dst = &mut cols[r * p + oy * wo..r * p + (oy + 1) * wo];
        let Some(iy) = iy.filter(|_| !valid.is_empty()) else {
            dst.fill(T::ZERO);
            return;
        };
        dst[..valid.start].fill(T::ZERO);
        dst[valid.end..].fill(T::ZERO);
        let row = &x[iy * g.w..(iy + 1) * g.w];
        let x0 = valid.start * g.stride + kj - g.pad;
        if g.stride == 1 {
            dst[valid.clone()].copy_from_slice(&row[x0..x0 + valid.len()]);
        } else {
            for (d, s) in dst[valid]
                .iter_mut()
                .zip(row[x0..].iter().step_by(g.stride))
            {
                *d = *s;
            }
        }
    });
}

/// Folds `cols` (Cin·k² × Ho·Wo) back onto one sample's input gradient `dx` (Cin·H·W), adding.
fn col2im<T: Real>(cols: &[T], g: &Geometry, dx: &mut [T]) {
    let (_, wo) = g.ho_wo();
    let p = g.pixels();
    dx.fill(T::ZERO);
    g.for_each_window_row(|r, oy, iy, kj, valid| {
        let Some(iy) = iy.filter(|_| !valid.is_empty()) else {
            return;
        };
        let src = &cols[r * p + oy * wo + valid.start..r * p + oy * wo + valid.end];
        let row = &mut dx[iy * g.w..(iy + 1) * g.w];
        let x0 = valid.start * g.stride + kj - g.pad;
        if g.stride == 1 {
            let dst = &mut row[x0..x0 + src.len()];
            dst.iter_mut().zip(src).for_each(|(d, s)| *d += *s);
        } else {
            for (d, s) in row[x0..].iter_mut().step_by(g.stride).zip(src) {
                *d += *s;
            }
        }
    });
}

/// Samples per parallel group and the products' own parallelism.
fn plan(batch: usize) -> (usize, Parallelism) {
    let threads = rayon::current_num_threads().max(1);
    if batch >= threads {
        (batch.div_ceil(threads), Parallelism::None)
    } else {
        (1, Parallelism::Rayon(0))
    }
}

/// Samples in `x` of `per` elements each (0 for an empty geometry).
fn samples<T>(x: &[T], per: usize) -> usize {
    x.len().checked_div(per).unwrap_or(0)
}

/// y (B·Cout·Ho·Wo) = conv(x (B·Cin·H·W), weight (Cout·Cin·k·k)) + bias (Cout, when given).
pub fn forward<T: Real>(x: &[T], weight: &[T], bias: Option<&[T]>, g: Geometry) -> Vec<T> {
    let mut y = vec![T::ZERO; samples(x, g.input_len()) * g.output_len()];
    forward_into(&mut y, x, weight, bias, g);
    y
}

/// [`forward`] into `y` (overwritten).
fn forward_into<T: Real>(y: &mut [T], x: &[T], weight: &[T], bias: Option<&[T]>, g: Geometry) {
    let (n_in, n_out, p, rows) = (g.input_len(), g.output_len(), g.pixels(), g.rows());
    let batch = samples(x, n_in);
    if n_out == 0 || n_in == 0 || batch == 0 {
        return;
    }
    let (group, par) = plan(batch);
    y.par_chunks_mut(group * n_out)
        .zip(x.par_chunks(group * n_in))
        .for_each(|(yg, xg)| {
            let mut buf = Vec::new();
            for (ys, xs) in yg.chunks_mut(n_out).zip(xg.chunks(n_in)) {
                match bias {
                    Some(bias) => ys.chunks_mut(p).zip(bias).for_each(|(r, b)| r.fill(*b)),
                    None => ys.fill(T::ZERO),
                }
                let cols = columns(xs, &g, &mut buf);
                let shape = (g.cout, p, rows);
                matmul(
                    ys,
                    shape,
                    weight,
                    (rows, 1),
                    cols,
                    (p, 1),
                    T::ONE,
                    true,
                    par,
                );
            }
        });
}

/// The column matrix of sample `xs`: the sample itself when pointwise, else unfolded into `buf`.
fn columns<'a, T: Real>(xs: &'a [T], g: &Geometry, buf: &'a mut Vec<T>) -> &'a [T] {
    if g.is_pointwise() {
        return xs;
    }
    buf.resize(g.rows() * g.pixels(), T::ZERO);
    im2col(xs, g, buf);
    buf
}

/// ∂x (B·Cin·H·W) = col2im(Wᵀ · ∂Y) per sample, for ∂y (B·Cout·Ho·Wo). Also the forward of the
/// transposed convolution whose weight is `weight` read as (Cin_t = Cout, Cout_t = Cin, k, k).
pub fn input_grad<T: Real>(weight: &[T], dy: &[T], g: Geometry) -> Vec<T> {
    let mut dx = vec![T::ZERO; samples(dy, g.output_len()) * g.input_len()];
    input_grad_into(&mut dx, weight, dy, g);
    dx
}

/// [`input_grad`] into `dx` (overwritten).
fn input_grad_into<T: Real>(dx: &mut [T], weight: &[T], dy: &[T], g: Geometry) {
    let (n_in, n_out, p, rows) = (g.input_len(), g.output_len(), g.pixels(), g.rows());
    let batch = samples(dy, n_out);
    if n_out == 0 || n_in == 0 || batch == 0 {
        return;
    }
    let (group, par) = plan(batch);
    dx.par_chunks_mut(group * n_in)
        .zip(dy.par_chunks(group * n_out))
        .for_each(|(dxg, dyg)| {
            let mut dcols = Vec::new();
            for (dxs, dys) in dxg.chunks_mut(n_in).zip(dyg.chunks(n_out)) {
                // ∂cols (rows × P) = Wᵀ · ∂Y, straight into ∂x when pointwise.
                let (shape, wt) = ((rows, p, g.cout), (1, rows));
                if g.is_pointwise() {
                    matmul(dxs, shape, weight, wt, dys, (p, 1), T::ONE, false, par);
                } else {
                    dcols.resize(rows * p, T::ZERO);
                    matmul(
                        &mut dcols,
                        shape,
                        weight,
                        wt,
                        dys,
                        (p, 1),
                        T::ONE,
                        false,
                        par,
                    );
                    col2im(&dcols, &g, dxs);
                }
            }
        });
}

/// ∂weight (Cout·Cin·k·k) = Σ_b ∂Y_b · cols_bᵀ for input x and output gradient ∂y. Computed
/// transposed, as Σ_b cols_b · ∂Y_bᵀ (Cin·k² × Cout): with few output channels the long pixel
/// axis is the products' inner dimension either way, but this orientation runs several times
/// faster in `gemm`.
pub fn weight_grad<T: Real>(x: &[T], dy: &[T], g: Geometry) -> Vec<T> {
    let (n_in, n_out, p, rows) = (g.input_len(), g.output_len(), g.pixels(), g.rows());
    let batch = samples(x, n_in);
    let n_dw = g.cout * rows;
    if n_out == 0 || n_in == 0 || batch == 0 {
        return vec![T::ZERO; n_dw];
    }
    let (group, par) = plan(batch);
    let partials: Vec<Vec<T>> = x
        .par_chunks(group * n_in)
        .zip(dy.par_chunks(group * n_out))
        .map(|(xg, dyg)| {
            let mut dwt = vec![T::ZERO; n_dw];
            let mut buf = Vec::new();
            for (xs, dys) in xg.chunks(n_in).zip(dyg.chunks(n_out)) {
                let cols = columns(xs, &g, &mut buf);
                let shape = (rows, g.cout, p);
                matmul(
                    &mut dwt,
                    shape,
                    cols,
                    (p, 1),
                    dys,
                    (1, p),
                    T::ONE,
                    true,
                    par,
                );
            }
            dwt
        })
        .collect();
    let mut dwt = vec![T::ZERO; n_dw];
    accumulate(&mut dwt, partials);
    let mut dw = vec![T::ZERO; n_dw];
    for (r, row) in dwt.chunks(g.cout).enumerate() {
        for (o, v) in row.iter().enumerate() {
            dw[o * rows + r] = *v;
        }
    }
    dw
}

/// Per-channel sums of `y` (B·C·P): the bias gradient.
pub fn channel_sums<T: Real>(y: &[T], c: usize, p: usize) -> Vec<T> {
    if c * p == 0 {
        return vec![T::ZERO; c];
    }
    let partials: Vec<Vec<T>> = y
        .par_chunks(c * p)
        .map(|ys| {
            ys.chunks(p)
                .map(|row| row.iter().fold(T::ZERO, |a, v| a + *v))
                .collect()
        })
        .collect();
    let mut sums = vec![T::ZERO; c];
    accumulate(&mut sums, partials);
    sums
}

/// A zeroed buffer of `n_dx` elements with room for `n_params` more (extending it does not
/// move the input gradient).
fn params_after<T: Real>(n_dx: usize, n_params: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(n_dx + n_params);
    out.resize(n_dx, T::ZERO);
    out
}

/// `[∂x (B·Cin·H·W, when `need_dx`, else empty) | ∂weight (Cout·Cin·k·k) | ∂bias (Cout)]`.
pub fn backward<T: Real>(x: &[T], weight: &[T], dy: &[T], g: Geometry, need_dx: bool) -> Vec<T> {
    let mut out = params_after(
        if need_dx { x.len() } else { 0 },
        g.cout * g.rows() + g.cout,
    );
    if need_dx {
        input_grad_into(&mut out, weight, dy, g);
    }
    out.extend(weight_grad(x, dy, g));
    out.extend(channel_sums(dy, g.cout, g.pixels()));
    out
}

/// The transposed convolution's backward, for the geometry `g` of the convolution it is the
/// adjoint of (x_t is that convolution's output side, y_t its input side): `[∂x_t (when
/// `need_dx`) = conv(∂y_t) | ∂weight = the convolution's weight gradient with input and output
/// swapped | ∂bias (Cin of g)]`.
pub fn transposed_backward<T: Real>(
    x_t: &[T],
    weight: &[T],
    dy_t: &[T],
    g: Geometry,
    need_dx: bool,
) -> Vec<T> {
    let mut out = params_after(
        if need_dx { x_t.len() } else { 0 },
        g.cout * g.rows() + g.cin,
    );
    if need_dx {
        forward_into(&mut out, dy_t, weight, None, g);
    }
    out.extend(weight_grad(dy_t, x_t, g));
    out.extend(channel_sums(dy_t, g.cin, g.h * g.w));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, one output at a time.
    fn direct(x: &[f64], w: &[f64], b: &[f64], g: Geometry) -> Vec<f64> {
        let (ho, wo) = g.output().unwrap();
        let batch = x.len() / g.input_len();
        let mut y = vec![0.0; batch * g.output_len()];
        for n in 0..batch {
            for o in 0..g.cout {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = b[o];
                        for c in 0..g.cin {
                            for ki in 0..g.k {
                                for kj in 0..g.k {
                                    let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                                    let ix = (ox * g.stride + kj) as isize - g.pad as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xi =
                                        ((n * g.cin + c) * g.h + iy as usize) * g.w + ix as usize;
                                    acc += x[xi] * w[((o * g.cin + c) * g.k + ki) * g.k + kj];
                                }
                            }
                        }
                        y[((n * g.cout + o) * ho + oy) * wo + ox] = acc;
                    }
                }
            }
        }
        y
    }

    fn noise(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    fn geometries() -> Vec<(usize, Geometry)> {
        let g = |cin, h, w, cout, k, stride, pad| Geometry {
            cin,
            h,
            w,
            cout,
            k,
            stride,
            pad,
        };
        vec![
            (3, g(2, 5, 7, 3, 3, 1, 1)),  // the decoder's 3×3, H ≠ W
            (2, g(3, 8, 12, 5, 4, 4, 0)), // the stem's patchify
            (5, g(4, 6, 6, 2, 2, 2, 0)),  // downsampling
            (1, g(3, 4, 5, 4, 1, 1, 0)),  // pointwise (no unfolding)
            (4, g(2, 7, 6, 3, 3, 2, 2)),  // stride with padding wider than the kernel's reach
            (2, g(1, 2, 3, 2, 5, 1, 2)),  // kernel larger than the input
            (3, g(2, 9, 4, 1, 3, 3, 1)),  // odd remainder rows/cols dropped
        ]
    }

    #[test]
    fn forward_equals_the_definition() {
        for (seed, (batch, g)) in geometries().into_iter().enumerate() {
            let x = noise(batch * g.input_len(), seed as u64);
            let w = noise(g.cout * g.rows(), 100 + seed as u64);
            let b = noise(g.cout, 200 + seed as u64);
            let got = forward(&x, &w, Some(&b), g);
            let want = direct(&x, &w, &b, g);
            assert_eq!(got.len(), want.len(), "{g:?}");
            for (a, e) in got.iter().zip(&want) {
                assert!((a - e).abs() < 1e-12, "{g:?}: {a} vs {e}");
            }
        }
    }

    /// The convolution is bilinear, so each gradient entry is an exact difference of forwards
    /// (up to rounding): ⟨∂y, conv(x + e_i) − conv(x)⟩ with a unit step.
    #[test]
    fn backward_equals_exact_differences() {
        for (seed, (batch, g)) in geometries().into_iter().enumerate() {
            let s = seed as u64;
            let x = noise(batch * g.input_len(), s);
            let w = noise(g.cout * g.rows(), 100 + s);
            let b = noise(g.cout, 200 + s);
            let dy = noise(batch * g.output_len(), 300 + s);
            let loss = |x: &[f64], w: &[f64], b: &[f64]| -> f64 {
                forward(x, w, Some(b), g)
                    .iter()
                    .zip(&dy)
                    .map(|(y, d)| y * d)
                    .sum()
            };
            let base = loss(&x, &w, &b);
            let grads = backward(&x, &w, &dy, g, true);
            let (dx, rest) = grads.split_at(x.len());
            let (dw, db) = rest.split_at(w.len());
            let check = |name: &str, got: &[f64], v: &[f64], f: &dyn Fn(&[f64]) -> f64| {
                for i in 0..v.len() {
                    let mut e = v.to_vec();
                    e[i] += 1.0;
                    let want = f(&e) - base;
                    assert!(
                        (got[i] - want).abs() < 1e-9,
                        "{g:?} ∂{name}[{i}]: {} vs {want}",
                        got[i]
                    );
                }
            };
            check("x", dx, &x, &|e| loss(e, &w, &b));
            check("w", dw, &w, &|e| loss(&x, e, &b));
            check("b", db, &b, &|e| loss(&x, &w, e));
            let no_dx = backward(&x, &w, &dy, g, false);
            assert_eq!(no_dx, rest, "{g:?}: parameter gradients without ∂x");
        }
    }
}
