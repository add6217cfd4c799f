//! Deterministic random inputs, rounded through f32.

use super::*;

/// Normal values rounded through f32, as an f64 CPU tensor.
pub(crate) fn normals(rng: &mut Rng, shape: &[usize], scale: f64) -> Result<Tensor> {
    let n = shape.iter().product();
    let v: Vec<f64> = rng.normals(n).iter().map(|x| x * scale).collect();
    round32(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

pub(crate) fn round32(t: Tensor) -> Result<Tensor> {
    t.to_dtype(DType::F32)?.to_dtype(DType::F64)
}

pub(crate) fn unit_rows(rng: &mut Rng, shape: &[usize]) -> Result<Tensor> {
    let t = normals(rng, shape, 1.0)?;
    round32(reference::l2_normalize(&t, shape.len() - 1)?)
}

/// Soft masks (B, 1, H, W), sample i of kind (first + i) % 5: random soft, empty, full, binary,
/// tiny (Σm below the 1e-6 count clamp).
pub(crate) fn masks(rng: &mut Rng, b: usize, h: usize, w: usize, first: usize) -> Result<Tensor> {
    let mut v = Vec::with_capacity(b * h * w);
    for i in 0..b {
        for _ in 0..h * w {
            let x = rng.uniform();
            v.push(match (first + i) % 5 {
                0 => x,
                1 => 0.0,
                2 => 1.0,
                3 => f64::from(u8::from(x > 0.6)),
                _ => x * 1e-10,
            });
        }
    }
    round32(Tensor::from_vec(v, (b, 1, h, w), &Device::Cpu)?)
}

pub(crate) fn bytes_of(ts: &[&Tensor], dtype: DType) -> usize {
    ts.iter().map(|t| t.elem_count()).sum::<usize>() * dtype.size_in_bytes()
}
