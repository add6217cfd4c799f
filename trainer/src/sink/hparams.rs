//! TensorBoard's HParams dashboard: a run's hyperparameters as one `session_start_info`
//! summary, the message `tensorboard.plugins.hparams.summary_v2.hparams_pb` writes. Without an
//! experiment summary the dashboard gathers the sessions of every run under the log directory
//! and offers their scalars as metrics, so the runs of a sweep line up in one table.
//!
//! Field numbers from `tensorboard/plugins/hparams/plugin_data.proto`, `google/protobuf/
//! struct.proto` and `summary.proto`.

use super::event::{summary_field, tensor_field};
use super::proto::Message;
use std::collections::BTreeMap;

/// The tag the dashboard looks for.
pub const SESSION_START_INFO_TAG: &str = "_hparams_/session_start_info";

/// One hyperparameter's value (`google.protobuf.Value`).
#[derive(Debug, Clone, PartialEq)]
pub enum HParam {
    Number(f64),
    Bool(bool),
    Text(String),
}

impl HParam {
    /// From a config value: numbers and booleans as such, everything else (strings, arrays) as
    /// text.
    pub fn from_toml(v: &toml::Value) -> Self {
        match v {
            toml::Value::Integer(i) => HParam::Number(*i as f64),
            toml::Value::Float(f) => HParam::Number(*f),
            toml::Value::Boolean(b) => HParam::Bool(*b),
            toml::Value::String(s) => HParam::Text(s.clone()),
            other => HParam::Text(crate::config::Config::value_text(other)),
        }
    }

    fn message(&self) -> Message {
        let mut v = Message::new();
        match self {
            HParam::Number(x) => v.double(2, *x),
            HParam::Text(s) => v.string(3, s),
            HParam::Bool(b) => v.uint(4, u64::from(*b)),
        };
        v
    }
}

/// `Summary.Value` holding `HParamsPluginData { version: 0, session_start_info }` in its
/// metadata and the empty float tensor the plugin expects.
pub fn hparams_value(values: &BTreeMap<String, HParam>, group: &str, start_time: f64) -> Message {
    let mut start = Message::new();
    for (name, value) in values {
        let mut entry = Message::new();
        entry.string(1, name).message(2, &value.message());
        start.message(1, &entry);
    }
    start.string(4, group).double(5, start_time);
    let mut data = Message::new();
    data.uint(1, 0).message(3, &start);
    let mut plugin = Message::new();
    plugin
        .string(tensor_field::PLUGIN_NAME, "hparams")
        .bytes(2, data.as_bytes());
    let mut metadata = Message::new();
    metadata.message(tensor_field::PLUGIN_DATA, &plugin);
    let mut dim = Message::new();
    dim.message(2, &Message::new()); // TensorShapeProto { dim: [{ size: 0 }] }
    let mut tensor = Message::new();
    tensor
        .uint(tensor_field::DTYPE, 1) // DT_FLOAT
        .message(tensor_field::TENSOR_SHAPE, &dim);
    let mut v = Message::new();
    v.string(summary_field::TAG, SESSION_START_INFO_TAG)
        .message(summary_field::METADATA, &metadata)
        .message(summary_field::TENSOR, &tensor);
    v
}
