//! `train.select`: the validation metric that picks the best checkpoint.

use serde::{Deserialize, Serialize};

/// The validation metric that picks the `best` checkpoint and counts towards `patience`, as a
/// mean over the datasets: the per-image mean Dice (LViT's protocol), the pixel-pooled Dice
/// (GuideDecoder's), the same two for IoU, or the per-image HD95 (lower is better).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Select {
    #[default]
    DicePerImage,
    DicePooled,
    IouPerImage,
    IouPooled,
    Hd95,
}

impl Select {
    /// Every choice, in the order of the docs.
    pub const ALL: [Select; 5] = [
        Select::DicePerImage,
        Select::DicePooled,
        Select::IouPerImage,
        Select::IouPooled,
        Select::Hd95,
    ];

    /// The config value (`dice_per_image`, …).
    pub fn name(self) -> &'static str {
        match self {
            Select::DicePerImage => "dice_per_image",
            Select::DicePooled => "dice_pooled",
            Select::IouPerImage => "iou_per_image",
            Select::IouPooled => "iou_pooled",
            Select::Hd95 => "hd95",
        }
    }

    /// In words, for logs and tables.
    pub fn label(self) -> &'static str {
        match self {
            Select::DicePerImage => "Dice (per-image mean)",
            Select::DicePooled => "Dice (pixel-pooled)",
            Select::IouPerImage => "IoU (per-image mean)",
            Select::IouPooled => "IoU (pixel-pooled)",
            Select::Hd95 => "HD95 px (per-image mean)",
        }
    }

    /// HD95 is a distance: smaller is better.
    pub fn lower_is_better(self) -> bool {
        self == Select::Hd95
    }

    /// Whether `value` improves on `best` (a NaN value never does; anything improves on none).
    pub fn improves(self, value: f64, best: Option<f64>) -> bool {
        match best {
            _ if value.is_nan() => false,
            None => true,
            Some(b) if b.is_nan() => true,
            Some(b) if self.lower_is_better() => value < b,
            Some(b) => value > b,
        }
    }
}
