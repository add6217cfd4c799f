//! Validation errors of the fused ops. They reach callers wrapped in [`candle_core::Error`]
//! (`Error::Wrapped`), so the message names the op and the offending argument.

use candle_core::DType;

/// Why a fused op refused its arguments.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{op}: argument `{arg}` has dtype {dtype:?}; only f32 and f64 are supported")]
    UnsupportedDType {
        op: &'static str,
        arg: &'static str,
        dtype: DType,
    },
    #[error("{op}: argument `{arg}` has dtype {got:?}, expected {expected:?} (the dtype of the first argument)")]
    DTypeMismatch {
        op: &'static str,
        arg: &'static str,
        got: DType,
        expected: DType,
    },
    #[error("{op}: argument `{arg}` has shape {got:?}, expected {expected}")]
    Shape {
        op: &'static str,
        arg: &'static str,
        got: Vec<usize>,
        expected: String,
    },
    #[error("{op}: argument `{arg}` is not on the device of the first argument")]
    Device { op: &'static str, arg: &'static str },
    #[error("{op}: argument `{arg}` is not contiguous (the op wrappers make it so; call them, not the raw op)")]
    NotContiguous { op: &'static str, arg: &'static str },
    #[error("{op}: argument `{arg}`: {msg}")]
    Invalid {
        op: &'static str,
        arg: &'static str,
        msg: String,
    },
}

impl From<KernelError> for candle_core::Error {
    fn from(e: KernelError) -> Self {
        candle_core::Error::wrap(e)
    }
}
