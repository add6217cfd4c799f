//! `tmca compare A.csv B.csv`: two models on the same images, from `tmca eval --per-image`;
//! `tmca compare A0.csv A1.csv --vs B0.csv B1.csv`: two models' repeats, each image's score
//! averaged over a model's repeats.

mod file;
mod side;

use crate::cli::{CompareArgs, CompareFormat, CompareMetric};
use file::same_images;
use side::Side;
use tmca_trainer::metrics::paired::{compare, Paired};

#[derive(serde::Serialize)]
struct Row {
    dataset: String,
    #[serde(flatten)]
    paired: Paired,
}

pub fn run(a: &CompareArgs) -> anyhow::Result<()> {
    let (pa, pb) = a.sides()?;
    let (sa, sb) = (Side::read(pa, a.metric)?, Side::read(pb, a.metric)?);
    same_images(&sa.mean, &sb.mean)?;
    let note = protocol_note(&sa, &sb);
    if let Some(n) = &note {
        tracing::warn!("{n}");
    }
    let (order, xa, xb) = (&sa.mean.order, &sa.mean.scores, &sb.mean.scores);
    let mut rows = Vec::new();
    let mut all = (Vec::new(), Vec::new());
    for name in order {
        let keys: Vec<&(String, usize)> = xa.keys().filter(|(d, _)| d == name).collect();
        let x: Vec<f64> = keys.iter().map(|k| xa[*k]).collect();
        let y: Vec<f64> = keys.iter().map(|k| xb[*k]).collect();
        all.0.extend(&x);
        all.1.extend(&y);
        rows.push(Row {
            dataset: name.clone(),
            paired: compare(&x, &y, a.bootstrap as usize, a.seed, a.metric.is_distance()),
        });
    }
    if order.len() > 1 {
        rows.push(Row {
            dataset: "all images".into(),
            paired: compare(
                &all.0,
                &all.1,
                a.bootstrap as usize,
                a.seed,
                a.metric.is_distance(),
            ),
        });
    }
    match a.format {
        CompareFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        CompareFormat::Markdown => print!(
            "{}{}",
            table(a, &sa, &sb, &rows),
            note.map(|n| format!("\nNote: {n}\n")).unwrap_or_default()
        ),
    }
    Ok(())
}

/// Says when A and B (or the repeats of one side) were evaluated with different protocols
/// (checkpoint, threshold, TTA, min-area): a difference is then not the models' alone.
fn protocol_note(a: &Side, b: &Side) -> Option<String> {
    let mixed: Vec<&str> = [("A", a), ("B", b)]
        .iter()
        .filter(|(_, s)| s.mixed_protocols())
        .map(|(n, _)| *n)
        .collect();
    if !mixed.is_empty() {
        return Some(format!(
            "the files of {} were evaluated differently among themselves (see their protocol \
             column): their mean mixes evaluation protocols",
            mixed.join(" and ")
        ));
    }
    let (pa, pb) = (a.protocol()?, b.protocol()?);
    (pa != pb).then(|| {
        format!(
            "A and B were evaluated differently (A: {pa}; B: {pb}): part of the difference may \
             come from how they were evaluated, not from the models"
        )
    })
}

fn table(a: &CompareArgs, sa: &Side, sb: &Side, rows: &[Row]) -> String {
    let metric = match a.metric {
        CompareMetric::Dice => "Dice",
        CompareMetric::Iou => "IoU",
        CompareMetric::Hd95 => "HD95 in pixels (lower is better)",
        CompareMetric::Assd => "ASSD in pixels (lower is better)",
    };
    let mut s = format!(
        "A = {}, B = {}; per-image {metric}; B − A with a 95% paired-bootstrap interval ({} resamples); Wilcoxon signed-rank test, two-sided; \"all images\" counts every image once (tmca eval's overall value averages the datasets)\n\n",
        sa.label(),
        sb.label(),
        a.bootstrap
    );
    s.push_str("| dataset | images | A | B | B − A | 95% CI | B better / equal / worse | p (Wilcoxon) |\n|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let p = &r.paired;
        let test = p
            .wilcoxon
            .map(|w| format!("{:.3e}{}", w.p_value, if w.exact { " (exact)" } else { "" }))
            .unwrap_or_else(|| "– (all equal)".into());
        s.push_str(&format!(
            "| {} | {} | {:.4} | {:.4} | {:+.4} | [{:+.4}, {:+.4}] | {} / {} / {} | {} |\n",
            r.dataset,
            p.images,
            p.mean_a,
            p.mean_b,
            p.mean_diff,
            p.ci_low,
            p.ci_high,
            p.b_better,
            p.equal,
            p.b_worse,
            test
        ));
    }
    s
}
