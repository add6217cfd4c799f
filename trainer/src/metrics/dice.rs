//! Dice coefficient (F1 on foreground pixels).

use super::confusion::Confusion;

/// `2 TP / (2 TP + FP + FN)`; `1.0` when prediction and mask are both empty.
///
/// On one image's counts this is the per-image Dice; on counts summed over a dataset it is
/// the pooled Dice.
pub fn dice(c: &Confusion) -> f64 {
    if c.both_empty() {
        return 1.0;
    }
    let tp = c.true_pos as f64;
    2.0 * tp / (2.0 * tp + c.false_pos as f64 + c.false_neg as f64)
}
