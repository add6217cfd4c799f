//! Records the git commit tmca is built from as `TMCA_BUILD_COMMIT` (`-dirty` when tracked
//! files had uncommitted changes; `unknown` outside a git checkout), for the provenance of
//! checkpoints and results. Only this binary crate rebuilds when it changes.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn main() {
    let commit = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c}-dirty")
            } else {
                c
            }
        }
        None => "unknown".into(),
    };
    println!("cargo:rustc-env=TMCA_BUILD_COMMIT={commit}");
    // Run again when HEAD, the branch or the index moves, or a source file changes. Only paths
    // that exist: cargo counts a missing one as changed, on every build.
    let mut watch: Vec<String> = [
        "src",
        "../trainer/src",
        "../worker/src",
        "../kernels/src",
        "../data/src",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        watch.push(format!("{dir}/HEAD"));
        watch.push(format!("{dir}/index"));
    }
    if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
        watch.push(format!("{common}/packed-refs"));
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch.push(format!("{common}/{r}"));
        }
    }
    for p in watch.iter().filter(|p| Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
