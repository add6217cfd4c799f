//! A minimal protobuf encoder: just the wire types the event protos need.
//!
//! Fields are appended in call order; protobuf readers accept any order.

/// Protobuf wire types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum WireType {
    /// int32, int64, uint*, bool, enum.
    Varint = 0,
    /// fixed64, double.
    Fixed64 = 1,
    /// string, bytes, embedded messages, packed repeated.
    LengthDelimited = 2,
    /// fixed32, float.
    Fixed32 = 5,
}

/// A message under construction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    buf: Vec<u8>,
}

/// Appends `v` as a base-128 varint.
pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

impl Message {
    /// An empty message.
    pub fn new() -> Self {
        Self::default()
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Consumes the message, returning its encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn key(&mut self, field: u32, wire: WireType) {
        put_varint(&mut self.buf, (u64::from(field) << 3) | wire as u64);
    }

    /// Unsigned varint field (uint32/uint64/enum/bool).
    pub fn uint(&mut self, field: u32, v: u64) -> &mut Self {
        self.key(field, WireType::Varint);
        put_varint(&mut self.buf, v);
        self
    }

    /// `int64` / `int32` field (negative values take ten bytes, as protobuf specifies).
    pub fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.uint(field, v as u64)
    }

    /// `double` field.
    pub fn double(&mut self, field: u32, v: f64) -> &mut Self {
        self.key(field, WireType::Fixed64);
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// `float` field.
    pub fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.key(field, WireType::Fixed32);
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// `bytes` field.
    pub fn bytes(&mut self, field: u32, v: &[u8]) -> &mut Self {
        self.key(field, WireType::LengthDelimited);
        put_varint(&mut self.buf, v.len() as u64);
        self.buf.extend_from_slice(v);
        self
    }

    /// `string` field.
    pub fn string(&mut self, field: u32, v: &str) -> &mut Self {
        self.bytes(field, v.as_bytes())
    }

    /// Embedded message field (always written, even when empty).
    pub fn message(&mut self, field: u32, m: &Message) -> &mut Self {
        self.bytes(field, &m.buf)
    }
}
