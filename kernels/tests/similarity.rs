//! Fused pixel–text cosine vs the composed candle ops, and vs finite differences.

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use common::{assert_close, reference, Rng};
use tmca_kernels::pixel_text_cos;

const CASES: [(usize, usize, usize, usize); 5] = [
    (4, 37, 5, 7),
    (1, 1, 1, 1),
    (3, 64, 14, 14),
    (2, 3, 1, 9),
    (2, 256, 33, 31),
];

fn forward(dev: &Device) -> Result<()> {
    let mut rng = Rng::new(11);
    let mut worst: f64 = 0.0;
    for &(b, d, h, w) in &CASES {
        let p = common::randn(&mut rng, &[b, d, h, w], DType::F32, dev)?;
        let u = common::unit_rows(&mut rng, &[b, d], DType::F32, dev)?;
        let fused = pixel_text_cos(&p, &u)?;
        assert_eq!(fused.dims(), &[b, 1, h, w]);
        let r = reference::pixel_text_cos_raw(&p, &u)?;
        worst = worst.max(assert_close("cos", &fused, &r, 1e-5)?);
    }
    println!("pixel_text_cos forward worst rel err {worst:e}");
    Ok(())
}

fn raw_text_is_used_as_given(dev: &Device) -> Result<()> {
    let mut rng = Rng::new(12);
    let p = common::randn(&mut rng, &[2, 9, 4, 3], DType::F32, dev)?;
    let u = (common::randn(&mut rng, &[2, 9], DType::F32, dev)? * 3.0)?;
    let fused = pixel_text_cos(&p, &u)?;
    let r = reference::pixel_text_cos_raw(&p, &u)?;
    assert_close("cos with raw u", &fused, &r, 1e-5)?;
    Ok(())
}

fn backward(dev: &Device) -> Result<()> {
    let mut rng = Rng::new(13);
    let mut worst: f64 = 0.0;
    for &(b, d, h, w) in &CASES {
        let p = Var::from_tensor(&common::randn(&mut rng, &[b, d, h, w], DType::F32, dev)?)?;
        let u = Var::from_tensor(&common::unit_rows(&mut rng, &[b, d], DType::F32, dev)?)?;
        let wg = common::randn(&mut rng, &[b, 1, h, w], DType::F32, dev)?;
        // Through the LTE sigmoid, as the model uses the map.
        let head = |c: &Tensor| common::weighted_sum(&(c.neg()?.exp()? + 1.0)?.recip()?, &wg);
        let g_fused = head(&pixel_text_cos(&p, &u)?)?.backward()?;
        let g_ref = head(&reference::pixel_text_cos_raw(&p, &u)?)?.backward()?;
        for (name, v) in [("dp", &p), ("du", &u)] {
            let (a, r) = (g_fused.get(v).expect("grad"), g_ref.get(v).expect("grad"));
            worst = worst.max(assert_close(name, a, r, 1e-4)?);
        }
    }
    println!("pixel_text_cos backward worst rel err {worst:e}");
    Ok(())
}

fn finite_differences(dev: &Device) -> Result<()> {
    let mut rng = Rng::new(14);
    let mut worst: f64 = 0.0;
    for &(b, d, h, w) in &[(3, 37, 5, 7), (1, 1, 1, 1), (2, 4, 3, 2)] {
        let p = Var::from_tensor(&common::randn(&mut rng, &[b, d, h, w], DType::F64, dev)?)?;
        let u = Var::from_tensor(&common::randn(&mut rng, &[b, d], DType::F64, dev)?)?;
        let wg = common::randn(&mut rng, &[b, 1, h, w], DType::F64, dev)?;
        let f = || common::weighted_sum(&pixel_text_cos(&p, &u)?, &wg);
        let grads = f()?.backward()?;
        for v in [&p, &u] {
            let e =
                common::finite_difference(&mut rng, v, grads.get(v).expect("grad"), 16, &|| {
                    common::scalar(&f()?)
                })?;
            assert!(e < 1e-6, "finite differences: {e:e}");
            worst = worst.max(e);
        }
    }
    println!("pixel_text_cos finite-difference worst rel err {worst:e}");
    Ok(())
}

fn rejects_bad_arguments(dev: &Device) -> Result<()> {
    let p = Tensor::zeros((2, 4, 3, 3), DType::F32, dev)?;
    let u = Tensor::zeros((2, 5), DType::F32, dev)?;
    let e = pixel_text_cos(&p, &u).expect_err("bad u").to_string();
    assert!(e.contains("`u`") && e.contains("shape"), "{e}");
    let u = Tensor::zeros((2, 4), DType::U32, dev)?;
    let e = pixel_text_cos(&p, &u).expect_err("u dtype").to_string();
    assert!(e.contains("`u`") && e.contains("dtype"), "{e}");
    Ok(())
}

device_tests!(
    forward,
    raw_text_is_used_as_given,
    backward,
    finite_differences,
    rejects_bad_arguments,
);
