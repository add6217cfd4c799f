//! `tmca eval RUN RUN…`: the ensemble of several runs — the mean of their probabilities, each
//! run with its own tokenizer — e.g. the fold models of a cross-validation on the test split.

use crate::cli::{EvalArgs, UsageError};
use anyhow::Context;
use candle_core::Device;
use std::path::PathBuf;
use tmca_data::Split;
use tmca_trainer::inference::{Ensemble, Trained};
use tmca_trainer::metrics::ThresholdSweep;
use tmca_trainer::train::eval::table;
use tmca_trainer::train::setup::store_names;

/// Loads the run directories `runs` at `checkpoint` as one ensemble (one run: itself); runs
/// that take other inputs are refused, naming them. The ensemble's foreground threshold (its
/// first member's `train.threshold`) is `threshold` when given, else the members' own, which
/// must then agree.
/// The threshold predict and export apply when none is given: for one run, the one its
/// newest `tmca eval --split val --sweep` of the same checkpoint and TTA chose (as `tmca runs`
/// reports test results at it), said on stderr; else `None` (the run's `train.threshold`).
pub fn chosen_on_val(
    runs: &[std::path::PathBuf],
    checkpoint: &str,
    given: Option<f32>,
    tta: bool,
) -> anyhow::Result<Option<f32>> {
    let ([run], None) = (runs, given) else {
        return Ok(given);
    };
    let chosen = tmca_trainer::runs::val_chosen_threshold(run, checkpoint, tta)?;
    if let Some(t) = chosen {
        eprintln!(
            "threshold {t} (chosen on val by `tmca eval {} --split val --sweep`; --threshold \
             overrides it)",
            run.display()
        );
    }
    Ok(chosen)
}

pub fn load(
    runs: &[PathBuf],
    checkpoint: &str,
    device: &Device,
    threshold: Option<f32>,
) -> anyhow::Result<Ensemble> {
    let members = runs
        .iter()
        .map(|r| Trained::load(r, checkpoint, device))
        .collect::<Result<Vec<_>, _>>()?;
    let own: Vec<f32> = members.iter().map(|t| t.cfg.train.threshold).collect();
    if threshold.is_none() && own.iter().any(|&t| t != own[0]) {
        let list: Vec<String> = runs
            .iter()
            .zip(&own)
            .map(|(r, t)| format!("{} {t}", r.display()))
            .collect();
        anyhow::bail!(UsageError(format!(
            "the runs have different train.threshold ({}): give the ensemble's with --threshold P \
             (choose it on the validation split with `tmca eval RUN… --split val --sweep`)",
            list.join(", ")
        )));
    }
    let mut ensemble = Ensemble::new(members)?;
    if let Some(t) = threshold {
        ensemble.first_mut().cfg.train.threshold = t;
    }
    Ok(ensemble)
}

/// Checks that `members` can be averaged on `a`'s split and stores; the error names the run.
fn check_members(a: &EvalArgs, members: &[Trained]) -> anyhow::Result<()> {
    let first = &members[0];
    for (run, t) in a.runs.iter().zip(members).skip(1) {
        if a.store.is_empty() && store_names(&t.cfg) != store_names(&first.cfg) {
            anyhow::bail!(UsageError(format!(
                "{} trained on other datasets ({}) than {} ({}); name the stores to evaluate with --store",
                run.display(),
                store_names(&t.cfg).join(", "),
                a.runs[0].display(),
                store_names(&first.cfg).join(", ")
            )));
        }
    }
    if a.split != Split::Test {
        if let Some((run, _)) = a
            .runs
            .iter()
            .zip(members)
            .find(|(_, t)| t.cfg.data.cv().is_some())
        {
            anyhow::bail!(UsageError(format!(
                "{} is a cross-validation run: the other members trained on its validation \
                 images, so an ensemble is scored on --split test only",
                run.display()
            )));
        }
    }
    Ok(())
}

/// Evaluates the ensemble of `a.runs` and prints the table; `--json` and `--per-image` as for
/// one run (nothing is recorded in a run directory: the ensemble is no one run's).
pub fn eval(a: &EvalArgs) -> anyhow::Result<()> {
    super::util::output_parent(a.json.as_deref())?;
    super::util::output_parent(a.per_image.as_deref())?;
    let device = tmca_worker::bind_device("auto", 0)?;
    let models = load(&a.runs, &a.checkpoint, &device, a.threshold)?;
    check_members(a, models.members())?;
    let mut rows = Vec::new();
    let per_image = a.per_image.as_ref().map(|_| &mut rows);
    let mut sweep = a
        .sweep
        .then(|| ThresholdSweep::grid().with_min_area(a.min_area.unwrap_or(0.0)));
    let extras = super::train::EvalExtras {
        tta: a.tta,
        min_area: a.min_area.unwrap_or(0.0),
        per_image,
        sweep: sweep.as_mut(),
    };
    let (first, others) = models.members().split_at(1);
    let first = &first[0];
    let evaluated = super::train::eval_run(first, others, &a.store, a.split, extras)?;
    let results = &evaluated.results;
    println!(
        "ensemble of {} runs ({} checkpoints), split {}{}:\n{}",
        models.members().len(),
        a.checkpoint,
        a.split,
        if a.tta { ", with flip TTA" } else { "" },
        table(results)
    );
    let mut record = super::train::eval_record(first, &a.checkpoint, results, a.tta);
    record.stores = evaluated.stores;
    record.min_area = a.min_area;
    record.ensemble = Some(a.runs.iter().map(|r| r.display().to_string()).collect());
    record.sweep = sweep.as_ref().map(ThresholdSweep::rows);
    if let Some(s) = &sweep {
        super::train::print_sweep(s, a.split);
    }
    if let Some(p) = &a.per_image {
        let by = tmca_trainer::train::per_image::MadeBy {
            model: a
                .runs
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(" + "),
            protocol: record.protocol_with(&a.checkpoint),
        };
        tmca_trainer::train::per_image::write_csv(p, &rows, &by)?;
        eprintln!("{} per-image rows in {}", rows.len(), p.display());
    }
    match &a.json {
        Some(p) => {
            let text = serde_json::to_string_pretty(&record)?;
            std::fs::write(p, text + "\n").with_context(|| format!("writing {}", p.display()))?;
        }
        None => eprintln!("(an ensemble is recorded only with --json FILE)"),
    }
    Ok(())
}
