//! Intersection over union (Jaccard index).

use super::confusion::Confusion;

/// `TP / (TP + FP + FN)`; `1.0` when prediction and mask are both empty.
///
/// On one image's counts this is the per-image IoU; on counts summed over a dataset it is
/// the pooled IoU.
pub fn iou(c: &Confusion) -> f64 {
    if c.both_empty() {
        return 1.0;
    }
    let tp = c.true_pos as f64;
    tp / (tp + c.false_pos as f64 + c.false_neg as f64)
}
