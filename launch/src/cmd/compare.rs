//! `tmca compare A.csv B.csv`: two models on the same images, from `tmca eval --per-image`.

use crate::cli::{CompareArgs, CompareFormat, CompareMetric};
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::Path;
use tmca_trainer::metrics::paired::{compare, Paired};

/// (dataset, index) → score, datasets in file order, (dataset, index) → the image there
/// (its source name and report, where the file has those columns), and the model and
/// evaluation protocol of the file (its first row's, where it has those columns).
type Scores = (
    Vec<String>,
    BTreeMap<(String, usize), f64>,
    BTreeMap<(String, usize), (String, String)>,
    Option<(String, String)>,
);

fn read(path: &Path, metric: CompareMetric) -> anyhow::Result<Scores> {
    let bad = |m: String| tmca_data::DataError::bad(path, m);
    // Opened first so that a missing file is an I/O error (exit code 4).
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut r = csv::Reader::from_reader(std::io::BufReader::new(file));
    let headers = r
        .headers()
        .with_context(|| format!("reading {}", path.display()))?
        .clone();
    let col = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            bad(format!(
                "no `{name}` column (not a `tmca eval --per-image` file?)"
            ))
        })
    };
    let (ds, ix) = (col("dataset")?, col("index")?);
    let sc = col(metric.column()).map_err(|e| {
        if metric.is_distance() {
            bad(format!(
                "no `{}` column (written by `tmca eval --per-image` since boundary distances were added; evaluate again)",
                metric.column()
            ))
        } else {
            e
        }
    })?;
    let who = (col("source_name").ok(), col("report").ok());
    let made = (col("model").ok(), col("protocol").ok());
    let mut made_by = None;
    let mut order = Vec::new();
    let mut scores = BTreeMap::new();
    let mut images = BTreeMap::new();
    for (line, rec) in r.records().enumerate() {
        let rec = rec.with_context(|| format!("reading {}", path.display()))?;
        let row = line + 2;
        let field = |i: usize| rec.get(i).unwrap_or("");
        let index: usize = field(ix)
            .parse()
            .map_err(|_| bad(format!("line {row}: index {:?} is not a number", field(ix))))?;
        let v: f64 = field(sc)
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| {
                bad(format!(
                    "line {row}: score {:?} is not a finite number",
                    field(sc)
                ))
            })?;
        // Dice and IoU are fractions, distances are not negative: anything else is another
        // file's column, or an edited one.
        let (range, shown) = if metric.is_distance() {
            (0.0..=f64::MAX, "[0, ∞)")
        } else {
            (0.0..=1.0, "[0, 1]")
        };
        if !range.contains(&v) {
            let what = metric.column();
            return Err(bad(format!("line {row}: {what} {v} is outside {shown}")).into());
        }
        let name = field(ds).to_string();
        if !order.contains(&name) {
            order.push(name.clone());
        }
        if scores.insert((name.clone(), index), v).is_some() {
            return Err(bad(format!("line {row}: {name} image {index} appears twice")).into());
        }
        if let (Some(n), Some(r)) = who {
            images.insert((name, index), (field(n).to_string(), field(r).to_string()));
        }
        if let (Some(m), Some(p), None) = (made.0, made.1, &made_by) {
            made_by = Some((field(m).to_string(), field(p).to_string()));
        }
    }
    if scores.is_empty() {
        return Err(bad("no rows".into()).into());
    }
    Ok((order, scores, images, made_by))
}

/// Pairs whose files name another image or report at the same place: scores of different
/// stores (another seed's synthetic data, a store imported again) that only look paired.
fn check_same_images(a: &Scores, b: &Scores, pa: &Path, pb: &Path) -> anyhow::Result<()> {
    let differ: Vec<String> =
        a.2.iter()
            .filter_map(|(k, x)| {
                let y = b.2.get(k)?;
                (x != y).then(|| {
                    format!(
                        "{} #{}: {} \"{}\" vs {} \"{}\"",
                        k.0, k.1, x.0, x.1, y.0, y.1
                    )
                })
            })
            .collect();
    if differ.is_empty() {
        return Ok(());
    }
    anyhow::bail!(crate::cli::UsageError(format!(
        "{} and {} score different images at {} of the same places ({}{}): they were evaluated \
         on different stores; evaluate both runs on the same stores and split",
        pa.display(),
        pb.display(),
        differ.len(),
        differ[..differ.len().min(3)].join("; "),
        if differ.len() > 3 { "; …" } else { "" }
    )))
}

#[derive(serde::Serialize)]
struct Row {
    dataset: String,
    #[serde(flatten)]
    paired: Paired,
}

pub fn run(a: &CompareArgs) -> anyhow::Result<()> {
    let ra = read(&a.a, a.metric)?;
    let rb = read(&a.b, a.metric)?;
    let (order, sa, sb) = (&ra.0, &ra.1, &rb.1);
    let only = |x: &BTreeMap<(String, usize), f64>, y: &BTreeMap<(String, usize), f64>| {
        x.keys()
            .filter(|k| !y.contains_key(*k))
            .cloned()
            .collect::<Vec<_>>()
    };
    let (only_a, only_b) = (only(sa, sb), only(sb, sa));
    if !only_a.is_empty() || !only_b.is_empty() {
        let show = |v: &[(String, usize)]| {
            v.iter()
                .take(5)
                .map(|(d, i)| format!("{d} #{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let side = |v: &[(String, usize)], f: &Path| {
            (!v.is_empty()).then(|| format!("{} only in {} ({})", v.len(), f.display(), show(v)))
        };
        let sides: Vec<String> = [side(&only_a, &a.a), side(&only_b, &a.b)]
            .into_iter()
            .flatten()
            .collect();
        anyhow::bail!(crate::cli::UsageError(format!(
            "the files score different images: {}; evaluate both runs on the same stores and split",
            sides.join(", ")
        )));
    }
    check_same_images(&ra, &rb, &a.a, &a.b)?;
    let note = protocol_note(&ra.3, &rb.3);
    if let Some(n) = &note {
        tracing::warn!("{n}");
    }
    let mut rows = Vec::new();
    let mut all = (Vec::new(), Vec::new());
    for name in order {
        let keys: Vec<&(String, usize)> = sa.keys().filter(|(d, _)| d == name).collect();
        let x: Vec<f64> = keys.iter().map(|k| sa[*k]).collect();
        let y: Vec<f64> = keys.iter().map(|k| sb[*k]).collect();
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
            table(a, &ra.3, &rb.3, &rows),
            note.map(|n| format!("\nNote: {n}\n")).unwrap_or_default()
        ),
    }
    Ok(())
}

/// Says when A and B were evaluated with different protocols (checkpoint, threshold, TTA,
/// min-area): their difference is then not the models' alone.
fn protocol_note(a: &Option<(String, String)>, b: &Option<(String, String)>) -> Option<String> {
    let ((_, pa), (_, pb)) = (a.as_ref()?, b.as_ref()?);
    (pa != pb).then(|| {
        format!(
            "A and B were evaluated differently (A: {pa}; B: {pb}): part of the difference may \
             come from how they were evaluated, not from the models"
        )
    })
}

fn table(
    a: &CompareArgs,
    made_a: &Option<(String, String)>,
    made_b: &Option<(String, String)>,
    rows: &[Row],
) -> String {
    let name = |f: &Path, m: &Option<(String, String)>| match m {
        Some((model, protocol)) => format!("{} ({model}, {protocol})", f.display()),
        None => f.display().to_string(),
    };
    let metric = match a.metric {
        CompareMetric::Dice => "Dice",
        CompareMetric::Iou => "IoU",
        CompareMetric::Hd95 => "HD95 in pixels (lower is better)",
        CompareMetric::Assd => "ASSD in pixels (lower is better)",
    };
    let mut s = format!(
        "A = {}, B = {}; per-image {metric}; B − A with a 95% paired-bootstrap interval ({} resamples); Wilcoxon signed-rank test, two-sided; \"all images\" counts every image once (tmca eval's overall value averages the datasets)\n\n",
        name(&a.a, made_a),
        name(&a.b, made_b),
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
