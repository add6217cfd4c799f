//! `tmca data …`: convert, synth, inspect, validate, preview.

use crate::cli::{ConvertArgs, DataCommand, PreviewArgs, SynthArgs};
use crate::exit::ValidationFailed;
use crate::progress::Bar;
use anyhow::Context;
use tmca_data::convert::{self, ConvertOptions};
use tmca_data::imageops::MaskRule;
use tmca_data::store::{Store, WriteOptions};
use tmca_data::synth::{self, SynthConfig};
use tmca_data::{inspect, preview, validate, Modality};

/// Runs one `tmca data` subcommand.
pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Convert(a) => convert_cmd(&a),
        DataCommand::Synth(a) => synth_cmd(&a),
        DataCommand::Inspect { store } => {
            let s = Store::open(&store)?;
            print!("{}", inspect::inspect(&s, &Bar::default())?);
            Ok(())
        }
        DataCommand::Validate { store, record } => {
            let s = Store::open(&store)?;
            let v = validate::validate(&s, &Bar::default())?;
            for p in &v.problems {
                println!("{p}");
            }
            if v.is_ok() {
                println!("{}: {} samples, no problems", store.display(), v.checked);
                match (&v.content, record, s.content_digest_recorded()) {
                    (Some(d), true, false) => {
                        tmca_data::store::record_content_digest(&store, d)?;
                        println!("recorded its content digest: sha256 {d}");
                    }
                    (_, true, true) => println!("its content digest was already recorded"),
                    _ => {}
                }
                Ok(())
            } else {
                Err(ValidationFailed(v.problems.len()))
                    .with_context(|| format!("{}: {} samples checked", store.display(), v.checked))
            }
        }
        DataCommand::Preview(a) => preview_cmd(&a),
    }
}

fn convert_cmd(a: &ConvertArgs) -> anyhow::Result<()> {
    let opts = ConvertOptions {
        layout: a.layout,
        input: a.input.clone(),
        output: a.output.clone(),
        name: a.name.clone(),
        modality: a.modality,
        height: a.height.unwrap_or(a.size),
        width: a.width.unwrap_or(a.size),
        val_fraction: a.val_fraction,
        mask_rule: a
            .mask_threshold
            .map_or(MaskRule::Exact, MaskRule::Threshold),
        bit_depth: a.bit_depth,
        force: a.force,
    };
    if a.dry_run {
        convert::check_destination(&opts)?;
        let plan = convert::dry_run(&opts, &Bar::default())?;
        let [tr, va, te] = plan.counts();
        println!(
            "{}: {} samples would be imported (train {tr}, val {va}{}, test {te}); nothing written",
            a.input.display(),
            tr + va + te,
            if plan.val_from_train {
                format!(" taken from train at --val-fraction {}", a.val_fraction)
            } else {
                String::new()
            }
        );
        return Ok(());
    }
    let summary = convert::convert(&opts, &Bar::default())?;
    let [tr, va, te] = summary.counts;
    let total = tr + va + te;
    let empty = &summary.empty_masks;
    println!(
        "{}: {total} samples (train {tr}, val {va}, test {te}), {} with an empty mask{}",
        summary.output.display(),
        empty.len(),
        named_few(empty, 8)
    );
    if empty.len() == total {
        tracing::warn!(
            "every mask is empty: check that the masks mark the targets ({})",
            match opts.mask_rule {
                MaskRule::Threshold(t) => format!(
                    "--mask-threshold {t} keeps pixels of at least {t} of the full value; a label map with small class values comes out empty"
                ),
                MaskRule::Exact => "nonzero pixels are the target".into(),
            }
        );
    }
    Ok(())
}

/// `": a, b, c and 5 more"` for the first `n` of `names`; nothing for none.
fn named_few(names: &[String], n: usize) -> String {
    match names.len() {
        0 => String::new(),
        k if k <= n => format!(": {}", names.join(", ")),
        k => format!(": {} and {} more", names[..n].join(", "), k - n),
    }
}

/// Parses "all" or a comma-separated list of modalities.
pub fn parse_modalities(s: &str) -> anyhow::Result<Vec<Modality>> {
    if s.trim().eq_ignore_ascii_case("all") {
        return Ok(Modality::ALL.to_vec());
    }
    s.split(',')
        .map(|m| m.trim().parse::<Modality>().map_err(|e| anyhow::anyhow!(e)))
        .collect()
}

fn synth_cmd(a: &SynthArgs) -> anyhow::Result<()> {
    let modalities = parse_modalities(&a.modality).map_err(|e| tmca_data::DataError::Config {
        field: "--modality".into(),
        message: e.to_string(),
    })?;
    let mut configs: Vec<SynthConfig> = Vec::new();
    for m in modalities {
        if configs.iter().any(|c| c.modality == m) {
            return Err(tmca_data::DataError::Config {
                field: "--modality".into(),
                message: format!("{m} is listed twice"),
            }
            .into());
        }
        let mut cfg = SynthConfig::new(m);
        cfg.n_train = a.train;
        cfg.n_val = a.val;
        cfg.n_test = a.test;
        cfg.height = a.size;
        cfg.width = a.size;
        cfg.seed = a.seed;
        cfg.max_distractors = a.max_distractors;
        // Every setting checked before a folder is made or a store written.
        cfg.validate()?;
        configs.push(cfg);
    }
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("creating {}", a.output.display()))?;
    for cfg in configs {
        let m = cfg.modality;
        let path = a.output.join(synth::dataset_name(m));
        let opts = WriteOptions {
            force: a.force,
            ..Default::default()
        };
        synth::write_store(&cfg, &path, &opts, &Bar::default())?;
        println!(
            "{}: {} samples ({}x{} {m})",
            path.display(),
            cfg.total(),
            cfg.height,
            cfg.width
        );
    }
    Ok(())
}

fn preview_cmd(a: &PreviewArgs) -> anyhow::Result<()> {
    let png = a
        .output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !png {
        anyhow::bail!(crate::cli::UsageError(format!(
            "--output {}: the preview is a PNG image; name it *.png",
            a.output.display()
        )));
    }
    let s = Store::open(&a.store)?;
    let idx = s.require_split(a.split)?;
    let picks = spread(&idx, a.count as usize);
    let opts = preview::PreviewOptions {
        columns: a.columns,
        ..Default::default()
    };
    preview::preview(&s, &picks, &a.output, &opts)?;
    println!(
        "{}: {} samples of {} ({})",
        a.output.display(),
        picks.len(),
        a.store.display(),
        a.split
    );
    Ok(())
}

/// `count` indices spread evenly over `idx`.
pub fn spread(idx: &[usize], count: usize) -> Vec<usize> {
    let count = count.clamp(1, idx.len().max(1));
    (0..count).map(|k| idx[k * idx.len() / count]).collect()
}
