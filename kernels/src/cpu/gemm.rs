//! A strided matrix product on the `gemm` crate (the one candle's CPU matmul uses).

use crate::float::Real;
use gemm::Parallelism;

/// dst (m×n, row-major) = alpha · A · B (+ dst when `acc`) with A(i, p) = `lhs[i·lrs + p·lcs]` and
/// B(p, j) = `rhs[p·rrs + j·rcs]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul<T: Real>(
    dst: &mut [T],
    (m, n, k): (usize, usize, usize),
    lhs: &[T],
    (lrs, lcs): (usize, usize),
    rhs: &[T],
    (rrs, rcs): (usize, usize),
    alpha: T,
    acc: bool,
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !acc {
            dst[..m * n].fill(T::ZERO);
        }
        return;
    }
    // The last element each operand is read or written at must lie inside its slice.
    assert!(
        dst.len() >= m * n
            && lhs.len() > (m - 1) * lrs + (k - 1) * lcs
            && rhs.len() > (k - 1) * rrs + (n - 1) * rcs,
        "matmul operands out of bounds"
    );
    // SAFETY: every index the product touches is in bounds (checked above), `dst` does not
    // alias the operands (it is a unique borrow), and `T` is f32 or f64, which gemm supports.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            acc,
            lhs.as_ptr(),
            lcs as isize,
            lrs as isize,
            rhs.as_ptr(),
            rcs as isize,
            rrs as isize,
            // gemm's own naming: dst = alpha·dst + beta·lhs·rhs.
            T::ONE,
            alpha,
            false,
            false,
            false,
            par,
        )
    }
}
