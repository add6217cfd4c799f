//! Repeats of one setting (`tmca runs`): runs whose configs differ only in the seed or the
//! cross-validation fold, summarised as mean ± sd — a seed study's or a cross-validation's
//! result in one line.

use super::RunOverview;
use crate::train::results::ResultRecord;
use serde::Serialize;
use std::path::PathBuf;

/// The config fields in which repeats of one setting may differ.
pub const REPEAT_FIELDS: [&str; 3] = ["run.dir", "run.seed", "data.fold"];

/// Mean and sample standard deviation of the values present, and how many there were.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub mean: f64,
    pub sd: f64,
    pub n: usize,
}

impl Spread {
    fn of(values: impl Iterator<Item = f64>) -> Option<Self> {
        let v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let sd = if n > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Self { mean, sd, n })
    }
}

/// One run of a [`RepeatGroup`] and its values that went into the group's means.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    pub run: PathBuf,
    pub seed: Option<String>,
    pub fold: Option<String>,
    pub best_val: Option<f64>,
    /// Of its test evaluation of the group's protocol ([`RepeatGroup::tested`]).
    pub test_dice: Option<f64>,
    pub test_hd95: Option<f64>,
}

/// Two or more runs of one setting.
#[derive(Debug, Clone, Serialize)]
pub struct RepeatGroup {
    pub runs: Vec<PathBuf>,
    /// The config fields (`key=value`, seed and fold aside) in which this setting departs
    /// from the value most runs listed share: which ablation or variant it is; empty for the
    /// setting that has the common values.
    pub setting: Vec<String>,
    /// Each run's values, in `runs` order.
    pub members: Vec<Member>,
    /// Which of `run.seed` and `data.fold` vary among them.
    pub varying: Vec<String>,
    /// Of the best validation values of the runs' `train.select` (the same for all of them).
    pub best_val: Option<Spread>,
    pub select: crate::config::Select,
    /// Of the runs' test evaluations of one protocol ([`RepeatGroup::tested`]): mean
    /// per-image Dice over the datasets, and mean HD95.
    pub test_dice: Option<Spread>,
    pub test_hd95: Option<Spread>,
    /// The [`ResultRecord::protocol`] every run has a test evaluation of (the first run's
    /// newest such); `None` when they have none in common.
    pub tested: Option<String>,
    /// Runs of the same setting with the seed and fold of a run in `runs` (a rerun, not a
    /// repeat: averaging it would count one draw twice), left out.
    pub duplicates: Vec<PathBuf>,
}

/// The protocol of a test evaluation every run in `m` has, and each run's newest evaluation of
/// it: the first run's reported evaluation tried first, then its others newest first.
fn common_tests<'a>(m: &[&'a RunOverview]) -> Option<(String, Vec<&'a ResultRecord>)> {
    let first = m.first()?;
    // Each run at the threshold its own val chose, when all were evaluated so.
    if let Some(t) = first.test.as_ref().filter(|_| first.test_chosen_on_val) {
        let p = super::repeat_protocol(t, true);
        let each: Option<Vec<&ResultRecord>> = m
            .iter()
            .map(|r| {
                r.test
                    .as_ref()
                    .filter(|x| r.test_chosen_on_val && super::repeat_protocol(x, true) == p)
            })
            .collect();
        if let Some(each) = each {
            return Some((p, each));
        }
    }
    // Else the first run's reported evaluation first, then the rest of its evaluations.
    first.test.iter().chain(&first.tests).find_map(|t| {
        let p = t.protocol();
        let each: Option<Vec<&ResultRecord>> = m
            .iter()
            .map(|r| r.tests.iter().find(|x| x.protocol() == p))
            .collect();
        Some((p, each?))
    })
}

/// The fields (`key=value`) that set `run`'s setting apart from the others `runs` lists:
/// those where its value is not the one most of the runs share (every varying field, when no
/// value is shared by more runs than any other). In an ablation folder, one group's switch.
fn setting_of(run: &RunOverview, runs: &[RunOverview]) -> Vec<String> {
    run.differs
        .iter()
        .filter_map(|d| d.split_once('='))
        .filter(|(k, _)| !REPEAT_FIELDS.contains(k))
        .filter(|(k, v)| {
            let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
            for r in runs {
                *counts
                    .entry(r.config.get(*k).map_or("-", String::as_str))
                    .or_default() += 1;
            }
            let top = counts.values().copied().max().unwrap_or(0);
            let mut most = counts.iter().filter(|(_, n)| **n == top);
            match (most.next(), most.next()) {
                (Some((common, _)), None) => common != v,
                _ => true,
            }
        })
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// The groups of two or more `runs` whose configs agree but for [`REPEAT_FIELDS`], in the
/// order of their first run.
pub fn repeat_groups(runs: &[RunOverview]) -> Vec<RepeatGroup> {
    let setting = |r: &RunOverview| {
        let mut c = r.config.clone();
        for f in REPEAT_FIELDS {
            c.remove(f);
        }
        c
    };
    let mut groups: Vec<(
        std::collections::BTreeMap<String, String>,
        Vec<&RunOverview>,
    )> = Vec::new();
    for r in runs {
        let s = setting(r);
        match groups.iter_mut().find(|(g, _)| *g == s) {
            Some((_, members)) => members.push(r),
            None => groups.push((s, vec![r])),
        }
    }
    groups
        .into_iter()
        .map(|(_, all)| {
            // One run per seed and fold: a rerun of the same seed is no second draw.
            let key = |r: &RunOverview| {
                (
                    r.config.get("run.seed").cloned(),
                    r.config.get("data.fold").cloned(),
                )
            };
            let (mut m, mut duplicates) = (Vec::new(), Vec::new());
            for r in all {
                match m.iter().position(|x: &&RunOverview| key(x) == key(r)) {
                    // Of two runs of one seed, the one with a test evaluation counts (a
                    // finished rerun over a crashed first attempt).
                    Some(k) if m[k].test.is_none() && r.test.is_some() => {
                        duplicates.push(m[k].dir.clone());
                        m[k] = r;
                    }
                    Some(_) => duplicates.push(r.dir.clone()),
                    None => m.push(r),
                }
            }
            (m, duplicates)
        })
        .filter(|(m, _)| m.len() > 1)
        .map(|(m, duplicates)| {
            let varying = ["run.seed", "data.fold"]
                .iter()
                .filter(|f| {
                    let first = m[0].config.get(**f);
                    m.iter().any(|r| r.config.get(**f) != first)
                })
                .map(|f| f.to_string())
                .collect();
            let (tested, tests) = common_tests(&m).unzip();
            let tests = tests.unwrap_or_default();
            let finite = |x: f64| Some(x).filter(|x| x.is_finite());
            let members: Vec<Member> = m
                .iter()
                .enumerate()
                .map(|(k, r)| Member {
                    run: r.dir.clone(),
                    seed: r.config.get("run.seed").cloned(),
                    fold: r.config.get("data.fold").cloned(),
                    best_val: r.best_val,
                    test_dice: tests.get(k).and_then(|t| finite(t.mean_dice_per_image)),
                    test_hd95: tests.get(k).and_then(|t| finite(t.mean_hd95_per_image())),
                })
                .collect();
            let setting = setting_of(m[0], runs);
            // The spreads are of the members' values: the line and its members agree.
            let spread = |v: fn(&Member) -> Option<f64>| Spread::of(members.iter().filter_map(v));
            RepeatGroup {
                runs: m.iter().map(|r| r.dir.clone()).collect(),
                setting,
                varying,
                best_val: spread(|x| x.best_val),
                select: m[0].select,
                test_dice: spread(|x| x.test_dice),
                test_hd95: spread(|x| x.test_hd95),
                members,
                tested,
                duplicates,
            }
        })
        .collect()
}

/// A Markdown table of `groups` (empty when there are none).
pub fn repeats_table(groups: &[RepeatGroup]) -> String {
    if groups.is_empty() {
        return String::new();
    }
    // One value has no spread to show (not ± 0).
    let spread = |s: Spread, digits: usize| match s.n {
        1 => format!("{:.digits$} (n=1)", s.mean),
        _ => format!("{:.digits$} ± {:.digits$} (n={})", s.mean, s.sd, s.n),
    };
    let cell =
        |s: Option<Spread>, digits: usize| s.map_or_else(|| "–".into(), |s| spread(s, digits));
    let mut out = String::from(
        "\nRepeats of one setting (configs equal but for the seed or fold), mean ± sd:\n\n\
         | runs | setting | varying | best val (train.select) | test Dice (per-image, mean over datasets) | test HD95 px | tested | each run's test Dice |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for g in groups {
        let first = g.runs[0].display().to_string();
        out.push_str(&format!(
            "| {first} and {} more | {} | {} | {} | {} | {} | {} | {} |\n",
            g.runs.len() - 1,
            if g.setting.is_empty() {
                "–".to_string()
            } else {
                g.setting.join(" ")
            },
            g.varying.join(", "),
            match g.best_val {
                Some(b) => super::best_cell(Some(b.mean), g.select, true, |_, d| spread(b, d)),
                None => "–".into(),
            },
            cell(g.test_dice, 4),
            cell(g.test_hd95, 2),
            g.tested
                .as_deref()
                .unwrap_or("no test evaluation common to all"),
            if g.test_dice.is_some() {
                g.members
                    .iter()
                    .map(|m| {
                        m.test_dice
                            .map_or_else(|| "–".into(), |d| format!("{d:.4}"))
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                "–".into()
            }
        ));
    }
    let dups: Vec<String> = groups
        .iter()
        .flat_map(|g| &g.duplicates)
        .map(|d| d.display().to_string())
        .collect();
    if !dups.is_empty() {
        out.push_str(&format!(
            "
Left out as reruns of a seed and fold already counted (not independent repeats): {}\n",
            dups.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::run;
    use super::*;

    #[test]
    fn seeds_group_and_other_settings_do_not() {
        let mut runs = vec![
            run("s0", 0, 0.1),
            run("s1", 1, 0.1),
            run("s2", 2, 0.1),
            run("other", 0, 0.2),
        ];
        for (r, v) in runs.iter_mut().zip([0.5, 0.6, 0.7, 0.9]) {
            r.best_val = Some(v);
        }
        let g = repeat_groups(&runs);
        assert_eq!(g.len(), 1, "{g:?}");
        assert_eq!(g[0].runs.len(), 3);
        assert_eq!(g[0].varying, ["run.seed"]);
        let s = g[0].best_val.unwrap();
        assert!((s.mean - 0.6).abs() < 1e-12 && (s.sd - 0.1).abs() < 1e-12 && s.n == 3);
        assert_eq!(g[0].test_dice, None);
        let t = repeats_table(&g);
        assert!(
            t.contains("| s0 and 2 more | – | run.seed | 0.6000 ± 0.1000 (n=3) | – | – | no test evaluation common to all | – |"),
            "{t}"
        );
        assert!(repeats_table(&repeat_groups(&runs[3..])).is_empty());
        // A rerun of seed 1 (same config) is not a fourth repeat.
        let mut again = runs.clone();
        again.insert(2, run("s1-again", 1, 0.1));
        again[2].best_val = Some(0.99);
        let g2 = repeat_groups(&again);
        assert_eq!(g2[0].runs.len(), 3);
        assert_eq!(g2[0].duplicates, [PathBuf::from("s1-again")]);
        assert_eq!(
            g2[0].best_val, g[0].best_val,
            "the rerun's value is not counted"
        );
        assert!(
            repeats_table(&g2).contains("Left out as reruns of a seed and fold already counted")
        );
        // The rerun with a test evaluation counts rather than a first attempt without one.
        let mut tested = again.clone();
        tested[2].test = Some(ResultRecord::new(960, &[]));
        let g3 = repeat_groups(&tested);
        assert!(g3[0].runs.contains(&PathBuf::from("s1-again")), "{g3:?}");
        assert_eq!(g3[0].duplicates, [PathBuf::from("s1")]);
        // Two runs of one seed only: no repeats at all.
        assert!(repeat_groups(&[run("a", 4, 0.1), run("b", 4, 0.1)]).is_empty());
        // A repeat with one test evaluation shows its value alone, no "± 0.0000".
        let mut one = g.clone();
        one[0].test_dice = Some(Spread {
            mean: 0.5,
            sd: 0.0,
            n: 1,
        });
        let t = repeats_table(&one);
        assert!(t.contains("| 0.5000 (n=1) |"), "{t}");
        // Another selection metric is named, HD95 to two places.
        for r in &mut runs {
            r.select = crate::config::Select::Hd95;
        }
        let t = repeats_table(&repeat_groups(&runs));
        assert!(t.contains("| 0.60 ± 0.10 (n=3) (hd95) |"), "{t}");
    }

    /// Test scores are averaged over one protocol all repeats were evaluated with, never a
    /// TTA evaluation of one run with a plain one of another.
    #[test]
    fn repeats_average_one_test_protocol() {
        let record = |dice: f64, tta: bool, t: f32| {
            let mut r = ResultRecord::new(960, &[]);
            (r.checkpoint, r.tta, r.threshold) = (Some("best".into()), tta, Some(t));
            r.mean_dice_per_image = dice;
            r
        };
        let mut runs = vec![run("s0", 0, 0.1), run("s1", 1, 0.1), run("s2", 2, 0.1)];
        // Newest first: s0 was last evaluated with TTA, s2 at a threshold chosen on val.
        runs[0].tests = vec![record(0.9, true, 0.5), record(0.6, false, 0.5)];
        runs[1].tests = vec![record(0.7, false, 0.5)];
        runs[2].tests = vec![record(0.1, false, 0.45), record(0.8, false, 0.5)];
        let g = repeat_groups(&runs);
        assert_eq!(g[0].tested.as_deref(), Some("best t=0.50"));
        let d = g[0].test_dice.unwrap();
        assert!((d.mean - 0.7).abs() < 1e-12 && d.n == 3, "{d:?}");
        assert!(
            repeats_table(&g).contains("| best t=0.50 | 0.6000 0.7000 0.8000 |"),
            "{}",
            repeats_table(&g)
        );
        // Thresholds each chosen on its own val are one protocol.
        let mut chosen = runs.clone();
        for (r, (d, t)) in chosen.iter_mut().zip([(0.6, 0.3), (0.7, 0.4), (0.8, 0.45)]) {
            r.test = Some(record(d, false, t));
            r.test_chosen_on_val = true;
        }
        let g = repeat_groups(&chosen);
        assert_eq!(g[0].tested.as_deref(), Some("best t=chosen on val"));
        assert!((g[0].test_dice.unwrap().mean - 0.7).abs() < 1e-12);
        // Nothing in common: no test spread, said so.
        runs[1].tests = vec![record(0.7, false, 0.3)];
        let g = repeat_groups(&runs);
        assert_eq!((g[0].test_dice, g[0].tested.as_deref()), (None, None));
        assert!(repeats_table(&g).contains("no test evaluation common to all"));
    }

    /// A group says which setting it is (the ablation's switch) and each run's values, so a
    /// table built from `--format json` takes the same numbers as the mean ± sd line.
    #[test]
    fn a_group_names_its_setting_and_each_runs_values() {
        let record = |dice: f64| {
            let mut r = ResultRecord::new(960, &[]);
            (r.checkpoint, r.threshold) = (Some("best".into()), Some(0.5));
            r.mean_dice_per_image = dice;
            r
        };
        let mut runs = vec![
            run("a0", 0, 0.1),
            run("a1", 1, 0.1),
            run("b0", 0, 0.0),
            run("b1", 1, 0.0),
        ];
        for (r, v) in runs.iter_mut().zip([0.5, 0.7, 0.4, 0.6]) {
            r.best_val = Some(v);
        }
        runs[0].tests = vec![record(0.8)];
        runs[1].tests = vec![record(0.6)];
        super::super::mark_differences(&mut runs);
        let g = repeat_groups(&runs);
        assert_eq!(g.len(), 2, "{g:?}");
        assert_eq!(g[0].setting, ["model.lambda=0.1"]);
        assert_eq!(g[1].setting, ["model.lambda=0.0"]);
        assert_eq!(
            g[0].members[1],
            Member {
                run: "a1".into(),
                seed: Some("1".into()),
                fold: None, // no cross-validation
                best_val: Some(0.7),
                test_dice: Some(0.6),
                test_hd95: None,
            }
        );
        assert_eq!(g[1].members[0].test_dice, None);
        let t = repeats_table(&g);
        assert!(
            t.contains("| a0 and 1 more | model.lambda=0.1 | run.seed |"),
            "{t}"
        );

        // An ablation folder: the full model and two ablations of one switch each. Each
        // group names its own switch only; the full model, which has the common values, none.
        let mut folder = vec![
            run("full0", 0, 0.1),
            run("full1", 1, 0.1),
            run("nolte0", 0, 0.1),
            run("nolte1", 1, 0.1),
            run("nocon0", 0, 0.0),
            run("nocon1", 1, 0.0),
        ];
        for r in &mut folder[2..4] {
            r.config.insert("model.lte_levels".into(), "[]".into());
        }
        super::super::mark_differences(&mut folder);
        let g = repeat_groups(&folder);
        let settings: Vec<&[String]> = g.iter().map(|g| g.setting.as_slice()).collect();
        assert_eq!(
            settings,
            [
                &[][..],
                &["model.lte_levels=[]".to_string()][..],
                &["model.lambda=0.0".to_string()][..]
            ]
        );
    }
}
