//! Pixel layout conversion and PNG encoding for image summaries.

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};

use super::event::Colorspace;

/// Why a pixel buffer was rejected or could not be encoded.
#[derive(Debug)]
pub enum PixelError {
    /// The buffer's shape is wrong; the text says how.
    Shape(String),
    /// The PNG encoder failed.
    Encode(image::ImageError),
}

/// Checks `len == height * width * channels`.
fn check_len(len: usize, height: u32, width: u32, channels: usize) -> Result<(), PixelError> {
    if height == 0 || width == 0 {
        return Err(PixelError::Shape(format!("empty image {height}x{width}")));
    }
    let expected = (height as usize)
        .checked_mul(width as usize)
        .and_then(|n| n.checked_mul(channels))
        .ok_or_else(|| PixelError::Shape(format!("{height}x{width}x{channels} overflows")))?;
    if len != expected {
        return Err(PixelError::Shape(format!(
            "buffer has {len} bytes, {height}x{width}x{channels} needs {expected}"
        )));
    }
    Ok(())
}

/// Planar (CHW) to interleaved (HWC). `channels` is 1 or 3.
pub fn chw_to_hwc(
    planar: &[u8],
    channels: usize,
    height: u32,
    width: u32,
) -> Result<Vec<u8>, PixelError> {
    if channels != 1 && channels != 3 {
        return Err(PixelError::Shape(format!(
            "{channels} channels; only 1 or 3 supported"
        )));
    }
    check_len(planar.len(), height, width, channels)?;
    if channels == 1 {
        return Ok(planar.to_vec());
    }
    let plane = height as usize * width as usize;
    let mut out = Vec::with_capacity(planar.len());
    for i in 0..plane {
        for c in 0..channels {
            out.push(planar[c * plane + i]);
        }
    }
    Ok(out)
}

/// Encodes interleaved 8-bit pixels (row-major, `height` rows of `width` pixels) as PNG.
pub fn encode_png(
    pixels: &[u8],
    height: u32,
    width: u32,
    cs: Colorspace,
) -> Result<Vec<u8>, PixelError> {
    let (channels, color) = match cs {
        Colorspace::Grey => (1, ExtendedColorType::L8),
        Colorspace::Rgb => (3, ExtendedColorType::Rgb8),
    };
    check_len(pixels.len(), height, width, channels)?;
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(pixels, width, height, color)
        .map_err(PixelError::Encode)?;
    Ok(png)
}
