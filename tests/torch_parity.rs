//! PyTorch parity of the TMCA model: for every preset and every ablation switch, tmca builds a
//! seeded model, runs forward + loss + backward + 3 AdamW steps in f32 on a deterministic batch
//! and dumps everything; `tests/reference/parity.py` loads the dump into the PyTorch mirror
//! (`tests/reference/tmca_ref.py`) with `load_state_dict(strict=True)`, reruns the same steps and
//! compares outputs, loss terms, every parameter's gradient and every weight after the steps.
//! Needs `python3` with `torch` and `safetensors` (installed by `.ci/run`); TMCA_SKIP_PYTHON=1
//! skips it. TMCA_PARITY_CASES=name,name runs only those cases; TMCA_PARITY_KEEP=DIR keeps the
//! dumps in DIR.
//!
//! Dump format, one folder per case (see `tests/reference/parity.py`):
//! * `config.json`: case name, the model and text configs before (`model_raw`, `text_raw`) and
//!   after (`model`, `text`) `resolve`, `bert`, `adamw`, `schedule`, `grad_clip`, per-step `steps`
//!   (loss, grad_norm before clipping, lr), `decay` (names AdamW decays) and `schedule_table`.
//! * `weights.safetensors`: every parameter before the first step (tmca key names).
//! * `batch.safetensors`: `images`, `masks` (f32), `token_ids`, `attention`, `groups` (i64).
//! * `expected.safetensors`: first-step `logits`, `loss.{total,dice,bce,contrastive,aux}`,
//!   `loss.level.K`, `map.L` (enhancement maps), `con.K.{target,text,background,has_background}`
//!   (contrastive embeddings); `grad.S.NAME` (step S's gradient before clipping) and
//!   `after.NAME` (weights after the last step).

use candle_core::{DType, Device, Tensor};
use serde_json::json;
use std::collections::HashMap;
use std::error::Error;
use std::path::Path;
use std::time::Instant;
use tmca_data::sampler::mix;
use tmca_trainer::model::{BertConfig, Inputs, ModelConfig, TextConfig, Tmca};
use tmca_trainer::optim::{AdamW, AdamWConfig, Grads, Schedule};
use tmca_trainer::params::ParamStore;

type Res<T> = Result<T, Box<dyn Error>>;

const VOCAB: usize = 40;
const MAX_LEN: usize = 12;
const STEPS: usize = 3;

struct Case {
    name: &'static str,
    model: ModelConfig,
    batch: usize,
    /// Image height and width.
    size: (usize, usize),
    warmup: u64,
    total: u64,
    grad_clip: f64,
}

fn cases() -> Vec<Case> {
    let base = ModelConfig {
        preset: "cpu-tiny".into(),
        aux_weight: 0.5,
        ..Default::default()
    };
    let tiny = |name, model| Case {
        name,
        model,
        batch: 5,
        size: (64, 96),
        warmup: 2,
        total: 3,
        grad_clip: 1.0,
    };
    vec![
        tiny("cpu-tiny/tmca", base.clone()),
        tiny(
            "cpu-tiny/image-only",
            ModelConfig {
                text_guidance: false,
                ..base.clone()
            },
        ),
        tiny(
            "cpu-tiny/no-contrastive",
            ModelConfig {
                lambda: 0.0,
                ..base.clone()
            },
        ),
        tiny(
            "cpu-tiny/single-level",
            ModelConfig {
                contrastive_levels: vec![4],
                contrastive_weights: vec![1.0],
                ..base.clone()
            },
        ),
        tiny(
            "cpu-tiny/no-contrastive-levels",
            ModelConfig {
                contrastive_levels: vec![],
                contrastive_weights: vec![],
                ..base.clone()
            },
        ),
        tiny(
            "cpu-tiny/no-lte",
            ModelConfig {
                lte_levels: vec![],
                ..base.clone()
            },
        ),
        tiny(
            "cpu-tiny/no-cross-attention",
            ModelConfig {
                cross_attention: false,
                ..base.clone()
            },
        ),
        tiny(
            "cpu-tiny/no-background",
            ModelConfig {
                background_negatives: false,
                ..base.clone()
            },
        ),
        tiny(
            "cpu-tiny/no-tssd",
            ModelConfig {
                target_sensitive: false,
                ..base.clone()
            },
        ),
        // The composed candle ops (the fused kernels' reference) against the mirror too.
        tiny(
            "cpu-tiny/composed-ops",
            ModelConfig {
                ops: "composed".into(),
                ..base.clone()
            },
        ),
        tiny(
            "cpu-tiny/no-aux",
            ModelConfig {
                aux_weight: 0.0,
                ..base.clone()
            },
        ),
        Case {
            warmup: 1,
            grad_clip: 0.0,
            ..tiny(
                "cpu-tiny/mixed",
                ModelConfig {
                    in_channels: 1,
                    kernel_size: 5,
                    contrastive_levels: vec![3, 1],
                    contrastive_weights: vec![0.25, 1.0],
                    lambda: 0.2,
                    tau_init: 0.2,
                    lte_levels: vec![2, 4],
                    lte_tau: 0.05,
                    attn_heads: 4,
                    aux_weight: 1.5,
                    ..base.clone()
                },
            )
        },
        Case {
            name: "cpu-small/default",
            model: ModelConfig::default(),
            batch: 5,
            size: (64, 64),
            warmup: 1,
            total: 3,
            grad_clip: 1.0,
        },
        Case {
            name: "tiny/default",
            model: ModelConfig {
                preset: "tiny".into(),
                aux_weight: 0.5,
                ..Default::default()
            },
            batch: 4,
            size: (32, 32),
            warmup: 2,
            total: 3,
            grad_clip: 1.0,
        },
    ]
}

/// Uniform in [0, 1) from a counter-based generator.
fn unit(seed: u64, k: u64) -> f64 {
    (mix(seed ^ mix(k)) >> 11) as f64 / (1u64 << 53) as f64
}

fn name_seed(seed: u64, name: &str) -> u64 {
    name.bytes().fold(mix(seed), |h, b| mix(h ^ b as u64))
}

/// Moves every parameter off its initial value (constant LayerNorm weights, zero biases and
/// temperatures would hide mix-ups of weights and biases): w + (0.3·rms(w) + 0.05)·U(−1, 1).
fn perturb(store: &ParamStore, seed: u64) -> Res<()> {
    for (name, var) in store.vars() {
        let t = var.as_tensor();
        let rms = t.sqr()?.mean_all()?.sqrt()?.to_scalar::<f32>()? as f64;
        let s = name_seed(seed, &name);
        let noise: Vec<f32> = (0..t.elem_count() as u64)
            .map(|k| ((unit(s, k) * 2.0 - 1.0) * (0.3 * rms + 0.05)) as f32)
            .collect();
        let noise = Tensor::from_vec(noise, t.shape(), t.device())?;
        var.set(&(t + noise)?.detach())?;
    }
    Ok(())
}

/// Copies of every parameter, by name.
fn snapshot(store: &ParamStore, prefix: &str) -> Res<HashMap<String, Tensor>> {
    store
        .vars()
        .into_iter()
        .map(|(n, v)| Ok((format!("{prefix}{n}"), v.as_tensor().copy()?.detach())))
        .collect()
}

/// A deterministic batch: random images; a partial ellipse, an empty, a full, a partial
/// rectangle and a speckle mask; three reports of different lengths (one without padding)
/// given to samples 0,1,2,0,1, so samples 0/3 and 1/4 are multi-positive groups.
fn batch(b: usize, c: usize, (h, w): (usize, usize), seed: u64) -> Res<(Inputs, Vec<u64>)> {
    let dev = Device::Cpu;
    let images: Vec<f32> = (0..(b * c * h * w) as u64)
        .map(|k| (unit(seed, k) * 2.0 - 1.0) as f32)
        .collect();
    let mut masks = vec![0f32; b * h * w];
    for i in 0..b {
        for y in 0..h {
            for x in 0..w {
                let (fy, fx) = (y as f64 / h as f64, x as f64 / w as f64);
                let on = match i % 5 {
                    0 => ((fy - 0.4) / 0.3).powi(2) + ((fx - 0.55) / 0.25).powi(2) <= 1.0,
                    1 => false,
                    2 => true,
                    3 => y >= h / 8 + 3 && y < h / 2 + 5 && x + 2 >= w / 3 && x + 7 < w,
                    _ => unit(seed + 1, (y * w + x) as u64) < 0.35,
                };
                masks[(i * h + y) * w + x] = on as u8 as f32;
            }
        }
    }
    let lens = [7usize, MAX_LEN, 3];
    let report = |i: usize| i % 5 % 3;
    let mut ids = vec![0i64; b * MAX_LEN];
    let mut att = vec![0i64; b * MAX_LEN];
    for i in 0..b {
        let r = report(i);
        for j in 0..lens[r] {
            ids[i * MAX_LEN + j] =
                3 + (unit(seed + 2, (r * MAX_LEN + j) as u64) * (VOCAB - 3) as f64) as i64;
            att[i * MAX_LEN + j] = 1;
        }
    }
    let groups: Vec<u64> = (0..b).map(|i| report(i) as u64).collect();
    Ok((
        Inputs {
            images: Tensor::from_vec(images, (b, c, h, w), &dev)?,
            token_ids: Tensor::from_vec(ids, (b, MAX_LEN), &dev)?.to_dtype(DType::U32)?,
            attention: Tensor::from_vec(att, (b, MAX_LEN), &dev)?.to_dtype(DType::U32)?,
            masks: Some(Tensor::from_vec(masks, (b, 1, h, w), &dev)?),
            drop_path: None,
        },
        groups,
    ))
}

fn scalar(t: &Tensor) -> Res<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Runs one case and writes its dump into `dir`.
fn run_case(case: &Case, seed: u64, dir: &Path) -> Res<()> {
    std::fs::create_dir_all(dir)?;
    let dev = Device::Cpu;
    let raw = serde_json::to_value(&case.model)?;
    let mut cfg = case.model.clone();
    let mut text = TextConfig {
        max_len: MAX_LEN,
        ..Default::default()
    };
    let text_raw = serde_json::to_value(&text)?;
    cfg.resolve(&mut text)?;
    let bert = BertConfig::scratch(&text, VOCAB);
    let store = ParamStore::new(seed);
    let vb = store.var_builder(&dev);
    let model = Tmca::new(&cfg, &bert, vb.clone(), vb.pp("text"))?;
    perturb(&store, seed)?;
    let weights = snapshot(&store, "")?;
    let (x, groups) = batch(case.batch, cfg.in_channels, case.size, seed + 7)?;
    let masks = x.masks.clone().ok_or("batch without masks")?;

    let adamw = AdamWConfig::default();
    let mut opt = AdamW::new(&store, adamw.clone())?;
    let sched = Schedule {
        base_lr: 2e-3,
        warmup_steps: case.warmup,
        total_steps: case.total,
        min_ratio: 0.05,
    };
    let mut expected: HashMap<String, Tensor> = HashMap::new();
    let mut steps = Vec::new();
    for step in 0..STEPS {
        let out = model.forward(&x)?;
        let losses = model.loss(&out, &masks, &groups, None)?;
        let mut grads = Grads::from_backward(&store, &losses.total.backward()?);
        if step == 0 {
            expected.insert("logits".into(), out.logits.clone());
            let terms = [
                ("total", Some(&losses.total)),
                ("dice", Some(&losses.dice)),
                ("bce", Some(&losses.bce)),
                ("contrastive", losses.contrastive.as_ref()),
                ("aux", losses.aux.as_ref()),
            ];
            for (k, t) in terms.into_iter().filter_map(|(k, t)| t.map(|t| (k, t))) {
                expected.insert(format!("loss.{k}"), t.clone());
            }
            for (k, t) in losses.per_level.iter().enumerate() {
                expected.insert(format!("loss.level.{k}"), t.clone());
            }
            for (l, a) in &out.maps {
                expected.insert(format!("map.{l}"), a.clone());
            }
            for (k, lb) in out.contrastive.iter().enumerate() {
                expected.insert(format!("con.{k}.target"), lb.target.clone());
                expected.insert(format!("con.{k}.text"), lb.text.clone());
                expected.insert(format!("con.{k}.background"), lb.background.clone());
                expected.insert(format!("con.{k}.has_background"), lb.has_background.clone());
            }
        }
        for name in grads.names() {
            if let Some(g) = grads.get(name) {
                expected.insert(format!("grad.{step}.{name}"), g.clone());
            }
        }
        let grad_norm = grads.clip(case.grad_clip)?;
        let lr = sched.lr(step as u64);
        opt.step(&grads, lr)?;
        steps.push(json!({
            "loss": scalar(&losses.total)?,
            "grad_norm": grad_norm,
            "lr": lr,
        }));
    }
    expected.extend(snapshot(&store, "after.")?);

    let decay: Vec<String> = store
        .vars()
        .iter()
        .filter(|(n, v)| ParamStore::decays(n, v))
        .map(|(n, _)| n.clone())
        .collect();
    let table = [
        (1.0, 4u64, 14u64, 0.1),
        (2e-3, 0, 10, 0.05),
        (0.5, 3, 3, 0.0),
    ]
    .iter()
    .map(|&(base_lr, warmup_steps, total_steps, min_ratio)| {
        let s = Schedule {
            base_lr,
            warmup_steps,
            total_steps,
            min_ratio,
        };
        json!({
            "base_lr": base_lr, "warmup_steps": warmup_steps,
            "total_steps": total_steps, "min_ratio": min_ratio,
            "lrs": (0..20).map(|k| s.lr(k)).collect::<Vec<_>>(),
        })
    })
    .collect::<Vec<_>>();
    let config = json!({
        "case": case.name,
        "seed": seed,
        "model_raw": raw,
        "model": cfg,
        "text_raw": text_raw,
        "text": text,
        "bert": {
            "vocab_size": bert.vocab_size,
            "hidden_size": bert.hidden_size,
            "num_hidden_layers": bert.num_hidden_layers,
            "num_attention_heads": bert.num_attention_heads,
            "intermediate_size": bert.intermediate_size,
            "max_position_embeddings": bert.max_position_embeddings,
            "type_vocab_size": bert.type_vocab_size,
            "layer_norm_eps": bert.layer_norm_eps,
            "hidden_act": bert.hidden_act,
        },
        "adamw": adamw,
        "schedule": {
            "base_lr": sched.base_lr, "warmup_steps": sched.warmup_steps,
            "total_steps": sched.total_steps, "min_ratio": sched.min_ratio,
        },
        "grad_clip": case.grad_clip,
        "steps": steps,
        "decay": decay,
        "schedule_table": table,
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    let i64s = |t: &Tensor| t.to_dtype(DType::I64);
    let batch: HashMap<String, Tensor> = [
        ("images".to_string(), x.images.clone()),
        ("masks".to_string(), masks),
        ("token_ids".to_string(), i64s(&x.token_ids)?),
        ("attention".to_string(), i64s(&x.attention)?),
        (
            "groups".to_string(),
            Tensor::new(groups.iter().map(|&g| g as i64).collect::<Vec<_>>(), &dev)?,
        ),
    ]
    .into_iter()
    .collect();
    candle_core::safetensors::save(&weights, dir.join("weights.safetensors"))?;
    candle_core::safetensors::save(&batch, dir.join("batch.safetensors"))?;
    candle_core::safetensors::save(&expected, dir.join("expected.safetensors"))?;
    Ok(())
}

#[test]
fn pytorch_mirror_matches_outputs_gradients_and_optimiser_steps() -> Res<()> {
    if std::env::var_os("TMCA_SKIP_PYTHON").is_some() {
        eprintln!("TMCA_SKIP_PYTHON set: skipping the PyTorch parity check");
        return Ok(());
    }
    let only: Option<Vec<String>> = std::env::var("TMCA_PARITY_CASES")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    let tmp = tempfile::tempdir()?;
    let root = match std::env::var_os("TMCA_PARITY_KEEP") {
        Some(d) => std::path::PathBuf::from(d),
        None => tmp.path().to_path_buf(),
    };
    let mut ran = 0;
    for (i, case) in cases().iter().enumerate() {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|n| n == case.name))
        {
            continue;
        }
        let t = Instant::now();
        let dir = root.join(case.name.replace('/', "__"));
        run_case(case, 100 + i as u64, &dir).map_err(|e| format!("{}: {e}", case.name))?;
        eprintln!("{}: dumped in {:.1}s", case.name, t.elapsed().as_secs_f64());
        ran += 1;
    }
    assert!(ran > 0, "TMCA_PARITY_CASES matched no case");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference/parity.py");
    let t = Instant::now();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&root)
        .output()
        .map_err(|e| format!("python3 does not run: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        eprintln!(
            "{stdout}{stderr}parity.py took {:.1}s",
            t.elapsed().as_secs_f64()
        );
    }
    assert!(
        out.status.success(),
        "the PyTorch mirror disagrees with tmca (needs python3 with torch and safetensors):\n{stdout}\n{stderr}"
    );
    Ok(())
}
