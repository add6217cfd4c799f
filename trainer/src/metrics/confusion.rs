//! Binary confusion counts (true positives, false positives, false negatives).

/// Foreground pixel counts of a binary prediction against a binary mask.
///
/// True negatives are not kept: neither Dice nor IoU uses them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confusion {
    /// Predicted foreground, mask foreground.
    pub true_pos: u64,
    /// Predicted foreground, mask background.
    pub false_pos: u64,
    /// Predicted background, mask foreground.
    pub false_neg: u64,
}

impl Confusion {
    /// Counts over `(predicted foreground, mask foreground)` pairs.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (bool, bool)>) -> Self {
        let mut c = Self::default();
        for (p, m) in pairs {
            c.push(p, m);
        }
        c
    }

    /// Adds one pixel.
    #[inline]
    pub fn push(&mut self, pred: bool, mask: bool) {
        self.true_pos += u64::from(pred && mask);
        self.false_pos += u64::from(pred && !mask);
        self.false_neg += u64::from(!pred && mask);
    }

    /// Adds another set of counts.
    pub fn add(&mut self, other: &Confusion) {
        self.true_pos += other.true_pos;
        self.false_pos += other.false_pos;
        self.false_neg += other.false_neg;
    }

    /// True when neither prediction nor mask has any foreground.
    pub fn both_empty(&self) -> bool {
        self.true_pos == 0 && self.false_pos == 0 && self.false_neg == 0
    }
}
