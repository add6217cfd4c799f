//! Small helpers shared by commands: synthetic stores, machine description, dates.

use crate::progress::Bar;
use anyhow::Context;
use std::path::{Path, PathBuf};
use tmca_data::synth::{self, SynthConfig};

/// Writes a line to stdout (`to_err`: stderr) and carries on when the reader has gone. The
/// training commands keep Rust's ignored SIGPIPE (their sockets rely on write errors), under
/// which `println!` would panic on a closed pipe (`tmca train … | head`): a run does not end
/// for that.
pub fn say(to_err: bool, line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = match to_err {
        false => writeln!(std::io::stdout(), "{line}"),
        true => writeln!(std::io::stderr(), "{line}"),
    };
}

/// The synthetic store for `cfg` under `dir`, generated unless an identical one is there;
/// returns its path and whether it was generated now.
pub fn ensure_synth(dir: &Path, cfg: &SynthConfig) -> anyhow::Result<(PathBuf, bool)> {
    let path = dir.join(synth::dataset_name(cfg.modality));
    let fresh = synth::ensure_store(cfg, &path, &Bar::default())
        .with_context(|| format!("generating {}", path.display()))?;
    Ok((path, fresh))
}

/// Creates the folders an output file (`--json`, `--per-image`) goes into, before the work
/// that fills it: a typo in the path is found at once, not after an evaluation.
pub fn output_parent(file: Option<&Path>) -> anyhow::Result<()> {
    if let Some(dir) = file
        .and_then(Path::parent)
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// A path as a shell word, for the commands tmca prints to copy: single-quoted when it holds
/// anything but plain characters.
pub fn shell_word(p: &Path) -> String {
    let s = p.display().to_string();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c));
    if plain {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// "CPU model (N cores)" from /proc/cpuinfo, best effort.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{model}, {cores} cores")
}

/// Today's UTC date as YYYY-MM-DD.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02}")
}

/// Replaces the text between `<!-- begin:KEY -->` and `<!-- end:KEY -->` in `file` (appending
/// the section if absent), writing through a temporary file.
pub fn replace_section(file: &Path, key: &str, body: &str) -> anyhow::Result<()> {
    let (begin, end) = (
        format!("<!-- begin:{key} -->"),
        format!("<!-- end:{key} -->"),
    );
    let old = match std::fs::read_to_string(file) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n".to_string(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(a), Some(b)) if b > a => format!("{}{}{}", &old[..a], section, &old[b + end.len()..]),
        _ => format!("{}\n{}\n", old.trim_end(), section),
    };
    let tmp = file.with_extension("md.tmp");
    std::fs::write(&tmp, new).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("writing {}", file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn printed_paths_are_shell_words() {
        use std::path::Path;
        assert_eq!(super::shell_word(Path::new("runs/q-1")), "runs/q-1");
        assert_eq!(super::shell_word(Path::new("my runs/a")), "'my runs/a'");
        assert_eq!(super::shell_word(Path::new("it's")), r"'it'\''s'");
    }
}
