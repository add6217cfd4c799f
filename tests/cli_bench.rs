//! `tmca bench step` at a tiny size: the section is written with every row, rerunning
//! replaces it and keeps the text around it; with PyTorch (python3 with torch, skipped with
//! TMCA_SKIP_PYTHON=1) the mirror's columns are filled.

use std::path::Path;
use std::process::Command;

const ROWS: [&str; 20] = [
    "| 32×32 | training step |",
    "| 32×32 | training step: peak RSS |",
    "| 32×32 | inference |",
    "| 32×32 | inference: peak RSS |",
    "| 32×32 | loader (2 threads, augmented) |",
    "#### 32×32: tmca step",
    "| conv2d | 16 |",
    "| depthwise conv | 5 |",
    "| transposed conv | 5 |",
    "| attention core | 6 |",
    "| linear | 42 |",
    "| layernorm | 24 |",
    "| gelu | 15 |",
    "| contrastive & pooling |",
    "| seg. loss | 1 |",
    "| other (glue, reshapes, embeddings) |",
    "| gradient norm + clipping |",
    "| optimiser (AdamW) |",
    "| batch → tensors (host copies) |",
    "| data loading (one loader thread per batch, not in the step) |",
];

fn bench(dir: &Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tmca"))
        .args([
            "bench", "step", "--sizes", "32", "--steps", "1", "--warmup", "0",
        ])
        .args(["--loader-seconds", "0.1"])
        .args(if extra.contains(&"--profile-reps") {
            &[][..]
        } else {
            &["--profile-reps", "1"][..]
        })
        .arg("--workdir")
        .arg(dir.join("work"))
        .arg("--output")
        .arg(dir.join("B.md"))
        .args(extra)
        .output()
        .expect("tmca runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    std::fs::read_to_string(dir.join("B.md")).expect("section written")
}

#[test]
fn bench_step_writes_every_row_and_rewrites_only_its_section() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("B.md"), "# Benchmarks\n\nkept before\n").unwrap();
    let md = bench(dir.path(), &["--no-torch"]);
    for row in ROWS {
        assert!(md.contains(row), "missing {row:?} in\n{md}");
    }
    assert!(md.contains("PyTorch skipped (--no-torch)"), "{md}");
    assert!(md.contains("kept before"));
    let plan = md
        .find("Plan:")
        .expect("plan placeholder after the section");
    assert!(plan > md.find("<!-- end:step -->").unwrap());
    // A rerun replaces the section, keeps the plan (possibly hand-edited) once.
    let edited = md.replace("Plan: *(", "Plan: my plan *(");
    std::fs::write(dir.path().join("B.md"), edited).unwrap();
    let again = bench(dir.path(), &["--no-torch"]);
    assert_eq!(again.matches("<!-- begin:step -->").count(), 1);
    assert_eq!(again.matches("Plan:").count(), 1);
    assert!(again.contains("Plan: my plan"));
    // Without replays, no profile (nor its explanation).
    let plain = bench(dir.path(), &["--no-torch", "--profile-reps", "0"]);
    assert!(plain.contains(ROWS[0]), "{plain}");
    assert!(!plain.contains("Profile of the training step"), "{plain}");
}

#[test]
fn bench_step_measures_the_pytorch_mirror() {
    if std::env::var_os("TMCA_SKIP_PYTHON").is_some() {
        eprintln!("TMCA_SKIP_PYTHON set: PyTorch mirror benchmark skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference/bench_torch.py");
    // One thread: PyTorch's spinning OpenMP threads crawl on a busy machine (CI runs tests in
    // parallel), and this test checks the plumbing, not the numbers.
    let script = script.to_str().unwrap();
    let md = bench(dir.path(), &["--torch-script", script, "--threads", "1"]);
    assert!(
        !md.contains("skipped"),
        "PyTorch was skipped (python3 needs torch, installed by .ci/run):\n{md}"
    );
    assert!(md.contains("with `torch.set_num_threads(1)`"), "{md}");
    for row in [
        "| conv2d | 16 |",
        "| attention core | 6 |",
        "| linear | 42 |",
    ] {
        let line = md.lines().find(|l| l.starts_with(row)).unwrap();
        assert!(!line.ends_with("| — | — | — |"), "no PyTorch time: {line}");
    }
}
