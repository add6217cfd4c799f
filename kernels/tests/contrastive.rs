//! The fused multi-level contrastive loss vs the composed per-level loss, and vs finite
//! differences.

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use common::{assert_close, reference, Rng};
use tmca_kernels::{dense_groups, multi_level_contrastive};

/// One test problem: (Lv, N, D) embeddings, has_background, log scales, group keys.
struct Problem {
    target: Var,
    text: Var,
    background: Var,
    has: Tensor,
    log_scale: Var,
    groups: Vec<u64>,
}

impl Problem {
    fn new(
        rng: &mut Rng,
        lv: usize,
        n: usize,
        d: usize,
        scales: &[f64],
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        assert_eq!(scales.len(), lv);
        let emb = |rng: &mut Rng| -> Result<Var> {
            Var::from_tensor(&common::unit_rows(rng, &[lv, n, d], dtype, dev)?)
        };
        let (target, text, background) = (emb(rng)?, emb(rng)?, emb(rng)?);
        let has: Vec<f64> = (0..lv * n)
            .map(|_| (rng.uniform() > 0.3) as u8 as f64)
            .collect();
        // Few distinct keys: duplicate groups (templated reports); large arbitrary key values.
        let distinct = (n / 3).max(1) as u64;
        let groups = (0..n)
            .map(|_| (rng.next_u64() % distinct) * 0x1_0000_0001 + 7)
            .collect();
        Ok(Self {
            target,
            text,
            background,
            has: common::tensor(has, &[lv, n], dtype, dev)?,
            log_scale: Var::from_tensor(&common::tensor(
                scales.iter().map(|s| s.ln()).collect(),
                &[lv],
                dtype,
                dev,
            )?)?,
            groups,
        })
    }

    fn fused(&self, bg: bool) -> Result<Tensor> {
        multi_level_contrastive(
            &self.target,
            &self.text,
            &self.background,
            &self.has,
            &self.log_scale.exp()?,
            &self.groups,
            bg,
        )
    }

    fn composed(&self, bg: bool) -> Result<Tensor> {
        reference::multi_level(
            &self.target,
            &self.text,
            &self.background,
            &self.has,
            &self.log_scale.exp()?,
            &self.groups,
            bg,
        )
    }

    fn vars(&self) -> [(&'static str, &Var); 4] {
        [
            ("d target", &self.target),
            ("d text", &self.text),
            ("d background", &self.background),
            ("d log scale", &self.log_scale),
        ]
    }
}

/// (Lv, N, D, scales): N = 1, D = 37, extreme temperatures (τ = 0.01 → s = 100, τ = 10 → 0.1).
fn cases() -> Vec<(usize, usize, usize, Vec<f64>)> {
    vec![
        (4, 1, 37, vec![100.0, 0.1, 14.285, 1.0]),
        (2, 9, 37, vec![100.0, 0.1]),
        (4, 32, 256, vec![1.0 / 0.07; 4]),
        (3, 64, 16, vec![100.0, 1.0, 0.1]),
        (1, 2, 1, vec![100.0]),
    ]
}

fn forward(dev: &Device) -> Result<()> {
    let mut rng = Rng::new(21);
    let mut worst: f64 = 0.0;
    for (lv, n, d, s) in cases() {
        let pb = Problem::new(&mut rng, lv, n, d, &s, DType::F32, dev)?;
        for bg in [true, false] {
            let (a, r) = (pb.fused(bg)?, pb.composed(bg)?);
            assert_eq!(a.dims(), &[lv]);
            worst = worst.max(assert_close("loss", &a, &r, 1e-5)?);
        }
    }
    println!("contrastive forward worst rel err {worst:e}");
    Ok(())
}

fn backward(dev: &Device) -> Result<()> {
    let mut rng = Rng::new(22);
    let mut worst: f64 = 0.0;
    for (lv, n, d, s) in cases() {
        let pb = Problem::new(&mut rng, lv, n, d, &s, DType::F32, dev)?;
        let w = common::randn(&mut rng, &[lv], DType::F32, dev)?;
        for bg in [true, false] {
            let ga = common::weighted_sum(&pb.fused(bg)?, &w)?.backward()?;
            let gr = common::weighted_sum(&pb.composed(bg)?, &w)?.backward()?;
            for (name, v) in pb.vars() {
                match (ga.get(v), gr.get(v)) {
                    (Some(a), Some(r)) => worst = worst.max(assert_close(name, a, r, 1e-4)?),
                    // Without background negatives the composed loss never touches v⁻.
                    (Some(a), None) => assert_eq!(
                        common::to_f64(a)?
                            .iter()
                            .fold(0.0, |m: f64, x| m.max(x.abs())),
                        0.0
                    ),
                    (None, _) => panic!("{name}: no gradient from the fused op"),
                }
            }
        }
    }
    println!("contrastive backward worst rel err {worst:e}");
    Ok(())
}

fn finite_differences(dev: &Device) -> Result<()> {
    let mut rng = Rng::new(23);
    let mut worst: f64 = 0.0;
    for (lv, n, d, s) in [
        (2, 7, 37, vec![10.0, 0.1]),
        (1, 1, 5, vec![2.0]),
        (3, 5, 4, vec![1.0, 14.0, 0.5]),
    ] {
        let pb = Problem::new(&mut rng, lv, n, d, &s, DType::F64, dev)?;
        let w = common::randn(&mut rng, &[lv], DType::F64, dev)?;
        for bg in [true, false] {
            let f = || common::weighted_sum(&pb.fused(bg)?, &w);
            let grads = f()?.backward()?;
            for (name, v) in pb.vars() {
                let g = grads.get(v).expect("grad");
                let e = common::finite_difference(&mut rng, v, g, 12, &|| common::scalar(&f()?))?;
                assert!(e < 1e-6, "{name}: finite differences {e:e}");
                worst = worst.max(e);
            }
        }
    }
    println!("contrastive finite-difference worst rel err {worst:e}");
    Ok(())
}

/// The gathered global batch at its largest (N = 4096), with sharp temperatures.
fn large_batch(dev: &Device) -> Result<()> {
    let mut rng = Rng::new(24);
    let pb = Problem::new(&mut rng, 2, 4096, 8, &[100.0, 0.1], DType::F32, dev)?;
    let w = common::randn(&mut rng, &[2], DType::F32, dev)?;
    let ga = common::weighted_sum(&pb.fused(true)?, &w)?.backward()?;
    let gr = common::weighted_sum(&pb.composed(true)?, &w)?.backward()?;
    assert_close("loss", &pb.fused(true)?, &pb.composed(true)?, 1e-5)?;
    for (name, v) in pb.vars() {
        let e = assert_close(
            name,
            ga.get(v).expect("grad"),
            gr.get(v).expect("grad"),
            1e-4,
        )?;
        println!("N=4096 {name} rel err {e:e}");
    }
    Ok(())
}

fn groups_are_densified() -> Result<()> {
    let (ids, counts) = dense_groups(&[u64::MAX, 5, u64::MAX, 1 << 40, 5, 5]);
    assert_eq!(ids, vec![0, 1, 0, 2, 1, 1]);
    assert_eq!(counts, vec![2, 3, 2, 1, 3, 3]);
    Ok(())
}

#[test]
fn dense_groups_ids_and_counts() -> Result<()> {
    groups_are_densified()
}

fn rejects_bad_arguments(dev: &Device) -> Result<()> {
    let z = Tensor::zeros((2, 3, 4), DType::F32, dev)?;
    let has = Tensor::zeros((2, 3), DType::F32, dev)?;
    let s = Tensor::ones(2, DType::F32, dev)?;
    let bad = Tensor::zeros((2, 3, 5), DType::F32, dev)?;
    let e = multi_level_contrastive(&z, &bad, &z, &has, &s, &[1, 2, 3], true)
        .expect_err("text")
        .to_string();
    assert!(e.contains("`text`"), "{e}");
    let e = multi_level_contrastive(&z, &z, &z, &has, &s, &[1, 2], true)
        .expect_err("groups")
        .to_string();
    assert!(e.contains("`groups`"), "{e}");
    let s3 = Tensor::ones(3, DType::F32, dev)?;
    let e = multi_level_contrastive(&z, &z, &z, &has, &s3, &[1, 2, 3], true)
        .expect_err("scales")
        .to_string();
    assert!(e.contains("`scales`"), "{e}");
    let h = Tensor::zeros((3, 2), DType::F32, dev)?;
    let e = multi_level_contrastive(&z, &z, &z, &h, &s, &[1, 2, 3], true)
        .expect_err("has")
        .to_string();
    assert!(e.contains("`has_background`"), "{e}");
    Ok(())
}

device_tests!(
    forward,
    backward,
    finite_differences,
    large_batch,
    rejects_bad_arguments
);
