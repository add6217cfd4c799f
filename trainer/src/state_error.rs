//! Why a checkpoint's tensors do not fit the parameters or optimiser they are loaded into.

/// A tensor of a checkpoint (weights or optimiser state) that does not fit, by key.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("no tensor '{key}'")]
    Missing { key: String },
    #[error("'{key}' has shape {found:?}, the model needs {expected:?}")]
    Shape {
        key: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("'{key}' is {value}, not a count of at most {max} updates")]
    BadCount { key: String, value: f64, max: u64 },
    #[error("'{key}': {source}")]
    Tensor {
        key: String,
        #[source]
        source: candle_core::Error,
    },
}

impl StateError {
    /// `t` must have `expected`'s shape.
    pub(crate) fn check_shape(
        key: &str,
        t: &candle_core::Tensor,
        expected: &[usize],
    ) -> Result<(), Self> {
        if t.dims() == expected {
            return Ok(());
        }
        Err(Self::Shape {
            key: key.into(),
            found: t.dims().to_vec(),
            expected: expected.to_vec(),
        })
    }

    /// A tensor operation on `key` that failed.
    pub(crate) fn tensor(key: &str) -> impl FnOnce(candle_core::Error) -> Self + '_ {
        move |source| Self::Tensor {
            key: key.into(),
            source,
        }
    }
}
