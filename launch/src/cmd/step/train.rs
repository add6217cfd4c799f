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

/// Milliseconds since `t` once `device` has finished its queued work, restarting `t`.
fn lap(t: &mut Instant, device: &Device) -> anyhow::Result<f64> {
    device.synchronize()?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    *t = Instant::now();
    Ok(ms)
}

/// The probe's config and device: `--preset`, `--device`, `--no-tf32` applied.
fn setup(a: &StepProbeArgs) -> anyhow::Result<(Config, Device)> {
    let mut cfg = config(a.size, a.batch, &a.preset)?;
    cfg.run.tf32 = !a.no_tf32;
    let device = tmca_worker::bind_device(&a.device, 0)?;
    cfg.run.apply_precision(&device);
    Ok((cfg, device))
}

/// One optimiser step; returns its phases in ms.
fn step(
    model: &Tmca,
    params: &ParamStore,
    opt: &mut AdamW,
    b: &Batch,
    cfg: &Config,
    device: &Device,
) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let mut t = Instant::now();
    let x = to_inputs(b, device)?;
    let inputs = lap(&mut t, device)?;
    let out = model.forward(&x)?;
    let masks = x.masks.as_ref().context("batch without masks")?;
    let losses = model.loss(&out, masks, &b.report_groups, None)?;
    let v = losses.total.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    anyhow::ensure!(v.is_finite(), "loss {v}");
    let forward = lap(&mut t, device)?;
    let g = losses.total.backward()?;
    let mut grads = Grads::from_backward(params, &g);
    let backward = lap(&mut t, device)?;
    grads.clip(cfg.optim.grad_clip)?;
    let clip = lap(&mut t, device)?;
    opt.step(&grads, cfg.optim.lr)?;
    let optimizer = lap(&mut t, device)?;
    drop((g, grads, losses, out, x));
    let release = lap(&mut t, device)?;
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
        device: a.device.clone(),
        preset: a.preset.clone(),
        tf32: (a.device == "cuda").then_some(!a.no_tf32),
        ..Default::default()
    }
}

/// Training steps, then (with `profile_reps`) the replay profile.
pub fn train(a: &StepProbeArgs) -> anyhow::Result<ProbeResult> {
    let (cfg, device) = setup(a)?;
    let params = ParamStore::new(cfg.run.seed);
    let model = build_model(&cfg, vocab_size(&cfg), &params, &device, false)?;
    let mut opt = AdamW::new(&params, cfg.optim.adamw())?;
    let batch = synthetic_batch(&cfg, 0);
    let (mut steps, mut phases) = (Vec::new(), BTreeMap::<String, Vec<f64>>::new());
    for i in 0..a.warmup + a.steps {
        let ph = step(&model, &params, &mut opt, &batch, &cfg, &device)?;
        if i >= a.warmup {
            steps.push(ph.iter().map(|(_, ms)| ms).sum());
            for (k, ms) in ph {
                phases.entry(k.into()).or_default().push(ms);
            }
        }
    }
    let mut r = result(a, "train", steps);
    r.phases = phases.iter().map(|(k, v)| (k.clone(), median(v))).collect();
    if a.profile_reps > 0 && device.is_cpu() {
        r.profile = replay::profile(&model, &batch, a.profile_reps)?;
    }
    Ok(r)
}

/// Forward passes without masks on the model without autograd.
pub fn infer(a: &StepProbeArgs) -> anyhow::Result<ProbeResult> {
    let (cfg, device) = setup(a)?;
    let params = ParamStore::new(cfg.run.seed);
    build_model(&cfg, vocab_size(&cfg), &params, &device, false)?;
    let model = frozen(&cfg, &params, &device)?;
    let batch = synthetic_batch(&cfg, 0);
    let mut steps = Vec::new();
    for i in 0..a.warmup + a.steps {
        let t = Instant::now();
        let mut x = to_inputs(&batch, &device)?;
        x.masks = None;
        let logits = model.forward(&x)?.logits;
        device.synchronize()?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        drop(logits);
        if i >= a.warmup {
            steps.push(ms);
        }
    }
    Ok(result(a, "infer", steps))
}
