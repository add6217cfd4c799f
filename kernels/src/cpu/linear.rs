//! Linear layer y = x·Wᵀ + b over rows of x (N × Cin), W (Cout × Cin), on `gemm`: the bias is
//! written first and the product accumulated onto it; the backward's three results come from
//! two products and a column sum over the same row blocks, one block per thread.

use crate::cpu::accumulate;
use crate::cpu::gemm::matmul;
use crate::float::Real;
use gemm::Parallelism;
use rayon::prelude::*;

/// Rows per parallel block of the backward's reductions over N.
fn block_rows(n: usize) -> usize {
    n.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

/// y (N × Cout) = x (N × Cin) · Wᵀ + b.
pub fn forward<T: Real>(x: &[T], w: &[T], b: &[T], cin: usize, cout: usize) -> Vec<T> {
    let n = x.len().checked_div(cin).unwrap_or(0);
    let mut y = Vec::with_capacity(n * cout);
    for _ in 0..n {
        y.extend_from_slice(b);
    }
    let par = Parallelism::Rayon(0);
    matmul(
        &mut y,
        (n, cout, cin),
        x,
        (cin, 1),
        w,
        (1, cin),
        T::ONE,
        true,
        par,
    );
    y
}

/// `[∂x (N × Cin, when `need_dx`) | ∂W (Cout × Cin) | ∂b (Cout)]` for ∂y (N × Cout).
pub fn backward<T: Real>(
    x: &[T],
    w: &[T],
    dy: &[T],
    (cin, cout): (usize, usize),
    need_dx: bool,
) -> Vec<T> {
    let n = x.len().checked_div(cin).unwrap_or(0);
    let n_dx = if need_dx { n * cin } else { 0 };
    let n_dw = cout * cin;
    let mut out = vec![T::ZERO; n_dx + n_dw + cout];
    let (dx, params) = out.split_at_mut(n_dx);
    if need_dx {
        let par = Parallelism::Rayon(0);
        matmul(
            dx,
            (n, cin, cout),
            dy,
            (cout, 1),
            w,
            (cin, 1),
            T::ONE,
            false,
            par,
        );
    }
    if n == 0 || cin == 0 {
        return out;
    }
    let rows = block_rows(n);
    let partials: Vec<Vec<T>> = x
        .par_chunks(rows * cin)
        .zip(dy.par_chunks(rows * cout))
        .map(|(xb, dyb)| {
            let m = xb.len() / cin;
            let mut part = vec![T::ZERO; n_dw + cout];
            let (dw, db) = part.split_at_mut(n_dw);
            // ∂W (Cout × Cin) = ∂yᵀ · x over this block's rows.
            let shape = (cout, cin, m);
            matmul(
                dw,
                shape,
                dyb,
                (1, cout),
                xb,
                (cin, 1),
                T::ONE,
                false,
                Parallelism::None,
            );
            for row in dyb.chunks(cout) {
                db.iter_mut().zip(row).for_each(|(d, v)| *d += *v);
            }
            part
        })
        .collect();
    accumulate(params, partials);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<f64> {
        (0..n)
            .map(|i| ((i as u64 * 2654435761 + seed * 97) % 1000) as f64 / 500.0 - 1.0)
            .collect()
    }

    /// Forward against the definition; the backward (bilinear, so exact) against unit-step
    /// differences of ⟨∂y, y⟩.
    #[test]
    fn forward_and_backward_equal_the_definition() {
        for (n, cin, cout) in [(7, 5, 3), (1, 4, 6), (33, 2, 9)] {
            let (x, w, b) = (noise(n * cin, 1), noise(cout * cin, 2), noise(cout, 3));
            let dy = noise(n * cout, 4);
            let y = forward(&x, &w, &b, cin, cout);
            for i in 0..n {
                for o in 0..cout {
                    let want: f64 = b[o]
                        + (0..cin)
                            .map(|c| x[i * cin + c] * w[o * cin + c])
                            .sum::<f64>();
                    assert!((y[i * cout + o] - want).abs() < 1e-12);
                }
            }
            let loss = |x: &[f64], w: &[f64], b: &[f64]| -> f64 {
                forward(x, w, b, cin, cout)
                    .iter()
                    .zip(&dy)
                    .map(|(y, d)| y * d)
                    .sum()
            };
            let base = loss(&x, &w, &b);
            let grads = backward(&x, &w, &dy, (cin, cout), true);
            let (dx, rest) = grads.split_at(n * cin);
            let (dw, db) = rest.split_at(cout * cin);
            let check = |got: &[f64], v: &[f64], f: &dyn Fn(&[f64]) -> f64| {
                for i in 0..v.len() {
                    let mut e = v.to_vec();
                    e[i] += 1.0;
                    assert!((got[i] - (f(&e) - base)).abs() < 1e-9, "entry {i}");
                }
            };
            check(dx, &x, &|e| loss(e, &w, &b));
            check(dw, &w, &|e| loss(&x, e, &b));
            check(db, &b, &|e| loss(&x, &w, e));
            assert_eq!(backward(&x, &w, &dy, (cin, cout), false), rest);
        }
    }
}
