//! The two element types the kernels support, behind one small trait.

use candle_core::WithDType;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub};

/// f32 or f64: the arithmetic the CPU kernels need.
pub trait Real:
    WithDType
    + Copy
    + Send
    + Sync
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + MulAssign
    + DivAssign
{
    const ZERO: Self;
    const ONE: Self;
    fn of(x: f64) -> Self;
    fn sqrt(self) -> Self;
    fn exp(self) -> Self;
    /// e^x inlined and branch-free, so loops over it vectorise: for f32 a Cephes-style
    /// polynomial (≤ 2 ulp; inputs are clamped to [−87.3, 88], so e^−∞ is 2^−126, not 0), for
    /// f64 the library exp.
    fn fast_exp(self) -> Self;
    fn ln(self) -> Self;
    fn fmax(self, other: Self) -> Self;
    /// (Φ(x), φ(x)), the standard normal's distribution and density: for f32 inlined and
    /// branch-free (Abramowitz & Stegun 7.1.26 on one shared e^(−x²/2); |ΔΦ| ≤ 3e-7 with f32
    /// rounding), for f64 candle's erf.
    fn normal(self) -> (Self, Self);
}

macro_rules! real {
    ($t:ty, $fast_exp:path, $normal:path) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline(always)]
            fn of(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn fast_exp(self) -> Self {
                $fast_exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn fmax(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline(always)]
            fn normal(self) -> (Self, Self) {
                $normal(self)
            }
        }
    };
}

real!(f32, fast_exp_f32, normal_f32);
real!(f64, f64::exp, normal_f64);

/// 1/√(2π).
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// Φ(x) = ½·erfc(−x/√2) with erfc(z) = (a₁t + … + a₅t⁵)·e^(−z²), t = 1/(1 + p·z) for z ≥ 0
/// (Abramowitz & Stegun 7.1.26, |Δerf| ≤ 1.5e-7), mirrored for x > 0; e^(−z²) = e^(−x²/2) is
/// the density's exponential too.
#[inline(always)]
fn normal_f32(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let e = fast_exp_f32(-0.5 * x * x);
    let t = 1.0 / (1.0 + P * std::f32::consts::FRAC_1_SQRT_2 * x.abs());
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let tail = 0.5 * poly * e;
    let cdf = if x > 0.0 { 1.0 - tail } else { tail };
    (cdf, e * INV_SQRT_2PI as f32)
}

#[inline(always)]
fn normal_f64(x: f64) -> (f64, f64) {
    let cdf = 0.5 * (1.0 + candle_core::cpu::erf::erf_f64(x * std::f64::consts::FRAC_1_SQRT_2));
    (cdf, (-0.5 * x * x).exp() * INV_SQRT_2PI)
}

/// e^x = 2^n · e^r with n = round(x / ln 2), |r| ≤ ln 2 / 2, e^r by Cephes' expf polynomial.
#[inline(always)]
fn fast_exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest by the 1.5·2²³ trick (no libm call, SSE2 only).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.336_55, 88.0);
    let t = x * LOG2E + ROUND;
    // t's low mantissa bits hold n as an integer: no float → int conversion (Rust's
    // saturating `as` does not vectorise).
    let ni = t.to_bits().wrapping_sub(ROUND.to_bits());
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    er * f32::from_bits(ni.wrapping_add(127) << 23)
}

/// Lanes of the multi-accumulator reductions below (independent sums, so they vectorise).
pub const LANES: usize = 8;

/// max_j s·x_j (x non-empty).
#[inline(always)]
pub fn max_scaled<T: Real>(x: &[T], s: T) -> T {
    let mut acc = [s * x[0]; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for k in 0..LANES {
            acc[k] = acc[k].fmax(s * c[k]);
        }
    }
    let mut m = acc.iter().fold(acc[0], |a, &b| a.fmax(b));
    for &v in chunks.remainder() {
        m = m.fmax(s * v);
    }
    m
}

/// Σ_j e^(s·x_j − m).
#[inline(always)]
pub fn sum_exp<T: Real>(x: &[T], s: T, m: T) -> T {
    let mut acc = [T::ZERO; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for k in 0..LANES {
            acc[k] += (s * c[k] - m).fast_exp();
        }
    }
    let mut z = acc.iter().fold(T::ZERO, |a, &b| a + b);
    for &v in chunks.remainder() {
        z += (s * v - m).fast_exp();
    }
    z
}

/// Σ_{j: keys_j = key} x_j.
#[inline(always)]
pub fn masked_sum<T: Real>(x: &[T], keys: &[T], key: T) -> T {
    let pick = |v: T, k: T| if k == key { v } else { T::ZERO };
    let mut acc = [T::ZERO; LANES];
    let mut cx = x.chunks_exact(LANES);
    let mut ck = keys.chunks_exact(LANES);
    for (c, g) in (&mut cx).zip(&mut ck) {
        for k in 0..LANES {
            acc[k] += pick(c[k], g[k]);
        }
    }
    let mut z = acc.iter().fold(T::ZERO, |a, &b| a + b);
    for (&v, &k) in cx.remainder().iter().zip(ck.remainder()) {
        z += pick(v, k);
    }
    z
}

/// Σ a_i b_i, with four independent accumulators so the loop vectorises.
#[inline]
pub fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::ZERO; 4];
    let mut ca = a.chunks_exact(4);
    let mut cb = b.chunks_exact(4);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += *x * *y;
    }
    s
}

/// y += a x
#[inline]
pub fn axpy<T: Real>(a: T, x: &[T], y: &mut [T]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * *xi;
    }
}

#[cfg(test)]
mod tests {
    use super::{masked_sum, max_scaled, sum_exp, Real};

    #[test]
    fn fast_exp_f32_is_within_two_ulp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = x.fast_exp() as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.000_731;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
        assert_eq!(0f32.fast_exp(), 1.0);
        assert!((-1e4f32).fast_exp() < 1.2e-38 && (-1e4f32).fast_exp() >= 0.0);
        assert!(f32::NEG_INFINITY.fast_exp() < 1.2e-38);
        assert_eq!(1.5f64.fast_exp(), 1.5f64.exp());
    }

    /// The f32 normal distribution and density against the f64 (erf) ones.
    #[test]
    fn normal_f32_is_within_3e7() {
        let (mut worst_cdf, mut worst_pdf) = (0.0f64, 0.0f64);
        let mut x = -12.0f32;
        while x < 12.0 {
            let (c, p) = x.normal();
            let (wc, wp) = (x as f64).normal();
            worst_cdf = worst_cdf.max((c as f64 - wc).abs());
            worst_pdf = worst_pdf.max((p as f64 - wp).abs());
            x += 0.000_917;
        }
        assert!(worst_cdf < 3e-7, "Φ off by {worst_cdf:e}");
        assert!(worst_pdf < 1e-7, "φ off by {worst_pdf:e}");
        assert_eq!(0f64.normal().0, 0.5);
        assert!((1.0f64.normal().0 - 0.841_344_746_068_543).abs() < 1e-15);
        assert_eq!(f32::INFINITY.normal().0, 1.0);
        assert_eq!(f32::NEG_INFINITY.normal().0, 0.0);
    }

    #[test]
    fn reductions_match_sequential_sums() {
        let x: Vec<f64> = (0..37)
            .map(|i| ((i * 7919) % 23) as f64 / 11.0 - 1.0)
            .collect();
        let keys: Vec<f64> = (0..37).map(|i| (i % 3) as f64).collect();
        let s = 3.5;
        let m = x.iter().map(|&v| s * v).fold(f64::MIN, f64::max);
        assert_eq!(max_scaled(&x, s), m);
        let z: f64 = x.iter().map(|&v| (s * v - m).exp()).sum();
        assert!((sum_exp(&x, s, m) - z).abs() < 1e-12 * z);
        let p: f64 = x
            .iter()
            .zip(&keys)
            .filter(|(_, &k)| k == 1.0)
            .map(|(v, _)| v)
            .sum();
        assert!((masked_sum(&x, &keys, 1.0) - p).abs() < 1e-12);
        assert_eq!(
            max_scaled(&x[..3], -1.0),
            -x[..3].iter().fold(f64::MAX, |a, &b| a.min(b))
        );
    }
}
