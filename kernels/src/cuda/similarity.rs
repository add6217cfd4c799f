//! Launches of similarity.cu (see the CPU reference for the packing).

use super::{alloc, blocks, config, dispatch, input, int, CudaReal, Module};
use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Result, Shape};

static MODULE: Module = Module::new("tmca_similarity", include_str!("similarity.cu"));
const OP: &str = "pixel_text_cos";

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
    let u = input::<T>(OP, "u", s2, l2)?;
    let out = alloc::<T>(&dev, 2 * b * hw)?;
    let (bi, di, hwi) = (int(OP, "B", b)?, int(OP, "D", d)?, int(OP, "H·W", hw)?);
    let f = MODULE.func::<T>(&dev, "ptc_forward")?;
    let mut a = stream.launch_builder(&f);
    a.arg(&p).arg(&u).arg(&out).arg(&bi).arg(&di).arg(&hwi);
    // SAFETY: argument types and counts match the kernel; buffers are sized as it indexes.
    unsafe { a.launch(config((blocks(hw), b), 0)?) }.w()?;
    Ok((
        CudaStorage::wrap_cuda_slice(out, dev),
        Shape::from(2 * b * hw),
    ))
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
    let u = input::<T>(OP, "u", s2, l2)?;
    let pack = input::<T>(OP, "grad", s3, l3)?;
    let out = alloc::<T>(&dev, b * d * hw + b * d)?;
    let (bi, di, hwi) = (int(OP, "B", b)?, int(OP, "D", d)?, int(OP, "H·W", hw)?);

    let f = MODULE.func::<T>(&dev, "ptc_backward_p")?;
    let mut a = stream.launch_builder(&f);
    a.arg(&p)
        .arg(&u)
        .arg(&pack)
        .arg(&out)
        .arg(&bi)
        .arg(&di)
        .arg(&hwi);
    // SAFETY: as in the forward.
    unsafe { a.launch(config((blocks(hw), b), 0)?) }.w()?;

    let f = MODULE.func::<T>(&dev, "ptc_backward_u")?;
    let mut a = stream.launch_builder(&f);
    a.arg(&p).arg(&pack).arg(&out).arg(&bi).arg(&di).arg(&hwi);
    // SAFETY: as in the forward.
    unsafe { a.launch(config((d, b), 0)?) }.w()?;
    let shape = Shape::from(b * d * hw + b * d);
    Ok((CudaStorage::wrap_cuda_slice(out, dev), shape))
}
