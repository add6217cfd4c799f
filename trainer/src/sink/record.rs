//! TFRecord framing: `u64 LE length`, `u32 LE masked crc32c(length bytes)`, `data`,
//! `u32 LE masked crc32c(data)`.

use std::io::Write;
use std::path::Path;

use super::crc::masked_crc32c;
use super::error::{Result, SinkError};

/// Bytes of framing around each record (8 length + 4 + 4 CRCs).
pub const FRAME_OVERHEAD: usize = 16;

/// Writes one framed record.
pub fn write_record<W: Write>(out: &mut W, data: &[u8]) -> std::io::Result<()> {
    out.write_all(&frame(data))
}

/// One framed record as bytes.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut buf = Vec::with_capacity(data.len() + FRAME_OVERHEAD);
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    buf.extend_from_slice(data);
    buf.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    buf
}

/// Reads every record of a TFRecord file, checking both CRCs of each.
pub fn read_records(path: &Path) -> Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path).map_err(|source| SinkError::Io {
        path: path.to_path_buf(),
        op: "read",
        source,
    })?;
    parse_records(&bytes, path)
}

/// Splits `bytes` into records, checking both CRCs of each; `path` only names errors.
pub fn parse_records(bytes: &[u8], path: &Path) -> Result<Vec<Vec<u8>>> {
    let corrupt = |offset: usize, reason: String| SinkError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let header = bytes
            .get(pos..pos + 12)
            .ok_or_else(|| corrupt(pos, "truncated header".into()))?;
        let (len_bytes, len_crc) = header.split_at(8);
        let mut len_arr = [0u8; 8];
        len_arr.copy_from_slice(len_bytes);
        let mut crc_arr = [0u8; 4];
        crc_arr.copy_from_slice(len_crc);
        if masked_crc32c(len_bytes) != u32::from_le_bytes(crc_arr) {
            return Err(corrupt(pos, "length CRC mismatch".into()));
        }
        let len = usize::try_from(u64::from_le_bytes(len_arr))
            .map_err(|_| corrupt(pos, "length does not fit in memory".into()))?;
        let start = pos + 12;
        let end = start
            .checked_add(len)
            .filter(|&e| e.checked_add(4).is_some_and(|t| t <= bytes.len()))
            .ok_or_else(|| corrupt(pos, format!("truncated data ({len} bytes declared)")))?;
        let data = &bytes[start..end];
        crc_arr.copy_from_slice(&bytes[end..end + 4]);
        if masked_crc32c(data) != u32::from_le_bytes(crc_arr) {
            return Err(corrupt(pos, "data CRC mismatch".into()));
        }
        records.push(data.to_vec());
        pos = end + 4;
    }
    Ok(records)
}
