//! Launches of contrastive.cu (see the CPU reference for the math and the packing).

use super::{alloc, config, dispatch, input, int, CudaReal, Module};
use crate::error::KernelError;
use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Result, Shape};

static MODULE: Module = Module::new("tmca_contrastive", include_str!("contrastive.cu"));
const OP: &str = "multi_level_contrastive";

/// Dynamic shared memory of the backward kernel (one D-vector accumulator per block), kept
/// well under the 48 KiB a launch gets without opting in.
const MAX_SHARED: usize = 40 * 1024;

pub fn forward(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    s3: &CudaStorage,
    l3: &Layout,
    background: bool,
) -> Result<(CudaStorage, Shape)> {
    dispatch!(OP, s1, fwd(s1, l1, s2, l2, s3, l3, background))
}

fn fwd<T: CudaReal>(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    s3: &CudaStorage,
    l3: &Layout,
    background: bool,
) -> Result<(CudaStorage, Shape)> {
    let (_, lv, n, d) = l1.shape().dims4()?;
    let dev = s1.device.clone();
    let stream = dev.cuda_stream();
    let emb = input::<T>(OP, "embeddings", s1, l1)?;
    let scales = input::<T>(OP, "scales", s2, l2)?;
    let aux = input::<T>(OP, "groups", s3, l3)?;
    let out = alloc::<T>(&dev, lv + 2 * lv * n)?;
    let terms = alloc::<T>(&dev, 2 * lv * n)?;
    let (lvi, ni, di) = (int(OP, "Lv", lv)?, int(OP, "N", n)?, int(OP, "D", d)?);
    let bg = i32::from(background);

    let f = MODULE.func::<T>(&dev, "cl_rows")?;
    let mut a = stream.launch_builder(&f);
    a.arg(&emb).arg(&scales).arg(&aux).arg(&out).arg(&terms);
    a.arg(&lvi).arg(&ni).arg(&di);
    // SAFETY: argument types and counts match the kernel; buffers are sized as it indexes.
    unsafe { a.launch(config((n, lv), 0)?) }.w()?;

    let f = MODULE.func::<T>(&dev, "cl_cols")?;
    let mut a = stream.launch_builder(&f);
    a.arg(&emb).arg(&scales).arg(&aux).arg(&out).arg(&terms);
    a.arg(&lvi).arg(&ni).arg(&di).arg(&bg);
    // SAFETY: as above.
    unsafe { a.launch(config((n, lv), 0)?) }.w()?;

    let f = MODULE.func::<T>(&dev, "cl_loss")?;
    let mut a = stream.launch_builder(&f);
    a.arg(&terms).arg(&out).arg(&lvi).arg(&ni);
    // SAFETY: as above.
    unsafe { a.launch(config((1, lv), 0)?) }.w()?;

    let shape = Shape::from(lv + 2 * lv * n);
    Ok((CudaStorage::wrap_cuda_slice(out, dev), shape))
}

pub fn backward(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    s3: &CudaStorage,
    l3: &Layout,
    background: bool,
) -> Result<(CudaStorage, Shape)> {
    dispatch!(OP, s1, bwd(s1, l1, s2, l2, s3, l3, background))
}

fn bwd<T: CudaReal>(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    s3: &CudaStorage,
    l3: &Layout,
    background: bool,
) -> Result<(CudaStorage, Shape)> {
    let (_, lv, n, d) = l1.shape().dims4()?;
    let shared = d * std::mem::size_of::<T>();
    if shared > MAX_SHARED {
        return Err(KernelError::Invalid {
            op: OP,
            arg: "target",
            msg: format!("D = {d} needs {shared} bytes of shared memory (at most {MAX_SHARED})"),
        }
        .into());
    }
    let dev = s1.device.clone();
    let stream = dev.cuda_stream();
    let emb = input::<T>(OP, "embeddings", s1, l1)?;
    let pack = input::<T>(OP, "saved", s2, l2)?;
    let aux = input::<T>(OP, "groups", s3, l3)?;
    let out = alloc::<T>(&dev, 3 * lv * n * d + lv)?;
    let dscale = alloc::<T>(&dev, 2 * lv * n)?;
    let (lvi, ni, di) = (int(OP, "Lv", lv)?, int(OP, "N", n)?, int(OP, "D", d)?);
    let bg = i32::from(background);

    let f = MODULE.func::<T>(&dev, "cl_backward")?;
    for by_column in [0i32, 1] {
        let mut a = stream.launch_builder(&f);
        a.arg(&emb).arg(&pack).arg(&aux).arg(&out).arg(&dscale);
        a.arg(&lvi).arg(&ni).arg(&di).arg(&by_column).arg(&bg);
        // SAFETY: argument types and counts match the kernel; `shared` holds its D-vector.
        unsafe { a.launch(config((n, lv), shared)?) }.w()?;
    }

    let f = MODULE.func::<T>(&dev, "cl_dscale")?;
    let mut a = stream.launch_builder(&f);
    a.arg(&dscale).arg(&out).arg(&lvi).arg(&ni).arg(&di);
    // SAFETY: as above.
    unsafe { a.launch(config((1, lv), 0)?) }.w()?;

    let shape = Shape::from(3 * lv * n * d + lv);
    Ok((CudaStorage::wrap_cuda_slice(out, dev), shape))
}
