//! Depthwise k×k convolution (stride 1, zero padding k/2) on contiguous slices. Each plane is
//! zero-padded once into a (H+2p)×(W+2p) buffer; then output pixel (i, j), kept at i·(W+2p) + j
//! of a "wide" plane, reads the padded input at that index plus ki·(W+2p) + kj, so each tap is
//! one axpy over the whole plane (the wide plane's 2p extra columns per row are computed and
//! dropped) instead of one short axpy per row — at the backbone's 4²–8² planes, rows of 4–8.
//! The backward's input gradient is the same loop with the kernel rotated by 180° on the padded
//! upstream gradient; the weight gradient is one dot product per tap between the widened
//! upstream gradient (zeros in the extra columns) and the padded input, a channel per job.

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
    /// Width of a padded (and of a wide) plane: W + 2p.
    fn wide(&self) -> usize {
        self.w + 2 * (self.k / 2)
    }

    /// Elements from a wide plane's first output pixel to its last: (H−1)·(W+2p) + W.
    fn span(&self) -> usize {
        self.h.saturating_sub(1) * self.wide() + self.w
    }
}

/// `src` (H×W) zero-padded by k/2 on every side into `pad` ((H+2p)×(W+2p)).
fn pad_into<T: Real>(src: &[T], g: Geometry, pad: &mut Vec<T>) {
    let (p, wp) = (g.k / 2, g.wide());
    pad.clear();
    pad.resize((g.h + 2 * p) * wp, T::ZERO);
    for (i, row) in src.chunks_exact(g.w).enumerate() {
        pad[(i + p) * wp + p..(i + p) * wp + p + g.w].copy_from_slice(row);
    }
}

/// `src` (H×W) with its rows W + 2p apart (zeros between them) into `wide` (span elements).
fn widen_into<T: Real>(src: &[T], g: Geometry, wide: &mut Vec<T>) {
    let wp = g.wide();
    wide.clear();
    wide.resize(g.span(), T::ZERO);
    for (i, row) in src.chunks_exact(g.w).enumerate() {
        wide[i * wp..i * wp + g.w].copy_from_slice(row);
    }
}

avx2_dispatch! {
    /// wide (span) += Σ_taps kernel[tap] · the padded plane shifted by the tap (`flip`: the
    /// kernel rotated 180°).
    fn accumulate_taps<T: Real>(wide: &mut [T], pad: &[T], kernel: &[T], g: Geometry, flip: bool) -> () =
        accumulate_taps_impl;
}

#[inline(always)]
fn accumulate_taps_impl<T: Real>(wide: &mut [T], pad: &[T], kernel: &[T], g: Geometry, flip: bool) {
    let (k, wp, span) = (g.k, g.wide(), g.span());
    for ki in 0..k {
        for kj in 0..k {
            let wv = if flip {
                kernel[(k - 1 - ki) * k + (k - 1 - kj)]
            } else {
                kernel[ki * k + kj]
            };
            let at = ki * wp + kj;
            axpy(wv, &pad[at..at + span], &mut wide[..span]);
        }
    }
}

/// Planes per parallel job: about 16K output pixels each, at least one.
fn planes_per_job(hw: usize) -> usize {
    (16_384 / hw.max(1)).max(1)
}

/// out (planes of H×W) = Σ_taps kernel(plane) · src shifted, + bias(plane), plane by plane.
fn convolve_planes<'w, T: Real>(
    out: &mut [T],
    src: &[T],
    kernel: &(dyn Fn(usize) -> (&'w [T], T) + Sync),
    g: Geometry,
    flip: bool,
) {
    let hw = g.h * g.w;
    let per = planes_per_job(hw);
    out.par_chunks_mut(hw * per)
        .zip(src.par_chunks(hw * per))
        .enumerate()
        .for_each(|(job, (outs, srcs))| {
            let (mut pad, mut wide) = (Vec::new(), Vec::new());
            for (n, (out, src)) in outs.chunks_mut(hw).zip(srcs.chunks(hw)).enumerate() {
                let (taps, bias) = kernel(job * per + n);
                pad_into(src, g, &mut pad);
                wide.clear();
                wide.resize(g.span(), bias);
                accumulate_taps(&mut wide, &pad, taps, g, flip);
                for (i, row) in out.chunks_exact_mut(g.w).enumerate() {
                    row.copy_from_slice(&wide[i * g.wide()..i * g.wide() + g.w]);
                }
            }
        });
}

/// y (B, C, H, W) = depthwise(x, weight (C, k·k)) + bias (C).
pub fn forward<T: Real>(x: &[T], weight: &[T], bias: &[T], c: usize, g: Geometry) -> Vec<T> {
    let (hw, kk) = (g.h * g.w, g.k * g.k);
    let mut y = vec![T::ZERO; x.len()];
    if hw == 0 || c == 0 {
        return y;
    }
    let kernel = |plane: usize| {
        let ch = plane % c;
        (&weight[ch * kk..(ch + 1) * kk], bias[ch])
    };
    convolve_planes(&mut y, x, &kernel, g, false);
    y
}

avx2_dispatch! {
    /// ∂weight (k·k, added to `dw`) and ∂bias of one channel over every sample's planes.
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
    let (k, hw, wp, span) = (g.k, g.h * g.w, g.wide(), g.span());
    let (mut pad, mut wide) = (Vec::new(), Vec::new());
    let mut db = T::ZERO;
    for &plane in planes {
        let (src, grad) = (
            &x[plane * hw..(plane + 1) * hw],
            &dy[plane * hw..(plane + 1) * hw],
        );
        db += grad.iter().fold(T::ZERO, |a, &b| a + b);
        pad_into(src, g, &mut pad);
        widen_into(grad, g, &mut wide);
        for ki in 0..k {
            for kj in 0..k {
                let at = ki * wp + kj;
                dw[ki * k + kj] += dot(&wide, &pad[at..at + span]);
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
    let kernel = |plane: usize| {
        let ch = plane % c;
        (&weight[ch * kk..(ch + 1) * kk], T::ZERO)
    };
    convolve_planes(dx, dy, &kernel, g, true);
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
    /// Planes large enough that the work is split into several jobs of several planes, with a
    /// last job of fewer (9 planes of 64², 4 per job): every plane gets its own channel's taps
    /// and bias, forward and backward, against the definitions (the backward's by its
    /// transposed loops: ∂x scatters each upstream value through the taps, ∂w gathers).
    #[test]
    fn planes_split_into_jobs_keep_their_channels() {
        let (b, c, g) = (3, 3, Geometry { h: 64, w: 64, k: 3 });
        assert!(super::planes_per_job(g.h * g.w) == 4);
        let (x, wt, bias) = (data(b * c * 4096, 5), data(c * 9, 6), data(c, 7));
        let y = forward(&x, &wt, &bias, c, g);
        let want = naive(&x, &wt, &bias, c, g);
        assert!(y.iter().zip(&want).all(|(a, e)| (a - e).abs() < 1e-12));
        let dy = data(y.len(), 8);
        let grads = backward(&x, &wt, &dy, c, g);
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; c * 9], vec![0.0; c]);
        for plane in 0..b * c {
            let ch = plane % c;
            for i in 0..64isize {
                for j in 0..64isize {
                    let d = dy[plane * 4096 + (i * 64 + j) as usize];
                    db[ch] += d;
                    for ki in 0..3isize {
                        for kj in 0..3isize {
                            let (si, sj) = (i + ki - 1, j + kj - 1);
                            if (0..64).contains(&si) && (0..64).contains(&sj) {
                                let at = plane * 4096 + (si * 64 + sj) as usize;
                                let tap = ch * 9 + (ki * 3 + kj) as usize;
                                dx[at] += wt[tap] * d;
                                dw[tap] += x[at] * d;
                            }
                        }
                    }
                }
            }
        }
        let want: Vec<f64> = dx.into_iter().chain(dw).chain(db).collect();
        assert_eq!(grads.len(), want.len());
        for (n, (a, e)) in grads.iter().zip(&want).enumerate() {
            assert!((a - e).abs() < 1e-9, "gradient [{n}]: {a} vs {e}");
        }
    }
}
