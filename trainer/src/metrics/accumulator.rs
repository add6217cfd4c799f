//! [`SegMetrics`]: accumulates Dice and IoU under both protocols and the per-image boundary
//! distances (HD95, ASSD); [`SegSummary`]: the result.

use serde::{Deserialize, Serialize};

use super::confusion::Confusion;
use super::dice::dice;
use super::error::MetricsError;
use super::iou::iou;
use super::surface::surface_distances;

/// Mask values above this are foreground (masks are 0/1, possibly resampled).
pub const MASK_THRESHOLD: f32 = 0.5;

/// Largest integer an `f64` holds exactly; counts in [`SegMetrics::to_vec`] must stay below.
const F64_EXACT: f64 = 9_007_199_254_740_992.0; // 2^53

/// Running sums for segmentation metrics over any number of batches, ranks and datasets.
///
/// Keeps, for the **per-image** protocol (LViT: metric per image, then averaged), the sums of
/// per-image Dice and IoU and the image count; for the **pooled** protocol (GuideDecoder /
/// torchmetrics: TP, FP, FN summed over every pixel of every image, metric computed once),
/// the pooled counts; and the sums of per-image HD95 and ASSD ([`super::surface`]). Everything
/// is a sum, so [`SegMetrics::merge`] and an element-wise sum of
/// [`SegMetrics::to_vec`] vectors are exact.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegMetrics {
    dice_sum: f64,
    iou_sum: f64,
    hd95_sum: f64,
    assd_sum: f64,
    images: u64,
    /// Images whose mask has no foreground.
    empty: u64,
    pooled: Confusion,
}

/// Reads a metric written as JSON: `null` (how serde_json writes `NaN`) reads back as `NaN`.
pub fn nullable_f64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn nan() -> f64 {
    f64::NAN
}

/// Final metrics. Dice and IoU are in `[0, 1]`, the distances in pixels of the evaluated
/// images; all are `NaN` when no image was seen (`null` in JSON; results written before the
/// distances existed read them as `NaN`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SegSummary {
    /// Mean over images of per-image Dice (empty prediction on empty mask counts 1).
    #[serde(deserialize_with = "nullable_f64")]
    pub dice_per_image: f64,
    /// Mean over images of per-image IoU (empty prediction on empty mask counts 1).
    #[serde(deserialize_with = "nullable_f64")]
    pub iou_per_image: f64,
    /// `2 TP / (2 TP + FP + FN)` over all pixels (1 if everything is empty).
    #[serde(deserialize_with = "nullable_f64")]
    pub dice_pooled: f64,
    /// `TP / (TP + FP + FN)` over all pixels (1 if everything is empty).
    #[serde(deserialize_with = "nullable_f64")]
    pub iou_pooled: f64,
    /// Mean over images of the 95th-percentile Hausdorff distance (see [`super::surface`]).
    #[serde(default = "nan", deserialize_with = "nullable_f64")]
    pub hd95_per_image: f64,
    /// Mean over images of the average symmetric surface distance.
    #[serde(default = "nan", deserialize_with = "nullable_f64")]
    pub assd_per_image: f64,
    /// Number of images.
    pub images: u64,
    /// Images whose mask has no foreground: each scores Dice and IoU 1 and HD95 0 when the
    /// prediction is empty too, Dice 0 and HD95 the image diagonal when not (0 in results
    /// written before it was counted).
    #[serde(default)]
    pub empty_masks: u64,
}

impl std::fmt::Display for SegSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dice {:.4} / iou {:.4} per image, dice {:.4} / iou {:.4} pooled, hd95 {:.2} / assd {:.2} px, {} images",
            self.dice_per_image,
            self.iou_per_image,
            self.dice_pooled,
            self.iou_pooled,
            self.hd95_per_image,
            self.assd_per_image,
            self.images
        )
    }
}

/// The scores of one image: its confusion counts, Dice, IoU and boundary distances.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageScores {
    pub confusion: Confusion,
    pub dice: f64,
    pub iou: f64,
    pub hd95: f64,
    pub assd: f64,
}

impl ImageScores {
    /// The scores of a `height`x`width` binary prediction against its mask.
    pub fn of(pred: &[bool], mask: &[bool], height: usize, width: usize) -> Self {
        let confusion = Confusion::from_pairs(pred.iter().copied().zip(mask.iter().copied()));
        let d = surface_distances(pred, mask, height, width);
        Self {
            confusion,
            dice: dice(&confusion),
            iou: iou(&confusion),
            hd95: d.hd95,
            assd: d.assd,
        }
    }
}

fn check_shape(
    pred_len: usize,
    mask_len: usize,
    n_images: usize,
    pixels_per_image: usize,
) -> Result<(), MetricsError> {
    let expected = n_images
        .checked_mul(pixels_per_image)
        .filter(|_| pixels_per_image > 0)
        .ok_or(MetricsError::BadSize {
            n_images,
            pixels_per_image,
        })?;
    for (what, got) in [("prediction", pred_len), ("mask", mask_len)] {
        if got != expected {
            return Err(MetricsError::Shape {
                what,
                got,
                expected,
                n_images,
                pixels_per_image,
            });
        }
    }
    Ok(())
}

impl SegMetrics {
    /// Number of values in [`SegMetrics::to_vec`].
    pub const VEC_LEN: usize = 9;

    /// Adds a batch of `n_images` images of `height`x`width` pixels each (`[N, H, W]` or
    /// `[N, 1, H, W]`, row-major) and returns each image's scores.
    ///
    /// `pred` holds **probabilities**: a pixel is predicted foreground when
    /// `pred > threshold` (use `0.5` for sigmoid outputs; for raw logits, `threshold = 0.0`
    /// is equivalent to probability `0.5`). `NaN` counts as background. `mask` pixels are
    /// foreground when `> 0.5`.
    pub fn update(
        &mut self,
        pred: &[f32],
        mask: &[f32],
        n_images: usize,
        height: usize,
        width: usize,
        threshold: f32,
    ) -> Result<Vec<ImageScores>, MetricsError> {
        let hw = height * width;
        check_shape(pred.len(), mask.len(), n_images, hw)?;
        let mut scores = Vec::with_capacity(n_images);
        for (p, m) in pred.chunks_exact(hw).zip(mask.chunks_exact(hw)) {
            let p: Vec<bool> = p.iter().map(|&p| p > threshold).collect();
            let m: Vec<bool> = m.iter().map(|&m| m > MASK_THRESHOLD).collect();
            let s = ImageScores::of(&p, &m, height, width);
            self.add(&s);
            scores.push(s);
        }
        Ok(scores)
    }

    /// Like [`SegMetrics::update`] for already binary data: non-zero bytes are foreground.
    pub fn update_binary(
        &mut self,
        pred: &[u8],
        mask: &[u8],
        n_images: usize,
        height: usize,
        width: usize,
    ) -> Result<(), MetricsError> {
        let hw = height * width;
        check_shape(pred.len(), mask.len(), n_images, hw)?;
        for (p, m) in pred.chunks_exact(hw).zip(mask.chunks_exact(hw)) {
            let p: Vec<bool> = p.iter().map(|&p| p != 0).collect();
            let m: Vec<bool> = m.iter().map(|&m| m != 0).collect();
            self.add(&ImageScores::of(&p, &m, height, width));
        }
        Ok(())
    }

    /// Adds one image's scores.
    pub fn add(&mut self, s: &ImageScores) {
        self.dice_sum += s.dice;
        self.iou_sum += s.iou;
        self.hd95_sum += s.hd95;
        self.assd_sum += s.assd;
        self.images += 1;
        self.empty += u64::from(s.confusion.true_pos + s.confusion.false_neg == 0);
        self.pooled.add(&s.confusion);
    }

    /// Adds another accumulator's sums (other ranks, other datasets). Exact.
    pub fn merge(&mut self, other: &SegMetrics) {
        self.dice_sum += other.dice_sum;
        self.iou_sum += other.iou_sum;
        self.hd95_sum += other.hd95_sum;
        self.assd_sum += other.assd_sum;
        self.images += other.images;
        self.empty += other.empty;
        self.pooled.add(&other.pooled);
    }

    /// Images seen so far.
    pub fn images(&self) -> u64 {
        self.images
    }

    /// Pooled TP / FP / FN over every pixel seen.
    pub fn pooled(&self) -> Confusion {
        self.pooled
    }

    /// The metrics so far (all `NaN` before the first image).
    pub fn summary(&self) -> SegSummary {
        if self.images == 0 {
            return SegSummary {
                dice_per_image: f64::NAN,
                iou_per_image: f64::NAN,
                dice_pooled: f64::NAN,
                iou_pooled: f64::NAN,
                hd95_per_image: f64::NAN,
                assd_per_image: f64::NAN,
                images: 0,
                empty_masks: 0,
            };
        }
        let n = self.images as f64;
        SegSummary {
            dice_per_image: self.dice_sum / n,
            iou_per_image: self.iou_sum / n,
            dice_pooled: dice(&self.pooled),
            iou_pooled: iou(&self.pooled),
            hd95_per_image: self.hd95_sum / n,
            assd_per_image: self.assd_sum / n,
            images: self.images,
            empty_masks: self.empty,
        }
    }

    /// The sums as `[dice_sum, iou_sum, images, TP, FP, FN, hd95_sum, assd_sum, empty]`, for an
    /// all-reduce (sum).
    ///
    /// Reduce in `f64`: counts are exact up to 2^53, but an `f32` reduction loses pixels past
    /// 2^24 (~16.7 M, a few hundred 256x256 images).
    pub fn to_vec(&self) -> Vec<f64> {
        vec![
            self.dice_sum,
            self.iou_sum,
            self.images as f64,
            self.pooled.true_pos as f64,
            self.pooled.false_pos as f64,
            self.pooled.false_neg as f64,
            self.hd95_sum,
            self.assd_sum,
            self.empty as f64,
        ]
    }

    /// Inverse of [`SegMetrics::to_vec`] (also accepts an element-wise sum of such vectors).
    pub fn from_vec(v: &[f64]) -> Result<Self, MetricsError> {
        let [dice_sum, iou_sum, images, tp, fp, fneg, hd95_sum, assd_sum, empty] =
            <[f64; Self::VEC_LEN]>::try_from(v).map_err(|_| {
                MetricsError::BadVector(format!("{} values, expected {}", v.len(), Self::VEC_LEN))
            })?;
        let count = |name: &str, x: f64| -> Result<u64, MetricsError> {
            if x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x <= F64_EXACT {
                Ok(x as u64)
            } else {
                Err(MetricsError::BadVector(format!(
                    "{name} = {x} is not a count"
                )))
            }
        };
        let images = count("images", images)?;
        let empty = count("empty masks", empty)?;
        if empty > images {
            return Err(MetricsError::BadVector(format!(
                "{empty} empty masks in {images} images"
            )));
        }
        let pooled = Confusion {
            true_pos: count("TP", tp)?,
            false_pos: count("FP", fp)?,
            false_neg: count("FN", fneg)?,
        };
        // Per-image metrics are in [0, 1], so their sums lie in [0, images] (up to rounding).
        let slack = 1e-9 * (images as f64).max(1.0);
        for (name, s) in [("dice_sum", dice_sum), ("iou_sum", iou_sum)] {
            if !(s.is_finite() && s >= -slack && s <= images as f64 + slack) {
                return Err(MetricsError::BadVector(format!(
                    "{name} = {s} outside [0, {images}]"
                )));
            }
        }
        for (name, s) in [("hd95_sum", hd95_sum), ("assd_sum", assd_sum)] {
            if !(s.is_finite() && s >= 0.0) {
                return Err(MetricsError::BadVector(format!(
                    "{name} = {s} is not a sum of distances"
                )));
            }
        }
        Ok(Self {
            dice_sum,
            iou_sum,
            hd95_sum,
            assd_sum,
            images,
            empty,
            pooled,
        })
    }
}
