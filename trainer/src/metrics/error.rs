//! Errors of the metric accumulators.

/// What can go wrong feeding or restoring [`super::SegMetrics`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// A buffer's length does not match `n_images * pixels_per_image`.
    #[error(
        "{what}: {got} values, expected {expected} ({n_images} images x {pixels_per_image} pixels)"
    )]
    Shape {
        /// Which buffer ("prediction" or "mask").
        what: &'static str,
        /// Its length.
        got: usize,
        /// `n_images * pixels_per_image`.
        expected: usize,
        /// Declared number of images.
        n_images: usize,
        /// Declared pixels per image.
        pixels_per_image: usize,
    },
    /// `pixels_per_image` is zero, or the product overflows.
    #[error("invalid image size: {n_images} images x {pixels_per_image} pixels")]
    BadSize {
        /// Declared number of images.
        n_images: usize,
        /// Declared pixels per image.
        pixels_per_image: usize,
    },
    /// A vector given to `SegMetrics::from_vec` is not a valid set of sums.
    #[error("metric sums vector: {0}")]
    BadVector(String),
}
