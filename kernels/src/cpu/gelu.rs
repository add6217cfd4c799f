//! GELU with the exact (erf) form, y = x·Φ(x), and its derivative Φ(x) + x·φ(x), on contiguous
//! slices: one pass each way, in parallel blocks, vectorised (`Real::normal` is branch-free
//! for f32; AVX2 builds chosen at run time).

use crate::float::Real;
use crate::simd::avx2_dispatch;
use rayon::prelude::*;

/// Elements per parallel block.
const BLOCK: usize = 1 << 14;

avx2_dispatch! {
    fn forward_block<T: Real>(x: &[T], y: &mut [T]) -> () = forward_block_impl;
}

#[inline(always)]
fn forward_block_impl<T: Real>(x: &[T], y: &mut [T]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = *x * x.normal().0;
    }
}

avx2_dispatch! {
    fn backward_block<T: Real>(x: &[T], dy: &[T], dx: &mut [T]) -> () = backward_block_impl;
}

#[inline(always)]
fn backward_block_impl<T: Real>(x: &[T], dy: &[T], dx: &mut [T]) {
    for ((dx, x), dy) in dx.iter_mut().zip(x).zip(dy) {
        let (cdf, pdf) = x.normal();
        *dx = *dy * (cdf + *x * pdf);
    }
}

/// y = gelu(x).
pub fn forward<T: Real>(x: &[T]) -> Vec<T> {
    let mut y = vec![T::ZERO; x.len()];
    y.par_chunks_mut(BLOCK)
        .zip(x.par_chunks(BLOCK))
        .for_each(|(y, x)| forward_block(x, y));
    y
}

/// ∂x = ∂y · gelu'(x).
pub fn backward<T: Real>(x: &[T], dy: &[T]) -> Vec<T> {
    let mut dx = vec![T::ZERO; x.len()];
    dx.par_chunks_mut(BLOCK)
        .zip(x.par_chunks(BLOCK).zip(dy.par_chunks(BLOCK)))
        .for_each(|(dx, (x, dy))| backward_block(x, dy, dx));
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f64 against central differences of the forward; f32 against f64.
    #[test]
    fn derivative_and_f32_agree() {
        let x: Vec<f64> = (0..4001).map(|i| (i as f64 - 2000.0) / 200.0).collect();
        let ones = vec![1.0; x.len()];
        let d = backward(&x, &ones);
        let h = 1e-5;
        let plus: Vec<f64> = forward(&x.iter().map(|v| v + h).collect::<Vec<_>>());
        let minus: Vec<f64> = forward(&x.iter().map(|v| v - h).collect::<Vec<_>>());
        for i in 0..x.len() {
            let fd = (plus[i] - minus[i]) / (2.0 * h);
            assert!((d[i] - fd).abs() < 1e-8, "x = {}: {} vs {fd}", x[i], d[i]);
        }
        let x32: Vec<f32> = x.iter().map(|v| *v as f32).collect();
        let y32 = forward(&x32);
        let d32 = backward(&x32, &vec![1.0f32; x.len()]);
        let y = forward(&x);
        for i in 0..x.len() {
            let tol = 5e-7 * x[i].abs().max(1.0);
            assert!((y32[i] as f64 - y[i]).abs() < tol, "gelu({})", x[i]);
            assert!((d32[i] as f64 - d[i]).abs() < 1e-6, "gelu'({})", x[i]);
        }
    }
}
