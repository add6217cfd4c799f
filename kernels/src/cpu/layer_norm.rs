//! Layer normalisation over one axis of a tensor viewed as (outer, D, inner): D is normalised
//! for every (outer, inner) pair — inner = 1 is the usual last-axis LayerNorm, inner = H·W the
//! channels-first one of ConvNeXt, without a transposed copy. Each parallel job takes whole
//! outer blocks (enough of them for ~16K elements, so short rows are not one job each); along
//! inner the statistics of all positions are accumulated row by row, so reads are contiguous.

use crate::cpu::accumulate;
use crate::float::Real;
use rayon::prelude::*;

/// (outer, D, inner).
#[derive(Clone, Copy)]
pub struct Dims {
    pub outer: usize,
    pub d: usize,
    pub inner: usize,
}

/// Elements per parallel job (at least one outer block).
const JOB: usize = 1 << 14;

/// Elements per job for outer blocks of `block` elements: a whole number of blocks.
fn job(block: usize) -> usize {
    block * (JOB / block).max(1)
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

/// Mean and 1/sqrt(var + eps) of one contiguous row.
#[inline(always)]
fn row_stats<T: Real>(x: &[T], eps: T) -> (T, T) {
    let inv_d = T::ONE / T::of(x.len() as f64);
    let mean = x.iter().fold(T::ZERO, |a, &v| a + v) * inv_d;
    let var = x.iter().fold(T::ZERO, |a, &v| a + (v - mean) * (v - mean)) * inv_d;
    (mean, T::ONE / (var + eps).sqrt())
}

/// The forward for inner = 1: each row of D is one vector.
fn forward_rows<T: Real>(x: &[T], weight: &[T], bias: &[T], y: &mut [T], eps: T) {
    let d = weight.len();
    for (yr, xr) in y.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let (mean, rstd) = row_stats(xr, eps);
        for (((o, &v), &w), &b) in yr.iter_mut().zip(xr).zip(weight).zip(bias) {
            *o = (v - mean) * rstd * w + b;
        }
    }
}

/// The backward for inner = 1: ∂x rows into `dx`, ∂weight and ∂bias added to `share`.
fn backward_rows<T: Real>(x: &[T], weight: &[T], dy: &[T], dx: &mut [T], share: &mut [T], eps: T) {
    let d = weight.len();
    let inv_d = T::ONE / T::of(d as f64);
    let (dw, db) = share.split_at_mut(d);
    for ((dr, xr), gr) in dx
        .chunks_exact_mut(d)
        .zip(x.chunks_exact(d))
        .zip(dy.chunks_exact(d))
    {
        let (mean, rstd) = row_stats(xr, eps);
        let (mut sg, mut sgx) = (T::ZERO, T::ZERO);
        for (((&v, &g), &w), (dw, db)) in xr
            .iter()
            .zip(gr)
            .zip(weight)
            .zip(dw.iter_mut().zip(db.iter_mut()))
        {
            let xhat = (v - mean) * rstd;
            *dw += g * xhat;
            *db += g;
            sg += g * w;
            sgx += g * w * xhat;
        }
        let (sg, sgx) = (sg * inv_d, sgx * inv_d);
        for (((o, &v), &g), &w) in dr.iter_mut().zip(xr).zip(gr).zip(weight) {
            let xhat = (v - mean) * rstd;
            *o = rstd * (g * w - sg - xhat * sgx);
        }
    }
}

/// y = (x − μ)/sqrt(σ² + eps) · weight + bias, normalising over D.
pub fn forward<T: Real>(x: &[T], weight: &[T], bias: &[T], dims: Dims, eps: T) -> Vec<T> {
    let Dims { outer, d, inner } = dims;
    let block = d * inner;
    let mut y = vec![T::ZERO; outer * block];
    if block == 0 {
        return y;
    }
    y.par_chunks_mut(job(block))
        .zip(x.par_chunks(job(block)))
        .for_each(|(yj, xj)| {
            if inner == 1 {
                return forward_rows(xj, weight, bias, yj, eps);
            }
            for (yb, xb) in yj.chunks_exact_mut(block).zip(xj.chunks_exact(block)) {
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
    // Per job: ∂x of its outer blocks, and their share of ∂weight and ∂bias.
    let shares: Vec<Vec<T>> = dx
        .par_chunks_mut(job(block))
        .zip(x.par_chunks(job(block)))
        .zip(dy.par_chunks(job(block)))
        .map(|((dxj, xj), gj)| {
            let mut share = vec![T::ZERO; 2 * d];
            if inner == 1 {
                backward_rows(xj, weight, gj, dxj, &mut share, eps);
                return share;
            }
            let (mut sg, mut sgx) = (vec![T::ZERO; inner], vec![T::ZERO; inner]);
            let blocks = dxj.chunks_exact_mut(block).zip(xj.chunks_exact(block));
            for ((dxb, xb), gb) in blocks.zip(gj.chunks_exact(block)) {
                let (mean, rstd) = stats(xb, d, inner, eps);
                sg.fill(T::ZERO);
                sgx.fill(T::ZERO);
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
                    share[c] += dw;
                    share[d + c] += db;
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
            }
            share
        })
        .collect();
    accumulate(params, shares);
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
