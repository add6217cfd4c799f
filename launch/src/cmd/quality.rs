//! `tmca bench quality`: TMCA against its ablations on the synthetic test splits, several seeds,
//! both metric protocols, written to BENCHMARKS.md.

use super::util::{machine, replace_section, today};
use crate::cli::BenchQualityArgs;
use crate::progress::Bar;
use anyhow::Context;
use std::collections::BTreeMap;
use tmca_data::Split;
use tmca_trainer::config::Config;
use tmca_trainer::inference::Trained;
use tmca_trainer::sink::EventWriter;
use tmca_trainer::train::{Resume, RunOptions};

/// A compared variant: its name and how it changes the default config.
type Variant = (&'static str, fn(&mut Config));

/// Per dataset: the per-image and the pooled Dice, one value per seed.
type DiceBySeed = BTreeMap<String, (Vec<f64>, Vec<f64>)>;

/// The compared variants.
fn variants() -> Vec<Variant> {
    vec![
        ("TMCA", |_| {}),
        // The same model on candle ops instead of the fused kernels: should train the same.
        ("TMCA (composed ops)", |c| c.model.ops = "composed".into()),
        ("image-only", |c| c.model.text_guidance = false),
        ("no contrastive", |c| c.model.lambda = 0.0),
        ("single-level (4)", |c| {
            c.model.contrastive_levels = vec![4];
            c.model.contrastive_weights = vec![1.0];
        }),
        // The levels' losses are summed: weight 4 keeps the contrastive term's total weight.
        ("single-level (4), weight 4", |c| {
            c.model.contrastive_levels = vec![4];
            c.model.contrastive_weights = vec![4.0];
        }),
        ("no TSSD", |c| c.model.target_sensitive = false),
        ("no LTE", |c| c.model.lte_levels = vec![]),
        // Augmentation, not an ablation: small rotations on top of the default ones.
        ("TMCA + rotate 20°", |c| c.data.augment.rotate = 20.0),
        // Training, not an ablation: validation and test on moving averages of the weights.
        ("TMCA + EMA 0.99", |c| c.optim.ema = 0.99),
    ]
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// Trains (or reuses) every variant × seed, evaluates on test, writes the table.
pub fn run(a: &BenchQualityArgs) -> anyhow::Result<()> {
    // results[variant] = ([dataset] = (per-image Dice per seed, pooled Dice per seed),
    // HD95 per seed as the mean over datasets)
    let mut results: Vec<(&str, DiceBySeed, Vec<f64>)> = Vec::new();
    for (name, apply) in variants() {
        let mut per = BTreeMap::new();
        let mut hd95 = Vec::new();
        for seed in 0..a.seeds {
            let mut cfg = Config::default_config()?;
            apply(&mut cfg);
            cfg.run.seed = seed;
            cfg.run.dir = a
                .workdir
                .join(format!("{}-seed{seed}", name.replace([' ', '(', ')'], "")));
            cfg.train.max_steps = a.steps;
            if let Some(s) = cfg.data.synth.as_mut() {
                s.dir = a.workdir.join("data");
            }
            cfg.resolve()?;
            println!("{name}, seed {seed}: {}", cfg.run.dir.display());
            let tb = cfg.run.dir.join("tensorboard");
            let mut sink =
                EventWriter::create(&tb).with_context(|| format!("creating {}", tb.display()))?;
            tmca_trainer::train::train(
                &cfg,
                &candle_core::Device::Cpu,
                &mut tmca_trainer::sync::SingleProcess,
                &mut sink,
                RunOptions {
                    resume: Resume::Latest,
                    stop_after: None,
                    stop: None,
                    progress: &Bar::default(),
                },
            )?;
            drop(sink);
            let trained = Trained::load(&cfg.run.dir, "best", &candle_core::Device::Cpu)?;
            let test = super::train::eval_run(&trained, &[], &[], Split::Test, Default::default())?
                .results;
            let hd: Vec<f64> = test.iter().map(|r| r.summary.hd95_per_image).collect();
            hd95.push(mean_sd(&hd).0);
            for r in test {
                let e: &mut (Vec<f64>, Vec<f64>) = per.entry(r.dataset).or_default();
                e.0.push(r.summary.dice_per_image);
                e.1.push(r.summary.dice_pooled);
            }
        }
        results.push((name, per, hd95));
    }
    let datasets: Vec<String> = results
        .first()
        .map(|(_, p, _)| p.keys().cloned().collect())
        .unwrap_or_default();
    let mut body = format!(
        "## Quality: TMCA vs ablations\n\nMeasured {} on {} by `tmca bench quality --seeds {} --steps {}` \
         (embedded default config: cpu-small, 64×64, batch 8; synthetic test splits of 40 images). \
         Test Dice of the best-validation checkpoint, mean ± sd over seeds, as per-image mean / pixel-pooled; \
         HD95 in pixels (per-image mean, then over datasets; lower is better).\n\n| variant |",
        today(),
        machine(),
        a.seeds,
        a.steps
    );
    for d in &datasets {
        body.push_str(&format!(" {d} |"));
    }
    body.push_str(" mean per-image | vs image-only | HD95 px |\n|---|");
    body.push_str(&"---|".repeat(datasets.len() + 3));
    body.push('\n');
    let overall = |per: &BTreeMap<String, (Vec<f64>, Vec<f64>)>| -> f64 {
        let v: Vec<f64> = per.values().map(|(pi, _)| mean_sd(pi).0).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let baseline = results
        .iter()
        .find(|(n, _, _)| *n == "image-only")
        .map(|(_, p, _)| overall(p))
        .unwrap_or(f64::NAN);
    for (name, per, hd95) in &results {
        body.push_str(&format!("| {name} |"));
        for d in &datasets {
            let (pi, po) = per.get(d).cloned().unwrap_or_default();
            let ((m1, s1), (m2, s2)) = (mean_sd(&pi), mean_sd(&po));
            body.push_str(&format!(" {m1:.3}±{s1:.3} / {m2:.3}±{s2:.3} |"));
        }
        let o = overall(per);
        let (h, hs) = mean_sd(hd95);
        body.push_str(&format!(
            " {o:.3} | {:+.1} points | {h:.2}±{hs:.2} |\n",
            100.0 * (o - baseline)
        ));
    }
    replace_section(&a.output, "quality", &body)?;
    print!("{body}");
    Ok(())
}
