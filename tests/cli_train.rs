//! `tmca train`, `eval` and `predict` end to end on a tiny synthetic run.

use std::path::Path;

mod common;
use common::{text, tmca};

/// TensorBoard's own reader checks the run's scalars, overlays and config text against its
/// config.toml and best manifest (tests/python/check_training_run.py); needs `python3` with
/// `tensorboard` (installed by `.ci/run`), skipped with TMCA_SKIP_PYTHON=1.
fn check_tensorboard_with_python(run: &Path) {
    if std::env::var_os("TMCA_SKIP_PYTHON").is_some() {
        eprintln!("TMCA_SKIP_PYTHON set: TensorBoard check of the training run skipped");
        return;
    }
    eprint!(
        "{}",
        common::python_check("check_training_run.py", &[run.as_os_str()])
    );
}

#[test]
fn train_eval_predict_write_what_they_promise() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::cli_config(dir.path(), "endoscopy", "", "");
    // As a job script's first submission: --resume with nothing to resume starts, and says so.
    let o = tmca(&["train", cfg.to_str().unwrap(), "--resume"]);
    assert!(o.status.success(), "{}", text(&o));
    let run = dir.path().join("run");
    assert!(
        text(&o).contains(&format!(
            "no checkpoint to resume in {}: starting a new run",
            run.join("checkpoints").display()
        )),
        "{}",
        text(&o)
    );
    for f in [
        "config.toml",
        "tokenizer.json",
        "checkpoints/best/manifest.json",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    assert!(std::fs::read_dir(run.join("tensorboard")).unwrap().count() == 1);
    assert!(text(&o).contains("Dice (per-image mean)"), "{}", text(&o));
    assert!(text(&o).contains("validation (last, step "), "{}", text(&o));
    check_tensorboard_with_python(&run);
    // While another process trains in the run directory (holds its lock), a second is refused
    // before it writes anything.
    {
        use std::os::fd::AsRawFd;
        let lock = std::fs::File::open(run.join(".lock")).unwrap();
        // SAFETY: flock on a descriptor this test owns.
        assert_eq!(
            unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
            0
        );
        let o = tmca(&["train", cfg.to_str().unwrap(), "--resume"]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            text(&o).contains("in use by another tmca train"),
            "{}",
            text(&o)
        );
        // Without the lock: a finished run resumed is a no-op that succeeds.
        drop(lock);
        let o = tmca(&["train", cfg.to_str().unwrap(), "--resume"]);
        assert!(o.status.success(), "{}", text(&o));
    }
    // `tmca eval RUN --split test ARGS…`, which must succeed.
    let eval_test = |args: &[&str]| {
        let mut all = vec!["eval", run.to_str().unwrap(), "--split", "test"];
        all.extend(args);
        let o = tmca(&all);
        assert!(o.status.success(), "{}", text(&o));
        o
    };

    let per_image = dir.path().join("per-image.csv");
    let o = eval_test(&["--per-image", per_image.to_str().unwrap()]);
    let out = text(&o);
    assert!(
        out.contains("synth-endoscopy | test | 4 |") && out.contains("pixel-pooled"),
        "{out}"
    );
    let o = eval_test(&["--tta"]);
    assert!(
        text(&o).contains("with flip TTA") && text(&o).contains("synth-endoscopy | test | 4 |")
    );
    // Both evaluations are recorded; `tmca runs` reports the newer at the run's threshold
    // (the TTA one).
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval/best-test.json")).unwrap())
            .unwrap();
    assert_eq!(rec["checkpoint"], "best");
    assert_eq!(rec["tta"], false);
    assert_eq!(rec["datasets"][0]["dataset"], "synth-endoscopy");
    assert_eq!(rec["datasets"][0]["split"], "test");
    assert_eq!(rec["datasets"][0]["images"], 4);
    // What made it: build, threads, device (here as in the checkpoint that was evaluated).
    let made = &rec["provenance"];
    assert_eq!(made["device"], "cpu", "{rec}");
    assert!(made["threads"].as_u64().is_some_and(|t| t >= 1), "{rec}");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("checkpoints/best/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["provenance"]["commit"], made["commit"],
        "{manifest}"
    );
    assert_eq!(manifest["provenance"]["ranks"], 1, "{manifest}");
    // One row per test image; their mean is the dataset's per-image Dice.
    let csv = std::fs::read_to_string(&per_image).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("dataset,index,source_name,dice,iou,hd95,assd,predicted_pixels,mask_pixels,report,model,protocol")
    );
    let rows: Vec<Vec<f64>> = lines
        .map(|l| {
            assert!(l.starts_with("synth-endoscopy,"), "{l}");
            assert!(
                l.ends_with(&format!(",{},best t=0.50", run.display())),
                "{l}"
            );
            let f: Vec<&str> = l.split(',').collect();
            (3..7).map(|i| f[i].parse().unwrap()).collect()
        })
        .collect();
    assert_eq!(rows.len(), 4, "{csv}");
    // Dice, IoU, HD95, ASSD: the per-image means are the dataset's recorded values.
    for (k, key) in ["dice", "iou", "hd95", "assd"].iter().enumerate() {
        let mean = rows.iter().map(|r| r[k]).sum::<f64>() / 4.0;
        let want = rec["datasets"][0][format!("{key}_per_image")]
            .as_f64()
            .unwrap();
        assert!((mean - want).abs() < 1e-5, "{key}: {mean} vs {want}");
    }
    let tta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("eval/best-test-tta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(tta["tta"], true);
    let log = std::fs::read_to_string(run.join("validation.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 2, "one validation per epoch: {log}");
    for (k, line) in log.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["epoch"], k as u64 + 1, "epochs completed: {log}");
    }
    // Another threshold is recorded beside, and scores the per-image rows at that threshold.
    let low = dir.path().join("low.csv");
    eval_test(&["--threshold", "0.01", "--per-image", low.to_str().unwrap()]);
    let rec_low: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("eval/best-test-t0.01.json")).unwrap(),
    )
    .unwrap();
    assert!((rec_low["threshold"].as_f64().unwrap() - 0.01).abs() < 1e-6);
    assert_eq!(rec["threshold"], 0.5);
    // Predicted pixels per image (a column of the per-image files).
    let predicted = |path: &std::path::Path| -> Vec<u64> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(7).unwrap().parse::<u64>().unwrap())
            .collect()
    };
    assert!(
        predicted(&low).iter().sum::<u64>() >= predicted(&per_image).iter().sum::<u64>(),
        "a lower threshold predicts more"
    );
    // Small components removed: each image keeps nothing or at least the limit (5% of 32²),
    // never more than without the removal; recorded beside.
    let small = dir.path().join("small.csv");
    let o = eval_test(&[
        "--threshold",
        "0.01",
        "--min-area",
        "0.05",
        "--per-image",
        small.to_str().unwrap(),
    ]);
    assert!(text(&o).contains("components under 0.05 of the image removed"));
    let (kept, all) = (predicted(&small), predicted(&low));
    for (k, a) in kept.iter().zip(&all) {
        assert!(*k == 0 || *k >= 52, "{kept:?}");
        assert!(k <= a, "{kept:?} vs {all:?}");
    }
    let rec_small: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("eval/best-test-t0.01-a0.05.json")).unwrap(),
    )
    .unwrap();
    assert!((rec_small["min_area"].as_f64().unwrap() - 0.05).abs() < 1e-6);
    // An ensemble of the run with itself scores exactly as the run; it is recorded only where
    // --json says, with its members.
    let ens = dir.path().join("ensemble.json");
    let before = std::fs::read_dir(run.join("eval")).unwrap().count();
    let r = run.to_str().unwrap();
    let o = tmca(&[
        "eval",
        r,
        r,
        "--split",
        "test",
        "--json",
        ens.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("ensemble of 2 runs"), "{}", text(&o));
    assert_eq!(std::fs::read_dir(run.join("eval")).unwrap().count(), before);
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ens).unwrap()).unwrap();
    assert_eq!(e["ensemble"].as_array().unwrap().len(), 2);
    for key in ["dice_per_image", "iou_pooled", "hd95_per_image"] {
        assert_eq!(e["datasets"][0][key], rec["datasets"][0][key], "{key}");
    }
    // A threshold sweep in the same pass: its 0.50 row is the evaluation at 0.5 (the store
    // named is the run's own data, so it is recorded as the run's plain evaluation, now with
    // its sweep).
    let endo = dir.path().join("data/synth-endoscopy");
    let (r, e) = (run.to_str().unwrap(), endo.to_str().unwrap());
    let sweep_json = dir.path().join("sweep.json");
    let sj = sweep_json.to_str().unwrap();
    let o = tmca(&[
        "eval", r, "--split", "test", "--store", e, "--sweep", "--json", sj,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    let row = out
        .lines()
        .find(|l| l.starts_with("| 0.50"))
        .unwrap_or_else(|| panic!("{out}"));
    let mean = format!("{:.4}", rec["mean_dice_per_image"].as_f64().unwrap());
    assert!(row.contains(&format!("| {mean} |")), "{row} vs {mean}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("| 0.")).count(),
        19,
        "{out}"
    );
    assert!(out.contains("best threshold on test: "), "{out}");
    let sw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sweep_json).unwrap()).unwrap();
    let rows = sw["sweep"].as_array().unwrap();
    assert_eq!(rows.len(), 19);
    let half = rows
        .iter()
        .find(|r| (r["threshold"].as_f64().unwrap() - 0.5).abs() < 1e-6);
    assert_eq!(
        half.unwrap()["mean_dice_per_image"],
        sw["mean_dice_per_image"]
    );
    // With --min-area each threshold removes its own small components: the 0.50 row is the
    // evaluation with --min-area at 0.5.
    let sweep_a = dir.path().join("sweep-a.json");
    let o = tmca(&[
        "eval",
        r,
        "--split",
        "test",
        "--store",
        e,
        "--sweep",
        "--min-area",
        "0.1",
        "--json",
        sweep_a.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let sa: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sweep_a).unwrap()).unwrap();
    let half = sa["sweep"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| (r["threshold"].as_f64().unwrap() - 0.5).abs() < 1e-6)
        .cloned();
    assert_eq!(
        half.unwrap()["mean_dice_per_image"],
        sa["mean_dice_per_image"]
    );
    assert_eq!(sa["min_area"].as_f64(), Some(0.1));
    let o = tmca(&["eval", run.to_str().unwrap(), "--min-area", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = tmca(&["eval", run.to_str().unwrap(), "--threshold", "1.5"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // A checkpoint the run does not have: the ones it has are listed.
    let o = tmca(&[
        "eval",
        run.to_str().unwrap(),
        "--checkpoint",
        "step-99999999",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("no such checkpoint") && text(&o).contains("best"),
        "{}",
        text(&o)
    );
    // `best` moved aside by a run stopped while replacing it: the message says where it is.
    let (best, aside) = (
        run.join("checkpoints/best"),
        run.join("checkpoints/.old-best-4242"),
    );
    std::fs::rename(&best, &aside).unwrap();
    let o = tmca(&["eval", run.to_str().unwrap()]);
    std::fs::rename(&aside, &best).unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains(".old-best-4242"), "{}", text(&o));
    let o = tmca(&["runs", dir.path().to_str().unwrap(), "--format", "csv"]);
    assert!(o.status.success(), "{}", text(&o));
    let csv = String::from_utf8_lossy(&o.stdout).to_string();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    let fields: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(fields[0], run.to_str().unwrap(), "{csv}");
    assert_eq!(fields[3], "synth-endoscopy", "{csv}");
    let best: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("checkpoints/best/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        fields[5],
        format!("{:.4}", best["best_val"].as_f64().unwrap())
    );
    // The plain evaluation at the run's threshold, not the newer TTA or min-area ones.
    let plain: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval/best-test.json")).unwrap())
            .unwrap();
    assert_eq!(plain["tta"], false);
    assert_eq!(plain["stores"][0]["path"], e);
    assert_eq!(
        fields[7],
        format!("{:.4}", plain["mean_dice_per_image"].as_f64().unwrap())
    );
    assert_eq!(
        fields[9],
        format!(
            "{:.2}",
            plain["datasets"][0]["hd95_per_image"].as_f64().unwrap()
        )
    );
    assert!(fields[10].starts_with("best t=0.50 @ "), "{csv}");
    // JSON: the runs with their reported evaluation, and the sets of repeats (none here).
    let o = tmca(&["runs", dir.path().to_str().unwrap(), "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["runs"][0]["dir"], run.to_str().unwrap());
    assert_eq!(
        j["runs"][0]["test"]["mean_dice_per_image"],
        plain["mean_dice_per_image"]
    );
    assert_eq!(j["repeats"], serde_json::json!([]));
    let o = tmca(&["runs", dir.path().join("data").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no run directory"), "{}", text(&o));

    // Batch mode over a store split.
    let pred = dir.path().join("pred");
    let store = dir.path().join("data/synth-endoscopy");
    // `tmca predict RUNS… --store STORE --split test ARGS… --output OUT`, which must succeed.
    let predict_test = |runs: &[&str], args: &[&str], out: &Path| {
        let mut all = vec!["predict"];
        all.extend(runs);
        all.extend(["--store", store.to_str().unwrap(), "--split", "test"]);
        all.extend(args);
        all.extend(["--output", out.to_str().unwrap()]);
        let o = tmca(&all);
        assert!(o.status.success(), "{}", text(&o));
    };
    let r = run.to_str().unwrap();
    predict_test(&[r], &[], &pred);
    let files: Vec<String> = std::fs::read_dir(&pred)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        files.iter().filter(|f| f.ends_with("_mask.png")).count(),
        4,
        "{files:?}"
    );
    assert_eq!(
        files.iter().filter(|f| f.ends_with("_overlay.png")).count(),
        4,
        "{files:?}"
    );
    // The run's ensemble with itself predicts the same masks.
    let pred_ens = dir.path().join("pred-ens");
    predict_test(&[r, r], &[], &pred_ens);
    for f in files.iter().filter(|f| f.ends_with("_mask.png")) {
        let (x, y) = (
            image::open(pred.join(f)).unwrap(),
            image::open(pred_ens.join(f)).unwrap(),
        );
        assert_eq!(x.as_bytes(), y.as_bytes(), "{f}");
    }
    // With small components removed, every mask keeps nothing or at least 20% of the image.
    let pred_small = dir.path().join("pred-small");
    predict_test(
        &[r],
        &["--threshold", "0.01", "--min-area", "0.2"],
        &pred_small,
    );
    let csv = std::fs::read_to_string(pred_small.join("predictions.csv")).unwrap();
    assert!(!pred_small.join("predictions.csv.partial").exists());
    for line in csv.lines().skip(1) {
        let frac: f64 = line.rsplit(',').next().unwrap().parse().unwrap();
        assert!(frac == 0.0 || frac >= 0.2, "{csv}");
    }

    // One image of another size, with a report.
    let img = dir.path().join("case.png");
    image::RgbImage::from_fn(50, 40, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 6) as u8, 90])
    })
    .save(&img)
    .unwrap();
    let one = dir.path().join("one");
    let o = tmca(&[
        "predict",
        run.to_str().unwrap(),
        "--image",
        img.to_str().unwrap(),
        "--report",
        "one polyp at the upper left",
        "--probs",
        "--maps",
        "--output",
        one.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let mask = image::open(one.join("case_mask.png")).unwrap().to_luma8();
    assert_eq!(mask.dimensions(), (50, 40), "mask at the image's size");
    assert!(mask.pixels().all(|p| p[0] == 0 || p[0] == 255));
    // The probability map at the image's size; the mask is it above the threshold (0.5).
    let prob = image::open(one.join("case_prob.png")).unwrap().to_luma8();
    assert_eq!(prob.dimensions(), (50, 40));
    for (p, m) in prob.pixels().zip(mask.pixels()) {
        assert!(
            p[0].abs_diff(128) <= 1 || (p[0] > 128) == (m[0] == 255),
            "{} vs {}",
            p[0],
            m[0]
        );
    }
    assert!(one.join("case_overlay.png").exists());
    // One enhancement map per LTE level (cpu-tiny: 1..4), at the image's size, and different
    // levels see differently.
    let maps: Vec<image::RgbImage> = (1..=4)
        .map(|l| {
            image::open(one.join(format!("case_lte{l}.png")))
                .unwrap()
                .to_rgb8()
        })
        .collect();
    assert!(maps.iter().all(|m| m.dimensions() == (50, 40)));
    assert_ne!(maps[0], maps[3]);

    // A table of new images (no masks): names repeat across folders, a report has a comma
    // and quotes; batches of 2 over 3 rows.
    let new = dir.path().join("new");
    for sub in ["a", "b"] {
        std::fs::create_dir_all(new.join(sub)).unwrap();
        std::fs::copy(&img, new.join(sub).join("scan.png")).unwrap();
    }
    std::fs::copy(&img, new.join("other.png")).unwrap();
    let table = new.join("reports.csv");
    std::fs::write(
        &table,
        "Image,Description\na/scan.png,one polyp at the upper left\nb/scan.png,\"two polyps, \"\"large\"\"\"\nother.png,no polyp\n",
    )
    .unwrap();
    let tab = dir.path().join("tab");
    let o = tmca(&[
        "predict",
        run.to_str().unwrap(),
        "--table",
        table.to_str().unwrap(),
        "--batch",
        "2",
        "--output",
        tab.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for f in ["scan_mask.png", "scan_1_mask.png", "other_overlay.png"] {
        assert!(tab.join(f).is_file(), "{f} missing");
    }
    let csv = std::fs::read_to_string(tab.join("predictions.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(
        lines[2].starts_with("scan_1,") && lines[2].contains("\"two polyps, \"\"large\"\"\""),
        "{csv}"
    );
    // Batched and one-by-one predictions agree.
    let single = image::open(one.join("case_mask.png")).unwrap().to_luma8();
    let batched = image::open(tab.join("scan_mask.png")).unwrap().to_luma8();
    assert_eq!(single, batched, "same image and report, batch of 2 vs 1");
    // A missing image is named with its row, before anything is written.
    std::fs::write(&table, "Image,Description\nother.png,x\nabsent.png,y\n").unwrap();
    let bad = dir.path().join("bad");
    let o = tmca(&[
        "predict",
        run.to_str().unwrap(),
        "--table",
        table.to_str().unwrap(),
        "--output",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("row 3") && text(&o).contains("absent.png"),
        "{}",
        text(&o)
    );
    assert!(!bad.exists(), "nothing written");
    // So is a file that is no image (its header is read first) ...
    std::fs::write(new.join("notimg.png"), "not an image").unwrap();
    std::fs::write(
        &table,
        "Image,Description
other.png,x
notimg.png,y
",
    )
    .unwrap();
    let predict_table = |out: &Path| {
        tmca(&[
            "predict",
            run.to_str().unwrap(),
            "--table",
            table.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ])
    };
    let o = predict_table(&bad);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("row 3") && text(&o).contains("notimg.png"),
        "{}",
        text(&o)
    );
    assert!(!bad.exists(), "nothing written");
    // ... while names as LViT's tables write them (the mask's name, no extension) are found.
    std::fs::write(
        &table,
        "Image,Description
mask_other.png,x
OTHER,y
",
    )
    .unwrap();
    let lvit = dir.path().join("lvit-names");
    let o = predict_table(&lvit);
    assert!(o.status.success(), "{}", text(&o));
    let csv = std::fs::read_to_string(lvit.join("predictions.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let csv = std::fs::read_to_string(pred.join("predictions.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "store mode: header + 4 rows\n{csv}");

    // Training again into the same run without --resume is refused (a usage error);
    // --resume continues.
    let o = tmca(&["train", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--resume"), "{}", text(&o));
    let o = tmca(&["train", cfg.to_str().unwrap(), "--resume"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("(all before this session: nothing left to train)"),
        "{}",
        text(&o)
    );
    // A threshold chosen on val is what export (and predict) apply by default.
    let o = tmca(&["eval", run.to_str().unwrap(), "--split", "val", "--sweep"]);
    assert!(o.status.success(), "{}", text(&o));
    let chosen: f64 = text(&o)
        .split("best threshold on val: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no chosen threshold: {}", text(&o)));
    let out = dir.path().join("exported");
    let o = tmca(&[
        "export",
        run.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("(chosen on val by `tmca eval"),
        "{}",
        text(&o)
    );
    let model: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model.json")).unwrap()).unwrap();
    let applied = model["threshold"].as_f64().unwrap();
    assert!((applied - chosen).abs() < 0.006, "{applied} vs {chosen}");
    // Every recorded test evaluation is in TensorBoard beside the intact training curves
    // (TensorBoard's own reader).
    if std::env::var_os("TMCA_SKIP_PYTHON").is_none() {
        eprint!(
            "{}",
            common::python_check("check_test_scalars.py", &[run.as_os_str()])
        );
    }
}

/// `data.folds`: training and validation come from the folds of train ∪ val (12 samples in 4
/// folds: 3 validate), `tmca eval --split val` evaluates the same fold, test stays test.
#[test]
fn cross_validation_validates_on_its_fold() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::cli_config(dir.path(), "endoscopy", "", "");
    let toml = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[data]\n", "[data]\nfolds = 4\nfold = 1\n");
    std::fs::write(&cfg, toml).unwrap();
    let o = tmca(&["train", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    // Reports longer than text.max_len = 12 tokens are named with their share.
    assert!(
        text(&o).contains("training reports") && text(&o).contains("text.max_len = 12 tokens"),
        "{}",
        text(&o)
    );
    let run = dir.path().join("run");
    let log = std::fs::read_to_string(run.join("validation.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["datasets"][0]["images"], 3, "{log}");
    // The vocabulary is learned from the fold's training reports, not the store's train split
    // (which holds some of this fold's validation reports).
    {
        use tmca_data::tokenize::TextTokenizer;
        let store =
            tmca_data::store::Store::open(&dir.path().join("data/synth-endoscopy")).unwrap();
        let folds = tmca_data::folds::Folds {
            folds: 4,
            fold: 1,
            group: None,
        };
        let vocab = |split: Option<&tmca_data::folds::Folds>| {
            let idx = tmca_data::folds::samples(&store, tmca_data::Split::Train, split).unwrap();
            let reports: Vec<String> = idx.iter().map(|&i| store.reports()[i].clone()).collect();
            TextTokenizer::learn(&reports, 1000, 12)
                .unwrap()
                .vocab_in_order()
        };
        let saved = TextTokenizer::from_file(&run.join("tokenizer.json"), 12, true).unwrap();
        assert_ne!(
            vocab(None),
            vocab(Some(&folds)),
            "the test needs folds that differ"
        );
        assert_eq!(saved.vocab_in_order(), vocab(Some(&folds)));
    }
    let o = tmca(&["eval", run.to_str().unwrap(), "--split", "val"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("synth-endoscopy | val | 3 |"),
        "{}",
        text(&o)
    );
    // Also when the store is named: the run's own store validates on its fold, not on the
    // store's val split (mostly this fold's training images).
    let store = dir.path().join("data/synth-endoscopy");
    let o = tmca(&[
        "eval",
        run.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--split",
        "val",
    ]);
    assert!(
        text(&o).contains("synth-endoscopy | val | 3 |"),
        "{}",
        text(&o)
    );
    // The same data under another name (imported again with another --name) is the run's
    // own too: its val split is the fold.
    let renamed = dir.path().join("renamed.zarr");
    let ok = std::process::Command::new("cp")
        .arg("-r")
        .arg(&store)
        .arg(&renamed)
        .status()
        .unwrap();
    assert!(ok.success());
    let meta = renamed.join("zarr.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    v["attributes"]["tmca"]["name"] = "endo-again".into();
    std::fs::write(&meta, v.to_string()).unwrap();
    let o = tmca(&[
        "eval",
        run.to_str().unwrap(),
        "--store",
        renamed.to_str().unwrap(),
        "--split",
        "val",
    ]);
    assert!(text(&o).contains("endo-again | val | 3 |"), "{}", text(&o));
    let o = tmca(&["eval", run.to_str().unwrap(), "--split", "test"]);
    assert!(
        text(&o).contains("synth-endoscopy | test | 4 |"),
        "{}",
        text(&o)
    );
    let resolved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(resolved.contains("folds = 4") && resolved.contains("fold = 1"));
    // Predicting the run's store's val split predicts the fold.
    let pred = dir.path().join("pred");
    let o = tmca(&[
        "predict",
        run.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--split",
        "val",
        "--output",
        pred.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let rows = std::fs::read_to_string(pred.join("predictions.csv")).unwrap();
    assert_eq!(rows.lines().count(), 1 + 3, "{rows}");

    // --fold overrides the config's fold, and is checked as it is.
    let o = tmca(&[
        "train",
        cfg.to_str().unwrap(),
        "--fold",
        "4",
        "--run-dir",
        dir.path().join("bad").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("data.folds"), "{}", text(&o));
}

#[test]
fn config_errors_exit_2_and_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::cli_config(dir.path(), "endoscopy", "", "");
    let bad = std::fs::read_to_string(&cfg).unwrap().replace(
        "preset = \"cpu-tiny\"",
        "preset = \"cpu-tiny\"\nlte_levels = [0]",
    );
    std::fs::write(&cfg, bad).unwrap();
    let o = tmca(&["train", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("model.lte_levels"), "{}", text(&o));
    let o = tmca(&["eval", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("not a tmca run directory"),
        "{}",
        text(&o)
    );
}

/// A start refused for what only the data can tell (a batch larger than the training set)
/// leaves no run directory; a tokenizer.json left by a run whose checkpoints were deleted (the
/// README's way to retrain) is made anew from the config, not taken over.
#[test]
fn a_refused_start_leaves_nothing_and_a_retrain_takes_no_stale_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::cli_config(dir.path(), "xray", "", "");
    let run = dir.path().join("run");
    common::edit_config(&cfg, "batch_size = 4", "batch_size = 1000");
    let o = tmca(&["train", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("data.batch_size"), "{}", text(&o));
    assert!(!run.exists(), "a refused start left {}", run.display());
    // A text-guided model that nothing reads the reports of: refused before anything is
    // written.
    let idle = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("batch_size = 1000", "batch_size = 4")
        .replace("[model]\n", "[model]\nlambda = 0.0\nlte_levels = []\n");
    let idle_cfg = dir.path().join("idle.toml");
    std::fs::write(&idle_cfg, idle).unwrap();
    let o = tmca(&["train", idle_cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("model.text_guidance"), "{}", text(&o));
    assert!(!run.exists(), "a refused start left {}", run.display());

    common::edit_config(&cfg, "batch_size = 1000", "batch_size = 4");
    common::edit_config(&cfg, "epochs = 2", "epochs = 1");
    let o = tmca(&["train", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let vocab = |p: &Path| {
        let t: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        t["model"]["vocab"].as_object().unwrap().len()
    };
    let learned = vocab(&run.join("tokenizer.json"));
    std::fs::remove_dir_all(run.join("checkpoints")).unwrap();
    // Smaller than what was learned, above what the reports' characters need.
    let small = learned - 3;
    common::edit_config(
        &cfg,
        "max_len = 12",
        &format!("max_len = 12\nvocab_size = {small}"),
    );
    let o = tmca(&["train", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("made anew"), "{}", text(&o));
    let made = vocab(&run.join("tokenizer.json"));
    assert!(
        made <= small,
        "the stale tokenizer ({learned}) was kept: {made}"
    );
}

/// A training command whose reader has gone (`tmca train bad.toml 2>&1 | head -0`) still ends
/// with its own exit code, not a panic (101) on printing its error.
#[test]
fn a_closed_output_pipe_keeps_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[run]\ndir = \"r\"\n[data]\nimage_size = 60\nbatch_size = 2\nstores = [\"a\"]\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tmca"))
        .args(["train", bad.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    assert_eq!(child.wait().unwrap().code(), Some(2));
}

/// A store at another size than the model's input is resampled: training and evaluation say
/// that the scores are of resampled masks.
#[test]
fn a_store_at_another_size_is_named_as_resampled() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::cli_config(dir.path(), "xray", "", "");
    common::edit_config(&cfg, "image_size = 32", "image_size = 64");
    common::edit_config(&cfg, "epochs = 2", "epochs = 1");
    let o = tmca(&["train", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let said = "synth-xray: stored at 32×32, the model reads 64×64";
    assert!(text(&o).contains(said), "{}", text(&o));
    let o = tmca(&["eval", dir.path().join("run").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(said), "{}", text(&o));
}

/// A run recognises its data by content, not by path: a store written again (another seed) at
/// the same path is refused by `eval` (naming it) and by `--resume`; scored with `--store` it
/// is not recorded as the run's; a copy of the original elsewhere is the run's data, and the
/// record names the store and its digest.
#[test]
fn a_run_recognises_its_data_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let synth = |seed: &str, modality: &str| {
        let o = tmca(&[
            "data",
            "synth",
            "--output",
            data.to_str().unwrap(),
            "--modality",
            modality,
            "--train",
            "8",
            "--val",
            "4",
            "--test",
            "4",
            "--size",
            "32",
            "--seed",
            seed,
            "--force",
        ]);
        assert!(o.status.success(), "{}", text(&o));
    };
    synth("0", "xray,ct");
    let store = data.join("synth-xray");
    let ct = data.join("synth-ct");
    let run = dir.path().join("run");
    let cfg = dir.path().join("own.toml");
    std::fs::write(
        &cfg,
        format!(
            "[run]\ndir = \"{}\"\n[data]\nstores = [\"{}\", \"{}\"]\nimage_size = 32\nbatch_size = 4\n\
             [model]\npreset = \"cpu-tiny\"\n[text]\nmax_len = 12\n[train]\nepochs = 1\n",
            run.display(),
            store.display(),
            ct.display()
        ),
    )
    .unwrap();
    let (cfg_s, run_s) = (cfg.to_str().unwrap(), run.to_str().unwrap());
    let o = tmca(&["train", cfg_s]);
    assert!(o.status.success(), "{}", text(&o));
    let copy = dir.path().join("copy.zarr");
    let ok = std::process::Command::new("cp")
        .arg("-r")
        .arg(&store)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(ok.success());
    synth("9", "xray");

    let o = tmca(&["eval", run_s]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("holds other data than")
            && text(&o).contains(&store.display().to_string())
            && text(&o).contains("--store"),
        "{}",
        text(&o)
    );
    assert!(!run.join("eval").exists(), "nothing recorded");
    common::edit_config(&cfg, "epochs = 1", "epochs = 2");
    let o = tmca(&["train", cfg_s, "--resume"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("the store of synth-xray now holds other samples"),
        "{}",
        text(&o)
    );

    let o = tmca(&["eval", run_s, "--store", store.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("not recorded in") && text(&o).contains("--json or --per-image"),
        "{}",
        text(&o)
    );
    assert!(
        !run.join("eval").exists(),
        "another store's results are not the run's"
    );

    // The copy alone is part of the run's data only: scored, not recorded over its
    // evaluation of all of it.
    let o = tmca(&["eval", run_s, "--store", copy.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !run.join("eval").exists(),
        "a part of the data is not the run's evaluation"
    );
    let o = tmca(&[
        "eval",
        run_s,
        "--store",
        copy.to_str().unwrap(),
        "--store",
        ct.to_str().unwrap(),
        "--threshold",
        "0.5",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval/best-test.json")).unwrap())
            .unwrap();
    assert_eq!(record["run"], run_s);
    let stores = record["stores"].as_array().unwrap();
    assert_eq!(stores.len(), 2);
    assert_eq!(stores[0]["path"], copy.to_str().unwrap());
    assert_eq!(stores[0]["content"].as_str().unwrap().len(), 64);

    // A record of a `best` the run has since replaced (here: its step edited) is stale: `tmca
    // runs` leaves it out and says so.
    let o = tmca(&["runs", run_s, "--format", "csv"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(",best t=0.50 @ "),
        "{}",
        text(&o)
    );
    let mut stale = record.clone();
    stale["step"] = serde_json::json!(999);
    std::fs::write(run.join("eval/best-test.json"), stale.to_string()).unwrap();
    let o = tmca(&["runs", run_s, "--format", "csv"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("best t="),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains("1 evaluation(s) of an earlier best checkpoint left out"),
        "{}",
        text(&o)
    );
}

/// `tmca config --all` shows every field a run resolves, the switches the embedded default
/// leaves out included; its output is itself a config that resolves to the same.
#[test]
fn config_all_prints_every_field_as_a_run_resolves_it() {
    let o = tmca(&["config", "--all"]);
    assert!(o.status.success(), "{}", text(&o));
    let all = String::from_utf8(o.stdout).unwrap();
    for field in [
        "text_guidance = true",
        "target_sensitive = true",
        "cross_attention = true",
        "embed_dim = 32",
    ] {
        assert!(all.contains(field), "{field} missing:\n{all}");
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("all.toml");
    std::fs::write(&p, all.replace("lambda = 0.1", "lambda = 0.0")).unwrap();
    let o = tmca(&["config", "--all", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let again = String::from_utf8(o.stdout).unwrap();
    assert_eq!(again, all.replace("lambda = 0.1", "lambda = 0.0"));
    // A file without --all is a usage error, not silently the default.
    let o = tmca(&["config", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
