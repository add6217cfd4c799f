//! CPU kernels on contiguous slices (the reference implementations): rayon over samples and,
//! inside a sample, over channel rows or pixel chunks. No (B, D, H, W) temporaries: the only
//! pixel-sized scratch is a few (H·W) vectors per sample.

pub mod attention;
pub mod contrastive;
pub mod conv;
pub mod depthwise;
pub mod gelu;
pub(crate) mod gemm;
pub mod layer_norm;
pub mod linear;
pub mod masked_pool;
pub mod similarity;

/// Pixels per parallel chunk in per-pixel passes.
pub(crate) const PIXEL_CHUNK: usize = 1024;

/// Adds each per-thread partial (as long as `dst`) into `dst`.
pub(crate) fn accumulate<T: crate::float::Real>(dst: &mut [T], parts: Vec<Vec<T>>) {
    for part in parts {
        dst.iter_mut().zip(part).for_each(|(d, v)| *d += v);
    }
}
