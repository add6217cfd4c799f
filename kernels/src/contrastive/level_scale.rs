//! Per-level scaling, in place, of precomputed unit gradients: the host contrastive op's whole
//! backward (its forward already computed the gradients for a unit upstream gradient).

use crate::float::Real;
use rayon::prelude::*;

/// Elements per parallel job.
const MIN_JOB: usize = 1 << 14;

/// `buf` (P, Lv, M) row-major ← `buf` · `upstream` (Lv), broadcast over P and M.
pub(crate) fn scale_levels<T: Real>(buf: &mut [T], upstream: &[T], m: usize) {
    let lv = upstream.len();
    if lv == 0 || m == 0 {
        return;
    }
    buf.par_chunks_mut(m)
        .with_min_len((MIN_JOB / m).max(1))
        .enumerate()
        .for_each(|(k, row)| {
            let g = upstream[k % lv];
            for x in row {
                *x *= g;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::scale_levels;

    #[test]
    fn scales_each_level_by_its_upstream_gradient() {
        // (P, Lv, M) = (3, 2, 4)
        let mut buf: Vec<f32> = (0..24).map(|x| x as f32).collect();
        scale_levels(&mut buf, &[2.0, -0.5], 4);
        for (i, x) in buf.iter().enumerate() {
            let g = if (i / 4) % 2 == 0 { 2.0 } else { -0.5 };
            assert_eq!(*x, i as f32 * g, "element {i}");
        }
    }
}
