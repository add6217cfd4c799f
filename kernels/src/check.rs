//! Argument validation shared by the op wrappers and the raw ops.

use crate::error::KernelError;
use crate::float::Real;
use candle_core::{CpuStorage, DType, Layout, Result, Tensor};

/// The tensor's dtype if it is f32 or f64.
pub fn float_dtype(op: &'static str, arg: &'static str, t: &Tensor) -> Result<DType> {
    match t.dtype() {
        d @ (DType::F32 | DType::F64) => Ok(d),
        dtype => Err(KernelError::UnsupportedDType { op, arg, dtype }.into()),
    }
}

/// `t` has the dtype and device of `first`.
pub fn same_kind(op: &'static str, arg: &'static str, t: &Tensor, first: &Tensor) -> Result<()> {
    if t.dtype() != first.dtype() {
        return Err(KernelError::DTypeMismatch {
            op,
            arg,
            got: t.dtype(),
            expected: first.dtype(),
        }
        .into());
    }
    if !t.device().same_device(first.device()) {
        return Err(KernelError::Device { op, arg }.into());
    }
    Ok(())
}

/// `t`'s dims, which must equal `expected` (a description such as "(B, 1, H, W) = (2, 1, 5, 7)").
pub fn shape(
    op: &'static str,
    arg: &'static str,
    t: &Tensor,
    expected: &[usize],
    what: &str,
) -> Result<()> {
    if t.dims() != expected {
        return Err(KernelError::Shape {
            op,
            arg,
            got: t.dims().to_vec(),
            expected: format!("{what} = {expected:?}"),
        }
        .into());
    }
    Ok(())
}

/// A rank-`n` shape with every dim non-zero.
pub fn rank(
    op: &'static str,
    arg: &'static str,
    t: &Tensor,
    n: usize,
    what: &str,
) -> Result<Vec<usize>> {
    let dims = t.dims();
    if dims.len() != n || dims.contains(&0) {
        return Err(KernelError::Shape {
            op,
            arg,
            got: dims.to_vec(),
            expected: format!("{what}, all non-zero"),
        }
        .into());
    }
    Ok(dims.to_vec())
}

/// The contiguous CPU data of a raw-op argument.
pub fn cpu_data<'a, T: Real>(
    op: &'static str,
    arg: &'static str,
    s: &'a CpuStorage,
    l: &Layout,
) -> Result<&'a [T]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or(KernelError::NotContiguous { op, arg })?;
    let all = s.as_slice::<T>()?;
    all.get(start..end).ok_or_else(|| {
        KernelError::Invalid {
            op,
            arg,
            msg: format!(
                "storage of {} elements too short for {start}..{end}",
                all.len()
            ),
        }
        .into()
    })
}

/// The error of a raw op given a dtype other than f32 and f64.
pub fn unsupported(op: &'static str, arg: &'static str, dtype: DType) -> candle_core::Error {
    KernelError::UnsupportedDType { op, arg, dtype }.into()
}

/// Runs `$body` (a block returning `Result<(CpuStorage, Shape)>`) with the type `$T` bound to
/// f32 or f64 after the dtype of the CPU storage `$s`; any other dtype is an
/// [`unsupported`] error naming `$arg`.
macro_rules! by_dtype {
    ($op:expr, $arg:expr, $s:expr, $T:ident => $body:block) => {
        match $s {
            candle_core::CpuStorage::F32(_) => {
                type $T = f32;
                $body
            }
            candle_core::CpuStorage::F64(_) => {
                type $T = f64;
                $body
            }
            other => Err($crate::check::unsupported(
                $op,
                $arg,
                candle_core::backend::BackendStorage::dtype(other),
            )),
        }
    };
}
pub(crate) use by_dtype;

/// [`by_dtype`] that also binds each named CPU argument's contiguous data as `&[$T]`:
/// `with_slices!(OP, T, x = (s1, l1, "x"), w = (s2, l2, "weight") => { … })`; the first
/// argument's storage decides the dtype.
macro_rules! with_slices {
    ($op:expr, $T:ident, $first:ident = ($s:expr, $l:expr, $arg:expr)
     $(, $name:ident = ($si:expr, $li:expr, $argi:expr))* => $body:block) => {
        $crate::check::by_dtype!($op, $arg, $s, $T => {
            let $first = $crate::check::cpu_data::<$T>($op, $arg, $s, $l)?;
            $(let $name = $crate::check::cpu_data::<$T>($op, $argi, $si, $li)?;)*
            $body
        })
    };
}
pub(crate) use with_slices;

/// Runs `f` on the contiguous CPU data of a tensor an op holds besides its arguments (read
/// under the tensor's storage lock).
pub fn with_cpu_data<T: Real, R>(
    op: &'static str,
    arg: &'static str,
    t: &Tensor,
    f: impl FnOnce(&[T]) -> Result<R>,
) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(s) => f(cpu_data::<T>(op, arg, s, layout)?),
        _ => Err(KernelError::Invalid {
            op,
            arg,
            msg: "not on the CPU".into(),
        }
        .into()),
    }
}
