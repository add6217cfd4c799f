//! CUDA implementations. The kernels live in `*.cu` (templates instantiated as `<name>_f32` and
//! `<name>_f64`), are embedded with `include_str!`, prefixed with `common.cuh`, and compiled by
//! NVRTC once per process and compute capability at first use ([`nvrtc`]): to a CUBIN for the
//! device's own architecture, so no PTX JIT is involved and an NVRTC newer than the driver
//! still works, and to PTX only if that fails. Modules are loaded once per device. Every
//! launch goes on candle's stream for the device, so ordering with candle's own ops holds.

pub mod contrastive;
pub mod masked_pool;
mod nvrtc;
pub mod similarity;

use crate::error::KernelError;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaModule, CudaSlice, CudaView, DeviceRepr, LaunchConfig, ValidAsZeroBits,
};
use candle_core::cuda_backend::cudarc::nvrtc::Ptx;
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaDevice, CudaStorage, Layout, Result};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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

/// Compute capability (major, minor).
type Arch = (i32, i32);

/// One `.cu` file: compiled once per compute capability, loaded once per device.
pub(crate) struct Module {
    name: &'static str,
    src: &'static str,
    /// The compiled image per compute capability (or why it could not be compiled).
    images: Mutex<BTreeMap<Arch, std::result::Result<Arc<nvrtc::Image>, String>>>,
    /// The loaded module per device ordinal (candle's devices share the primary context).
    loaded: Mutex<BTreeMap<usize, Arc<CudaModule>>>,
}

impl Module {
    pub(crate) const fn new(name: &'static str, src: &'static str) -> Self {
        Self {
            name,
            src,
            images: Mutex::new(BTreeMap::new()),
            loaded: Mutex::new(BTreeMap::new()),
        }
    }

    fn image(&self, arch: Arch) -> Result<Arc<nvrtc::Image>> {
        let mut images = self.images.lock().map_err(|_| poisoned(self.name))?;
        let image = images.entry(arch).or_insert_with(|| {
            let src = format!("{COMMON}\n{}", self.src);
            nvrtc::compile(&src, &format!("{}.cu", self.name), arch).map(Arc::new)
        });
        image.clone().map_err(|e| {
            candle_core::Error::Msg(format!("NVRTC could not compile {}.cu: {e}", self.name))
        })
    }

    /// This module on `dev`'s context, compiled and loaded at the first call per device.
    fn module(&self, dev: &CudaDevice) -> Result<Arc<CudaModule>> {
        let stream = dev.cuda_stream();
        let ctx = stream.context();
        let mut loaded = self.loaded.lock().map_err(|_| poisoned(self.name))?;
        if let Some(m) = loaded.get(&ctx.ordinal()) {
            return Ok(m.clone());
        }
        let image = self.image(ctx.compute_capability().w()?)?;
        let module = match image.as_ref() {
            nvrtc::Image::Cubin(bin) => ctx.load_module(Ptx::from_binary(bin.clone())),
            nvrtc::Image::Ptx(src) => ctx.load_module(Ptx::from_src(src.clone())),
        }
        .map_err(|e| {
            candle_core::Error::Msg(format!(
                "the CUDA driver could not load {}.cu ({}): {e}",
                self.name,
                image.kind()
            ))
        })?;
        loaded.insert(ctx.ordinal(), module.clone());
        Ok(module)
    }

    /// The `<kernel>_<suffix>` function of this module on `dev`.
    pub(crate) fn func<T: CudaReal>(&self, dev: &CudaDevice, kernel: &str) -> Result<CudaFunction> {
        let name = format!("{kernel}_{}", T::SUFFIX);
        self.module(dev)?.load_function(&name).w()
    }
}

fn poisoned(module: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("{module}.cu: module cache poisoned by a panic"))
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
