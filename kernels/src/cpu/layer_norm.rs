//! Layer normalisation over one axis of a tensor viewed as (outer, D, inner): D is normalised
//! for every (outer, inner) pair — inner = 1 is the usual last-axis LayerNorm, inner = H·W the
//! channels-first one of ConvNeXt, without a transposed copy. One job per outer index; along
//! inner the statistics of all positions are accumulated row by row, so reads are contiguous.

use crate::float::Real;
use rayon::prelude::*;

/// (outer, D, inner).
#[derive(Clone, Copy)]
pub struct Dims {
    pub outer: usize,
    pub d: usize,
    pub inner: usize,
}

/// Mean and 1/sqrt(var + eps) over D of one outer block (D × inner), per inner position.
fn stats<T: Real>(x: &[T], d: usize, inner: usize, eps: T) -> (Vec<T>, Vec<T>) {
    let inv_d = T::ONE / T::of(d as f64);
    let mut mean = vec![T::ZERO; inner];
    for row in x.chunks_exact(inner) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m *= inv_d);
    let mut var = vec![T::ZERO; inner];
    for row in x.chunks_exact(inner) {
        for ((s, &v), &m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (v - m) * (v - m);
        }
    }
    let rstd = var
        .iter()
        .map(|&s| T::ONE / (s * inv_d + eps).sqrt())
        .collect();
    (mean, rstd)
}

/// y = (x − μ)/sqrt(σ² + eps) · weight + bias, normalising over D.
pub fn forward<T: Real>(x: &[T], weight: &[T], bias: &[T], dims: Dims, eps: T) -> Vec<T> {
    let Dims { outer, d, inner } = dims;
    let block = d * inner;
    let mut y = vec![T::ZERO; outer * block];
    if block == 0 {
        return y;
    }
    y.par_chunks_mut(block)
        .zip(x.par_chunks(block))
        .for_each(|(yb, xb)| {
            let (mean, rstd) = stats(xb, d, inner, eps);
            for (c, (yr, xr)) in yb
                .chunks_exact_mut(inner)
                .zip(xb.chunks_exact(inner))
                .enumerate()
            {
                let (w, b) = (weight[c], bias[c]);
                for (((o, &v), &m), &r) in yr.iter_mut().zip(xr).zip(&mean).zip(&rstd) {
                    *o = (v - m) * r * w + b;
                }
            }
        });
    y
}

/// `[∂x | ∂weight D | ∂bias D]` for the upstream gradient `dy`:
/// ∂x = r·(g − mean_D g − x̂·mean_D(g·x̂)) with g = dy·weight and x̂ = (x − μ)·r.
pub fn backward<T: Real>(x: &[T], weight: &[T], dy: &[T], dims: Dims, eps: T) -> Vec<T> {
    let Dims { outer, d, inner } = dims;
    let block = d * inner;
    let n = outer * block;
    let mut out = vec![T::ZERO; n + 2 * d];
    if block == 0 {
        return out;
    }
    let inv_d = T::ONE / T::of(d as f64);
    let (dx, params) = out.split_at_mut(n);
    // Per outer block: ∂x, and its share of ∂weight and ∂bias.
    let shares: Vec<Vec<T>> = dx
        .par_chunks_mut(block)
        .zip(x.par_chunks(block))
        .zip(dy.par_chunks(block))
        .map(|((dxb, xb), gb)| {
            let (mean, rstd) = stats(xb, d, inner, eps);
            let mut share = vec![T::ZERO; 2 * d];
            let (mut sg, mut sgx) = (vec![T::ZERO; inner], vec![T::ZERO; inner]);
            for (c, (xr, gr)) in xb
                .chunks_exact(inner)
                .zip(gb.chunks_exact(inner))
                .enumerate()
            {
                let w = weight[c];
                let (mut dw, mut db) = (T::ZERO, T::ZERO);
                for (q, (&v, &g)) in xr.iter().zip(gr).enumerate() {
                    let xhat = (v - mean[q]) * rstd[q];
                    dw += g * xhat;
                    db += g;
                    sg[q] += g * w;
                    sgx[q] += g * w * xhat;
                }
                share[c] = dw;
                share[d + c] = db;
            }
            for (c, (dr, (xr, gr))) in dxb
                .chunks_exact_mut(inner)
                .zip(xb.chunks_exact(inner).zip(gb.chunks_exact(inner)))
                .enumerate()
            {
                let w = weight[c];
                for (q, (o, (&v, &g))) in dr.iter_mut().zip(xr.iter().zip(gr)).enumerate() {
                    let xhat = (v - mean[q]) * rstd[q];
                    *o = rstd[q] * (g * w - sg[q] * inv_d - xhat * sgx[q] * inv_d);
                }
            }
            share
        })
        .collect();
    for share in shares {
        for (p, s) in params.iter_mut().zip(share) {
            *p += s;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{backward, forward, Dims};

    fn data(n: usize, seed: u64) -> Vec<f64> {
        (0..n)
            .map(|i| (((i as u64 * 7 + seed) * 2_654_435_761) % 1000) as f64 / 300.0 - 1.5)
            .collect()
    }

    /// The definition, one (outer, inner) vector at a time.
    fn naive(x: &[f64], w: &[f64], b: &[f64], dims: Dims, eps: f64) -> Vec<f64> {
        let Dims { outer, d, inner } = dims;
        let mut y = vec![0.0; x.len()];
        for o in 0..outer {
            for q in 0..inner {
                let at = |c: usize| o * d * inner + c * inner + q;
                let mean = (0..d).map(|c| x[at(c)]).sum::<f64>() / d as f64;
                let var = (0..d).map(|c| (x[at(c)] - mean).powi(2)).sum::<f64>() / d as f64;
                for c in 0..d {
                    y[at(c)] = (x[at(c)] - mean) / (var + eps).sqrt() * w[c] + b[c];
                }
            }
        }
        y
    }

    #[test]
    fn forward_and_backward_match_the_definition() {
        let eps = 1e-6;
        for dims in [
            Dims {
                outer: 3,
                d: 5,
                inner: 1,
            },
            Dims {
                outer: 2,
                d: 4,
                inner: 7,
            },
            Dims {
                outer: 1,
                d: 1,
                inner: 3,
            },
        ] {
            let n = dims.outer * dims.d * dims.inner;
            let (x, w, b) = (data(n, 1), data(dims.d, 2), data(dims.d, 3));
            let y = forward(&x, &w, &b, dims, eps);
            let want = naive(&x, &w, &b, dims, eps);
            let err = y
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-12, "forward: {err:e}");
            let dy = data(n, 4);
            let grads = backward(&x, &w, &dy, dims, eps);
            let loss = |x: &[f64], w: &[f64], b: &[f64]| -> f64 {
                naive(x, w, b, dims, eps)
                    .iter()
                    .zip(&dy)
                    .map(|(a, b)| a * b)
                    .sum()
            };
            let mut inputs = [x.clone(), w.clone(), b.clone()];
            let mut offset = 0;
            let h = 1e-6;
            for which in 0..3 {
                for idx in 0..inputs[which].len() {
                    inputs[which][idx] += h;
                    let up = loss(&inputs[0], &inputs[1], &inputs[2]);
                    inputs[which][idx] -= 2.0 * h;
                    let down = loss(&inputs[0], &inputs[1], &inputs[2]);
                    inputs[which][idx] += h;
                    let num = (up - down) / (2.0 * h);
                    let got = grads[offset + idx];
                    assert!(
                        (num - got).abs() < 1e-6 * (1.0 + num.abs()),
                        "input {which} [{idx}]: {got} vs {num}"
                    );
                }
                offset += inputs[which].len();
            }
        }
    }
}
