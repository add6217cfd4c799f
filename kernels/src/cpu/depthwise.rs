//! Depthwise k×k convolution (stride 1, zero padding k/2) on contiguous slices: one (sample,
//! channel) plane per parallel job, each tap an axpy along the plane's rows, so nothing is
//! copied or padded. The backward's input gradient is the same loop with the kernel rotated by
//! 180°; the weight gradient is one dot product per tap and row, a channel per job.

use crate::float::{axpy, dot, Real};
use crate::simd::avx2_dispatch;
use rayon::prelude::*;

/// Plane geometry: H, W and the odd kernel side k.
#[derive(Clone, Copy)]
pub struct Geometry {
    pub h: usize,
    pub w: usize,
    pub k: usize,
}

impl Geometry {
    /// For tap (ki, kj): the output rows and columns whose input pixel (i + ki − p, j + kj − p)
    /// lies inside the plane, and that offset.
    #[inline(always)]
    fn tap(
        &self,
        ki: usize,
        kj: usize,
    ) -> (std::ops::Range<usize>, std::ops::Range<usize>, isize, isize) {
        let p = (self.k / 2) as isize;
        let (di, dj) = (ki as isize - p, kj as isize - p);
        let rows = (-di).max(0) as usize..(self.h as isize - di).clamp(0, self.h as isize) as usize;
        let cols = (-dj).max(0) as usize..(self.w as isize - dj).clamp(0, self.w as isize) as usize;
        (rows, cols, di, dj)
    }
}

avx2_dispatch! {
    /// out (H×W) += Σ_taps kernel[tap] · src shifted by the tap (`flip`: kernel rotated 180°).
    fn accumulate_plane<T: Real>(out: &mut [T], src: &[T], kernel: &[T], g: Geometry, flip: bool) -> () =
        accumulate_plane_impl;
}

#[inline(always)]
fn accumulate_plane_impl<T: Real>(out: &mut [T], src: &[T], kernel: &[T], g: Geometry, flip: bool) {
    let k = g.k;
    for ki in 0..k {
        for kj in 0..k {
            let wv = if flip {
                kernel[(k - 1 - ki) * k + (k - 1 - kj)]
            } else {
                kernel[ki * k + kj]
            };
            let (rows, cols, di, dj) = g.tap(ki, kj);
            if cols.is_empty() {
                continue;
            }
            for i in rows {
                let si = (i as isize + di) as usize;
                let s0 = (cols.start as isize + dj) as usize;
                let srow = &src[si * g.w + s0..si * g.w + s0 + cols.len()];
                axpy(wv, srow, &mut out[i * g.w + cols.start..i * g.w + cols.end]);
            }
        }
    }
}

/// y (B, C, H, W) = depthwise(x, weight (C, k·k)) + bias (C).
pub fn forward<T: Real>(x: &[T], weight: &[T], bias: &[T], c: usize, g: Geometry) -> Vec<T> {
    let hw = g.h * g.w;
    let mut y = vec![T::ZERO; x.len()];
    if hw == 0 {
        return y;
    }
    y.par_chunks_mut(hw)
        .zip(x.par_chunks(hw))
        .enumerate()
        .for_each(|(plane, (out, src))| {
            let ch = plane % c;
            out.fill(bias[ch]);
            accumulate_plane(
                out,
                src,
                &weight[ch * g.k * g.k..(ch + 1) * g.k * g.k],
                g,
                false,
            );
        });
    y
}

avx2_dispatch! {
    /// ∂weight (k·k) and ∂bias of one channel over every sample's planes.
    fn channel_grads<T: Real>(x: &[T], dy: &[T], planes: &[usize], g: Geometry, dw: &mut [T]) -> T =
        channel_grads_impl;
}

#[inline(always)]
fn channel_grads_impl<T: Real>(
    x: &[T],
    dy: &[T],
    planes: &[usize],
    g: Geometry,
    dw: &mut [T],
) -> T {
    let (k, hw) = (g.k, g.h * g.w);
    let mut db = T::ZERO;
    for &plane in planes {
        let (src, grad) = (
            &x[plane * hw..(plane + 1) * hw],
            &dy[plane * hw..(plane + 1) * hw],
        );
        db += grad.iter().fold(T::ZERO, |a, &b| a + b);
        for ki in 0..k {
            for kj in 0..k {
                let (rows, cols, di, dj) = g.tap(ki, kj);
                if cols.is_empty() {
                    continue;
                }
                let mut acc = T::ZERO;
                for i in rows {
                    let si = (i as isize + di) as usize;
                    let s0 = (cols.start as isize + dj) as usize;
                    let srow = &src[si * g.w + s0..si * g.w + s0 + cols.len()];
                    acc += dot(&grad[i * g.w + cols.start..i * g.w + cols.end], srow);
                }
                dw[ki * k + kj] += acc;
            }
        }
    }
    db
}

/// `[∂x B·C·H·W | ∂weight C·k·k | ∂bias C]` for the upstream gradient `dy` (B, C, H, W).
pub fn backward<T: Real>(x: &[T], weight: &[T], dy: &[T], c: usize, g: Geometry) -> Vec<T> {
    let (hw, kk) = (g.h * g.w, g.k * g.k);
    let n = x.len();
    let mut out = vec![T::ZERO; n + c * kk + c];
    if hw == 0 || c == 0 {
        return out;
    }
    let (dx, rest) = out.split_at_mut(n);
    let (dw, db) = rest.split_at_mut(c * kk);
    dx.par_chunks_mut(hw)
        .zip(dy.par_chunks(hw))
        .enumerate()
        .for_each(|(plane, (out, grad))| {
            let ch = plane % c;
            accumulate_plane(out, grad, &weight[ch * kk..(ch + 1) * kk], g, true);
        });
    let b = n / (c * hw);
    dw.par_chunks_mut(kk)
        .zip(db.par_iter_mut())
        .enumerate()
        .for_each(|(ch, (dw, db))| {
            let planes: Vec<usize> = (0..b).map(|s| s * c + ch).collect();
            *db = channel_grads(x, dy, &planes, g, dw);
        });
    out
}

#[cfg(test)]
mod tests {
    use super::{backward, forward, Geometry};

    /// The direct definition, for comparison.
    fn naive(x: &[f64], w: &[f64], b: &[f64], c: usize, g: Geometry) -> Vec<f64> {
        let (h, wd, k) = (g.h as isize, g.w as isize, g.k as isize);
        let p = k / 2;
        let mut y = vec![0.0; x.len()];
        for (plane, out) in y.chunks_mut((h * wd) as usize).enumerate() {
            let ch = plane % c;
            for i in 0..h {
                for j in 0..wd {
                    let mut s = b[ch];
                    for ki in 0..k {
                        for kj in 0..k {
                            let (si, sj) = (i + ki - p, j + kj - p);
                            if si >= 0 && si < h && sj >= 0 && sj < wd {
                                s += w[ch * (k * k) as usize + (ki * k + kj) as usize]
                                    * x[plane * (h * wd) as usize + (si * wd + sj) as usize];
                            }
                        }
                    }
                    out[(i * wd + j) as usize] = s;
                }
            }
        }
        y
    }

    fn data(n: usize, seed: u64) -> Vec<f64> {
        (0..n)
            .map(|i| (((i as u64 + seed) * 2_654_435_761) % 1000) as f64 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn forward_and_backward_match_the_definition() {
        for (b, c, h, w, k) in [
            (2, 3, 5, 4, 3),
            (1, 2, 9, 11, 7),
            (2, 1, 2, 3, 7),
            (1, 1, 1, 1, 1),
        ] {
            let g = Geometry { h, w, k };
            let (x, wt, bias) = (data(b * c * h * w, 1), data(c * k * k, 2), data(c, 3));
            let y = forward(&x, &wt, &bias, c, g);
            let want = naive(&x, &wt, &bias, c, g);
            let err = y
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-12, "forward {b} {c} {h} {w} {k}: {err:e}");
            // Gradients of Σ y·dy by finite differences of the (linear) definition.
            let dy = data(y.len(), 4);
            let grads = backward(&x, &wt, &dy, c, g);
            let loss = |x: &[f64], wt: &[f64], bias: &[f64]| -> f64 {
                naive(x, wt, bias, c, g)
                    .iter()
                    .zip(&dy)
                    .map(|(a, b)| a * b)
                    .sum()
            };
            let base = loss(&x, &wt, &bias);
            let mut inputs = [x.clone(), wt.clone(), bias.clone()];
            let mut offset = 0;
            for which in 0..3 {
                for idx in 0..inputs[which].len() {
                    inputs[which][idx] += 1.0;
                    let num = loss(&inputs[0], &inputs[1], &inputs[2]) - base;
                    inputs[which][idx] -= 1.0;
                    let got = grads[offset + idx];
                    assert!(
                        (num - got).abs() < 1e-9,
                        "input {which} [{idx}]: {got} vs {num}"
                    );
                }
                offset += inputs[which].len();
            }
        }
    }
}
