//! The profile: records every building-block call of one real forward + loss
//! ([`tmca_trainer::profile`]), then replays each call alone — forward, and forward + backward
//! of `Σ (y·g)` with fixed random `g` — and sums the medians per part. The backward time of a
//! call is (forward + backward) − forward − the cost of `Σ (y·g)` and its own backward,
//! measured on detached copies of the outputs.

use super::result::{median, PartTime};
use anyhow::Context;
use candle_core::{Device, Result, Tensor, Var};
use std::collections::BTreeMap;
use std::time::Instant;
use tmca_data::loader::Batch;
use tmca_trainer::model::Tmca;
use tmca_trainer::profile::{self, Call, Part};
use tmca_trainer::train::batch::to_inputs;

/// Median ms of `reps` runs of `f`, which returns the time it measured.
fn median_ms(reps: usize, mut f: impl FnMut() -> Result<f64>) -> Result<f64> {
    let v = (0..reps.max(1)).map(|_| f()).collect::<Result<Vec<_>>>()?;
    Ok(median(&v))
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Σ_i sum(y_i · g_i).
fn weighted(ys: &[Tensor], gs: &[Tensor]) -> Result<Tensor> {
    let mut total = Tensor::zeros((), ys[0].dtype(), ys[0].device())?;
    for (y, g) in ys.iter().zip(gs) {
        total = (total + (y * g)?.sum_all()?)?;
    }
    Ok(total)
}

/// (forward ms, backward ms) of one call replayed alone.
fn replay(call: &Call, reps: usize) -> Result<(f64, f64)> {
    // Inputs the real backward reached become variables again.
    let inputs = call
        .inputs
        .iter()
        .zip(&call.tracked)
        .map(|(t, &tracked)| {
            if tracked {
                Ok(Var::from_tensor(t)?.as_tensor().clone())
            } else {
                Ok(t.clone())
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let run = || (call.replay)(&inputs);
    let first = run()?;
    if first.is_empty() {
        return Ok((0.0, 0.0));
    }
    let gs = first
        .iter()
        .map(|y| Tensor::randn(0f32, 1.0, y.shape(), y.device())?.to_dtype(y.dtype()))
        .collect::<Result<Vec<_>>>()?;
    weighted(&run()?, &gs)?.backward()?; // warm-up
    let forward = median_ms(reps, || {
        let t = Instant::now();
        let ys = run()?;
        let ms = ms_since(t);
        drop(ys);
        Ok(ms)
    })?;
    let full = median_ms(reps, || {
        let t = Instant::now();
        let g = weighted(&run()?, &gs)?.backward()?;
        let ms = ms_since(t);
        drop(g);
        Ok(ms)
    })?;
    let detached = first
        .iter()
        .map(|y| Ok(Var::from_tensor(&y.detach())?.as_tensor().clone()))
        .collect::<Result<Vec<_>>>()?;
    let glue = median_ms(reps, || {
        let t = Instant::now();
        let g = weighted(&detached, &gs)?.backward()?;
        let ms = ms_since(t);
        drop(g);
        Ok(ms)
    })?;
    Ok((forward, (full - forward - glue).max(0.0)))
}

/// Records one forward + loss of `model` on `batch` and replays every call `reps` times.
pub fn profile(model: &Tmca, batch: &Batch, reps: usize) -> anyhow::Result<Vec<PartTime>> {
    let x = to_inputs(batch, &Device::Cpu)?;
    let masks = x.masks.as_ref().context("batch without masks")?;
    profile::start();
    let recorded = model
        .forward(&x)
        .and_then(|out| model.loss(&out, masks, &batch.report_groups, None));
    let calls = profile::finish();
    drop(recorded?);
    let mut parts: BTreeMap<Part, PartTime> = BTreeMap::new();
    for call in &calls {
        let (f, b) = replay(call, reps)?;
        let shapes: Vec<_> = call.inputs.iter().map(|t| t.dims().to_vec()).collect();
        tracing::debug!(
            part = call.part.name(),
            ?shapes,
            forward_ms = f,
            backward_ms = b,
            "replayed call"
        );
        let p = parts.entry(call.part).or_insert_with(|| PartTime {
            part: call.part.name().into(),
            ..Default::default()
        });
        p.calls += 1;
        p.forward_ms += f;
        p.backward_ms += b;
    }
    Ok(Part::ALL.iter().filter_map(|p| parts.remove(p)).collect())
}
