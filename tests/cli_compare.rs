//! `tmca compare` on per-image files made here: its means, counts, bootstrap intervals and
//! Wilcoxon p-values are checked against numpy and scipy (tests/python/check_compare.py), in
//! the exact regime (few differences, no ties) and the asymptotic one (ties, zeros, many
//! images); files that do not score the same images are refused, naming them.

use std::fmt::Write;
use std::path::Path;

mod common;
use common::{text, tmca, Lcg};

/// Per-image files A and B: `small` (12 images, distinct differences: exact test), `tied`
/// (30 images, scores on a 0.05 grid: ties and zeros) and `large` (80 images).
fn write_pair(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let header =
        "dataset,index,source_name,dice,iou,hd95,assd,predicted_pixels,mask_pixels,report\n";
    let (mut a, mut b) = (header.to_string(), header.to_string());
    let mut rng = Lcg(7);
    for (name, n, grid) in [
        ("small", 12, false),
        ("tied", 30, true),
        ("large", 80, false),
    ] {
        for i in 0..n {
            let x = rng.next();
            let mut y = (x + 0.04 + 0.2 * (rng.next() - 0.5)).clamp(0.0, 1.0);
            let mut x = x;
            if grid {
                x = (x * 20.0).round() / 20.0;
                y = (y * 20.0).round() / 20.0;
            }
            let report = format!("\"report {i}, with a comma\"");
            // Distances that fall as Dice rises (B better on most images, in both).
            let (hx, hy) = (20.0 * (1.0 - x), 20.0 * (1.0 - y));
            writeln!(a, "{name},{i},img{i}.png,{x},{x},{hx},{x},1,1,{report}").unwrap();
            writeln!(b, "{name},{i},img{i}.png,{y},{y},{hy},{y},1,1,{report}").unwrap();
        }
    }
    let (pa, pb) = (dir.join("a.csv"), dir.join("b.csv"));
    std::fs::write(&pa, a).unwrap();
    std::fs::write(&pb, b).unwrap();
    (pa, pb)
}

#[test]
fn compare_agrees_with_scipy_and_refuses_other_images() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = write_pair(dir.path());
    let (sa, sb) = (a.to_str().unwrap(), b.to_str().unwrap());

    let o = tmca(&["compare", sa, sb]);
    assert!(o.status.success(), "{}", text(&o));
    let md = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        md.contains("| small | 12 |") && md.contains("(exact)"),
        "{md}"
    );
    assert!(md.contains("| all images | 122 |"), "{md}");

    let o = tmca(&["compare", sa, sb, "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows[0]["wilcoxon"]["exact"], true);
    assert_eq!(rows[1]["wilcoxon"]["exact"], false, "ties: asymptotic");
    assert!(
        rows[1]["equal"].as_u64().unwrap() > 0,
        "the grid makes zeros"
    );
    assert_eq!(rows[2]["wilcoxon"]["exact"], false, "80 images: asymptotic");
    let json = dir.path().join("result.json");
    std::fs::write(&json, &o.stdout).unwrap();
    if std::env::var_os("TMCA_SKIP_PYTHON").is_some() {
        eprintln!("TMCA_SKIP_PYTHON set: the scipy check of tmca compare is skipped");
    } else {
        let out = common::python_check(
            "check_compare.py",
            &[a.as_os_str(), b.as_os_str(), json.as_os_str()],
        );
        eprintln!("{out}");
    }

    // HD95: lower is better, so "B better" counts the images whose distance fell.
    let o = tmca(&["compare", sa, sb, "--metric", "hd95", "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let hd: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in 0..3 {
        assert_eq!(hd[k]["b_better"], rows[k]["b_better"], "{k}");
        assert_eq!(hd[k]["b_worse"], rows[k]["b_worse"], "{k}");
        assert!(hd[k]["mean_diff"].as_f64().unwrap() < 0.0);
    }
    let json_hd = dir.path().join("result-hd95.json");
    std::fs::write(&json_hd, &o.stdout).unwrap();
    if std::env::var_os("TMCA_SKIP_PYTHON").is_none() {
        let hd95 = std::ffi::OsStr::new("hd95");
        common::python_check(
            "check_compare.py",
            &[a.as_os_str(), b.as_os_str(), json_hd.as_os_str(), hd95],
        );
    }
    let o = tmca(&["compare", sa, sb, "--metric", "assd"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("ASSD in pixels (lower is better)"));

    // A file missing an image is refused (exit 2), a file that is not a per-image file as bad
    // input (exit 3).
    let short = dir.path().join("short.csv");
    let text_b = std::fs::read_to_string(&b).unwrap();
    let kept: Vec<&str> = text_b
        .lines()
        .filter(|l| !l.starts_with("tied,3,"))
        .collect();
    std::fs::write(&short, kept.join("\n") + "\n").unwrap();
    let o = tmca(&["compare", sa, short.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("tied #3"), "{}", text(&o));
    // Files of other stores that only look paired (the same datasets and indices, other
    // images or reports there) are refused, naming places.
    let swapped = dir.path().join("swapped.csv");
    std::fs::write(
        &swapped,
        text_b
            .replace("large,5,img5.png", "large,5,other5.png")
            .replace("\"report 7,", "\"another report 7,"),
    )
    .unwrap();
    let o = tmca(&["compare", sa, swapped.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("score different images at 4 of the same places")
            && text(&o).contains("large #5: img5.png"),
        "{}",
        text(&o)
    );
    // A per-image file from before the distances: Dice compares, HD95 asks for a new eval.
    let old = dir.path().join("old.csv");
    let old_text: String = std::fs::read_to_string(&a)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(8, ',').collect();
            format!("{},{}\n", f[..5].join(","), f[7])
        })
        .collect();
    std::fs::write(&old, old_text).unwrap();
    let so = old.to_str().unwrap();
    let o = tmca(&["compare", so, sb]);
    assert!(o.status.success(), "{}", text(&o));
    let o = tmca(&["compare", so, sb, "--metric", "hd95"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("no `hd95` column") && text(&o).contains("evaluate again"));
    let other = dir.path().join("other.csv");
    std::fs::write(&other, "name,score\nx,1\n").unwrap();
    let o = tmca(&["compare", sa, other.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("no `dataset` column"), "{}", text(&o));
    // A score that is not a finite number (NaN) is refused, naming the line; a missing file
    // is an I/O error (exit 4).
    let nan = dir.path().join("nan.csv");
    let mut lines: Vec<String> = std::fs::read_to_string(&a)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let mut f: Vec<String> = lines[2].split(',').map(String::from).collect();
    f[3] = "NaN".into();
    lines[2] = f.join(",");
    std::fs::write(&nan, lines.join("\n") + "\n").unwrap();
    let o = tmca(&["compare", nan.to_str().unwrap(), sb]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("line 3: score \"NaN\" is not a finite number"),
        "{}",
        text(&o)
    );
    // A Dice outside [0, 1] is another column or an edited file: refused, naming the line.
    f[3] = "7.5".into();
    lines[2] = f.join(",");
    std::fs::write(&nan, lines.join("\n") + "\n").unwrap();
    let o = tmca(&["compare", nan.to_str().unwrap(), sb]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("line 3: dice 7.5 is outside [0, 1]"),
        "{}",
        text(&o)
    );
    let o = tmca(&[
        "compare",
        sa,
        dir.path().join("absent.csv").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    // A reader that goes away (`| head`) ends the command quietly, without a panic.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tmca"))
        .args(["compare", sa, sb, "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert!(!text(&o).contains("panicked"), "{}", text(&o));
}

/// A per-image file as `tmca eval --per-image` writes it, with its model and protocol: one
/// row per (dataset, score), the image index its place in `rows`.
fn write_scored(
    dir: &Path,
    name: &str,
    rows: &[(&str, f64)],
    model: &str,
    protocol: &str,
) -> String {
    let mut s = "dataset,index,source_name,dice,iou,hd95,assd,predicted_pixels,mask_pixels,report,model,protocol\n".to_string();
    for (i, (ds, d)) in rows.iter().enumerate() {
        writeln!(
            s,
            "{ds},{i},img{i}.png,{d},{d},1,1,1,1,r{i},{model},{protocol}"
        )
        .unwrap();
    }
    let p = dir.join(name);
    std::fs::write(&p, s).unwrap();
    p.to_str().unwrap().to_string()
}

/// Files of `tmca eval --per-image` name their model and protocol: compare shows them and
/// says when A and B were evaluated differently (another threshold here).
#[test]
fn compare_names_the_models_and_flags_different_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, model: &str, protocol: &str, shift: f64| {
        let rows: Vec<(&str, f64)> = (0..8).map(|i| ("x", 0.1 * i as f64 + shift)).collect();
        write_scored(dir.path(), name, &rows, model, protocol)
    };
    let a = file("a.csv", "runs/a", "best t=0.50", 0.0);
    let b = file("b.csv", "runs/b", "best t=0.40", 0.05);
    let same = file("c.csv", "runs/c", "best t=0.50", 0.05);
    let o = tmca(&["compare", &a, &b]);
    assert!(o.status.success(), "{}", text(&o));
    let md = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(md.contains("a.csv (runs/a, best t=0.50)"), "{md}");
    assert!(
        md.contains("Note: A and B were evaluated differently (A: best t=0.50; B: best t=0.40)"),
        "{md}"
    );
    let o = tmca(&["compare", &a, &same]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("evaluated differently"), "{}", text(&o));
}

/// Repeats: `A0 A1 --vs B0 B1` compares the per-image means of each model's repeats — the
/// same as comparing files holding those means — names the files, and refuses a run given
/// twice or a count of files that says nothing about the sides.
#[test]
fn compare_averages_each_models_repeats_image_by_image() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Lcg(11);
    let n = 40;
    let mut scores = vec![vec![0.0; n]; 4];
    for row in scores.iter_mut() {
        for v in row.iter_mut() {
            *v = rng.next();
        }
    }
    let write = |name: &str, model: &str, v: &[f64]| {
        let rows: Vec<(&str, f64)> = v
            .iter()
            .enumerate()
            .map(|(i, d)| (if i < n / 2 { "x" } else { "y" }, *d))
            .collect();
        write_scored(dir.path(), name, &rows, model, "best t=0.50")
    };
    let files: Vec<String> = ["a0", "a1", "b0", "b1"]
        .iter()
        .zip(&scores)
        .map(|(m, v)| write(&format!("{m}.csv"), &format!("runs/{m}"), v))
        .collect();
    let mean = |p: usize, q: usize| -> Vec<f64> {
        (0..n)
            .map(|i| (scores[p][i] + scores[q][i]) / 2.0)
            .collect()
    };
    let am = write("am.csv", "runs/am", &mean(0, 1));
    let bm = write("bm.csv", "runs/bm", &mean(2, 3));
    let json = |args: &[&str]| {
        let mut all = vec!["compare"];
        all.extend(args);
        all.extend(["--format", "json"]);
        let o = tmca(&all);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let repeats = json(&[&files[0], &files[1], "--vs", &files[2], &files[3]]);
    assert_eq!(repeats, json(&[&am, &bm]));
    assert_eq!(repeats.as_array().unwrap().len(), 3, "x, y and all images");
    let o = tmca(&[
        "compare", &files[0], &files[1], "--vs", &files[2], &files[3],
    ]);
    let md = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        md.contains("A = the per-image mean of 2 files: ")
            && md.contains("a1.csv (runs/a1); best t=0.50"),
        "{md}"
    );
    // One run twice is no second repeat.
    let again = dir.path().join("a0-again.csv");
    std::fs::copy(&files[0], &again).unwrap();
    let o = tmca(&[
        "compare",
        &files[0],
        again.to_str().unwrap(),
        "--vs",
        &files[2],
        &files[3],
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("are both of runs/a0"), "{}", text(&o));
    let o = tmca(&["compare", &files[0], &files[1], &files[2]]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--vs"), "{}", text(&o));
}
