//! Gradient tests: every trainable parameter of every preset and ablation gets a gradient, and
//! module gradients agree with central finite differences (in f64).

use super::*;
use crate::params::ParamStore;
use candle_core::{backprop::GradStore, DType, Device, Var};

pub(crate) fn build(mut cfg: ModelConfig, dtype: DType, seed: u64) -> (ParamStore, Tmca, usize) {
    let mut text = TextConfig {
        max_len: 8,
        ..Default::default()
    };
    cfg.resolve(&mut text).unwrap();
    let vocab = 30;
    let bert = BertConfig::scratch(&text, vocab);
    let store = ParamStore::new(seed);
    let vb = store.var_builder_dtype(dtype, &Device::Cpu);
    let model = Tmca::new(&cfg, &bert, vb.clone(), vb.pp("text")).unwrap();
    (store, model, vocab)
}

/// A batch of 4 with one empty mask and two identical reports.
pub(crate) fn batch(
    b: usize,
    c: usize,
    hw: usize,
    vocab: usize,
    dtype: DType,
    seed: u64,
) -> (Inputs, Vec<u64>) {
    let dev = Device::Cpu;
    let mut s = seed;
    let mut next = || {
        s = tmca_data::sampler::mix(s);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let images: Vec<f32> = (0..b * c * hw * hw)
        .map(|_| (next() * 2.0 - 1.0) as f32)
        .collect();
    let masks: Vec<f32> = (0..b * hw * hw)
        .map(|k| {
            let (i, p) = (k / (hw * hw), k % (hw * hw));
            let (y, x) = (p / hw, p % hw);
            (i != 1 && y < hw / 2 && x >= (i % 2) * hw / 2 && x < (i % 2 + 1) * hw / 2) as u8 as f32
        })
        .collect();
    let l = 8;
    let ids: Vec<u32> = (0..b * l)
        .map(|k| {
            if k % l < 6 {
                2 + ((k / l).min(2) * 7 + k % l) as u32 % (vocab as u32 - 2)
            } else {
                0
            }
        })
        .collect();
    let att: Vec<u32> = (0..b * l).map(|k| (k % l < 6) as u32).collect();
    let groups: Vec<u64> = (0..b).map(|i| i.min(2) as u64).collect();
    let t = |v: Vec<f32>, shape: (usize, usize, usize, usize)| {
        Tensor::from_vec(v, shape, &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    };
    (
        Inputs {
            images: t(images, (b, c, hw, hw)),
            token_ids: Tensor::from_vec(ids, (b, l), &dev).unwrap(),
            attention: Tensor::from_vec(att, (b, l), &dev).unwrap(),
            masks: Some(t(masks, (b, 1, hw, hw))),
            drop_path: None,
        },
        groups,
    )
}

fn grads_of(model: &Tmca, x: &Inputs, groups: &[u64]) -> (Tensor, GradStore) {
    let out = model.forward(x).unwrap();
    let losses = model
        .loss(&out, x.masks.as_ref().unwrap(), groups, None)
        .unwrap();
    let g = losses.total.backward().unwrap();
    (losses.total, g)
}

fn ablations() -> Vec<(&'static str, ModelConfig)> {
    let base = ModelConfig {
        preset: "cpu-tiny".into(),
        aux_weight: 0.5,
        ..Default::default()
    };
    vec![
        ("tmca", base.clone()),
        (
            "image-only",
            ModelConfig {
                text_guidance: false,
                ..base.clone()
            },
        ),
        (
            "no-contrastive",
            ModelConfig {
                lambda: 0.0,
                ..base.clone()
            },
        ),
        (
            "single-level",
            ModelConfig {
                contrastive_levels: vec![4],
                contrastive_weights: vec![1.0],
                ..base.clone()
            },
        ),
        (
            "no-lte",
            ModelConfig {
                lte_levels: vec![],
                ..base.clone()
            },
        ),
        (
            "no-cross-attention",
            ModelConfig {
                cross_attention: false,
                ..base.clone()
            },
        ),
        (
            "no-background",
            ModelConfig {
                background_negatives: false,
                ..base.clone()
            },
        ),
        (
            "no-tssd",
            ModelConfig {
                target_sensitive: false,
                ..base
            },
        ),
    ]
}

#[test]
fn every_parameter_gets_a_gradient_in_every_preset_and_ablation() {
    let mut cases = ablations();
    cases.push(("cpu-small", ModelConfig::default()));
    cases.push((
        "tiny",
        ModelConfig {
            preset: "tiny".into(),
            ..Default::default()
        },
    ));
    for (name, cfg) in cases {
        let (store, model, vocab) = build(cfg.clone(), DType::F32, 1);
        let (x, groups) = batch(4, 3, 32, vocab, DType::F32, 2);
        let (loss, g) = grads_of(&model, &x, &groups);
        assert!(loss.to_scalar::<f32>().unwrap().is_finite(), "{name}");
        let mut missing = Vec::new();
        for (pname, var) in store.vars() {
            let ok = g
                .get(var.as_tensor())
                .map(|t| {
                    t.abs()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap()
                        > 0.0
                })
                .unwrap_or(false);
            if !ok {
                missing.push(pname);
            }
        }
        assert!(
            missing.is_empty(),
            "{name}: parameters without gradient: {missing:?}"
        );
        assert!(store.len() > 20, "{name}");
        if !cfg.text_guidance {
            assert!(
                store
                    .vars()
                    .iter()
                    .all(|(n, _)| !n.starts_with("text.") && !n.starts_with("lte.")),
                "{name}"
            );
        }
    }
}

/// Central finite differences of `f` at a few entries of each var vs autograd.
fn check_fd(vars: &[(String, Var)], f: &dyn Fn() -> Tensor, probes: usize, tol: f64) {
    let loss = f();
    let g = loss.backward().unwrap();
    for (name, var) in vars {
        let Some(grad) = g.get(var.as_tensor()) else {
            panic!("{name}: no gradient")
        };
        let grad: Vec<f64> = grad
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap();
        let base: Vec<f64> = var
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap();
        let n = base.len();
        for k in 0..probes.min(n) {
            let idx = (k * 7919) % n;
            let eps = 1e-5;
            let eval = |delta: f64| -> f64 {
                let mut v = base.clone();
                v[idx] += delta;
                var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                f().to_dtype(DType::F64)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let fd = (eval(eps) - eval(-eps)) / (2.0 * eps);
            var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let err = (fd - grad[idx]).abs() / (fd.abs().max(grad[idx].abs()).max(1e-3));
            assert!(
                err < tol,
                "{name}[{idx}]: finite difference {fd:e} vs autograd {:e}",
                grad[idx]
            );
        }
    }
}

/// The fused kernels and the composed candle ops compute the same losses and gradients.
#[test]
fn fused_and_composed_ops_agree() {
    for (name, cfg) in ablations() {
        let composed = ModelConfig {
            ops: "composed".into(),
            ..cfg.clone()
        };
        let (sf, mf, vocab) = build(cfg, DType::F32, 5);
        let (sc, mc, _) = build(composed, DType::F32, 5);
        let (x, groups) = batch(4, 3, 32, vocab, DType::F32, 6);
        let (lf, gf) = grads_of(&mf, &x, &groups);
        let (lc, gc) = grads_of(&mc, &x, &groups);
        let (lf, lc) = (
            lf.to_scalar::<f32>().unwrap(),
            lc.to_scalar::<f32>().unwrap(),
        );
        assert!(
            (lf - lc).abs() <= 1e-5 * lc.abs().max(1.0),
            "{name}: loss {lf} vs {lc}"
        );
        for ((n, vf), (_, vc)) in sf.vars().iter().zip(sc.vars().iter()) {
            let a = gf.get(vf.as_tensor()).unwrap();
            let b = gc.get(vc.as_tensor()).unwrap();
            let err = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            let scale = b.abs().unwrap().max_all().unwrap();
            let (err, scale) = (
                err.to_scalar::<f32>().unwrap(),
                scale.to_scalar::<f32>().unwrap(),
            );
            assert!(
                err <= 1e-4 * scale.max(1e-3),
                "{name}: gradient of {n}: {err} (max {scale})"
            );
        }
    }
}

#[test]
fn whole_model_gradients_match_finite_differences() {
    for (name, cfg) in ablations().into_iter().take(5) {
        let (store, model, vocab) = build(cfg, DType::F64, 3);
        let (x, groups) = batch(4, 3, 32, vocab, DType::F64, 4);
        let f = || {
            let out = model.forward(&x).unwrap();
            model
                .loss(&out, x.masks.as_ref().unwrap(), &groups, None)
                .unwrap()
                .total
        };
        // A sample of parameters from every part.
        let vars: Vec<(String, Var)> = store
            .vars()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % 9 == 0)
            .map(|(_, v)| v)
            .collect();
        eprintln!("{name}: checking {} parameters", vars.len());
        check_fd(&vars, &f, 2, 1e-4);
    }
}

#[test]
fn module_gradients_match_finite_differences() {
    let dev = Device::Cpu;
    let var = |shape: &[usize], seed: u64| {
        let n: usize = shape.iter().product();
        let mut s = seed;
        let v: Vec<f64> = (0..n)
            .map(|_| {
                s = tmca_data::sampler::mix(s);
                (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect();
        Var::from_tensor(&Tensor::from_vec(v, shape, &dev).unwrap()).unwrap()
    };
    // LayerNorm over the last dim (candle's fused one has no backward).
    let x = var(&[3, 5, 7], 1);
    let store = ParamStore::new(0);
    let ln = crate::nn::LayerNorm::new(7, 1e-5, store.var_builder_dtype(DType::F64, &dev)).unwrap();
    let w = var(&[3, 5, 7], 2);
    let f = || {
        (ln.forward(x.as_tensor()).unwrap() * w.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let mut vars = store.vars();
    vars.push(("x".into(), x.clone()));
    check_fd(&vars, &f, 6, 1e-5);

    // Masked pooling with soft, empty and full masks; D not a multiple of 32, H != W.
    let z = var(&[3, 5, 4, 6], 3);
    let mvals: Vec<f64> = (0..3 * 24)
        .map(|k| match k / 24 {
            0 => ((k % 5) as f64) / 4.0,
            1 => 0.0,
            _ => 1.0,
        })
        .collect();
    let m = Tensor::from_vec(mvals, (3, 1, 4, 6), &dev).unwrap();
    let wt = var(&[3, 5], 4);
    let wb = var(&[3, 5], 5);
    let f = || {
        let p = tssd::masked_pool(&crate::nn::l2_normalize(z.as_tensor(), 1).unwrap(), &m).unwrap();
        ((p.target * wt.as_tensor()).unwrap().sum_all().unwrap()
            + (p.background * wb.as_tensor()).unwrap().sum_all().unwrap())
        .unwrap()
    };
    check_fd(&[("z".into(), z.clone())], &f, 12, 1e-5);

    // Contrastive loss with duplicate groups, an empty-mask sample and extreme temperatures.
    for (tau, fused) in [0.01, 0.07, 1.0]
        .into_iter()
        .flat_map(|t| [(t, false), (t, true)])
    {
        let store = ParamStore::new(0);
        let cfg = ModelConfig {
            contrastive_levels: vec![1, 3],
            contrastive_weights: vec![1.0, 0.5],
            tau_init: tau,
            tau_min: 0.01,
            tau_max: 1.0,
            background_negatives: true,
            ops: if fused { "fused" } else { "composed" }.into(),
            ..Default::default()
        };
        let c = contrastive::ContrastiveLoss::new(&cfg, store.var_builder_dtype(DType::F64, &dev))
            .unwrap();
        let (v, u, bgv) = (var(&[5, 6], 6), var(&[5, 6], 7), var(&[5, 6], 8));
        let has = Tensor::from_vec(vec![1.0f64, 1.0, 0.0, 1.0, 1.0], 5, &dev).unwrap();
        let f = || {
            let n = |t: &Var| crate::nn::l2_normalize(t.as_tensor(), 1).unwrap();
            let lb = contrastive::LevelBatch {
                target: n(&v),
                text: n(&u),
                background: n(&bgv),
                has_background: has.clone(),
            };
            c.forward(&[lb.clone(), lb], &[1, 2, 1, 3, 4]).unwrap().0
        };
        let mut vars = store.vars();
        vars.extend([
            ("v".into(), v.clone()),
            ("u".into(), u.clone()),
            ("bg".into(), bgv.clone()),
        ]);
        if tau == 0.01 || tau == 1.0 {
            vars.retain(|(n, _)| !n.contains("logit_scale")); // clamped at the bound: no gradient, as in CLIP
        }
        check_fd(&vars, &f, 8, 1e-5);
    }
}

/// Without target sensitivity the contrastive term is the one the target-sensitive model
/// computes when every pixel is target (the image's mean embedding, no background), and it
/// differs from the target-sensitive term on the real masks. Only the pooling changes: the
/// segmentation losses are the same.
#[test]
fn without_target_sensitivity_each_report_meets_its_whole_image() {
    let ts = ModelConfig {
        preset: "cpu-tiny".into(),
        ..Default::default()
    };
    let agnostic = ModelConfig {
        target_sensitive: false,
        ..ts.clone()
    };
    let (_, m_ts, vocab) = build(ts, DType::F32, 7);
    let (_, m_ag, _) = build(agnostic, DType::F32, 7);
    let (x, groups) = batch(4, 3, 32, vocab, DType::F32, 8);
    let masks = x.masks.clone().unwrap();
    let losses = |m: &Tmca, pool: &Tensor| {
        let x = Inputs {
            masks: Some(pool.clone()),
            ..x.clone()
        };
        let out = m.forward(&x).unwrap();
        let l = m.loss(&out, &masks, &groups, None).unwrap();
        let v = |t: &Tensor| t.to_scalar::<f32>().unwrap();
        (v(&l.contrastive.unwrap()), v(&l.dice), v(&l.bce))
    };
    let ones = masks.ones_like().unwrap();
    let (ag, ag_dice, ag_bce) = losses(&m_ag, &masks);
    let (whole, ..) = losses(&m_ts, &ones);
    let (ts, ts_dice, ts_bce) = losses(&m_ts, &masks);
    assert!(
        (ag - whole).abs() <= 1e-6 * whole.abs().max(1.0),
        "{ag} vs {whole}"
    );
    assert!(
        (ag - ts).abs() > 1e-4,
        "the pooling changed nothing: {ag} vs {ts}"
    );
    assert_eq!((ag_dice, ag_bce), (ts_dice, ts_bce));
}
