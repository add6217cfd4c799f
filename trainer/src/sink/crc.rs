//! The masked CRC-32C that TFRecord framing uses.

/// Constant added by TensorFlow's CRC mask.
const MASK_DELTA: u32 = 0xa282_ead8;

/// Plain CRC-32C (Castagnoli) of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// TensorFlow's masked CRC: rotate right by 15 bits, then add a constant.
///
/// Masking keeps a CRC of data that itself contains CRCs from being degenerate.
pub fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Inverse of [`mask`].
pub fn unmask(masked: u32) -> u32 {
    masked.wrapping_sub(MASK_DELTA).rotate_left(15)
}

/// Masked CRC-32C of `data`, as stored in TFRecord frames.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    mask(crc32c(data))
}
