//! Test helpers: deterministic random tensors, error measures, finite differences, and a macro
//! that runs each test body on the CPU and, with `cuda`, on GPU 0 when there is one.
#![allow(dead_code)]

pub mod reference;

use candle_core::{DType, Device, Result, Tensor, Var};

/// Runs `fn name(dev: &Device) -> Result<()>` bodies as `cpu::name` tests and, with the `cuda`
/// feature, as `cuda::name` tests on `Device::new_cuda(0)` (skipped with a note without a GPU).
#[macro_export]
macro_rules! device_tests {
    ($($name:ident),* $(,)?) => {
        mod cpu {
            $(
                #[test]
                fn $name() -> candle_core::Result<()> {
                    super::$name(&candle_core::Device::Cpu)
                }
            )*
        }
        #[cfg(feature = "cuda")]
        mod cuda {
            $(
                #[test]
                fn $name() -> candle_core::Result<()> {
                    match candle_core::Device::new_cuda(0) {
                        Ok(dev) => super::$name(&dev),
                        // On a machine meant to have one (TMCA_REQUIRE_GPU=1), a missing
                        // device is a failure, not a pass.
                        Err(e) if std::env::var("TMCA_REQUIRE_GPU").is_ok_and(|v| v == "1") => {
                            panic!("TMCA_REQUIRE_GPU is set but there is no CUDA device: {e}")
                        }
                        Err(e) => {
                            eprintln!("skipping {}: no CUDA device ({e})", stringify!($name));
                            Ok(())
                        }
                    }
                }
            )*
        }
    };
}

/// A small deterministic generator (SplitMix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    pub fn normals(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.normal()).collect()
    }
    pub fn uniforms(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.uniform()).collect()
    }
}

/// A tensor of the given values, shape, dtype and device.
pub fn tensor(v: Vec<f64>, shape: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
    Tensor::from_vec(v, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(dev)
}

pub fn randn(rng: &mut Rng, shape: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
    let n = shape.iter().product();
    tensor(rng.normals(n), shape, dtype, dev)
}

/// Unit rows along the last dim.
pub fn unit_rows(rng: &mut Rng, shape: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
    let t = randn(rng, shape, DType::F64, &Device::Cpu)?;
    let last = shape.len() - 1;
    reference::l2_normalize(&t, last)?
        .to_dtype(dtype)?
        .to_device(dev)
}

/// Soft masks (B, 1, H, W): sample 0 random soft, 1 empty, 2 full, 3 binary, 4 tiny (Σm below
/// the 1e-6 count clamp), then cycling.
pub fn masks(
    rng: &mut Rng,
    b: usize,
    h: usize,
    w: usize,
    dtype: DType,
    dev: &Device,
) -> Result<Tensor> {
    let mut v = Vec::with_capacity(b * h * w);
    for i in 0..b {
        for _ in 0..h * w {
            let x = rng.uniform();
            v.push(match i % 5 {
                0 => x,
                1 => 0.0,
                2 => 1.0,
                3 => (x > 0.6) as u8 as f64,
                _ => x * 1e-10,
            });
        }
    }
    tensor(v, &[b, 1, h, w], dtype, dev)
}

pub fn to_f64(t: &Tensor) -> Result<Vec<f64>> {
    t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()
}

/// max |a − b| / max |b| (relative to the reference `b`'s scale; absolute when b is all zero).
pub fn rel_err(a: &Tensor, b: &Tensor) -> Result<f64> {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let (a, b) = (to_f64(a)?, to_f64(b)?);
    let diff = a
        .iter()
        .zip(&b)
        // A NaN/Inf where the reference is finite is an infinite error (f64::max skips NaN).
        .map(|(x, y)| {
            let d = (x - y).abs();
            if d.is_nan() && !(x.is_nan() && y.is_nan()) {
                f64::INFINITY
            } else {
                d
            }
        })
        .fold(0.0, f64::max);
    let scale = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
    Ok(if scale > 0.0 { diff / scale } else { diff })
}

/// Asserts rel_err ≤ tol and returns it.
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f64) -> Result<f64> {
    let e = rel_err(a, b)?;
    assert!(e <= tol, "{what}: relative error {e:e} > {tol:e}");
    assert!(e.is_finite(), "{what}: non-finite values");
    Ok(e)
}

/// Central finite differences of the scalar `f` at `k` random coordinates of `x`, compared with
/// the analytic gradient `grad`; returns the worst error relative to max(max |grad|, 1e-3).
pub fn finite_difference(
    rng: &mut Rng,
    x: &Var,
    grad: &Tensor,
    k: usize,
    f: &dyn Fn() -> Result<f64>,
) -> Result<f64> {
    let eps = 1e-6;
    let base = to_f64(x.as_tensor())?;
    let g = to_f64(grad)?;
    // Floor: gradients that vanish (e.g. D = 1, where z = sign(p)) leave only rounding noise.
    let scale = g.iter().map(|v| v.abs()).fold(1e-3, f64::max);
    let mut worst: f64 = 0.0;
    for _ in 0..k {
        let idx = (rng.next_u64() % base.len() as u64) as usize;
        let shifted = |delta: f64| -> Result<f64> {
            let mut v = base.clone();
            v[idx] += delta;
            x.set(&tensor(v, x.dims(), x.dtype(), x.device())?)?;
            f()
        };
        let fd = (shifted(eps)? - shifted(-eps)?) / (2.0 * eps);
        worst = worst.max((fd - g[idx]).abs() / scale);
    }
    x.set(&tensor(base, x.dims(), x.dtype(), x.device())?)?;
    Ok(worst)
}

/// Σ w ⊙ t as a scalar tensor (a generic downstream loss).
pub fn weighted_sum(t: &Tensor, w: &Tensor) -> Result<Tensor> {
    (t * w)?.sum_all()
}

pub fn scalar(t: &Tensor) -> Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}
