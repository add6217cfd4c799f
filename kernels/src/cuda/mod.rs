//! CUDA implementations. The kernels live in `*.cu` (templates instantiated as `<name>_f32` and
//! `<name>_f64`), are embedded with `include_str!`, prefixed with `common.cuh`, compiled to PTX
//! with NVRTC once per process at first use, and loaded per device through candle's
//! custom-module cache (`CudaDevice::get_or_load_custom_func`, keyed by module name). Every
//! launch goes on candle's stream for the device, so ordering with candle's own ops holds.

pub mod contrastive;
pub mod masked_pool;
pub mod similarity;

use crate::error::KernelError;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaView, DeviceRepr, LaunchConfig, ValidAsZeroBits,
};
use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use candle_core::cuda_backend::CudaDType;
use candle_core::{CudaDevice, CudaStorage, Layout, Result};
use std::sync::OnceLock;

/// Threads per block (BLOCK in common.cuh).
pub(crate) const BLOCK: u32 = 256;

const COMMON: &str = include_str!("common.cuh");

/// f32 or f64 on the device.
pub(crate) trait CudaReal:
    crate::float::Real + CudaDType + DeviceRepr + ValidAsZeroBits
{
    /// The suffix of the kernel instantiations.
    const SUFFIX: &'static str;
}

impl CudaReal for f32 {
    const SUFFIX: &'static str = "f32";
}

impl CudaReal for f64 {
    const SUFFIX: &'static str = "f64";
}

/// One `.cu` file: compiled once, loaded once per device.
pub(crate) struct Module {
    name: &'static str,
    src: &'static str,
    ptx: OnceLock<std::result::Result<String, String>>,
}

impl Module {
    pub(crate) const fn new(name: &'static str, src: &'static str) -> Self {
        Self {
            name,
            src,
            ptx: OnceLock::new(),
        }
    }

    fn ptx(&self) -> Result<&str> {
        let compiled = self.ptx.get_or_init(|| {
            let opts = CompileOptions {
                name: Some(format!("{}.cu", self.name)),
                ..Default::default()
            };
            compile_ptx_with_opts(format!("{COMMON}\n{}", self.src), opts)
                .map(|ptx| ptx.to_src())
                .map_err(|e| e.to_string())
        });
        compiled.as_deref().map_err(|e| {
            candle_core::Error::Msg(format!("NVRTC could not compile {}.cu: {e}", self.name))
        })
    }

    /// The `<kernel>_<suffix>` function of this module on `dev`.
    pub(crate) fn func<T: CudaReal>(&self, dev: &CudaDevice, kernel: &str) -> Result<CudaFunction> {
        let name = format!("{kernel}_{}", T::SUFFIX);
        let func = dev.get_or_load_custom_func(&name, self.name, self.ptx()?)?;
        Ok(func.into_cuda_function())
    }
}

/// The contiguous device data of a raw-op argument.
pub(crate) fn input<'a, T: CudaReal>(
    op: &'static str,
    arg: &'static str,
    s: &'a CudaStorage,
    l: &Layout,
) -> Result<CudaView<'a, T>> {
    if !l.is_contiguous() {
        return Err(KernelError::NotContiguous { op, arg }.into());
    }
    let start = l.start_offset();
    Ok(s.as_cuda_slice::<T>()?
        .slice(start..start + l.shape().elem_count()))
}

/// An uninitialised device buffer (every element is written by the kernels).
pub(crate) fn alloc<T: CudaReal>(dev: &CudaDevice, len: usize) -> Result<CudaSlice<T>> {
    // SAFETY: the callers' kernels write every element before anything reads it.
    unsafe { dev.alloc::<T>(len.max(1)) }
}

/// A launch of `grid` blocks of BLOCK threads with `shared` bytes of dynamic shared memory.
pub(crate) fn config(grid: (usize, usize), shared: usize) -> Result<LaunchConfig> {
    let dim = |x: usize| u32::try_from(x.max(1)).map_err(candle_core::Error::wrap);
    Ok(LaunchConfig {
        grid_dim: (dim(grid.0)?, dim(grid.1)?, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: u32::try_from(shared).map_err(candle_core::Error::wrap)?,
    })
}

/// Blocks of BLOCK threads covering `n` items.
pub(crate) fn blocks(n: usize) -> usize {
    n.div_ceil(BLOCK as usize)
}

/// A kernel size argument.
pub(crate) fn int(op: &'static str, what: &'static str, x: usize) -> Result<i32> {
    i32::try_from(x).map_err(|_| {
        KernelError::Invalid {
            op,
            arg: what,
            msg: format!("{x} exceeds the kernels' 32-bit sizes"),
        }
        .into()
    })
}

/// Runs `f::<f32>` or `f::<f64>` after the dtype of `s`.
macro_rules! dispatch {
    ($op:expr, $s:expr, $f:ident ( $($arg:expr),* )) => {
        match candle_core::backend::BackendStorage::dtype($s) {
            candle_core::DType::F32 => $f::<f32>($($arg),*),
            candle_core::DType::F64 => $f::<f64>($($arg),*),
            dtype => Err($crate::error::KernelError::UnsupportedDType { op: $op, arg: "input", dtype }.into()),
        }
    };
}
pub(crate) use dispatch;
