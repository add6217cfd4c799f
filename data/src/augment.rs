//! Training-time augmentation that keeps the report true, and the eval-time resize/normalise.
//!
//! * random resized crop (area scale and aspect range), bilinear for images, nearest for masks;
//! * small random rotations about the crop's centre (`rotate`, off by default; corners outside
//!   the image read as black and background);
//! * intensity jitter (brightness, contrast);
//! * left–right flip **with the report rewritten** ("left" ↔ "right"): flipping a chest X-ray
//!   swaps which side the target is on, so the words must swap too — or set `flip = "off"`;
//! * normalisation `(x/255 − mean) / std` per channel.
//!
//! All randomness comes from the RNG passed in, so a sample's augmentation is a pure function of
//! its seed.

use crate::{DataError, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// What a left–right flip does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlipPolicy {
    /// Never flip.
    Off,
    /// Flip with probability ½ and swap the words "left" and "right" in the report.
    Rewrite,
}

/// Augmentation settings (config section `[data.augment]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Apply augmentation to training batches at all.
    pub enabled: bool,
    /// Range of the crop's area as a fraction of the image, e.g. [0.75, 1.0]; [1, 1] disables.
    #[serde(serialize_with = "crate::short_float::many")]
    pub crop_scale: [f32; 2],
    /// Range of the crop's aspect ratio (width / height).
    #[serde(serialize_with = "crate::short_float::many")]
    pub crop_ratio: [f32; 2],
    /// Maximum brightness shift, as a fraction of full scale (0 disables).
    #[serde(serialize_with = "crate::short_float::one")]
    pub brightness: f32,
    /// Maximum relative contrast change (0 disables).
    #[serde(serialize_with = "crate::short_float::one")]
    pub contrast: f32,
    /// Left–right flip policy.
    pub flip: FlipPolicy,
    /// Maximum rotation in degrees, drawn uniformly in ±rotate (0 disables; LViT uses 20).
    /// Small angles keep the report true; sides are never swapped by a rotation.
    #[serde(serialize_with = "crate::short_float::one")]
    pub rotate: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            crop_scale: [0.75, 1.0],
            crop_ratio: [0.8, 1.25],
            brightness: 0.1,
            contrast: 0.1,
            flip: FlipPolicy::Rewrite,
            rotate: 0.0,
        }
    }
}

impl AugmentConfig {
    /// Checks ranges; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, message: String| {
            Err(DataError::Config {
                field: format!("data.augment.{field}"),
                message,
            })
        };
        let [s0, s1] = self.crop_scale;
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
            return bad(
                "crop_scale",
                format!("{:?}: need 0 < min <= max <= 1", self.crop_scale),
            );
        }
        let [r0, r1] = self.crop_ratio;
        if !(r0 > 0.0 && r0 <= r1) {
            return bad(
                "crop_ratio",
                format!("{:?}: need 0 < min <= max", self.crop_ratio),
            );
        }
        if !(0.0..=1.0).contains(&self.brightness) {
            return bad("brightness", format!("{}: need 0..=1", self.brightness));
        }
        if !(0.0..=1.0).contains(&self.contrast) {
            return bad("contrast", format!("{}: need 0..=1", self.contrast));
        }
        if !(0.0..=45.0).contains(&self.rotate) {
            return bad(
                "rotate",
                format!(
                    "{}: need 0..=45 degrees (larger turns move targets across the zones reports name)",
                    self.rotate
                ),
            );
        }
        Ok(())
    }
}

/// Image geometry and normalisation of the model input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// A source image: planar `u8`, `channels × height × width`.
#[derive(Debug, Clone, Copy)]
pub struct Planar<'a> {
    pub data: &'a [u8],
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

/// Crop box in source pixel coordinates (floating point, may be fractional), turned by `angle`
/// (radians) about its centre.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CropBox {
    x0: f32,
    y0: f32,
    w: f32,
    h: f32,
    angle: f32,
}

impl CropBox {
    fn rotated(self, angle: f32) -> Self {
        Self { angle, ..self }
    }
}

/// Swaps the words "left" and "right" (any case) in `report`, keeping capitalisation.
pub fn swap_left_right(report: &str) -> String {
    let mut out = String::with_capacity(report.len() + 4);
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let lower = word.to_ascii_lowercase();
        let repl = match lower.as_str() {
            "left" => Some("right"),
            "right" => Some("left"),
            _ => None,
        };
        match repl {
            Some(r) if word.chars().all(|c| c.is_ascii_uppercase()) => {
                out.push_str(&r.to_ascii_uppercase())
            }
            Some(r) if word.starts_with(|c: char| c.is_ascii_uppercase()) => {
                out.push_str(&r[..1].to_ascii_uppercase());
                out.push_str(&r[1..]);
            }
            Some(r) => out.push_str(r),
            None => out.push_str(word),
        }
        word.clear();
    };
    for ch in report.chars() {
        if ch.is_alphabetic() {
            word.push(ch);
        } else {
            flush(&mut word, &mut out);
            out.push(ch);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Where [`process`] writes one sample: `image` (`C·H·W` of the spec) and `mask` (`H·W`, 0/1).
pub struct SampleOut<'a> {
    pub image: &'a mut [f32],
    pub mask: &'a mut [f32],
}

/// Augments (when `aug` is given) and normalises one sample into `out`. Returns the report,
/// rewritten if the image was flipped.
pub fn process<R: Rng>(
    src: Planar<'_>,
    mask: &[u8],
    report: &str,
    spec: &InputSpec,
    aug: Option<&AugmentConfig>,
    rng: &mut R,
    out: SampleOut<'_>,
) -> String {
    let SampleOut {
        image: image_out,
        mask: mask_out,
    } = out;
    let full = CropBox {
        x0: 0.0,
        y0: 0.0,
        w: src.width as f32,
        h: src.height as f32,
        angle: 0.0,
    };
    let (crop, flip, gain, bias) = match aug.filter(|a| a.enabled) {
        None => (full, false, 1.0, 0.0),
        Some(a) => {
            let crop = random_crop(src.width as f32, src.height as f32, a, rng);
            let flip = a.flip == FlipPolicy::Rewrite && rng.random_bool(0.5);
            let gain = 1.0
                + if a.contrast > 0.0 {
                    rng.random_range(-a.contrast..=a.contrast)
                } else {
                    0.0
                };
            let bias = if a.brightness > 0.0 {
                rng.random_range(-a.brightness..=a.brightness)
            } else {
                0.0
            };
            // Drawn last and only when on, so configs without rotation draw as before.
            let angle = if a.rotate > 0.0 {
                rng.random_range(-a.rotate..=a.rotate).to_radians()
            } else {
                0.0
            };
            (crop.rotated(angle), flip, gain, bias)
        }
    };
    if crop.angle == 0.0 {
        resample(src, mask, crop, flip, spec, gain, bias, image_out, mask_out);
    } else {
        resample_rotated(
            src,
            mask,
            crop,
            flip,
            spec,
            (gain, bias),
            image_out,
            mask_out,
        );
    }
    if flip {
        swap_left_right(report)
    } else {
        report.to_string()
    }
}

fn random_crop<R: Rng>(w: f32, h: f32, a: &AugmentConfig, rng: &mut R) -> CropBox {
    let area = w * h;
    for _ in 0..10 {
        let scale = if a.crop_scale[0] < a.crop_scale[1] {
            rng.random_range(a.crop_scale[0]..=a.crop_scale[1])
        } else {
            a.crop_scale[0]
        };
        let (lr0, lr1) = (a.crop_ratio[0].ln(), a.crop_ratio[1].ln());
        let ratio = if lr0 < lr1 {
            rng.random_range(lr0..=lr1).exp()
        } else {
            a.crop_ratio[0]
        };
        let cw = (area * scale * ratio).sqrt();
        let ch = (area * scale / ratio).sqrt();
        if cw <= w && ch <= h {
            let x0 = rng.random_range(0.0..=(w - cw));
            let y0 = rng.random_range(0.0..=(h - ch));
            return CropBox {
                x0,
                y0,
                w: cw,
                h: ch,
                angle: 0.0,
            };
        }
    }
    CropBox {
        x0: 0.0,
        y0: 0.0,
        w,
        h,
        angle: 0.0,
    }
}

/// Maps the crop to the output grid: bilinear image (with channel conversion), nearest mask.
#[allow(clippy::too_many_arguments)]
fn resample(
    src: Planar<'_>,
    mask: &[u8],
    crop: CropBox,
    flip: bool,
    spec: &InputSpec,
    gain: f32,
    bias: f32,
    image_out: &mut [f32],
    mask_out: &mut [f32],
) {
    let (oh, ow) = (spec.height, spec.width);
    let (sh, sw) = (src.height, src.width);
    let sx = crop.w / ow as f32;
    let sy = crop.h / oh as f32;
    // Precompute the horizontal taps once per output column.
    let cols: Vec<(usize, usize, f32, usize)> = (0..ow)
        .map(|ox| {
            let ox_src = if flip { ow - 1 - ox } else { ox };
            let fx = crop.x0 + (ox_src as f32 + 0.5) * sx - 0.5;
            let fx = fx.clamp(0.0, (sw - 1) as f32);
            let x0 = fx.floor() as usize;
            let x1 = (x0 + 1).min(sw - 1);
            let nx = ((crop.x0 + (ox_src as f32 + 0.5) * sx) as usize).min(sw - 1);
            (x0, x1, fx - x0 as f32, nx)
        })
        .collect();
    let plane = sh * sw;
    let opix = oh * ow;
    for oy in 0..oh {
        let fy = (crop.y0 + (oy as f32 + 0.5) * sy - 0.5).clamp(0.0, (sh - 1) as f32);
        let y0 = fy.floor() as usize;
        let y1 = (y0 + 1).min(sh - 1);
        let ty = fy - y0 as f32;
        let ny = ((crop.y0 + (oy as f32 + 0.5) * sy) as usize).min(sh - 1);
        for (ox, &(x0, x1, tx, nx)) in cols.iter().enumerate() {
            let o = oy * ow + ox;
            mask_out[o] = if mask[ny * sw + nx] > 0 { 1.0 } else { 0.0 };
            let sample = |c: usize| -> f32 {
                let p = &src.data[c * plane..(c + 1) * plane];
                let a = p[y0 * sw + x0] as f32 * (1.0 - tx) + p[y0 * sw + x1] as f32 * tx;
                let b = p[y1 * sw + x0] as f32 * (1.0 - tx) + p[y1 * sw + x1] as f32 * tx;
                (a * (1.0 - ty) + b * ty) / 255.0
            };
            let gray = || -> f32 {
                if src.channels == 1 {
                    sample(0)
                } else {
                    0.2126 * sample(0) + 0.7152 * sample(1) + 0.0722 * sample(2)
                }
            };
            for c in 0..spec.channels {
                let v = if spec.channels == src.channels {
                    sample(c)
                } else {
                    gray()
                };
                let v = ((v - 0.5) * gain + 0.5 + bias).clamp(0.0, 1.0);
                image_out[c * opix + o] = (v - spec.mean[c]) / spec.std[c];
            }
        }
    }
}

/// [`resample`] for a turned crop: each output pixel's source point is rotated about the
/// crop's centre; bilinear image (black outside the image), nearest mask (background outside).
#[allow(clippy::too_many_arguments)]
fn resample_rotated(
    src: Planar<'_>,
    mask: &[u8],
    crop: CropBox,
    flip: bool,
    spec: &InputSpec,
    (gain, bias): (f32, f32),
    image_out: &mut [f32],
    mask_out: &mut [f32],
) {
    let (oh, ow) = (spec.height, spec.width);
    let (sh, sw) = (src.height, src.width);
    let (sx, sy) = (crop.w / ow as f32, crop.h / oh as f32);
    let (cx, cy) = (crop.x0 + crop.w / 2.0, crop.y0 + crop.h / 2.0);
    let (sin, cos) = crop.angle.sin_cos();
    let plane = sh * sw;
    let opix = oh * ow;
    let texel = |c: usize, x: isize, y: isize| -> f32 {
        if x < 0 || y < 0 || x >= sw as isize || y >= sh as isize {
            0.0
        } else {
            src.data[c * plane + y as usize * sw + x as usize] as f32
        }
    };
    for oy in 0..oh {
        for ox in 0..ow {
            let ox_src = if flip { ow - 1 - ox } else { ox };
            // The unturned crop point relative to the centre, then turned (y points down).
            let dx = crop.x0 + (ox_src as f32 + 0.5) * sx - cx;
            let dy = crop.y0 + (oy as f32 + 0.5) * sy - cy;
            let px = cx + cos * dx + sin * dy;
            let py = cy - sin * dx + cos * dy;
            let o = oy * ow + ox;
            let (nx, ny) = (px.floor() as isize, py.floor() as isize);
            let inside = nx >= 0 && ny >= 0 && nx < sw as isize && ny < sh as isize;
            mask_out[o] = if inside && mask[ny as usize * sw + nx as usize] > 0 {
                1.0
            } else {
                0.0
            };
            let (fx, fy) = (px - 0.5, py - 0.5);
            let (x0, y0) = (fx.floor() as isize, fy.floor() as isize);
            let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
            let sample = |c: usize| -> f32 {
                let a = texel(c, x0, y0) * (1.0 - tx) + texel(c, x0 + 1, y0) * tx;
                let b = texel(c, x0, y0 + 1) * (1.0 - tx) + texel(c, x0 + 1, y0 + 1) * tx;
                (a * (1.0 - ty) + b * ty) / 255.0
            };
            for c in 0..spec.channels {
                let v = if spec.channels == src.channels {
                    sample(c)
                } else if src.channels == 1 {
                    sample(0)
                } else {
                    0.2126 * sample(0) + 0.7152 * sample(1) + 0.0722 * sample(2)
                };
                let v = ((v - 0.5) * gain + 0.5 + bias).clamp(0.0, 1.0);
                image_out[c * opix + o] = (v - spec.mean[c]) / spec.std[c];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn spec(c: usize, h: usize, w: usize) -> InputSpec {
        InputSpec {
            channels: c,
            height: h,
            width: w,
            mean: vec![0.0; c],
            std: vec![1.0; c],
        }
    }

    #[test]
    fn swap_keeps_case_and_other_words() {
        assert_eq!(
            swap_left_right("Upper LEFT lung and lower right lung.. Right-sided; leftover"),
            "Upper RIGHT lung and lower left lung.. Left-sided; leftover"
        );
    }

    #[test]
    fn identity_without_augmentation() {
        let (h, w) = (5, 7);
        let img: Vec<u8> = (0..h * w).map(|i| (i * 7) as u8).collect();
        let mask: Vec<u8> = (0..h * w).map(|i| (i % 3 == 0) as u8).collect();
        let (mut io, mut mo) = (vec![0.0; h * w], vec![0.0; h * w]);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let src = Planar {
            data: &img,
            channels: 1,
            height: h,
            width: w,
        };
        let r = process(
            src,
            &mask,
            "left",
            &spec(1, h, w),
            None,
            &mut rng,
            SampleOut {
                image: &mut io,
                mask: &mut mo,
            },
        );
        assert_eq!(r, "left");
        for i in 0..h * w {
            assert!((io[i] - img[i] as f32 / 255.0).abs() < 1e-6);
            assert_eq!(mo[i], mask[i] as f32);
        }
    }

    #[test]
    fn flip_mirrors_image_mask_and_report_together() {
        let (h, w) = (4, 6);
        let img: Vec<u8> = (0..h * w)
            .map(|i| if i % w < 2 { 200 } else { 10 })
            .collect();
        let mask: Vec<u8> = (0..h * w).map(|i| (i % w < 2) as u8).collect();
        let a = AugmentConfig {
            crop_scale: [1.0, 1.0],
            crop_ratio: [1.5, 1.5],
            brightness: 0.0,
            contrast: 0.0,
            ..Default::default()
        };
        let mut flipped = 0;
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let (mut io, mut mo) = (vec![0.0; h * w], vec![0.0; h * w]);
            let src = Planar {
                data: &img,
                channels: 1,
                height: h,
                width: w,
            };
            let r = process(
                src,
                &mask,
                "target in the left lung",
                &spec(1, h, w),
                Some(&a),
                &mut rng,
                SampleOut {
                    image: &mut io,
                    mask: &mut mo,
                },
            );
            let on_right = mo[w - 1] == 1.0 && mo[0] == 0.0;
            assert_eq!(
                on_right,
                r.contains("right"),
                "seed {seed}: mask side and report agree"
            );
            assert_eq!(io[w - 1] > 0.5, on_right, "image moved with the mask");
            flipped += on_right as usize;
        }
        assert!(flipped > 3 && flipped < 17, "{flipped}");
    }

    #[test]
    fn crops_resize_and_convert_channels() {
        let (h, w) = (32, 32);
        let img: Vec<u8> = vec![128; 3 * h * w];
        let mask: Vec<u8> = vec![1; h * w];
        let a = AugmentConfig::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (mut io, mut mo) = (vec![0.0; 16 * 24], vec![0.0; 16 * 24]);
        let src = Planar {
            data: &img,
            channels: 3,
            height: h,
            width: w,
        };
        process(
            src,
            &mask,
            "x",
            &spec(1, 16, 24),
            Some(&a),
            &mut rng,
            SampleOut {
                image: &mut io,
                mask: &mut mo,
            },
        );
        assert!(mo.iter().all(|&m| m == 1.0));
        assert!(
            io.iter().all(|&v| (0.3..0.7).contains(&v)),
            "jitter stays bounded"
        );
        assert!(a.validate().is_ok());
        let bad = AugmentConfig {
            crop_scale: [0.9, 0.5],
            ..a
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("data.augment.crop_scale"));
    }

    /// A 16×16 gray image whose mask is its bright half-plane pattern.
    fn pattern() -> (Vec<u8>, Vec<u8>) {
        let (h, w) = (16, 16);
        let img: Vec<u8> = (0..h * w)
            .map(|i| if (i % w) < 5 && (i / w) < 9 { 250 } else { 10 })
            .collect();
        let mask = img.iter().map(|&v| (v > 128) as u8).collect();
        (img, mask)
    }

    fn run(crop: CropBox, img: &[u8], mask: &[u8], rotated: bool) -> (Vec<f32>, Vec<f32>) {
        let (mut io, mut mo) = (vec![0.0; 256], vec![0.0; 256]);
        let src = Planar {
            data: img,
            channels: 1,
            height: 16,
            width: 16,
        };
        if rotated {
            resample_rotated(
                src,
                mask,
                crop,
                false,
                &spec(1, 16, 16),
                (1.0, 0.0),
                &mut io,
                &mut mo,
            );
        } else {
            resample(
                src,
                mask,
                crop,
                false,
                &spec(1, 16, 16),
                1.0,
                0.0,
                &mut io,
                &mut mo,
            );
        }
        (io, mo)
    }

    #[test]
    fn a_quarter_turn_moves_image_and_mask_together_and_no_turn_changes_nothing() {
        let (img, mask) = pattern();
        let full = CropBox {
            x0: 0.0,
            y0: 0.0,
            w: 16.0,
            h: 16.0,
            angle: 0.0,
        };
        // Unturned, the general path equals the separable one.
        assert_eq!(run(full, &img, &mask, true), run(full, &img, &mask, false));
        // A quarter turn of a square lands on pixel centres: a permutation of the pixels,
        // the same for image and mask, and a true rotation (row r becomes a column).
        let (io, mo) = run(full.rotated(std::f32::consts::FRAC_PI_2), &img, &mask, true);
        for o in 0..256 {
            assert_eq!(mo[o] == 1.0, io[o] > 0.5, "pixel {o}: image and mask agree");
        }
        let on: usize = mo.iter().filter(|&&m| m == 1.0).count();
        assert_eq!(on, 5 * 9, "no pixel lost or duplicated");
        let rows_on = (0..16)
            .filter(|r| mo[r * 16..r * 16 + 16].contains(&1.0))
            .count();
        assert_eq!(rows_on, 5, "the 5-wide, 9-tall block now spans 5 rows");
    }

    #[test]
    fn rotation_is_drawn_only_when_on_and_checked() {
        let (img, mask) = pattern();
        let src = Planar {
            data: &img,
            channels: 1,
            height: 16,
            width: 16,
        };
        let go = |a: &AugmentConfig| {
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            let (mut io, mut mo) = (vec![0.0; 256], vec![0.0; 256]);
            let out = SampleOut {
                image: &mut io,
                mask: &mut mo,
            };
            process(src, &mask, "left", &spec(1, 16, 16), Some(a), &mut rng, out);
            (io, mo, rng.random::<u64>())
        };
        let plain = AugmentConfig::default();
        let turned = AugmentConfig {
            rotate: 20.0,
            ..plain.clone()
        };
        let (a, b) = (go(&plain), go(&turned));
        assert_ne!(a.0, b.0, "rotation changes the image");
        assert_ne!(a.2, b.2, "one more draw when on");
        let err = AugmentConfig {
            rotate: 90.0,
            ..plain
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("data.augment.rotate"), "{err}");
    }
}
