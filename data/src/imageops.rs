//! Image and mask decoding shared by the importers and other tools.
//!
//! * Files are read as a viewer shows them: the EXIF orientation of JPEG/TIFF photos is applied
//!   (to images and masks alike), so a mask drawn on the displayed photo lines up.
//! * Images are converted to gray (1 channel; Rec. 709 luma, [`gray8`]) or RGB (3 channels),
//!   resized with a triangle (bilinear, anti-aliased when shrinking) filter and returned planar
//!   (`C*H*W`, channel-major). 16-bit images are scaled from a bit depth (8, 10, 12, 14 or 16
//!   bits): their dataset's, the smallest holding its largest value, so that 12-bit CT or X-ray
//!   data saved in 16-bit PNGs keeps its contrast instead of turning black and every image of
//!   a dataset has one scale; without one, the image's own.
//! * Masks must hold exactly two kinds of values: 0 and 1, or 0 and 255 (65535 for 16-bit files,
//!   1.0 for float files). Anything else — JPEG artefacts, intermediate labels, a "void" value —
//!   is an error naming the file, the offending values and how many pixels carry them. RGB masks
//!   count a pixel as foreground when any colour channel is nonzero. A mask with an alpha
//!   channel that varies (a transparent PNG whose opacity marks the target) is read from its
//!   alpha channel; a constant alpha is ignored. Masks are resized with nearest-neighbour
//!   sampling and returned as 0/1.
//! * [`MaskRule::Threshold`] reads masks that are binary in intent but not in their values —
//!   JPEG-compressed masks such as Kvasir-SEG's, or anti-aliased drawings: a pixel is foreground
//!   when its largest channel is at least the threshold times the bit depth's maximum (255,
//!   65535 — 255 for a 16-bit file whose values are all ≤ 255 —, or 1.0 for float files with
//!   values ≤ 1). A mask that holds only 0 and 1 is still read as 0/1.

use crate::{DataError, Result};
use image::{DynamicImage, ImageReader};
use std::collections::BTreeMap;
use std::path::Path;

/// How the pixel values of a mask file become 0/1.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum MaskRule {
    /// Exactly two values, 0/1 or 0/255 (0/65535, 0/1.0); anything else is an error.
    #[default]
    Exact,
    /// Foreground when the largest channel is ≥ this fraction (in (0, 1]) of the full value.
    Threshold(f32),
}

impl MaskRule {
    /// The rule's fraction, when it thresholds.
    pub fn threshold(self) -> Option<f32> {
        match self {
            MaskRule::Exact => None,
            MaskRule::Threshold(t) => Some(t),
        }
    }
}

/// File extensions (lower case, without dot) of the image formats tmca decodes.
pub const IMAGE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

/// Whether `path` has one of [`IMAGE_EXTENSIONS`] (case-insensitive).
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| {
            let e = e.to_ascii_lowercase();
            IMAGE_EXTENSIONS.contains(&e.as_str())
        })
        .unwrap_or(false)
}

fn image_error(path: &Path, message: impl std::fmt::Display) -> DataError {
    DataError::Image {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn reader(path: &Path) -> Result<ImageReader<std::io::BufReader<std::fs::File>>> {
    ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| image_error(path, e))
}

/// Size `(width, height)` of an image file as displayed (EXIF orientation applied), reading
/// only its header.
pub fn image_size(path: &Path) -> Result<(u32, u32)> {
    use image::metadata::Orientation as O;
    use image::ImageDecoder;
    let mut d = reader(path)?
        .into_decoder()
        .map_err(|e| image_error(path, e))?;
    let (w, h) = d.dimensions();
    Ok(match d.orientation().unwrap_or(O::NoTransforms) {
        O::Rotate90 | O::Rotate270 | O::Rotate90FlipH | O::Rotate270FlipH => (h, w),
        _ => (w, h),
    })
}

/// Decodes an image file of any supported format (the format is guessed from the content, not
/// the extension), turned as its EXIF orientation says.
pub fn decode(path: &Path) -> Result<DynamicImage> {
    use image::ImageDecoder;
    let mut d = reader(path)?
        .into_decoder()
        .map_err(|e| image_error(path, e))?;
    let orientation = d.orientation().ok();
    let mut img = DynamicImage::from_decoder(d).map_err(|e| image_error(path, e))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    if img.width() == 0 || img.height() == 0 {
        return Err(image_error(path, "the image is empty (0 pixels)"));
    }
    Ok(img)
}

/// The bit depths 16-bit pixels are read at.
pub const BIT_DEPTHS: [u32; 5] = [8, 10, 12, 14, 16];

/// The smallest of [`BIT_DEPTHS`] that holds `max`.
pub fn depth_holding(max: u16) -> u32 {
    BIT_DEPTHS
        .into_iter()
        .find(|&b| u32::from(max) < (1 << b))
        .unwrap_or(16)
}

/// The bit depth a 16-bit image's own largest value calls for ([`depth_holding`]); `None`
/// for an image of 8 bits or fewer per channel (read as it is). Reads only the header of
/// such a file.
pub fn image_bit_depth(path: &Path) -> Result<Option<u32>> {
    use image::ColorType as C;
    use image::ImageDecoder;
    let color = reader(path)?
        .into_decoder()
        .map_err(|e| image_error(path, e))?
        .color_type();
    if !matches!(color, C::L16 | C::La16 | C::Rgb16 | C::Rgba16) {
        return Ok(None);
    }
    let img = decode(path)?;
    let max = match img.color() {
        C::L16 | C::La16 => img.to_luma16().pixels().map(|p| p.0[0]).max(),
        _ => img.to_rgb16().pixels().flat_map(|p| p.0).max(),
    };
    Ok(Some(depth_holding(max.unwrap_or(0))))
}

/// 16-bit images as 8-bit, scaled from `bits` (a dataset's depth, so that every image of it
/// has one scale), or without one from the smallest depth that holds the image's own largest
/// value; others unchanged. Values beyond `bits` saturate.
fn narrow_16bit(img: &DynamicImage, bits: Option<u32>) -> std::borrow::Cow<'_, DynamicImage> {
    use image::ColorType as C;
    use std::borrow::Cow;
    let scale = |max: u16| {
        let bits = bits.unwrap_or_else(|| depth_holding(max)).clamp(1, 16);
        255.0 / ((1u32 << bits) - 1) as f32
    };
    let to8 = |v: u16, k: f32| (f32::from(v) * k).round().min(255.0) as u8;
    match img.color() {
        C::L16 | C::La16 => {
            let g = img.to_luma16();
            let k = scale(g.pixels().map(|p| p.0[0]).max().unwrap_or(0));
            let out = image::GrayImage::from_fn(g.width(), g.height(), |x, y| {
                image::Luma([to8(g.get_pixel(x, y).0[0], k)])
            });
            Cow::Owned(DynamicImage::ImageLuma8(out))
        }
        C::Rgb16 | C::Rgba16 => {
            let c = img.to_rgb16();
            let max = c.pixels().flat_map(|p| p.0).max().unwrap_or(0);
            let k = scale(max);
            let out = image::RgbImage::from_fn(c.width(), c.height(), |x, y| {
                image::Rgb(c.get_pixel(x, y).0.map(|v| to8(v, k)))
            });
            Cow::Owned(DynamicImage::ImageRgb8(out))
        }
        _ => Cow::Borrowed(img),
    }
}

fn check_target(height: usize, width: usize) -> Result<(u32, u32)> {
    let conv = |v: usize, field: &str| -> Result<u32> {
        match u32::try_from(v) {
            Ok(v) if v > 0 => Ok(v),
            _ => Err(DataError::Config {
                field: field.into(),
                message: format!("must be between 1 and {}, got {v}", u32::MAX),
            }),
        }
    };
    Ok((conv(height, "height")?, conv(width, "width")?))
}

/// The 8-bit gray of an image: Rec. 709 luma in integers, rounded,
/// `(2126 R + 7152 G + 722 B + 5000) / 10000` (a gray picture stored as RGB keeps its values;
/// tmca's exported predictor computes the same).
pub fn gray8(img: &DynamicImage) -> image::GrayImage {
    if let DynamicImage::ImageLuma8(g) = img {
        return g.clone();
    }
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    let luma = rgb
        .pixels()
        .map(|p| {
            let [r, g, b] = p.0.map(u32::from);
            ((2126 * r + 7152 * g + 722 * b + 5000) / 10000) as u8
        })
        .collect();
    image::GrayImage::from_raw(w, h, luma).unwrap_or_else(|| image::GrayImage::new(w, h))
}

/// Converts a decoded image to `channels` (1: gray, 3: RGB), resizes it (triangle filter) to
/// `height`x`width` and returns it planar (`C*H*W`); a 16-bit image is scaled from its own
/// depth ([`image_to_planar_at`] with a dataset's).
pub fn image_to_planar(
    img: &DynamicImage,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<Vec<u8>> {
    image_to_planar_at(img, None, channels, height, width)
}

/// [`image_to_planar`], a 16-bit image scaled from `bits` when given.
pub fn image_to_planar_at(
    img: &DynamicImage,
    bits: Option<u32>,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<Vec<u8>> {
    let (h, w) = check_target(height, width)?;
    let img = narrow_16bit(img, bits);
    let filter = image::imageops::FilterType::Triangle;
    match channels {
        1 => {
            let gray = gray8(&img);
            let gray = if gray.dimensions() == (w, h) {
                gray
            } else {
                image::imageops::resize(&gray, w, h, filter)
            };
            Ok(gray.into_raw())
        }
        3 => {
            let rgb = img.to_rgb8();
            let rgb = if rgb.dimensions() == (w, h) {
                rgb
            } else {
                image::imageops::resize(&rgb, w, h, filter)
            };
            let plane = height * width;
            let mut out = vec![0u8; 3 * plane];
            for (i, px) in rgb.pixels().enumerate() {
                out[i] = px.0[0];
                out[plane + i] = px.0[1];
                out[2 * plane + i] = px.0[2];
            }
            Ok(out)
        }
        other => Err(DataError::Config {
            field: "channels".into(),
            message: format!("must be 1 or 3, got {other}"),
        }),
    }
}

/// A planar 8-bit picture (`channels` 1 or 3, `height`×`width`) as an import at
/// `out_height`×`out_width` with `out_channels` would have stored it ([`image_to_planar`]: gray
/// by [`gray8`], resized with the anti-aliasing triangle filter). New
/// images go to a model this way, so that they are prepared as its training images were.
pub fn planar_as_imported(
    data: &[u8],
    (channels, height, width): (usize, usize, usize),
    out_channels: usize,
    out_height: usize,
    out_width: usize,
) -> Result<Vec<u8>> {
    let (h, w) = check_target(height, width)?;
    let plane = height * width;
    let bad = || DataError::Config {
        field: "channels".into(),
        message: format!(
            "{channels} channels of {height}x{width} in {} values",
            data.len()
        ),
    };
    let img = match channels {
        1 => DynamicImage::ImageLuma8(
            image::GrayImage::from_raw(w, h, data.to_vec()).ok_or_else(bad)?,
        ),
        3 if data.len() == 3 * plane => {
            let rgb = (0..plane)
                .flat_map(|i| [data[i], data[plane + i], data[2 * plane + i]])
                .collect();
            DynamicImage::ImageRgb8(image::RgbImage::from_raw(w, h, rgb).ok_or_else(bad)?)
        }
        _ => return Err(bad()),
    };
    image_to_planar(&img, out_channels, out_height, out_width)
}

/// Decodes `path`, converts it to gray (`channels` 1) or RGB (3), resizes it to
/// `height`x`width` and returns it planar (`C*H*W`).
pub fn load_image(path: &Path, channels: usize, height: usize, width: usize) -> Result<Vec<u8>> {
    image_to_planar(&decode(path)?, channels, height, width)
}

/// [`load_image`], a 16-bit image scaled from `bits` when given (the depth its dataset was
/// imported at).
pub fn load_image_at(
    path: &Path,
    bits: Option<u32>,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<Vec<u8>> {
    image_to_planar_at(&decode(path)?, bits, channels, height, width)
}

/// Values seen in a mask: the largest colour channel of each pixel, at the file's bit depth.
fn mask_values(img: &DynamicImage) -> (Vec<u32>, u32) {
    use image::ColorType as C;
    fn max3<T: Copy + Ord>(p: [T; 3]) -> T {
        p[0].max(p[1]).max(p[2])
    }
    match img.color() {
        C::L16 | C::La16 | C::Rgb16 | C::Rgba16 => {
            let v = img.to_rgb16().pixels().map(|p| max3(p.0) as u32).collect();
            (v, u16::MAX as u32)
        }
        C::Rgb32F | C::Rgba32F => {
            // Floats: map exactly 0.0, 1.0 and 255.0 onto 0, 1, 255; everything else onto a
            // value that is reported as bad (rounded, at least 2).
            let v = img
                .to_rgb32f()
                .pixels()
                .map(|p| {
                    let m = p.0[0].max(p.0[1]).max(p.0[2]);
                    if m == 0.0 || m == 1.0 || m == 255.0 {
                        m as u32
                    } else {
                        (m.abs().round() as u32).max(2)
                    }
                })
                .collect();
            (v, 255)
        }
        _ => {
            let v = img.to_rgb8().pixels().map(|p| max3(p.0) as u32).collect();
            (v, u8::MAX as u32)
        }
    }
}

/// Turns a decoded mask into 0/1 at its own size by `rule` (see the module docs).
pub fn binarize_mask(path: &Path, img: &DynamicImage, rule: MaskRule) -> Result<Vec<u8>> {
    let alpha = alpha_mask(img);
    let img = alpha.as_ref().unwrap_or(img);
    refuse_colour_classes(path, img)?;
    match rule {
        MaskRule::Exact => exact_mask(path, img),
        MaskRule::Threshold(t) => Ok(threshold_mask(path, img, t)),
    }
}

/// A colour's name for messages: the channels at least half as bright as its brightest.
fn colour_name([r, g, b]: [f32; 3]) -> &'static str {
    const NAMES: [&str; 8] = [
        "black",
        "red",
        "green",
        "yellow",
        "blue",
        "magenta",
        "cyan",
        "white/gray",
    ];
    let on = |v: f32| usize::from(v >= 0.5);
    NAMES[on(r) | on(g) << 1 | on(b) << 2]
}

/// A colour-coded label map (lung in green, lesion in red: several classes in one RGB file)
/// read by its brightest channel would merge its classes into one target without a word:
/// refused when its bright pixels (at least half as bright as the brightest) fall into two
/// or more colours, each on at least 1% of them and 16 pixels. A pixel's colour is its RGB
/// divided by its brightest channel; colours within 0.25 of each other in every channel are
/// one (the shades of an anti-aliased edge, JPEG's colour noise), and faint pixels (JPEG
/// noise in the background, the dark end of an edge) are not looked at.
fn refuse_colour_classes(path: &Path, img: &DynamicImage) -> Result<()> {
    use image::ColorType as C;
    if !matches!(img.color(), C::Rgb8 | C::Rgba8 | C::Rgb16 | C::Rgba16) {
        return Ok(());
    }
    let rgb = img.to_rgb16();
    let top = |p: &[u16; 3]| p[0].max(p[1]).max(p[2]);
    let brightest = rgb.pixels().map(|p| top(&p.0)).max().unwrap_or(0);
    if brightest == 0 {
        return Ok(());
    }
    // Chromaticities in sixteenths, counted.
    let mut bins: std::collections::HashMap<[u8; 3], usize> = std::collections::HashMap::new();
    for p in rgb.pixels() {
        let t = top(&p.0);
        if u32::from(t) * 2 < u32::from(brightest) {
            continue;
        }
        let q =
            p.0.map(|v| ((f32::from(v) / f32::from(t)) * 16.0).round() as u8);
        *bins.entry(q).or_default() += 1;
    }
    let total: usize = bins.values().sum();
    let mut bins: Vec<([u8; 3], usize)> = bins.into_iter().collect();
    bins.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    // Greedy clusters around the most common colours.
    let mut clusters: Vec<([u8; 3], usize)> = Vec::new();
    for (q, n) in bins {
        let near = |c: &[u8; 3]| (0..3).all(|k| c[k].abs_diff(q[k]) <= 4);
        match clusters.iter_mut().find(|(c, _)| near(c)) {
            Some((_, m)) => *m += n,
            None => clusters.push((q, n)),
        }
    }
    let classes: Vec<([u8; 3], usize)> = clusters
        .into_iter()
        .filter(|&(_, n)| n >= 16 && n * 100 >= total)
        .collect();
    if classes.len() < 2 {
        return Ok(());
    }
    let listed: Vec<String> = classes
        .iter()
        .map(|&(c, n)| {
            format!(
                "{} in {n} pixels",
                colour_name(c.map(|v| f32::from(v) / 16.0))
            )
        })
        .collect();
    Err(DataError::bad(
        path,
        format!(
            "the mask holds several colours ({}): a colour-coded label map of several classes, \
             which reading its brightest channel would merge into one target. tmca segments \
             one target per report: write binary masks of the class(es) the reports describe",
            listed.join(", ")
        ),
    ))
}

/// The alpha channel of a mask whose opacity varies (the target marked by transparency), as a
/// gray image of the same bit depth; `None` without alpha or with a constant one.
fn alpha_mask(img: &DynamicImage) -> Option<DynamicImage> {
    use image::ColorType as C;
    match img.color() {
        C::La8 | C::Rgba8 => {
            let a: Vec<u8> = img.to_rgba8().pixels().map(|p| p.0[3]).collect();
            let varies = a.iter().any(|&v| v != a[0]);
            varies
                .then(|| image::GrayImage::from_raw(img.width(), img.height(), a))
                .flatten()
                .map(DynamicImage::ImageLuma8)
        }
        C::La16 | C::Rgba16 => {
            let a: Vec<u16> = img.to_rgba16().pixels().map(|p| p.0[3]).collect();
            let varies = a.iter().any(|&v| v != a[0]);
            varies
                .then(|| image::ImageBuffer::from_raw(img.width(), img.height(), a))
                .flatten()
                .map(DynamicImage::ImageLuma16)
        }
        _ => None,
    }
}

/// [`MaskRule::Threshold`]: 0/1 masks as they are, others cut at `t` of the full value. A JPEG
/// mask whose values are all at most 3 is a 0/1 mask (JPEG turns 0/1 into 0, 1 and 2) and is
/// cut at `t` on that scale, as a 0/255 one at 255 · `t` (in a lossless file such values are
/// labels, not noise: cut at the full scale as any other).
fn threshold_mask(path: &Path, img: &DynamicImage, t: f32) -> Vec<u8> {
    use image::ColorType as C;
    let (values, full): (Vec<f32>, f32) = match img.color() {
        C::Rgb32F | C::Rgba32F => {
            let v: Vec<f32> = img
                .to_rgb32f()
                .pixels()
                .map(|p| p.0[0].max(p.0[1]).max(p.0[2]))
                .collect();
            let full = if v.iter().all(|&m| m <= 1.0) {
                1.0
            } else {
                255.0
            };
            (v, full)
        }
        _ => {
            let (v, full) = mask_values(img);
            // An 8-bit mask saved as 16-bit (0/255 in a 16-bit PNG) is cut at its own scale.
            let full = if full == u16::MAX as u32 && v.iter().all(|&x| x <= 255) {
                255
            } else {
                full
            };
            (v.into_iter().map(|x| x as f32).collect(), full as f32)
        }
    };
    if values.iter().all(|&v| v == 0.0 || v == 1.0) {
        return values.into_iter().map(|v| u8::from(v == 1.0)).collect();
    }
    let jpeg = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"));
    let full = if jpeg && full > 1.0 && values.iter().all(|&v| v <= 3.0) {
        1.0
    } else {
        full
    };
    let cut = t * full;
    values.into_iter().map(|v| u8::from(v >= cut)).collect()
}

fn exact_mask(path: &Path, img: &DynamicImage) -> Result<Vec<u8>> {
    let (values, full) = mask_values(img);
    let mut bad: BTreeMap<u32, usize> = BTreeMap::new();
    let (mut ones, mut fulls) = (0usize, 0usize);
    for &v in &values {
        if v == 0 {
        } else if v == 1 {
            ones += 1;
        } else if v == full || v == 255 {
            fulls += 1;
        } else {
            *bad.entry(v).or_insert(0) += 1;
        }
    }
    if !bad.is_empty() {
        let total: usize = bad.values().sum();
        let mut worst: Vec<(u32, usize)> = bad.into_iter().collect();
        worst.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let listed: Vec<String> = worst
            .iter()
            .take(5)
            .map(|(v, n)| format!("value {v} in {n} pixels"))
            .collect();
        let more = if worst.len() > 5 {
            format!(" and {} other values", worst.len() - 5)
        } else {
            String::new()
        };
        return Err(DataError::bad(
            path,
            format!(
                "mask values must be 0/1 or 0/255 (a binary mask): {total} of {} pixels have other values: {}{more}. \
                 A JPEG or anti-aliased mask: `--mask-threshold 0.5` reads it. A multi-class label map: tmca \
                 segments one target per report, so write binary masks of the class(es) the reports describe",
                values.len(),
                listed.join(", ")
            ),
        ));
    }
    if ones > 0 && fulls > 0 {
        return Err(DataError::bad(
            path,
            format!(
                "mask mixes the values 1 ({ones} pixels) and {full} ({fulls} pixels); \
                 a binary mask uses either 0/1 or 0/{full}"
            ),
        ));
    }
    Ok(values.into_iter().map(|v| u8::from(v != 0)).collect())
}

/// Nearest-neighbour resize of one `src_h`x`src_w` plane (pixel centres aligned).
pub fn resize_nearest(
    src: &[u8],
    src_h: usize,
    src_w: usize,
    height: usize,
    width: usize,
) -> Vec<u8> {
    if (src_h, src_w) == (height, width) {
        return src.to_vec();
    }
    let map = |o: usize, n_out: usize, n_in: usize| -> usize {
        let s = ((2 * o + 1) * n_in) / (2 * n_out);
        s.min(n_in.saturating_sub(1))
    };
    let cols: Vec<usize> = (0..width).map(|x| map(x, width, src_w)).collect();
    let mut out = Vec::with_capacity(height * width);
    for y in 0..height {
        let row = &src[map(y, height, src_h) * src_w..][..src_w];
        out.extend(cols.iter().map(|&x| row[x]));
    }
    out
}

/// Reads a decoded mask by `rule` and resizes it (nearest) to `height`x`width`; returns 0/1.
pub fn mask_to_binary(
    path: &Path,
    img: &DynamicImage,
    rule: MaskRule,
    height: usize,
    width: usize,
) -> Result<Vec<u8>> {
    check_target(height, width)?;
    let bin = binarize_mask(path, img, rule)?;
    Ok(resize_nearest(
        &bin,
        img.height() as usize,
        img.width() as usize,
        height,
        width,
    ))
}

/// Decodes the mask at `path`, checks its values, resizes it (nearest) to `height`x`width` and
/// returns it as 0/1.
pub fn load_mask(path: &Path, height: usize, width: usize) -> Result<Vec<u8>> {
    mask_to_binary(path, &decode(path)?, MaskRule::Exact, height, width)
}

/// The error for an image and its mask of different sizes (naming both files).
pub fn size_mismatch(
    image: &Path,
    image_size: (u32, u32),
    mask: &Path,
    mask_size: (u32, u32),
) -> DataError {
    DataError::bad(
        image,
        format!(
            "image/mask size mismatch: the image is {}x{} (WxH) but its mask {} is {}x{}",
            image_size.0,
            image_size.1,
            mask.display(),
            mask_size.0,
            mask_size.1
        ),
    )
}

/// Decodes an image and its mask, checks that they have the same size (before resizing) and
/// returns `(planar image, 0/1 mask)` at `height`x`width`, the mask read by `rule`.
pub fn load_pair(
    image: &Path,
    mask: &Path,
    rule: MaskRule,
    (bits, channels): (Option<u32>, usize),
    height: usize,
    width: usize,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let img = decode(image)?;
    let msk = decode(mask)?;
    if img.dimensions_wh() != msk.dimensions_wh() {
        return Err(size_mismatch(
            image,
            img.dimensions_wh(),
            mask,
            msk.dimensions_wh(),
        ));
    }
    Ok((
        image_to_planar_at(&img, bits, channels, height, width)?,
        mask_to_binary(mask, &msk, rule, height, width)?,
    ))
}

trait Dims {
    fn dimensions_wh(&self) -> (u32, u32);
}

impl Dims for DynamicImage {
    fn dimensions_wh(&self) -> (u32, u32) {
        (self.width(), self.height())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbImage};

    fn gray_mask(w: u32, h: u32, on: u8, off: u8) -> GrayImage {
        GrayImage::from_fn(w, h, |x, _| Luma([if x < w / 2 { on } else { off }]))
    }

    #[test]
    fn gray_is_rounded_rec709_luma_and_keeps_gray_pictures() {
        let rgb = RgbImage::from_fn(256, 2, |x, y| {
            let v = x as u8;
            if y == 0 {
                Rgb([v, v, v])
            } else {
                Rgb([v, 255 - v, v / 2])
            }
        });
        let g = gray8(&DynamicImage::ImageRgb8(rgb));
        for x in 0..256u32 {
            assert_eq!(g.get_pixel(x, 0).0[0] as u32, x, "gray {x} kept");
            let (r, gg, b) = (x, 255 - x, x / 2);
            let want = (0.2126 * r as f64 + 0.7152 * gg as f64 + 0.0722 * b as f64).round();
            assert_eq!(f64::from(g.get_pixel(x, 1).0[0]), want, "colour {x}");
        }
    }

    #[test]
    fn a_picture_already_decoded_is_prepared_as_its_file_is_imported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("colour.png");
        image::RgbImage::from_fn(57, 43, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x * y) % 253) as u8])
        })
        .save(&path)
        .unwrap();
        let own = load_image(&path, 3, 43, 57).unwrap();
        for (c, h, w) in [(1, 24, 20), (3, 24, 20), (1, 43, 57), (3, 90, 64)] {
            let imported = load_image(&path, c, h, w).unwrap();
            let prepared = planar_as_imported(&own, (3, 43, 57), c, h, w).unwrap();
            assert_eq!(prepared, imported, "{c} channels at {h}x{w}");
        }
        let gray = load_image(&path, 1, 43, 57).unwrap();
        assert_eq!(
            planar_as_imported(&gray, (1, 43, 57), 1, 24, 20).unwrap(),
            load_image(&path, 1, 24, 20).unwrap()
        );
        assert!(planar_as_imported(&own, (3, 40, 57), 1, 24, 20).is_err());
    }

    #[test]
    fn mask_0_255_and_0_1_accepted_128_rejected() {
        let dir = tempfile::tempdir().unwrap();
        for (name, on) in [("a.png", 255u8), ("b.png", 1u8)] {
            let p = dir.path().join(name);
            gray_mask(20, 16, on, 0).save(&p).unwrap();
            let m = load_mask(&p, 8, 10).unwrap();
            assert_eq!(m.len(), 80);
            assert!(m.iter().all(|&v| v <= 1));
            // left half set
            assert_eq!(m[0], 1);
            assert_eq!(m[9], 0);
            assert_eq!(m.iter().filter(|&&v| v == 1).count(), 40);
        }
        let p = dir.path().join("c.png");
        let mut bad = gray_mask(20, 16, 255, 0);
        bad.put_pixel(3, 3, Luma([128]));
        bad.put_pixel(4, 3, Luma([128]));
        bad.save(&p).unwrap();
        let err = load_mask(&p, 8, 10).unwrap_err().to_string();
        assert!(err.contains("c.png"), "{err}");
        assert!(err.contains("value 128 in 2 pixels"), "{err}");

        let p = dir.path().join("d.png");
        let mut mixed = gray_mask(20, 16, 255, 0);
        mixed.put_pixel(15, 3, Luma([1]));
        mixed.save(&p).unwrap();
        let err = load_mask(&p, 8, 10).unwrap_err().to_string();
        assert!(err.contains("d.png") && err.contains("mixes"), "{err}");
    }

    #[test]
    fn threshold_reads_jpeg_masks_and_keeps_0_1_masks() {
        let dir = tempfile::tempdir().unwrap();
        let t = MaskRule::Threshold(0.5);
        // Values around the cut, 8 and 16 bit.
        let img =
            DynamicImage::ImageLuma8(GrayImage::from_raw(5, 1, vec![0, 3, 127, 128, 250]).unwrap());
        assert_eq!(
            binarize_mask(Path::new("m"), &img, t).unwrap(),
            vec![0, 0, 0, 1, 1]
        );
        assert!(binarize_mask(Path::new("m"), &img, MaskRule::Exact).is_err());
        let img16 = DynamicImage::ImageLuma16(
            image::ImageBuffer::from_raw(3, 1, vec![0u16, 32767, 32768]).unwrap(),
        );
        assert_eq!(
            binarize_mask(Path::new("m"), &img16, t).unwrap(),
            vec![0, 0, 1]
        );
        // A 0/1 mask is not cut at 127.5 (it would come out empty).
        let ones = DynamicImage::ImageLuma8(GrayImage::from_raw(3, 1, vec![0, 1, 1]).unwrap());
        assert_eq!(
            binarize_mask(Path::new("m"), &ones, t).unwrap(),
            vec![0, 1, 1]
        );
        // A 0/1 mask saved as JPEG (0, 1 and 2 in it) is cut on the 0/1 scale, not emptied.
        let jpeg01 = DynamicImage::ImageLuma8(GrayImage::from_raw(4, 1, vec![0, 1, 2, 0]).unwrap());
        assert_eq!(
            binarize_mask(Path::new("m.jpg"), &jpeg01, t).unwrap(),
            vec![0, 1, 1, 0]
        );
        // In a lossless file 1 and 2 are labels (organ, lesion), not JPEG noise: not merged.
        assert_eq!(
            binarize_mask(Path::new("m.png"), &jpeg01, t).unwrap(),
            vec![0, 0, 0, 0]
        );
        // Float masks in [0, 1].
        let f = DynamicImage::ImageRgb32F(
            image::ImageBuffer::from_raw(2, 1, vec![0.2f32, 0.0, 0.0, 0.0, 0.7, 0.0]).unwrap(),
        );
        assert_eq!(binarize_mask(Path::new("m"), &f, t).unwrap(), vec![0, 1]);

        // A real JPEG round trip: rejected exactly, read back by the threshold.
        let p = dir.path().join("m.jpg");
        let truth = gray_mask(40, 32, 255, 0);
        truth.save(&p).unwrap();
        let err = load_mask(&p, 32, 40).unwrap_err().to_string();
        assert!(
            err.contains("m.jpg") && err.contains("--mask-threshold"),
            "{err}"
        );
        let read = mask_to_binary(&p, &decode(&p).unwrap(), t, 32, 40).unwrap();
        let want: Vec<u8> = truth.pixels().map(|p| u8::from(p.0[0] > 0)).collect();
        assert_eq!(read, want);
    }

    #[test]
    fn rgb_and_16bit_masks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rgb.png");
        RgbImage::from_fn(4, 2, |x, _| {
            if x == 0 {
                Rgb([0, 255, 0])
            } else {
                Rgb([0, 0, 0])
            }
        })
        .save(&p)
        .unwrap();
        assert_eq!(load_mask(&p, 2, 4).unwrap(), vec![1, 0, 0, 0, 1, 0, 0, 0]);

        // A colour-coded label map (lung green, lesion red) is refused by either rule, naming
        // its colours; one colour, or white with a few tinted fringe pixels, is a binary mask.
        let labels = RgbImage::from_fn(40, 20, |x, _| match x {
            0..10 => Rgb([0, 255, 0]),
            10..14 => Rgb([255, 0, 0]),
            _ => Rgb([0, 0, 0]),
        });
        for rule in [MaskRule::Exact, MaskRule::Threshold(0.5)] {
            let err = binarize_mask(
                Path::new("lab.png"),
                &DynamicImage::ImageRgb8(labels.clone()),
                rule,
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("lab.png")
                    && err.contains("green in 200 pixels, red in 80 pixels")
                    && err.contains("binary masks"),
                "{err}"
            );
        }
        // One colour drawn anti-aliased (orange, azure: a channel at half the brightest) or
        // saved as a JPEG (colour noise, faint background) is one class.
        let disk = |colour: [f32; 3]| {
            RgbImage::from_fn(64, 64, |x, y| {
                let d = ((x as f32 - 31.5).powi(2) + (y as f32 - 31.5).powi(2)).sqrt();
                let a = (20.5 - d).clamp(0.0, 1.0);
                Rgb(colour.map(|c| (c * a).round() as u8))
            })
        };
        for colour in [[255.0, 128.0, 0.0], [0.0, 128.0, 255.0], [255.0, 0.0, 0.0]] {
            let img = DynamicImage::ImageRgb8(disk(colour));
            binarize_mask(Path::new("aa.png"), &img, MaskRule::Threshold(0.5))
                .unwrap_or_else(|e| panic!("{colour:?}: {e}"));
            let mut jpeg = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 75)
                .encode_image(&img)
                .unwrap();
            let back = image::load_from_memory(&jpeg).unwrap();
            let m = binarize_mask(Path::new("d.jpg"), &back, MaskRule::Threshold(0.5))
                .unwrap_or_else(|e| panic!("{colour:?} as JPEG: {e}"));
            assert!(m.iter().filter(|&&v| v == 1).count() > 1000);
        }
        let fringe = RgbImage::from_fn(40, 20, |x, y| match (x, y) {
            (0, 0..4) => Rgb([250, 90, 80]),
            (0..20, _) => Rgb([255, 255, 255]),
            _ => Rgb([0, 0, 0]),
        });
        let read = binarize_mask(
            Path::new("m"),
            &DynamicImage::ImageRgb8(fringe),
            MaskRule::Threshold(0.5),
        )
        .unwrap();
        assert_eq!(read.iter().filter(|&&v| v == 1).count(), 400);

        let p = dir.path().join("m16.png");
        image::ImageBuffer::<Luma<u16>, Vec<u16>>::from_fn(2, 1, |x, _| {
            Luma([if x == 0 { 65535 } else { 0 }])
        })
        .save(&p)
        .unwrap();
        assert_eq!(load_mask(&p, 1, 2).unwrap(), vec![1, 0]);
    }

    #[test]
    fn image_planar_gray_and_rgb() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.png");
        RgbImage::from_fn(3, 2, |x, y| Rgb([x as u8, y as u8, 200]))
            .save(&p)
            .unwrap();
        let rgb = load_image(&p, 3, 2, 3).unwrap();
        assert_eq!(
            rgb,
            vec![0, 1, 2, 0, 1, 2, 0, 0, 0, 1, 1, 1, 200, 200, 200, 200, 200, 200]
        );
        let gray = load_image(&p, 1, 4, 6).unwrap();
        assert_eq!(gray.len(), 24);
        let err = load_image(&p, 2, 4, 6).unwrap_err().to_string();
        assert!(err.contains("channels"), "{err}");
    }

    #[test]
    fn unreadable_and_mismatched() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.png");
        std::fs::write(&junk, b"not an image").unwrap();
        let err = load_image(&junk, 1, 4, 4).unwrap_err().to_string();
        assert!(err.contains("junk.png"), "{err}");

        let a = dir.path().join("a.png");
        let b = dir.path().join("b.png");
        gray_mask(20, 16, 255, 0).save(&a).unwrap();
        gray_mask(18, 16, 255, 0).save(&b).unwrap();
        let err = load_pair(&a, &b, MaskRule::Exact, (None, 1), 8, 8)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a.png") && err.contains("b.png") && err.contains("mismatch"),
            "{err}"
        );
        assert_eq!(image_size(&a).unwrap(), (20, 16));
    }

    #[test]
    fn nearest_resize_is_centre_aligned() {
        let src = [0, 1, 2, 3];
        assert_eq!(resize_nearest(&src, 1, 4, 1, 2), vec![1, 3]);
        assert_eq!(
            resize_nearest(&src, 1, 4, 1, 8),
            vec![0, 0, 1, 1, 2, 2, 3, 3]
        );
    }

    #[test]
    fn alpha_masks_and_8bit_masks_in_16bit_files() {
        use image::{LumaA, Rgba, RgbaImage};
        let lesion = |x: u32| x < 2;
        // White RGB everywhere, the target in the alpha channel; and black RGB likewise.
        for rgb in [255u8, 0] {
            let img = DynamicImage::ImageRgba8(RgbaImage::from_fn(4, 1, |x, _| {
                Rgba([rgb, rgb, rgb, if lesion(x) { 255 } else { 0 }])
            }));
            for rule in [MaskRule::Exact, MaskRule::Threshold(0.5)] {
                assert_eq!(
                    binarize_mask(Path::new("m"), &img, rule).unwrap(),
                    vec![1, 1, 0, 0]
                );
            }
        }
        // A constant alpha is no mask: the colour decides.
        let opaque = DynamicImage::ImageLumaA8(image::ImageBuffer::from_fn(4, 1, |x, _| {
            LumaA([if lesion(x) { 255u8 } else { 0 }, 255])
        }));
        assert_eq!(
            binarize_mask(Path::new("m"), &opaque, MaskRule::Exact).unwrap(),
            vec![1, 1, 0, 0]
        );
        // 0/255 saved in a 16-bit file: exact and thresholded alike.
        let img16 = DynamicImage::ImageLuma16(
            image::ImageBuffer::from_raw(3, 1, vec![0u16, 255, 255]).unwrap(),
        );
        for rule in [MaskRule::Exact, MaskRule::Threshold(0.5)] {
            assert_eq!(
                binarize_mask(Path::new("m"), &img16, rule).unwrap(),
                vec![0, 1, 1]
            );
        }
    }

    #[test]
    fn sixteen_bit_images_keep_their_contrast() {
        // 12-bit data (0..4095) in a 16-bit gray image spans 0..255, not 0..16.
        let g = image::ImageBuffer::from_raw(3, 1, vec![0u16, 2048, 4095]).unwrap();
        let out = image_to_planar(&DynamicImage::ImageLuma16(g), 1, 1, 3).unwrap();
        assert_eq!(out, vec![0, 128, 255]);
        // Full 16-bit range: as before.
        let g = image::ImageBuffer::from_raw(2, 1, vec![0u16, 65535]).unwrap();
        assert_eq!(
            image_to_planar(&DynamicImage::ImageLuma16(g), 1, 1, 2).unwrap(),
            vec![0, 255]
        );
        // RGB, 8-bit values in a 16-bit file.
        let c = image::ImageBuffer::from_raw(1, 1, vec![10u16, 100, 255]).unwrap();
        assert_eq!(
            image_to_planar(&DynamicImage::ImageRgb16(c), 3, 1, 1).unwrap(),
            vec![10, 100, 255]
        );
        // A dataset's depth: a slice whose largest value is 1023 is read at 12 bits like its
        // neighbours, not at 10 (four times brighter); beyond the depth it saturates.
        let g = DynamicImage::ImageLuma16(
            image::ImageBuffer::from_raw(3, 1, vec![0u16, 1023, 5000]).unwrap(),
        );
        assert_eq!(
            image_to_planar_at(&g, Some(12), 1, 1, 3).unwrap(),
            vec![0, 64, 255]
        );
        assert_eq!(depth_holding(1023), 10);
        assert_eq!(depth_holding(1024), 12);
        assert_eq!(depth_holding(65535), 16);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.png");
        image::ImageBuffer::<Luma<u16>, Vec<u16>>::from_raw(2, 1, vec![3, 3000])
            .unwrap()
            .save(&p)
            .unwrap();
        assert_eq!(image_bit_depth(&p).unwrap(), Some(12));
        let p8 = dir.path().join("e.png");
        gray_mask(2, 2, 255, 0).save(&p8).unwrap();
        assert_eq!(image_bit_depth(&p8).unwrap(), None);
    }

    /// `jpeg` with an EXIF APP1 segment saying `orientation` inserted after its SOI marker.
    pub(crate) fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = b"MM\0*\0\0\0\x08".to_vec(); // big-endian, IFD at offset 8
        tiff.extend(1u16.to_be_bytes()); // one entry
        tiff.extend(0x0112u16.to_be_bytes()); // Orientation
        tiff.extend(3u16.to_be_bytes()); // SHORT
        tiff.extend(1u32.to_be_bytes()); // count
        tiff.extend(orientation.to_be_bytes());
        tiff.extend([0, 0]); // value padding
        tiff.extend(0u32.to_be_bytes()); // no next IFD
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend(tiff);
        let mut out = jpeg[..2].to_vec(); // SOI
        out.extend([0xFF, 0xE1]);
        out.extend(((app1.len() + 2) as u16).to_be_bytes());
        out.extend(app1);
        out.extend(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        // Stored 40 wide x 30 high, bright in the stored left columns; orientation 6 = the
        // viewer turns it 90° clockwise: 30 wide x 40 high, bright at the top.
        let stored = GrayImage::from_fn(40, 30, |x, _| Luma([if x < 10 { 255 } else { 0 }]));
        let mut jpeg = Vec::new();
        DynamicImage::ImageLuma8(stored)
            .write_to(
                &mut std::io::Cursor::new(&mut jpeg),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        let p = dir.path().join("turned.jpg");
        std::fs::write(&p, with_exif_orientation(&jpeg, 6)).unwrap();
        assert_eq!(image_size(&p).unwrap(), (30, 40));
        let img = decode(&p).unwrap().to_luma8();
        assert_eq!(img.dimensions(), (30, 40));
        assert!(img.get_pixel(15, 2).0[0] > 200 && img.get_pixel(15, 37).0[0] < 50);
    }
}
