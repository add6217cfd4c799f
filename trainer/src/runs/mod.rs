//! What run directories hold, summarised (`tmca runs`): found under given folders, each read
//! from its `config.toml`, checkpoint manifests, `validation.jsonl` and `eval/*.json` only
//! (no weights are loaded).

use crate::checkpoint::{Checkpointer, Manifest};
use crate::config::Config;
use crate::train::results::{read_eval_records, read_validation_log, ResultRecord};
use crate::{Result, TrainError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tmca_data::convert::table::csv_field;

mod repeats;
pub use repeats::{repeat_groups, repeats_table, RepeatGroup, Spread, REPEAT_FIELDS};

/// How deep below a given folder run directories are looked for.
pub const MAX_DEPTH: usize = 4;

/// One run directory.
#[derive(Debug, Clone, Serialize)]
pub struct RunOverview {
    pub dir: PathBuf,
    /// `model.preset`, and `+bert` when the text encoder is a pretrained BERT.
    pub model: String,
    /// Image size and the datasets validated on (from the latest validation).
    pub image_size: usize,
    pub datasets: Vec<String>,
    /// Steps of the newest step checkpoint.
    pub steps: Option<u64>,
    /// Validations logged, and the best validation value of the run's `train.select` (by
    /// default the per-image mean Dice) with its step (`best/`).
    pub validations: usize,
    pub best_val: Option<f64>,
    pub select: crate::config::Select,
    pub best_step: Option<u64>,
    /// The test evaluation to report ([`reported_test`]; its [`ResultRecord::protocol`] says
    /// how it was made).
    pub test: Option<ResultRecord>,
    /// `test`'s threshold is the one a val sweep chose.
    pub test_chosen_on_val: bool,
    /// Every test evaluation of the run, newest first (repeats compare like with like).
    #[serde(skip)]
    pub tests: Vec<ResultRecord>,
    /// Evaluations of an earlier `best` checkpoint (training went on since), left out.
    pub stale_evals: usize,
    /// The config fields (`key=value`) in which this run differs from others listed with it
    /// ([`mark_differences`]): what a sweep varied.
    pub differs: Vec<String>,
    /// The resolved config, flattened to dotted keys.
    #[serde(skip)]
    pub config: BTreeMap<String, String>,
}

/// The resolved config as dotted keys and TOML values (`model.lambda` → `0.1`).
fn flatten(cfg: &Config) -> BTreeMap<String, String> {
    cfg.fields()
        .into_iter()
        .map(|(k, v)| (k, Config::value_text(&v)))
        .collect()
}

/// Sets each run's [`RunOverview::differs`]: the config fields whose values are not the same
/// in all `runs` (`run.dir` aside), with this run's value (`-` where it has none).
pub fn mark_differences(runs: &mut [RunOverview]) {
    let keys: std::collections::BTreeSet<&String> =
        runs.iter().flat_map(|r| r.config.keys()).collect();
    let varying: Vec<String> = keys
        .into_iter()
        .filter(|k| k.as_str() != "run.dir")
        .filter(|k| {
            let first = runs.first().and_then(|r| r.config.get(*k));
            runs.iter().any(|r| r.config.get(*k) != first)
        })
        .cloned()
        .collect();
    for r in runs.iter_mut() {
        r.differs = varying
            .iter()
            .map(|k| format!("{k}={}", r.config.get(k).map(String::as_str).unwrap_or("-")))
            .collect();
    }
}

/// Run directories at or below each of `roots` (a folder holding `config.toml`), by path.
pub fn find_runs(roots: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for root in roots {
        if !root.is_dir() {
            return Err(TrainError::file(root, "no such folder"));
        }
        walk(root, 0, &mut out);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if dir.join("config.toml").is_file() {
        out.push(dir.to_path_buf());
        return;
    }
    if depth >= MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        // A run's own folders (data stores, checkpoints) hold no runs.
        if p.is_dir() && p.extension().is_none_or(|x| x != "zarr") {
            walk(&p, depth + 1, out);
        }
    }
}

impl RunOverview {
    /// Reads the summary of the run directory `dir`.
    pub fn read(dir: &Path) -> Result<Self> {
        let cfg = Config::load(&dir.join("config.toml"))?;
        let ckpt = Checkpointer::new(dir, 0);
        let newest = ckpt
            .steps()
            .iter()
            .rev()
            .find_map(|p| Manifest::read(p).ok());
        let steps = newest.as_ref().map(|m| m.step);
        let best = Manifest::read(&ckpt.dir().join("best")).ok();
        let log = read_validation_log(dir)?;
        let (mut tests, mut vals) = evaluations(dir)?;
        // An evaluation of a `best` the run has since replaced (training went on) is not the
        // run's result any more.
        let best_step = best.as_ref().map(|m| m.step);
        let stale = |r: &ResultRecord| {
            r.checkpoint.as_deref() == Some("best") && best_step.is_some_and(|s| s != r.step)
        };
        let before = tests.len() + vals.len();
        tests.retain(|r| !stale(r));
        vals.retain(|r| !stale(r));
        let stale_evals = before - tests.len() - vals.len();
        if stale_evals > 0 {
            tracing::info!(
                "{}: {stale_evals} evaluation(s) of an earlier best checkpoint left out (best is now step {}): evaluate it again",
                dir.display(),
                best_step.unwrap_or(0)
            );
        }
        let reported = reported_test(&tests, &vals, cfg.train.threshold);
        let test_chosen_on_val = reported.is_some_and(|(_, chosen)| chosen);
        let test = reported.map(|(r, _)| r.clone());
        let datasets = log
            .last()
            .or(test.as_ref())
            .map(|r| r.datasets.iter().map(|d| d.dataset.clone()).collect())
            .unwrap_or_else(|| crate::train::setup::store_names(&cfg));
        let mut model = cfg.model.preset.clone();
        if cfg.text.encoder == "bert" {
            model.push_str("+bert");
        }
        if !cfg.model.text_guidance {
            model.push_str(" (image only)");
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            model,
            image_size: cfg.data.image_size,
            datasets,
            steps,
            validations: log.len(),
            best_val: best.as_ref().and_then(|m| m.best_val),
            select: cfg.train.select,
            best_step: best.map(|m| m.step),
            test,
            test_chosen_on_val,
            tests,
            stale_evals,
            differs: Vec::new(),
            config: with_global_batch(flatten(&cfg), newest.as_ref()),
        })
    }
}

/// The run's test and val evaluations (`eval/*.json`), each newest first.
fn evaluations(dir: &Path) -> Result<(Vec<ResultRecord>, Vec<ResultRecord>)> {
    let mut all: Vec<(Option<std::time::SystemTime>, ResultRecord)> = read_eval_records(dir)?
        .into_iter()
        .map(|(p, r)| (std::fs::metadata(&p).and_then(|m| m.modified()).ok(), r))
        .collect();
    all.sort_by_key(|t| std::cmp::Reverse(t.0));
    let (mut tests, mut vals) = (Vec::new(), Vec::new());
    for (_, r) in all {
        let split = r.datasets.first().map(|d| d.split);
        if r.datasets.iter().any(|d| Some(d.split) != split) {
            continue;
        }
        match split {
            Some(tmca_data::Split::Test) => tests.push(r),
            Some(tmca_data::Split::Val) => vals.push(r),
            _ => {}
        }
    }
    Ok((tests, vals))
}

/// The test evaluation a results table reports (`tests` and `vals` newest first), and
/// whether its threshold was chosen on val: at the threshold the newest val sweep chose
/// (`tmca eval --split val --sweep`, the README's protocol), same checkpoint, TTA and
/// min-area; else the newest at the run's own threshold (`threshold`), a plain one (the best
/// checkpoint, no TTA, no small components removed) before others; else the newest of all
/// (its protocol, shown beside it, says how it was made).
pub fn reported_test<'a>(
    tests: &'a [ResultRecord],
    vals: &[ResultRecord],
    threshold: f32,
) -> Option<(&'a ResultRecord, bool)> {
    let close = |a: Option<f32>, b: f32| a.is_some_and(|a| (a - b).abs() < 1e-4);
    let area = |r: &ResultRecord| r.min_area.filter(|a| *a > 0.0);
    let chosen = vals.iter().find_map(|v| Some((v, chosen_threshold(v)?)));
    if let Some((v, t)) = chosen {
        let same = tests.iter().find(|r| {
            r.checkpoint == v.checkpoint
                && r.tta == v.tta
                && area(r) == area(v)
                && close(r.threshold, t)
        });
        if let Some(r) = same {
            return Some((r, true));
        }
    }
    // At the run's threshold: plain (best, no TTA, no small components removed) before any
    // other protocol, whatever was evaluated last.
    let at_run = |r: &&ResultRecord| r.threshold.is_none_or(|t| close(Some(t), threshold));
    let plain = |r: &&ResultRecord| {
        r.checkpoint.as_deref().is_none_or(|c| c == "best") && !r.tta && area(r).is_none()
    };
    tests
        .iter()
        .find(|r| at_run(r) && plain(r))
        .or_else(|| tests.iter().find(at_run))
        .or(tests.first())
        .map(|r| (r, false))
}

/// How a reported test evaluation was made, for a table (`best t=0.45 (chosen on val)`).
pub fn tested_label(r: &ResultRecord, chosen_on_val: bool) -> String {
    match chosen_on_val {
        true => format!("{} (chosen on val)", r.protocol()),
        false => r.protocol(),
    }
}

/// The protocol repeats must share to be averaged: a threshold chosen on val is one protocol
/// whatever value each run's val chose.
pub(crate) fn repeat_protocol(r: &ResultRecord, chosen_on_val: bool) -> String {
    if !chosen_on_val {
        return r.protocol();
    }
    let mut any = r.clone();
    any.threshold = None;
    format!("{} t=chosen on val", any.protocol())
}

/// The threshold the newest `tmca eval --split val --sweep` of run `dir`'s checkpoint
/// `checkpoint` (as evaluated: `best` or a step name) chose, with the same TTA and no small
/// components removed — the one `tmca runs` reports test results at, and predict and export
/// apply by default. Sweeps of an earlier `best` (training went on since) do not count.
pub fn val_chosen_threshold(dir: &Path, checkpoint: &str, tta: bool) -> Result<Option<f32>> {
    let (_, vals) = evaluations(dir)?;
    let best_step = Manifest::read(&Checkpointer::new(dir, 0).dir().join("best"))
        .ok()
        .map(|m| m.step);
    Ok(vals
        .iter()
        .filter(|v| v.checkpoint.as_deref() == Some(checkpoint) && v.tta == tta)
        .filter(|v| v.min_area.is_none_or(|a| a <= 0.0))
        .filter(|v| checkpoint != "best" || best_step.is_none_or(|s| s == v.step))
        .find_map(chosen_threshold))
}

/// The best threshold of a record's sweep by mean per-image Dice (the lowest of equals, as
/// `tmca eval --sweep` prints it).
pub fn chosen_threshold(r: &ResultRecord) -> Option<f32> {
    let rows = r.sweep.as_ref()?.iter();
    crate::metrics::best_threshold(rows.map(|row| (row.threshold, row.mean_dice_per_image)))
        .map(|(t, _)| t)
}

/// The run's samples per optimiser step over all ranks (`ranks × data.batch_size ×
/// optim.accumulate`, from its checkpoints), as the pseudo-field `train.global_batch`: runs on
/// other numbers of ranks are other settings, not repeats of one.
fn with_global_batch(
    mut config: BTreeMap<String, String>,
    m: Option<&Manifest>,
) -> BTreeMap<String, String> {
    if let Some(g) = m.and_then(|m| m.global_batch) {
        let acc = m.and_then(|m| m.accumulate).unwrap_or(1);
        config.insert("train.global_batch".into(), (g * acc).to_string());
    }
    config
}

fn num(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map(|x| format!("{x:.4}"))
        .unwrap_or_else(|| "–".into())
}

/// A best validation value: Dice and IoU to 4 places, HD95 to 2; in Markdown (`annotate`)
/// followed by the metric unless it is the default per-image Dice.
pub(crate) fn best_cell(
    v: Option<f64>,
    select: crate::config::Select,
    annotate: bool,
    fmt: impl Fn(f64, usize) -> String,
) -> String {
    let digits = if select.lower_is_better() { 2 } else { 4 };
    match v.filter(|x| x.is_finite()) {
        None => "–".into(),
        Some(x) if annotate && select != crate::config::Select::default() => {
            format!("{} ({})", fmt(x, digits), select.name())
        }
        Some(x) => fmt(x, digits),
    }
}

/// The columns of [`table`] and [`csv`].
const HEADER: [&str; 12] = [
    "run",
    "model",
    "size",
    "datasets",
    "steps",
    "best val (train.select)",
    "at step",
    "test Dice (per-image, mean over datasets)",
    "test Dice (pooled, mean over datasets)",
    "test HD95 px",
    "tested",
    "config differences",
];

fn row(r: &RunOverview, annotate: bool) -> [String; 12] {
    let opt = |v: Option<u64>| v.map(|s| s.to_string()).unwrap_or_else(|| "–".into());
    let t = r.test.as_ref();
    [
        r.dir.display().to_string(),
        r.model.clone(),
        r.image_size.to_string(),
        r.datasets.join(" "),
        opt(r.steps),
        best_cell(r.best_val, r.select, annotate, |x, d| format!("{x:.d$}")),
        opt(r.best_step),
        num(t.map(|t| t.mean_dice_per_image)),
        num(t.map(|t| t.mean_dice_pooled)),
        // Mean over datasets; results from before the distances have none (NaN → "–").
        t.map(ResultRecord::mean_hd95_per_image)
            .filter(|x| x.is_finite())
            .map_or_else(|| "–".into(), |x| format!("{x:.2}")),
        t.map(|t| format!("{} @ {}", tested_label(t, r.test_chosen_on_val), t.step))
            .unwrap_or_else(|| "–".into()),
        r.differs.join(" "),
    ]
}

/// A Markdown table, one row per run (Dice values are means over the run's datasets).
pub fn table(runs: &[RunOverview]) -> String {
    let mut s = format!(
        "| {} |\n|{}\n",
        HEADER.join(" | "),
        "---|".repeat(HEADER.len())
    );
    for r in runs {
        s.push_str(&format!("| {} |\n", row(r, true).join(" | ")));
    }
    s
}

/// The same as CSV (RFC 4180 quoting; a missing value is an empty field).
pub fn csv(runs: &[RunOverview]) -> String {
    let mut s = HEADER.map(csv_field).join(",") + "\n";
    for r in runs {
        let fields = row(r, false).map(|f| {
            if f == "–" {
                String::new()
            } else {
                csv_field(&f)
            }
        });
        s.push_str(&(fields.join(",") + "\n"));
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn run(dir: &str, seed: u64, lambda: f64) -> RunOverview {
        let mut cfg = Config::default_config().unwrap();
        cfg.run.dir = dir.into();
        cfg.run.seed = seed;
        cfg.model.lambda = lambda;
        RunOverview {
            dir: dir.into(),
            model: "cpu-small".into(),
            image_size: 64,
            datasets: vec![],
            steps: None,
            validations: 0,
            best_val: None,
            select: Default::default(),
            best_step: None,
            test: None,
            test_chosen_on_val: false,
            tests: vec![],
            stale_evals: 0,
            differs: vec![],
            config: flatten(&cfg),
        }
    }

    /// The reported test evaluation is the one at the threshold a val sweep chose, else at the
    /// run's own threshold, else (nothing else there) the newest.
    #[test]
    fn the_reported_test_is_at_the_threshold_chosen_on_val() {
        let record = |split: tmca_data::Split, t: f32, tta: bool| {
            let mut r = ResultRecord::new(
                1,
                &[crate::train::eval::EvalResult {
                    dataset: "a".into(),
                    split,
                    summary: crate::metrics::SegMetrics::default().summary(),
                }],
            );
            (r.checkpoint, r.threshold, r.tta) = (Some("best".into()), Some(t), tta);
            r
        };
        use tmca_data::Split::{Test, Val};
        // Newest first: a test at 0.1 (tried on test), one at 0.3, a TTA one, one at 0.5.
        let tests = vec![
            record(Test, 0.1, false),
            record(Test, 0.3, false),
            record(Test, 0.3, true),
            record(Test, 0.5, false),
        ];
        let (r, chosen) = reported_test(&tests, &[], 0.5).unwrap();
        assert_eq!((r.threshold, chosen), (Some(0.5), false));
        // At the run's threshold a plain evaluation comes before a newer TTA or min-area one.
        let mut newer = vec![record(Test, 0.5, true), record(Test, 0.5, false)];
        newer[1].min_area = Some(0.001);
        newer.extend(tests.iter().cloned());
        let (r, _) = reported_test(&newer, &[], 0.5).unwrap();
        assert_eq!((r.tta, r.min_area), (false, None));
        let (r, _) = reported_test(&newer[..2], &[], 0.5).unwrap();
        assert!(r.tta, "no plain one: the newest at the run's threshold");
        let mut val = record(Val, 0.5, false);
        val.sweep = Some(
            [(0.1, 0.6), (0.3, 0.8), (0.5, 0.8)]
                .map(|(t, d)| crate::metrics::SweepRow {
                    threshold: t,
                    mean_dice_per_image: d,
                    mean_hd95_per_image: f64::NAN,
                    datasets: vec![],
                })
                .to_vec(),
        );
        assert_eq!(chosen_threshold(&val), Some(0.3));
        let (r, chosen) = reported_test(&tests, std::slice::from_ref(&val), 0.5).unwrap();
        assert_eq!((r.threshold, r.tta, chosen), (Some(0.3), false, true));
        assert_eq!(tested_label(r, chosen), "best t=0.30 (chosen on val)");
        assert_eq!(repeat_protocol(r, chosen), "best t=chosen on val");
        // Nothing evaluated at the chosen threshold yet: the run's own.
        let (r, chosen) = reported_test(&tests[..1], std::slice::from_ref(&val), 0.5).unwrap();
        assert_eq!(
            (r.threshold, chosen),
            (Some(0.1), false),
            "only one test record"
        );
    }

    #[test]
    fn differences_name_what_a_sweep_varied() {
        let mut runs = vec![run("a", 0, 0.1), run("b", 1, 0.1), run("c", 2, 0.1)];
        assert_eq!(runs[0].config["model.contrastive_levels"], "[1,2,3,4]");
        mark_differences(&mut runs);
        assert_eq!(runs[2].differs, ["run.seed=2"]);
        let mut runs = vec![run("a", 0, 0.1), run("b", 0, 0.2)];
        mark_differences(&mut runs);
        assert_eq!(runs[0].differs, ["model.lambda=0.1"]);
        assert_eq!(runs[1].differs, ["model.lambda=0.2"]);
        let mut one = vec![run("a", 0, 0.1)];
        mark_differences(&mut one);
        assert!(one[0].differs.is_empty());
        // Folds of a cross-validation, fold 0 included (its config file leaves it out).
        let mut folds: Vec<RunOverview> = (0..3)
            .map(|k| {
                let mut cfg = Config::default_config().unwrap();
                (cfg.data.folds, cfg.data.fold) = (3, k);
                let mut r = run(&format!("f{k}"), 0, 0.1);
                r.config = flatten(&cfg);
                r
            })
            .collect();
        mark_differences(&mut folds);
        assert_eq!(folds[0].differs, ["data.fold=0"]);
        assert_eq!(folds[2].differs, ["data.fold=2"]);
        // The same config on 2 ranks and on 1: another global batch, not a repeat.
        let manifest = |g: usize| -> Manifest {
            let mut m: Manifest = serde_json::from_str(
                r#"{"version":1,"tmca_version":"0","step":1,"epoch":0,"next_batch":0,"seed":0,"model_hash":"h","model_config":{},"best_val":null,"stale_validations":0,"files":{}}"#,
            )
            .unwrap();
            m.global_batch = Some(g);
            m
        };
        let mut two = vec![run("r2", 0, 0.1), run("r1", 0, 0.1)];
        for (r, g) in two.iter_mut().zip([8, 4]) {
            r.config = with_global_batch(r.config.clone(), Some(&manifest(g)));
        }
        mark_differences(&mut two);
        assert_eq!(two[0].differs, ["train.global_batch=8"]);
        assert!(repeat_groups(&two).is_empty());
    }
}
