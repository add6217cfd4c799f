//! The training-step and inference probes: median step time of the real training step
//! (as `tmca_trainer::train` takes it) on a synthetic batch, its phases, peak memory.

use super::inputs::{config, frozen, synthetic_batch, vocab_size};
use super::replay;
use super::result::{median, peak_rss_mb, ProbeResult};
use crate::cli::StepProbeArgs;
use anyhow::Context;
use candle_core::{DType, Device};
use std::collections::BTreeMap;
use std::time::Instant;
use tmca_data::loader::Batch;
use tmca_trainer::config::Config;
use tmca_trainer::model::Tmca;
use tmca_trainer::optim::{AdamW, Grads};
use tmca_trainer::params::ParamStore;
use tmca_trainer::train::batch::to_inputs;
use tmca_trainer::train::setup::build_model;

/// Milliseconds since `t`, restarting it.
fn lap(t: &mut Instant) -> f64 {
    let ms = t.elapsed().as_secs_f64() * 1e3;
    *t = Instant::now();
    ms
}

/// One optimiser step; returns its phases in ms.
fn step(
    model: &Tmca,
    params: &ParamStore,
    opt: &mut AdamW,
    b: &Batch,
    cfg: &Config,
) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let mut t = Instant::now();
    let x = to_inputs(b, &Device::Cpu)?;
    let inputs = lap(&mut t);
    let out = model.forward(&x)?;
    let masks = x.masks.as_ref().context("batch without masks")?;
    let losses = model.loss(&out, masks, &b.report_groups, None)?;
    let v = losses.total.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    anyhow::ensure!(v.is_finite(), "loss {v}");
    let forward = lap(&mut t);
    let g = losses.total.backward()?;
    let mut grads = Grads::from_backward(params, &g);
    let backward = lap(&mut t);
    grads.clip(cfg.optim.grad_clip)?;
    let clip = lap(&mut t);
    opt.step(&grads, cfg.optim.lr)?;
    let optimizer = lap(&mut t);
    drop((g, grads, losses, out, x));
    let release = lap(&mut t);
    Ok(vec![
        ("inputs", inputs),
        ("forward", forward),
        ("backward", backward),
        ("clip", clip),
        ("optimizer", optimizer),
        ("release", release),
    ])
}

fn result(a: &StepProbeArgs, mode: &str, steps: Vec<f64>) -> ProbeResult {
    ProbeResult {
        framework: "tmca".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        mode: mode.into(),
        size: a.size,
        batch: a.batch,
        threads: candle_core::utils::get_num_threads(),
        img_per_s: a.batch as f64 * 1e3 / median(&steps),
        step_ms: steps,
        peak_rss_mb: peak_rss_mb(),
        ..Default::default()
    }
}

/// Training steps, then (with `profile_reps`) the replay profile.
pub fn train(a: &StepProbeArgs) -> anyhow::Result<ProbeResult> {
    let cfg = config(a.size, a.batch)?;
    let params = ParamStore::new(cfg.run.seed);
    let model = build_model(&cfg, vocab_size(&cfg), &params, &Device::Cpu)?;
    let mut opt = AdamW::new(&params, cfg.optim.adamw())?;
    let batch = synthetic_batch(&cfg, 0);
    let (mut steps, mut phases) = (Vec::new(), BTreeMap::<String, Vec<f64>>::new());
    for i in 0..a.warmup + a.steps {
        let ph = step(&model, &params, &mut opt, &batch, &cfg)?;
        if i >= a.warmup {
            steps.push(ph.iter().map(|(_, ms)| ms).sum());
            for (k, ms) in ph {
                phases.entry(k.into()).or_default().push(ms);
            }
        }
    }
    let mut r = result(a, "train", steps);
    r.phases = phases.iter().map(|(k, v)| (k.clone(), median(v))).collect();
    if a.profile_reps > 0 {
        r.profile = replay::profile(&model, &batch, a.profile_reps)?;
    }
    Ok(r)
}

/// Forward passes without masks on the model without autograd.
pub fn infer(a: &StepProbeArgs) -> anyhow::Result<ProbeResult> {
    let cfg = config(a.size, a.batch)?;
    let params = ParamStore::new(cfg.run.seed);
    build_model(&cfg, vocab_size(&cfg), &params, &Device::Cpu)?;
    let model = frozen(&cfg, &params)?;
    let batch = synthetic_batch(&cfg, 0);
    let mut steps = Vec::new();
    for i in 0..a.warmup + a.steps {
        let t = Instant::now();
        let mut x = to_inputs(&batch, &Device::Cpu)?;
        x.masks = None;
        let logits = model.forward(&x)?.logits;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        drop(logits);
        if i >= a.warmup {
            steps.push(ms);
        }
    }
    Ok(result(a, "infer", steps))
}
