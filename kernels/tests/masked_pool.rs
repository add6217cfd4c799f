//! Fused masked pooling vs the composed candle ops, and vs finite differences.

mod common;

use candle_core::{DType, Device, Result, Var};
use common::{assert_close, reference, Rng};
use tmca_kernels::masked_pool;

/// (B, D, H, W) cases: odd sizes, H ≠ W, N = 1 sample, D not a multiple of 32.
const CASES: [(usize, usize, usize, usize); 5] = [
    (4, 37, 5, 7),
    (1, 1, 1, 1),
    (6, 64, 14, 14),
    (3, 3, 1, 9),
    (2, 256, 33, 31),
];

fn forward(dev: &Device) -> Result<()> {
    let mut rng = Rng::new(1);
    let mut worst: f64 = 0.0;
    for &(b, d, h, w) in &CASES {
        let p = common::randn(&mut rng, &[b, d, h, w], DType::F32, dev)?;
        let m = common::masks(&mut rng, b, h, w, DType::F32, dev)?;
        let fused = masked_pool(&p, &m)?;
        let (t, g, has) = reference::masked_pool_raw(&p, &m)?;
        worst = worst.max(assert_close("target", &fused.target, &t, 1e-5)?);
        worst = worst.max(assert_close("background", &fused.background, &g, 1e-5)?);
        assert_close("has_background", &fused.has_background, &has, 0.0)?;
    }
    println!("masked_pool forward worst rel err {worst:e}");
    Ok(())
}

fn has_background_flags(dev: &Device) -> Result<()> {
    let mut rng = Rng::new(2);
    let p = common::randn(&mut rng, &[4, 8, 3, 5], DType::F32, dev)?;
    let m = common::masks(&mut rng, 4, 3, 5, DType::F32, dev)?;
    let has = masked_pool(&p, &m)?.has_background.to_vec1::<f32>()?;
    // soft (both), empty (no target), full (no background), binary (both).
    assert_eq!(has, vec![1.0, 0.0, 0.0, 1.0]);
    Ok(())
}

fn backward(dev: &Device) -> Result<()> {
    let mut rng = Rng::new(3);
    let mut worst: f64 = 0.0;
    for &(b, d, h, w) in &CASES {
        let p = Var::from_tensor(&common::randn(&mut rng, &[b, d, h, w], DType::F32, dev)?)?;
        let m = common::masks(&mut rng, b, h, w, DType::F32, dev)?;
        let wt = common::randn(&mut rng, &[b, d], DType::F32, dev)?;
        let wb = common::randn(&mut rng, &[b, d], DType::F32, dev)?;
        let fused = masked_pool(&p, &m)?;
        let loss = (common::weighted_sum(&fused.target, &wt)?
            + common::weighted_sum(&fused.background, &wb)?)?;
        let g_fused = loss.backward()?;
        let (t, g, _) = reference::masked_pool_raw(&p, &m)?;
        let loss = (common::weighted_sum(&t, &wt)? + common::weighted_sum(&g, &wb)?)?;
        let g_ref = loss.backward()?;
        let (a, r) = (g_fused.get(&p).expect("grad"), g_ref.get(&p).expect("grad"));
        worst = worst.max(assert_close("dp", a, r, 1e-4)?);
        assert!(g_fused.get(&m).is_none(), "the mask must get no gradient");
    }
    println!("masked_pool backward worst rel err {worst:e}");
    Ok(())
}

fn finite_differences(dev: &Device) -> Result<()> {
    let mut rng = Rng::new(4);
    let mut worst: f64 = 0.0;
    for &(b, d, h, w) in &[(5, 37, 5, 7), (1, 1, 1, 1), (4, 5, 2, 3)] {
        let p = Var::from_tensor(&common::randn(&mut rng, &[b, d, h, w], DType::F64, dev)?)?;
        let m = common::masks(&mut rng, b, h, w, DType::F64, dev)?;
        let wt = common::randn(&mut rng, &[b, d], DType::F64, dev)?;
        let wb = common::randn(&mut rng, &[b, d], DType::F64, dev)?;
        let f = || -> Result<candle_core::Tensor> {
            let o = masked_pool(&p, &m)?;
            common::weighted_sum(&o.target, &wt)? + common::weighted_sum(&o.background, &wb)?
        };
        let grads = f()?.backward()?;
        let e = common::finite_difference(&mut rng, &p, grads.get(&p).expect("grad"), 24, &|| {
            common::scalar(&f()?)
        })?;
        assert!(e < 1e-6, "finite differences: {e:e}");
        worst = worst.max(e);
    }
    println!("masked_pool finite-difference worst rel err {worst:e}");
    Ok(())
}

fn non_contiguous_input(dev: &Device) -> Result<()> {
    let mut rng = Rng::new(5);
    // (B, H, D, W) transposed to (B, D, H, W): strided.
    let p = common::randn(&mut rng, &[2, 5, 6, 7], DType::F32, dev)?.transpose(1, 2)?;
    assert!(!p.is_contiguous());
    let m = common::masks(&mut rng, 2, 5, 7, DType::F32, dev)?;
    let fused = masked_pool(&p, &m)?;
    let (t, g, _) = reference::masked_pool_raw(&p, &m)?;
    assert_close("target", &fused.target, &t, 1e-5)?;
    assert_close("background", &fused.background, &g, 1e-5)?;
    Ok(())
}

fn rejects_bad_arguments(dev: &Device) -> Result<()> {
    let p = candle_core::Tensor::zeros((2, 4, 3, 3), DType::F32, dev)?;
    let m = candle_core::Tensor::zeros((2, 1, 3, 4), DType::F32, dev)?;
    let e = masked_pool(&p, &m).expect_err("bad mask shape").to_string();
    assert!(e.contains("`m`") && e.contains("shape"), "{e}");
    let m = candle_core::Tensor::zeros((2, 1, 3, 3), DType::F64, dev)?;
    let e = masked_pool(&p, &m).expect_err("dtype mismatch").to_string();
    assert!(e.contains("`m`") && e.contains("dtype"), "{e}");
    let p16 = p.to_dtype(DType::BF16)?;
    let e = masked_pool(&p16, &m).expect_err("bf16").to_string();
    assert!(e.contains("`p`") && e.contains("BF16"), "{e}");
    let p3 = candle_core::Tensor::zeros((2, 4, 9), DType::F32, dev)?;
    let e = masked_pool(&p3, &m).expect_err("rank").to_string();
    assert!(e.contains("`p`"), "{e}");
    Ok(())
}

device_tests!(
    forward,
    has_background_flags,
    backward,
    finite_differences,
    non_contiguous_input,
    rejects_bad_arguments,
);
