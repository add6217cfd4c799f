//! `tmca runs`: one line per run directory.

use crate::cli::{RunsArgs, RunsFormat};
use tmca_trainer::runs::{
    csv, find_runs, mark_differences, repeat_groups, repeats_table, table, RunOverview,
};

pub fn run(a: &RunsArgs) -> anyhow::Result<()> {
    let dirs = find_runs(&a.dirs)?;
    if dirs.is_empty() {
        anyhow::bail!(crate::cli::UsageError(format!(
            "no run directory (a folder with config.toml) in or below {}",
            a.dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut runs = Vec::new();
    for d in &dirs {
        match RunOverview::read(d) {
            Ok(r) => runs.push(r),
            // One unreadable run does not hide the others.
            Err(e) => tracing::warn!("skipping {}: {e}", d.display()),
        }
    }
    mark_differences(&mut runs);
    match a.format {
        RunsFormat::Markdown => print!("{}{}", table(&runs), repeats_table(&repeat_groups(&runs))),
        RunsFormat::Csv => print!("{}", csv(&runs)),
        RunsFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "runs": runs,
                "repeats": repeat_groups(&runs),
            }))?
        ),
    }
    Ok(())
}
