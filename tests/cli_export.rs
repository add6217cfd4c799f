//! `tmca export` end to end: a tiny gray model and a tiny RGB one are trained, exported and
//! run by the export's own PyTorch predictor (tests/python/check_export.py), which must give
//! `tmca predict`'s probabilities and masks on the same image and report, also with flip TTA;
//! an export never writes into a folder that holds files.

use std::path::Path;

mod common;
use common::{text, tmca};

/// Trains the tiny run of `modality` ([`common::cli_config`]) with `data_extra` in `[data]`
/// and `model_extra` in `[model]`.
fn train(dir: &Path, modality: &str, data_extra: &str, model_extra: &str) -> std::path::PathBuf {
    let p = common::cli_config(dir, modality, data_extra, model_extra);
    let o = tmca(&["train", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    dir.join("run")
}

fn export_and_check(dir: &Path, run: &Path, channels: u64, mean: f64) {
    let export = dir.join("export");
    let o = tmca(&[
        "export",
        run.to_str().unwrap(),
        "--output",
        export.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for f in [
        "tmca_torch.py",
        "tmca_predict.py",
        "weights.safetensors",
        "tokenizer.json",
        "model.json",
        "README.md",
    ] {
        assert!(export.join(f).is_file(), "{f} missing");
    }
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(export.join("model.json")).unwrap()).unwrap();
    assert_eq!(meta["input"]["channels"], channels);
    assert_eq!(meta["input"]["height"], 32);
    assert!((meta["input"]["mean"][0].as_f64().unwrap() - mean).abs() < 1e-6);
    assert_eq!(meta["model"]["in_channels"], channels);
    assert_eq!(meta["max_len"], 12);
    // Files follow the umask like the rest (the safetensors writer alone makes them 0600).
    use std::os::unix::fs::PermissionsExt;
    let mode = |f: &str| {
        std::fs::metadata(export.join(f))
            .unwrap()
            .permissions()
            .mode()
    };
    assert_eq!(mode("weights.safetensors"), mode("model.json"));
    let ck = run.join("checkpoints/best");
    let ck_mode = |f: &str| std::fs::metadata(ck.join(f)).unwrap().permissions().mode();
    assert_eq!(ck_mode("weights.safetensors"), ck_mode("manifest.json"));
    let best: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("checkpoints/best/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["step"], best["step"]);
    // Self-describing: the exported weights' digest, the absolute checkpoint, the seed, the
    // build and the data trained on (each store's content digest).
    let sha = {
        use sha2::Digest;
        format!(
            "{:x}",
            sha2::Sha256::digest(std::fs::read(export.join("weights.safetensors")).unwrap())
        )
    };
    assert_eq!(meta["weights_sha256"], sha);
    assert!(Path::new(meta["checkpoint"].as_str().unwrap()).is_absolute());
    assert_eq!(meta["seed"], 0);
    assert!(meta["exported_by"]["commit"].is_string());
    assert_eq!(meta["trained_on"][0]["content"].as_str().unwrap().len(), 64);
    assert_eq!(meta["trained_on"], best["data"]["datasets"]);

    // Exporting again into the same folder is refused, and the export is left as it was.
    let before = std::fs::read(export.join("weights.safetensors")).unwrap();
    let o = tmca(&[
        "export",
        run.to_str().unwrap(),
        "--output",
        export.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("not empty"), "{}", text(&o));
    assert_eq!(
        std::fs::read(export.join("weights.safetensors")).unwrap(),
        before
    );
    // Onto a file: refused as a usage error too, the file kept.
    let file = dir.join("notes.txt");
    std::fs::write(&file, "mine").unwrap();
    let o = tmca(&[
        "export",
        run.to_str().unwrap(),
        "--output",
        file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--output") && text(&o).contains("is a file"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");

    predict_and_check(dir, &[run], &export);
}

/// `tmca predict RUNS… --probs` (and with `--tta`) on an RGB image of another size than the
/// model's, so resizing and (for a gray model) the RGB -> gray conversion are compared, then
/// the export's own predictor against them (tests/python/check_export.py).
fn predict_and_check(dir: &Path, runs: &[&Path], export: &Path) {
    if std::env::var_os("TMCA_SKIP_PYTHON").is_some() {
        eprintln!("TMCA_SKIP_PYTHON set: the PyTorch check of the export is skipped");
        return;
    }
    let img = dir.join("case.png");
    image::RgbImage::from_fn(50, 40, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 6) as u8, ((x * y) % 251) as u8])
    })
    .save(&img)
    .unwrap();
    // 12-bit data in a 16-bit PNG (as CT and X-ray come): both must scale it the same way.
    let ct = dir.join("ct12.png");
    image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(45, 38, |x, y| {
        image::Luma([((x * 91 + y * 53) % 4096) as u16])
    })
    .save(&ct)
    .unwrap();
    for img in [img, ct] {
        check_image(dir, runs, export, &img);
    }
}

/// `tmca predict` (with and without flip TTA) and the export's Predictor on one image.
fn check_image(dir: &Path, runs: &[&Path], export: &Path, img: &Path) {
    let report = "One polyp in the upper left.";
    let tag = format!(
        "{}-{}",
        export.file_name().unwrap().to_str().unwrap(),
        img.file_stem().unwrap().to_str().unwrap()
    );
    let (pred, tta) = (
        dir.join(format!("pred-{tag}")),
        dir.join(format!("tta-{tag}")),
    );
    for (out, flags) in [(&pred, vec!["--probs"]), (&tta, vec!["--probs", "--tta"])] {
        let mut args: Vec<&str> = vec!["predict"];
        args.extend(runs.iter().map(|r| r.to_str().unwrap()));
        args.extend(["--image", img.to_str().unwrap(), "--report", report]);
        args.extend(flags);
        args.extend(["--output", out.to_str().unwrap()]);
        let o = tmca(&args);
        assert!(o.status.success(), "{}", text(&o));
    }
    let out = common::python_check(
        "check_export.py",
        &[
            export.as_os_str(),
            img.as_os_str(),
            report.as_ref(),
            pred.as_os_str(),
            tta.as_os_str(),
        ],
    );
    eprintln!("{out}");
}

#[test]
fn a_gray_model_exports_and_predicts_as_tmca_does() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(
        dir.path(),
        "xray",
        "mean = [0.4]\nstd = [0.25]",
        "in_channels = 1",
    );
    export_and_check(dir.path(), &run, 1, 0.4);
}

#[test]
fn an_rgb_model_exports_and_predicts_as_tmca_does() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), "endoscopy", "", "");
    export_and_check(dir.path(), &run, 3, 0.5);

    // An ensemble with a run of another seed: one folder per member, averaged in Python as by
    // `tmca predict RUN RUN`.
    let second = dir.path().join("second");
    std::fs::create_dir(&second).unwrap();
    let cfg = common::cli_config(&second, "endoscopy", "", "");
    common::edit_config(&cfg, "[run]\n", "[run]\nseed = 7\n");
    let o = tmca(&["train", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let run2 = second.join("run");
    let ens = dir.path().join("ensemble");
    let o = tmca(&[
        "export",
        run.to_str().unwrap(),
        run2.to_str().unwrap(),
        "--output",
        ens.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("an ensemble of 2 runs"), "{}", text(&o));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ens.join("model.json")).unwrap()).unwrap();
    assert_eq!(
        meta["ensemble"],
        serde_json::json!(["member-0", "member-1"])
    );
    for f in [
        "member-0/weights.safetensors",
        "member-1/tokenizer.json",
        "tmca_predict.py",
    ] {
        assert!(ens.join(f).is_file(), "{f} missing");
    }
    predict_and_check(dir.path(), &[&run, &run2], &ens);

    // Members with different thresholds: the ensemble's must be given (export, eval, predict).
    common::edit_config(
        &run2.join("config.toml"),
        "threshold = 0.5",
        "threshold = 0.4",
    );
    let ens2 = dir.path().join("ensemble-t");
    let (r1, r2) = (run.to_str().unwrap(), run2.to_str().unwrap());
    for args in [
        vec!["export", r1, r2, "--output", ens2.to_str().unwrap()],
        vec!["eval", r1, r2],
    ] {
        let o = tmca(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(
            text(&o).contains("different train.threshold") && text(&o).contains("--threshold"),
            "{}",
            text(&o)
        );
    }
    assert!(!ens2.exists(), "nothing written by a refused export");
    let o = tmca(&[
        "export",
        r1,
        r2,
        "--output",
        ens2.to_str().unwrap(),
        "--threshold",
        "0.45",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ens2.join("model.json")).unwrap()).unwrap();
    assert_eq!(meta["threshold"], 0.45, "written as given: {meta}");
}

/// A 3-channel model trained on gray stores (X-ray, the default `in_channels`) sees a colour
/// file as its gray, as it saw its training images: the prediction for a tinted image is the
/// one for its Rec. 709 gray, in tmca and in the export's predictor alike.
#[test]
fn a_colour_image_reaches_a_model_trained_on_gray_as_gray() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), "xray", "", "");
    let tinted = image::RgbImage::from_fn(50, 40, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 6) as u8, ((x * y) % 251) as u8])
    });
    let colour = dir.path().join("tinted.png");
    tinted.save(&colour).unwrap();
    // Rec. 709 luma in integers, rounded, as the importer stores gray.
    let gray = dir.path().join("luma.png");
    image::GrayImage::from_fn(50, 40, |x, y| {
        let [r, g, b] = tinted.get_pixel(x, y).0.map(u32::from);
        image::Luma([((2126 * r + 7152 * g + 722 * b + 5000) / 10000) as u8])
    })
    .save(&gray)
    .unwrap();
    let probs = |img: &Path, out: &str| {
        let out = dir.path().join(out);
        let o = tmca(&[
            "predict",
            run.to_str().unwrap(),
            "--image",
            img.to_str().unwrap(),
            "--report",
            "one lesion, left lung",
            "--probs",
            "--output",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let stem = img.file_stem().unwrap().to_str().unwrap();
        std::fs::read(out.join(format!("{stem}_prob.npy"))).unwrap()
    };
    assert_eq!(probs(&colour, "c"), probs(&gray, "g"));
    let export = dir.path().join("export");
    let o = tmca(&[
        "export",
        run.to_str().unwrap(),
        "--output",
        export.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(export.join("model.json")).unwrap()).unwrap();
    assert_eq!(meta["input"]["channels"], 3);
    assert_eq!(meta["input"]["stored_channels"], 1);
    predict_and_check(dir.path(), &[&run], &export);
}

/// An ensemble reads each image once: members trained on gray and on colour stores would each
/// need it prepared their own way, so they are refused together, naming both.
#[test]
fn an_ensemble_of_gray_and_colour_trained_runs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let gray = train(&a, "xray", "", "");
    let colour = train(&b, "endoscopy", "", "");
    let o = tmca(&[
        "eval",
        gray.to_str().unwrap(),
        colour.to_str().unwrap(),
        "--store",
        b.join("data/synth-endoscopy").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("was trained on colour images") && text(&o).contains("on gray"),
        "{}",
        text(&o)
    );
}
