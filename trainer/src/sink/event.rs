//! Encoding of the TensorFlow `Event` / `Summary` protos the writer emits.
//!
//! Field numbers follow `tensorflow/core/util/event.proto`,
//! `tensorflow/core/framework/summary.proto`, `tensor.proto`, `tensor_shape.proto` and
//! `types.proto` (the copies TensorBoard vendors under `tensorboard/compat/proto/`).

use super::proto::Message;

/// `Event` fields.
pub mod event_field {
    /// `double wall_time = 1`
    pub const WALL_TIME: u32 = 1;
    /// `int64 step = 2`
    pub const STEP: u32 = 2;
    /// `string file_version = 3` (oneof `what`)
    pub const FILE_VERSION: u32 = 3;
    /// `Summary summary = 5` (oneof `what`)
    pub const SUMMARY: u32 = 5;
    /// `SessionLog session_log = 7` (oneof `what`; 6 is the deprecated `log_message`)
    pub const SESSION_LOG: u32 = 7;
}

/// `SessionLog` fields and values.
pub mod session_log {
    /// `SessionStatus status = 1`
    pub const STATUS: u32 = 1;
    /// `SessionStatus.START`
    pub const START: u64 = 1;
}

/// `Summary` and `Summary.Value` fields.
pub mod summary_field {
    /// `Summary.repeated Value value = 1`
    pub const VALUE: u32 = 1;
    /// `Value.string tag = 1`
    pub const TAG: u32 = 1;
    /// `Value.float simple_value = 2`
    pub const SIMPLE_VALUE: u32 = 2;
    /// `Value.Image image = 4`
    pub const IMAGE: u32 = 4;
    /// `Value.TensorProto tensor = 8`
    pub const TENSOR: u32 = 8;
    /// `Value.SummaryMetadata metadata = 9`
    pub const METADATA: u32 = 9;
}

/// `Summary.Image` fields.
pub mod image_field {
    /// `int32 height = 1`
    pub const HEIGHT: u32 = 1;
    /// `int32 width = 2`
    pub const WIDTH: u32 = 2;
    /// `int32 colorspace = 3` (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA)
    pub const COLORSPACE: u32 = 3;
    /// `bytes encoded_image_string = 4`
    pub const ENCODED: u32 = 4;
}

/// `SummaryMetadata`, `PluginData`, `TensorProto` fields.
pub mod tensor_field {
    /// `SummaryMetadata.PluginData plugin_data = 1`
    pub const PLUGIN_DATA: u32 = 1;
    /// `PluginData.string plugin_name = 1`
    pub const PLUGIN_NAME: u32 = 1;
    /// `TensorProto.DataType dtype = 1`
    pub const DTYPE: u32 = 1;
    /// `TensorProto.TensorShapeProto tensor_shape = 2`
    pub const TENSOR_SHAPE: u32 = 2;
    /// `TensorProto.repeated bytes string_val = 8`
    pub const STRING_VAL: u32 = 8;
    /// `DataType.DT_STRING`
    pub const DT_STRING: u64 = 7;
}

/// The version string of the first record of every event file.
pub const FILE_VERSION: &str = "brain.Event:2";

/// `Summary.Image.colorspace` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colorspace {
    /// One channel.
    Grey = 1,
    /// Three channels.
    Rgb = 3,
}

/// `Event { wall_time, file_version }`: the first record of a file.
pub fn file_version_event(wall_time: f64) -> Vec<u8> {
    let mut ev = Message::new();
    ev.double(event_field::WALL_TIME, wall_time)
        .string(event_field::FILE_VERSION, FILE_VERSION);
    ev.into_bytes()
}

/// `Event { wall_time, step, session_log: SessionLog { status: START } }`: a (re)started
/// session from `step` on. TensorBoard's reader drops what earlier files hold at this step and
/// later (`purge_orphaned_data`), so a run resumed from a checkpoint does not show the steps
/// it redoes twice.
pub fn session_start_event(wall_time: f64, step: i64) -> Vec<u8> {
    let mut log = Message::new();
    log.uint(session_log::STATUS, session_log::START);
    let mut ev = Message::new();
    ev.double(event_field::WALL_TIME, wall_time)
        .int(event_field::STEP, step)
        .message(event_field::SESSION_LOG, &log);
    ev.into_bytes()
}

/// `Event { wall_time, step, summary: Summary { value: [value] } }`.
pub fn summary_event(wall_time: f64, step: i64, value: &Message) -> Vec<u8> {
    let mut summary = Message::new();
    summary.message(summary_field::VALUE, value);
    let mut ev = Message::new();
    ev.double(event_field::WALL_TIME, wall_time)
        .int(event_field::STEP, step)
        .message(event_field::SUMMARY, &summary);
    ev.into_bytes()
}

/// `Summary.Value { tag, simple_value }`.
pub fn scalar_value(tag: &str, value: f32) -> Message {
    let mut v = Message::new();
    v.string(summary_field::TAG, tag)
        .float(summary_field::SIMPLE_VALUE, value);
    v
}

/// `Summary.Value { tag, image: Image { height, width, colorspace, encoded_image_string } }`.
pub fn image_value(tag: &str, height: u32, width: u32, cs: Colorspace, png: &[u8]) -> Message {
    let mut img = Message::new();
    img.int(image_field::HEIGHT, i64::from(height))
        .int(image_field::WIDTH, i64::from(width))
        .int(image_field::COLORSPACE, cs as i64)
        .bytes(image_field::ENCODED, png);
    let mut v = Message::new();
    v.string(summary_field::TAG, tag)
        .message(summary_field::IMAGE, &img);
    v
}

/// Text as TensorBoard's text plugin expects it: a scalar `DT_STRING` tensor whose
/// metadata names the `text` plugin.
pub fn text_value(tag: &str, text: &str) -> Message {
    let mut plugin = Message::new();
    plugin.string(tensor_field::PLUGIN_NAME, "text");
    let mut metadata = Message::new();
    metadata.message(tensor_field::PLUGIN_DATA, &plugin);
    let mut tensor = Message::new();
    tensor
        .uint(tensor_field::DTYPE, tensor_field::DT_STRING)
        .message(tensor_field::TENSOR_SHAPE, &Message::new()) // no dims: a scalar
        .bytes(tensor_field::STRING_VAL, text.as_bytes());
    let mut v = Message::new();
    v.string(summary_field::TAG, tag)
        .message(summary_field::METADATA, &metadata)
        .message(summary_field::TENSOR, &tensor);
    v
}
