//! Launches of masked_pool.cu (see the CPU reference for the packing).

use super::{alloc, blocks, config, dispatch, input, int, CudaReal, Module};
use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Result, Shape};

static MODULE: Module = Module::new("tmca_masked_pool", include_str!("masked_pool.cu"));
const OP: &str = "masked_pool";

pub fn forward(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<(CudaStorage, Shape)> {
    dispatch!(OP, s1, fwd(s1, l1, s2, l2))
}

fn fwd<T: CudaReal>(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let (b, d, h, w) = l1.shape().dims4()?;
    let hw = h * w;
    let dev = s1.device.clone();
    let stream = dev.cuda_stream();
    let p = input::<T>(OP, "p", s1, l1)?;
    let m = input::<T>(OP, "m", s2, l2)?;
    let inv = alloc::<T>(&dev, b * hw)?;
    let sums = alloc::<T>(&dev, 3 * b * d)?;
    let out = alloc::<T>(&dev, 2 * b * d + 4 * b)?;
    let (bi, di, hwi) = (int(OP, "B", b)?, int(OP, "D", d)?, int(OP, "H·W", hw)?);

    let f = MODULE.func::<T>(&dev, "mp_inv_norm")?;
    let mut a = stream.launch_builder(&f);
    a.arg(&p).arg(&inv).arg(&di).arg(&hwi);
    // SAFETY: argument types and counts match the kernel; buffers are sized as it indexes.
    unsafe { a.launch(config((blocks(hw), b), 0)?) }.w()?;

    let f = MODULE.func::<T>(&dev, "mp_sums")?;
    let mut a = stream.launch_builder(&f);
    a.arg(&p).arg(&m).arg(&inv).arg(&sums).arg(&di).arg(&hwi);
    // SAFETY: as above.
    unsafe { a.launch(config((d, b), 0)?) }.w()?;

    let f = MODULE.func::<T>(&dev, "mp_finalize")?;
    let mut a = stream.launch_builder(&f);
    a.arg(&m).arg(&sums).arg(&out).arg(&bi).arg(&di).arg(&hwi);
    // SAFETY: as above.
    unsafe { a.launch(config((b, 1), 0)?) }.w()?;

    let shape = Shape::from(2 * b * d + 4 * b);
    Ok((CudaStorage::wrap_cuda_slice(out, dev), shape))
}

pub fn backward(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    s3: &CudaStorage,
    l3: &Layout,
) -> Result<(CudaStorage, Shape)> {
    dispatch!(OP, s1, bwd(s1, l1, s2, l2, s3, l3))
}

fn bwd<T: CudaReal>(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    s3: &CudaStorage,
    l3: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let (b, d, h, w) = l1.shape().dims4()?;
    let hw = h * w;
    let dev = s1.device.clone();
    let stream = dev.cuda_stream();
    let p = input::<T>(OP, "p", s1, l1)?;
    let m = input::<T>(OP, "m", s2, l2)?;
    let ds = input::<T>(OP, "ds", s3, l3)?;
    let dp = alloc::<T>(&dev, b * d * hw)?;
    let (bi, di, hwi) = (int(OP, "B", b)?, int(OP, "D", d)?, int(OP, "H·W", hw)?);
    let f = MODULE.func::<T>(&dev, "mp_backward")?;
    let mut a = stream.launch_builder(&f);
    a.arg(&p)
        .arg(&m)
        .arg(&ds)
        .arg(&dp)
        .arg(&bi)
        .arg(&di)
        .arg(&hwi);
    // SAFETY: as in the forward.
    unsafe { a.launch(config((blocks(hw), b), 0)?) }.w()?;
    Ok((CudaStorage::wrap_cuda_slice(dp, dev), l1.shape().clone()))
}
