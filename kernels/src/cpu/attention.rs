//! Scaled dot-product attention, softmax(q·kᵀ·scale + bias)·v, on contiguous slices: one
//! (sample, head) pair per parallel job, its score matrix (Lq × Lk) in a job-local buffer, the
//! products on `gemm`. The backward recomputes the probabilities instead of keeping them.

use crate::cpu::gemm::matmul;
use crate::float::Real;
use gemm::Parallelism;
use rayon::prelude::*;

/// Sizes: B·H (sample, head) pairs, heads H, query and key lengths, head width D.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub pairs: usize,
    pub heads: usize,
    pub lq: usize,
    pub lk: usize,
    pub d: usize,
}

/// P = softmax(q·kᵀ·scale + bias) of one pair into `p` (Lq × Lk); `bias` is the sample's (Lk).
/// The exponential is the library one: the training trajectory of the small overfitting test
/// (tests/train_resume.rs) moved from Dice 0.97 to 0.93 with the 2-ulp `fast_exp` here.
fn probabilities<T: Real>(q: &[T], k: &[T], bias: Option<&[T]>, scale: T, n: Dims, p: &mut [T]) {
    let Dims { lq, lk, d, .. } = n;
    let par = Parallelism::None;
    matmul(p, (lq, lk, d), q, (d, 1), k, (1, d), scale, false, par);
    for row in p.chunks_exact_mut(lk) {
        if let Some(b) = bias {
            row.iter_mut().zip(b).for_each(|(s, b)| *s += *b);
        }
        let m = row.iter().fold(row[0], |m, &s| m.fmax(s));
        let mut sum = T::ZERO;
        for s in row.iter_mut() {
            *s = (*s - m).exp();
            sum += *s;
        }
        let inv = T::ONE / sum;
        row.iter_mut().for_each(|s| *s *= inv);
    }
}

/// The bias row of pair `i` (bias is per sample, shared by its heads).
fn bias_of<T>(bias: Option<&[T]>, i: usize, n: Dims) -> Option<&[T]> {
    bias.map(|b| &b[(i / n.heads) * n.lk..(i / n.heads + 1) * n.lk])
}

/// o (B·H × Lq × D) for q (B·H × Lq × D), k, v (B·H × Lk × D), bias (B × Lk).
pub fn forward<T: Real>(
    q: &[T],
    k: &[T],
    v: &[T],
    bias: Option<&[T]>,
    scale: T,
    n: Dims,
) -> Vec<T> {
    let (sq, sk) = (n.lq * n.d, n.lk * n.d);
    let mut o = vec![T::ZERO; n.pairs * sq];
    if sq == 0 || n.lk == 0 {
        return o;
    }
    o.par_chunks_mut(sq).enumerate().for_each(|(i, oi)| {
        let mut p = vec![T::ZERO; n.lq * n.lk];
        let (qi, ki, vi) = (&q[i * sq..][..sq], &k[i * sk..][..sk], &v[i * sk..][..sk]);
        probabilities(qi, ki, bias_of(bias, i, n), scale, n, &mut p);
        matmul(
            oi,
            (n.lq, n.d, n.lk),
            &p,
            (n.lk, 1),
            vi,
            (n.d, 1),
            T::ONE,
            false,
            Parallelism::None,
        );
    });
    o
}

/// `[∂q | ∂k | ∂v]` for the upstream gradient ∂o:
/// ∂v = Pᵀ·∂o, ∂S = P ⊙ (∂o·vᵀ − rowsum(P ⊙ ∂o·vᵀ)), ∂q = scale·∂S·k, ∂k = scale·∂Sᵀ·q.
pub fn backward<T: Real>(
    q: &[T],
    k: &[T],
    v: &[T],
    bias: Option<&[T]>,
    dout: &[T],
    scale: T,
    n: Dims,
) -> Vec<T> {
    let (sq, sk) = (n.lq * n.d, n.lk * n.d);
    let (lq, lk, d) = (n.lq, n.lk, n.d);
    let mut grads = vec![T::ZERO; n.pairs * (sq + 2 * sk)];
    if sq == 0 || lk == 0 {
        return grads;
    }
    let (dq_all, rest) = grads.split_at_mut(n.pairs * sq);
    let (dk_all, dv_all) = rest.split_at_mut(n.pairs * sk);
    let blocks = dq_all.par_chunks_mut(sq).zip(dk_all.par_chunks_mut(sk));
    blocks
        .zip(dv_all.par_chunks_mut(sk))
        .enumerate()
        .for_each(|(i, ((dq, dk), dv))| {
            let (qi, ki, vi) = (&q[i * sq..][..sq], &k[i * sk..][..sk], &v[i * sk..][..sk]);
            let doi = &dout[i * sq..][..sq];
            let par = Parallelism::None;
            let mut p = vec![T::ZERO; lq * lk];
            probabilities(qi, ki, bias_of(bias, i, n), scale, n, &mut p);
            matmul(
                dv,
                (lk, d, lq),
                &p,
                (1, lk),
                doi,
                (d, 1),
                T::ONE,
                false,
                par,
            );
            let mut ds = vec![T::ZERO; lq * lk];
            matmul(
                &mut ds,
                (lq, lk, d),
                doi,
                (d, 1),
                vi,
                (1, d),
                T::ONE,
                false,
                par,
            );
            for (dsr, pr) in ds.chunks_exact_mut(lk).zip(p.chunks_exact(lk)) {
                let dot = dsr.iter().zip(pr).fold(T::ZERO, |a, (g, p)| a + *g * *p);
                dsr.iter_mut()
                    .zip(pr)
                    .for_each(|(g, p)| *g = *p * (*g - dot));
            }
            matmul(dq, (lq, d, lk), &ds, (lk, 1), ki, (d, 1), scale, false, par);
            matmul(dk, (lk, d, lq), &ds, (1, lk), qi, (d, 1), scale, false, par);
        });
    grads
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u64) -> Vec<f64> {
        (0..len)
            .map(|i| {
                (((i as u64 + 1) * 2_654_435_761 + seed * 40_503) % 2001) as f64 / 1000.0 - 1.0
            })
            .collect()
    }

    /// The loss ⟨∂o, o⟩ as a function of the inputs, by central differences, against the
    /// backward; one case with a padding bias, one without.
    #[test]
    fn backward_equals_central_differences() {
        let n = Dims {
            pairs: 4,
            heads: 2,
            lq: 3,
            lk: 5,
            d: 2,
        };
        let (q, k, v) = (noise(24, 1), noise(40, 2), noise(40, 3));
        let dout = noise(24, 4);
        let bias = [0.0, 0.0, -1e4, 0.0, -1e4, 0.0, 0.0, 0.0, 0.0, -1e4];
        for bias in [None, Some(&bias[..])] {
            let loss = |q: &[f64], k: &[f64], v: &[f64]| -> f64 {
                let o = forward(q, k, v, bias, 0.7, n);
                o.iter().zip(&dout).map(|(a, b)| a * b).sum()
            };
            let g = backward(&q, &k, &v, bias, &dout, 0.7, n);
            let mut inputs = [q.clone(), k.clone(), v.clone()];
            let mut offset = 0;
            for which in 0..3 {
                for idx in 0..inputs[which].len() {
                    let h = 1e-6;
                    inputs[which][idx] += h;
                    let up = loss(&inputs[0], &inputs[1], &inputs[2]);
                    inputs[which][idx] -= 2.0 * h;
                    let down = loss(&inputs[0], &inputs[1], &inputs[2]);
                    inputs[which][idx] += h;
                    let num = (up - down) / (2.0 * h);
                    let got = g[offset + idx];
                    assert!(
                        (num - got).abs() < 1e-7,
                        "input {which}[{idx}]: {got} vs {num}"
                    );
                }
                offset += inputs[which].len();
            }
        }
    }
}
