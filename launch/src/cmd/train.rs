//! `tmca train` and `tmca eval`.

use crate::cli::{EvalArgs, TrainArgs};
use crate::progress::Bar;
use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use tmca_data::store::Store;
use tmca_data::{NoProgress, Progress};
use tmca_trainer::config::Config;
use tmca_trainer::inference::Trained;
use tmca_trainer::metrics::ThresholdSweep;
use tmca_trainer::sink::{LazyEventWriter, MetricSink, NullSink};
use tmca_trainer::sync::SingleProcess;
use tmca_trainer::train::eval::{evaluate_ensemble, table, EvalSpec, Member};
use tmca_trainer::train::results::{eval_record_name, write_eval_record, ResultRecord, StoreRef};
use tmca_trainer::train::{Resume, RunOptions, TrainSummary};

/// Loads the config (or the embedded default) with command-line overrides applied.
pub fn load_config(a: &TrainArgs) -> anyhow::Result<Config> {
    let mut cfg = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default_config()?,
    };
    if let Some(d) = &a.run_dir {
        cfg.run.dir = d.clone();
    }
    if let Some(s) = a.seed {
        cfg.run.seed = s;
    }
    if let Some(f) = a.fold {
        if cfg.data.folds == 0 {
            anyhow::bail!(crate::cli::UsageError(
                "--fold needs data.folds (the number of cross-validation folds) in the config"
                    .into()
            ));
        }
        if f >= cfg.data.folds {
            anyhow::bail!(crate::cli::UsageError(format!(
                "--fold {f}: folds are numbered 0 to {} (data.folds = {})",
                cfg.data.folds - 1,
                cfg.data.folds
            )));
        }
        cfg.data.fold = f;
    }
    cfg.resolve()?;
    Ok(cfg)
}

/// Trains and prints where everything went. Under a multi-rank launcher every rank runs
/// this; rank 0 alone writes TensorBoard, shows progress and prints the summary.
pub fn train(a: &TrainArgs) -> anyhow::Result<TrainSummary> {
    let cfg = load_config(a)?;
    let resume = match (&a.resume_from, a.resume) {
        (Some(p), _) => Resume::From(p.clone()),
        (None, true) => Resume::Latest,
        _ => Resume::No,
    };
    let stop = crate::signals::install();
    let mut rank = tmca_worker::Rank::join(&cfg.run.device)?;
    crate::signals::graceful();
    let tb = cfg.run.dir.join("tensorboard");
    let mut sink: Box<dyn MetricSink> = if rank.is_root() {
        // Created with the first metric: a run refused before it writes nothing there.
        Box::new(LazyEventWriter::new(&tb))
    } else {
        Box::new(NullSink)
    };
    // A signal while the synthetic data is generated ends that at once (it is not a step).
    let (bar, quiet) = (Bar::stopping_on(stop), NoProgress);
    let progress: &dyn Progress = if rank.is_root() { &bar } else { &quiet };
    let trained = rank.train(
        &cfg,
        sink.as_mut(),
        RunOptions {
            resume,
            stop_after: a.stop_after,
            stop: Some(stop),
            progress,
        },
    );
    let summary = match trained {
        Ok(s) => s,
        Err(e) if rank.in_mpi_job() => {
            // The other ranks cannot learn of this rank's error: end the job here, saying why.
            let err = anyhow::Error::from(e);
            let code = crate::exit::code_for(&err);
            drop(sink);
            // An error every rank meets (a config error, code 2) or one that only reports
            // another rank's failure (a collective): let rank 0, or the rank that failed,
            // abort first with its own message and code; this one speaks only if it is still
            // alive then.
            let echo = code == 2
                || matches!(
                    err.downcast_ref::<tmca_worker::WorkerError>(),
                    Some(tmca_worker::WorkerError::Train(
                        tmca_trainer::TrainError::Collective(_)
                    ))
                );
            if echo && !rank.is_root() {
                std::thread::sleep(std::time::Duration::from_secs(3));
            }
            crate::exit::print_error(&err);
            rank.abort_job(i32::from(code))
        }
        Err(e) => return Err(e.into()),
    };
    if summary.interrupted {
        return Err(crate::signals::Interrupted {
            signal: crate::signals::received(),
            step: summary.steps,
            checkpoint: summary
                .last_checkpoint
                .as_ref()
                .map_or("written by rank 0".into(), |p| p.display().to_string()),
        }
        .into());
    }
    if !rank.is_root() {
        return Ok(summary);
    }
    let world = rank.env.world;
    let mut out = format!(
        "trained {} steps{}{}; run directory {}",
        summary.steps,
        if world > 1 {
            format!(" on {world} ranks")
        } else {
            String::new()
        },
        match summary.started_at {
            0 => String::new(),
            s if s == summary.steps => " (all before this session: nothing left to train)".into(),
            s => format!(
                " ({} in this session, resumed at step {s})",
                summary.steps - s
            ),
        },
        summary.run_dir.display()
    );
    if !summary.last_val.is_empty() {
        let at = summary
            .last_val_step
            .map_or_else(String::new, |s| format!(", step {s}"));
        out += &format!("\n\nvalidation (last{at}):\n{}", table(&summary.last_val));
        out.truncate(out.trim_end().len());
    }
    if let Some(b) = &summary.best_checkpoint {
        out += &format!(
            "\n\nbest checkpoint {} (val {} {:.4})",
            b.display(),
            summary.select.label(),
            summary.best_val.unwrap_or(f64::NAN)
        );
    }
    out += &format!(
        "\nTensorBoard: tensorboard --logdir {}",
        super::util::shell_word(&tb)
    );
    super::util::say(false, format_args!("{out}"));
    Ok(summary)
}

/// Evaluates a run on a split and prints the table.
pub fn eval(a: &EvalArgs) -> anyhow::Result<()> {
    if a.runs.len() > 1 {
        return super::ensemble::eval(a);
    }
    super::util::output_parent(a.json.as_deref())?;
    super::util::output_parent(a.per_image.as_deref())?;
    let run = &a.runs[0];
    let device = tmca_worker::bind_device("auto", 0)?;
    let mut trained = Trained::load(run, &a.checkpoint, &device)?;
    let run_threshold = trained.cfg.train.threshold;
    if let Some(t) = a.threshold {
        trained.cfg.train.threshold = t;
    }
    let mut rows = Vec::new();
    let per_image = a.per_image.as_ref().map(|_| &mut rows);
    let min_area = a.min_area.unwrap_or(0.0);
    let mut sweep = a
        .sweep
        .then(|| ThresholdSweep::grid().with_min_area(min_area));
    let extras = EvalExtras {
        tta: a.tta,
        min_area,
        per_image,
        sweep: sweep.as_mut(),
    };
    let evaluated = eval_run(&trained, &[], &a.store, a.split, extras)?;
    let results = &evaluated.results;
    println!(
        "{} ({}), split {}{}{}:\n{}",
        run.display(),
        trained.checkpoint.display(),
        a.split,
        if a.tta { ", with flip TTA" } else { "" },
        if min_area > 0.0 {
            format!(", components under {min_area} of the image removed")
        } else {
            String::new()
        },
        table(results)
    );
    let mut record = eval_record(&trained, &a.checkpoint, results, a.tta);
    record.min_area = a.min_area;
    record.sweep = sweep.as_ref().map(ThresholdSweep::rows);
    // The run's own stores, or stores given with --store that hold the data it was trained on.
    let own = a.store.is_empty() || evaluated.on_trained_stores(&trained);
    record.run = Some(run.display().to_string());
    record.stores = evaluated.stores;
    if own {
        let mut name = eval_record_name(
            record.checkpoint.as_deref().unwrap_or("best"),
            a.split,
            a.tta,
        );
        if let Some(t) = a.threshold.filter(|&t| t != run_threshold) {
            // Another threshold than the run's is another evaluation, not a replacement.
            name = name.replace(".json", &format!("-t{t}.json"));
        }
        if let Some(m) = a.min_area {
            name = name.replace(".json", &format!("-a{m}.json"));
        }
        // The results are printed and go to --json / --per-image as asked: a run directory
        // that cannot take the record (read-only, a colleague's) is worth a warning only.
        match write_eval_record(run, &name, &record) {
            Ok(p) => eprintln!("recorded in {}", p.display()),
            Err(e) => tracing::warn!("not recorded in the run directory: {e}"),
        }
        if a.split == tmca_data::Split::Test && a.checkpoint == "best" {
            test_scalars(run, &name, &record);
        }
    } else {
        eprintln!(
            "not recorded in {}/eval: the --store stores are not exactly the data the run \
             was trained on (all its stores, or copies of them); the results are printed{}",
            run.display(),
            if a.json.is_some() || a.per_image.is_some() {
                " and written where asked"
            } else {
                ", --json or --per-image keep them"
            }
        );
    }
    if let Some(s) = &sweep {
        print_sweep(s, a.split);
    }
    if let Some(p) = &a.per_image {
        let by = tmca_trainer::train::per_image::MadeBy {
            model: run.display().to_string(),
            protocol: record.protocol_with(&a.checkpoint),
        };
        tmca_trainer::train::per_image::write_csv(p, &rows, &by)?;
        eprintln!("{} per-image rows in {}", rows.len(), p.display());
    }
    if let Some(p) = &a.json {
        let text = serde_json::to_string_pretty(&record)?;
        std::fs::write(p, text + "\n").with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// A test evaluation of the `best` checkpoint as scalars in the run's TensorBoard folder, in
/// a run of their own (`tensorboard/eval`: a resume never drops them, a live TensorBoard keeps
/// following the training file): `test/…` for the run's protocol, `test-tta-t0.4/…` and the
/// like for others (the record's name, less the checkpoint), at the weights' step. The
/// HParams dashboard offers them as metrics of the run (group `eval`), so the runs of a
/// sweep line up by their test scores too.
fn test_scalars(run: &Path, record_name: &str, record: &ResultRecord) {
    let split = format!("-{}", tmca_data::Split::Test);
    let prefix = record_name
        .trim_end_matches(".json")
        .split_once(&split)
        .map_or_else(
            || "test".to_string(),
            |(_, variant)| format!("test{variant}"),
        );
    let mut tb = LazyEventWriter::new(run.join("tensorboard").join("eval"));
    tmca_trainer::train::record_scalars(&mut tb, &prefix, &record.datasets, record.step);
    if let Err(e) = tb.flush() {
        tracing::warn!("test scalars not written to TensorBoard: {e}");
    }
}

/// Prints a threshold sweep and the threshold it suggests.
pub fn print_sweep(s: &ThresholdSweep, split: tmca_data::Split) {
    println!("\nthreshold sweep on {split}:\n{}", s.table());
    if let Some((t, d)) = s.best() {
        let advice = if split == tmca_data::Split::Test {
            " (chosen on test: report it only with a threshold chosen on val)"
        } else {
            "; use it on test with --threshold"
        };
        println!("best threshold on {split}: {t:.2} (mean per-image Dice {d:.4}){advice}");
    }
}

/// The record of an evaluation of `trained` (loaded as `checkpoint`: `best`, `latest` or a
/// directory, recorded as `best` or the directory's name).
pub fn eval_record(
    trained: &Trained,
    checkpoint: &str,
    results: &[tmca_trainer::train::eval::EvalResult],
    tta: bool,
) -> ResultRecord {
    let label = match checkpoint {
        "best" => "best".to_string(),
        _ => trained
            .checkpoint
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "checkpoint".into()),
    };
    let mut record = ResultRecord::new(trained.step, results);
    record.checkpoint = Some(label);
    record.tta = tta;
    record.threshold = Some(trained.cfg.train.threshold);
    record.provenance = Some(tmca_trainer::provenance::Provenance::now(
        &trained.device,
        1,
    ));
    record
}

/// How an evaluation predicts, and what it collects besides the dataset metrics.
#[derive(Default)]
pub struct EvalExtras<'a> {
    /// Flip test-time augmentation.
    pub tta: bool,
    /// Small components removed ([`tmca_trainer::postprocess`]; 0 = off).
    pub min_area: f32,
    /// One row per image.
    pub per_image: Option<&'a mut Vec<tmca_trainer::train::per_image::ImageResult>>,
    /// The metrics at other thresholds too.
    pub sweep: Option<&'a mut ThresholdSweep>,
}

/// What [`eval_run`] scored and on which stores.
pub struct Evaluated {
    pub results: Vec<tmca_trainer::train::eval::EvalResult>,
    pub stores: Vec<StoreRef>,
}

impl Evaluated {
    /// Whether the stores scored are exactly the data the run was trained on (by content:
    /// each scored store one it trained on, and each it trained on scored), so that the
    /// results are the run's own, recorded in RUN/eval in place of its evaluation of its
    /// config's stores; never for older checkpoints, which recorded no digests.
    pub fn on_trained_stores(&self, trained: &Trained) -> bool {
        let trained_on: std::collections::BTreeSet<&str> = trained
            .trained_on
            .iter()
            .filter_map(|t| t.content.as_deref())
            .collect();
        let scored: std::collections::BTreeSet<&str> =
            self.stores.iter().map(|s| s.content.as_str()).collect();
        !trained_on.is_empty()
            && trained_on.len() == trained.trained_on.len()
            && trained_on == scored
    }
}

/// Results of `trained` — with `others`, of the ensemble of them all (the mean probability) —
/// on `split` of `stores` (default: the first run's stores, refused when one holds other data
/// than the run was trained on).
pub fn eval_run(
    trained: &Trained,
    others: &[Trained],
    stores: &[std::path::PathBuf],
    split: tmca_data::Split,
    extras: EvalExtras<'_>,
) -> anyhow::Result<Evaluated> {
    let EvalExtras {
        tta,
        min_area,
        mut per_image,
        mut sweep,
    } = extras;
    let bar = Bar::default();
    let stores: Vec<Arc<Store>> = if stores.is_empty() {
        let own = tmca_trainer::train::setup::open_stores(&trained.cfg, &bar).context(
            "opening the stores the run's config.toml names (relative paths are taken from the \
             current directory; --store names others)",
        )?;
        for s in &own {
            trained.check_own_store(s)?;
        }
        own
    } else {
        stores
            .iter()
            .map(|p| Ok(Arc::new(Store::open(p)?)))
            .collect::<anyhow::Result<_>>()?
    };
    // A cross-validated run's val split is its fold: for the run's own stores (by name, also
    // when given with --store), not for others, nor for an ensemble, whose members trained on
    // each other's folds.
    let cv = trained.cfg.data.cv().filter(|_| others.is_empty());
    let own = match cv {
        Some(_) => tmca_trainer::train::setup::store_names(&trained.cfg),
        None => vec![],
    };
    let members: Vec<Member<'_>> = std::iter::once(trained)
        .chain(others)
        .map(|t| Member {
            model: &t.model,
            tokenizer: &t.tokenizer,
        })
        .collect();
    tmca_trainer::train::setup::warn_resampled(&stores, &trained.input_spec(), "the scores");
    let mut spec = EvalSpec {
        input: trained.input_spec(),
        batch_size: trained.cfg.data.batch_size,
        workers: trained.cfg.data.workers,
        threshold: trained.cfg.train.threshold,
        tokenizer: trained.tokenizer.clone(),
        progress: &bar,
        tta,
        folds: None,
        min_area,
    };
    let mut results = Vec::with_capacity(stores.len());
    for store in &stores {
        // The run's own store by name, or by content under another name (imported again
        // with another --name): its val split is the fold.
        let is_own = own.contains(&store.info().name)
            || (cv.is_some() && trained.trained_on_store(store)? == Some(true));
        spec.folds = cv.clone().filter(|_| is_own);
        if let (Some(f), tmca_data::Split::Val) = (&spec.folds, split) {
            tracing::info!(
                "{}: fold {} of {} (the run's cross-validation)",
                store.info().name,
                f.fold,
                f.folds
            );
        }
        results.extend(evaluate_ensemble(
            &members,
            std::slice::from_ref(store),
            split,
            &spec,
            &trained.device,
            &mut SingleProcess,
            &mut |store, b, probs, _, scores| {
                if let Some(rows) = per_image.as_deref_mut() {
                    rows.extend(tmca_trainer::train::per_image::image_results(
                        store, b, scores,
                    ));
                }
                if let Some(s) = sweep.as_deref_mut() {
                    let name = &store.info().name;
                    s.update(name, probs, &b.masks, b.size, (b.height, b.width))
                        .map_err(tmca_trainer::TrainError::from)?;
                }
                Ok(())
            },
        )?);
    }
    let stores = stores
        .iter()
        .map(|s| StoreRef::of(s))
        .collect::<Result<_, _>>()?;
    Ok(Evaluated { results, stores })
}
