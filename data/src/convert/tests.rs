//! Tests of the layout-independent parts: plan checks, decoding, the conversion driver.

use super::fixtures::*;
use super::*;
use crate::NoProgress;
use std::sync::atomic::{AtomicU64, Ordering};

fn planned(dir: &Path, name: &str, split: Split) -> PlannedSample {
    PlannedSample {
        name: name.into(),
        split,
        image: dir.join(format!("img/{name}")),
        mask: dir.join(format!("mask/{name}")),
        report: format!("report of {name}"),
    }
}

/// A generic-layout input with ids a..e (gray PNGs, 0/255 masks).
fn generic_input(root: &Path) {
    std::fs::create_dir_all(root.join("reports")).unwrap();
    let ids = ["a", "b", "c", "d", "e"];
    for (i, id) in ids.iter().enumerate() {
        write_image(&root.join(format!("images/{id}.png")), i as u8);
        write_mask(&root.join(format!("masks/{id}.png")), 4, 255);
        std::fs::write(root.join(format!("reports/{id}.txt")), format!("text {id}")).unwrap();
    }
    std::fs::write(
        root.join("splits.json"),
        r#"{"train": ["a", "b", "c", "d"], "test": ["e"]}"#,
    )
    .unwrap();
}

#[test]
fn layout_names() {
    assert_eq!("LViT".parse::<Layout>().unwrap(), Layout::Lvit);
    assert_eq!("guide".parse::<Layout>().unwrap(), Layout::GuideDecoder);
    assert_eq!(
        "guidedecoder".parse::<Layout>().unwrap(),
        Layout::GuideDecoder
    );
    assert_eq!("generic".parse::<Layout>().unwrap(), Layout::Generic);
    assert!("voc".parse::<Layout>().unwrap_err().contains("voc"));
    assert_eq!(Layout::GuideDecoder.to_string(), "guidedecoder");
}

#[test]
fn carve_val_rounds_and_keeps_one_train() {
    let d = Path::new("/x");
    let mut s: Vec<PlannedSample> = (0..5)
        .map(|i| planned(d, &format!("{i}"), Split::Train))
        .collect();
    s.push(planned(d, "t", Split::Test));
    carve_val(&mut s, 0.2);
    let splits: Vec<Split> = s.iter().map(|p| p.split).collect();
    use Split::*;
    assert_eq!(splits, vec![Train, Train, Train, Train, Val, Test]);

    let mut one = vec![planned(d, "a", Train)];
    carve_val(&mut one, 0.9);
    assert_eq!(one[0].split, Train);
}

#[test]
fn check_plan_size_mismatch_unreadable_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = planned(d, "a.png", Split::Train);
    write_image(&a.image, 0);
    write_mask(&a.mask, 3, 255);
    let b = planned(d, "b.png", Split::Train);
    write_image(&b.image, 0);
    write_mask_sized(&b.mask, 18, 16, 3, 255);
    let plan = Plan {
        samples: vec![a.clone(), b],
        val_from_train: false,
    };
    let e = check_plan(&plan, &NoProgress).unwrap_err().to_string();
    assert!(
        e.contains("img/b.png")
            && e.contains("mask/b.png")
            && e.contains("size mismatch")
            && e.contains("20x16")
            && e.contains("18x16"),
        "{e}"
    );

    let c = planned(d, "c.png", Split::Train);
    std::fs::write(&c.image, b"garbage").unwrap();
    write_mask(&c.mask, 3, 255);
    let plan = Plan {
        samples: vec![a.clone(), c],
        val_from_train: false,
    };
    let e = check_plan(&plan, &NoProgress).unwrap_err().to_string();
    assert!(
        e.contains("img/c.png") && e.contains("cannot read image"),
        "{e}"
    );

    let plan = Plan {
        samples: vec![a.clone(), a.clone()],
        val_from_train: false,
    };
    let e = check_plan(&plan, &NoProgress).unwrap_err().to_string();
    assert!(e.contains("duplicate sample name 'a.png'"), "{e}");

    let mut missing = planned(d, "m.png", Split::Test);
    missing.mask = d.join("mask/none.png");
    write_image(&missing.image, 0);
    let plan = Plan {
        samples: vec![a, missing],
        val_from_train: false,
    };
    let e = check_plan(&plan, &NoProgress).unwrap_err().to_string();
    assert!(e.contains("mask/none.png"), "{e}");

    let plan = Plan {
        samples: vec![],
        val_from_train: false,
    };
    assert!(check_plan(&plan, &NoProgress)
        .unwrap_err()
        .to_string()
        .contains("no samples"));
}

#[test]
fn decode_entry_masks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = planned(d, "a.png", Split::Val);
    write_image(&a.image, 10);
    write_mask(&a.mask, 10, 1);
    let s = decode_entry(&a, MaskRule::Exact, (None, 1), 8, 10).unwrap();
    assert_eq!(
        (s.name.as_str(), s.split, s.report.as_str()),
        ("a.png", Split::Val, "report of a.png")
    );
    assert_eq!(s.image.len(), 80);
    assert_eq!(s.mask.iter().map(|&v| v as usize).sum::<usize>(), 5 * 8);
    let rgb = decode_entry(&a, MaskRule::Exact, (None, 3), 16, 20).unwrap();
    assert_eq!(rgb.image.len(), 3 * 320);
    assert_eq!(&rgb.image[..3], &[10, 11, 12]);
    assert_eq!(&rgb.image[320..323], &[10, 11, 12]);

    write_mask(&a.mask, 10, 128);
    let e = decode_entry(&a, MaskRule::Exact, (None, 1), 8, 10)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mask/a.png") && e.contains("value 128 in 160 pixels"),
        "{e}"
    );
}

struct Count {
    started: AtomicU64,
    done: AtomicU64,
}

impl crate::Progress for Count {
    fn start(&self, _what: &str, total: u64) {
        self.started.fetch_add(total, Ordering::Relaxed);
    }
    fn inc(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
    fn finish(&self) {}
}

#[test]
fn convert_refuses_existing_output_and_replaces_with_force() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    generic_input(&input);
    let out = dir.path().join("out.zarr");
    let mut opts = ConvertOptions::new(Layout::Generic, &input, &out, "g", Modality::Ct);
    opts.height = 8;
    opts.width = 8;
    let progress = Count {
        started: AtomicU64::new(0),
        done: AtomicU64::new(0),
    };
    let summary = convert(&opts, &progress).unwrap();
    assert_eq!(summary.counts, [3, 1, 1]);
    assert_eq!(summary.output, out);
    // "checking", "bit depth" (headers), then "converting", 5 samples each
    assert_eq!(progress.started.load(Ordering::Relaxed), 15);
    assert_eq!(progress.done.load(Ordering::Relaxed), 15);

    let e = convert(&opts, &NoProgress).unwrap_err();
    assert!(matches!(e, DataError::AlreadyExists { .. }), "{e}");

    // A failing conversion with --force leaves the old store untouched and no temp folder.
    write_mask(&input.join("masks/c.png"), 4, 128);
    opts.force = true;
    let e = convert(&opts, &NoProgress).unwrap_err().to_string();
    assert!(e.contains("masks/c.png") && e.contains("128"), "{e}");
    let store = crate::store::Store::open(&out).unwrap();
    assert_eq!(store.len(), 5);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Fixed input, --force: replaced (now 2 val of 4 train).
    write_mask(&input.join("masks/c.png"), 4, 1);
    opts.val_fraction = 0.5;
    let summary = convert(&opts, &NoProgress).unwrap();
    assert_eq!(summary.counts, [2, 2, 1]);
    let store = crate::store::Store::open(&out).unwrap();
    assert_eq!(store.info().modality, Modality::Ct);
    assert_eq!(store.info().provenance["val_from_train_fraction"], 0.5);
}

#[test]
fn convert_refuses_bad_options_and_input_as_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    generic_input(&input);
    let mut opts = ConvertOptions::new(Layout::Generic, &input, &input, "g", Modality::Ct);
    opts.force = true;
    let e = convert(&opts, &NoProgress).unwrap_err().to_string();
    assert!(e.contains("input folder"), "{e}");
    opts.output = dir.path().to_path_buf();
    assert!(convert(&opts, &NoProgress)
        .unwrap_err()
        .to_string()
        .contains("input folder"));
    assert!(input.join("splits.json").exists());

    let mut opts = ConvertOptions::new(
        Layout::Generic,
        &input,
        dir.path().join("o"),
        "g",
        Modality::Ct,
    );
    opts.val_fraction = 1.0;
    assert!(convert(&opts, &NoProgress)
        .unwrap_err()
        .to_string()
        .contains("val_fraction"));
    opts.val_fraction = 0.2;
    opts.width = 0;
    assert!(convert(&opts, &NoProgress)
        .unwrap_err()
        .to_string()
        .contains("size"));
    // A typo such as --size 30000 is refused before ~2.7 GB per image are asked for.
    opts.width = 30000;
    let e = convert(&opts, &NoProgress).unwrap_err().to_string();
    assert!(e.contains("between 1 and 4096"), "{e}");

    // A bad plan writes nothing.
    let opts = ConvertOptions::new(
        Layout::Lvit,
        &input,
        dir.path().join("o"),
        "g",
        Modality::Ct,
    );
    let e = convert(&opts, &NoProgress).unwrap_err().to_string();
    assert!(e.contains("Train_Folder"), "{e}");
    assert!(!dir.path().join("o").exists());
}

#[test]
fn table_layout_with_jpeg_masks_converts_with_a_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("kvasir");
    let mut rows = String::from("image,mask,report,split\n");
    std::fs::create_dir_all(root.join("masks")).unwrap();
    for (i, split) in ["train", "train", "train", "val", "test"]
        .iter()
        .enumerate()
    {
        write_rgb_image(&root.join(format!("images/{i}.jpg")), i as u8);
        let mask =
            image::GrayImage::from_fn(W, H, |x, _| image::Luma([if x < 6 { 255 } else { 0 }]));
        mask.save(root.join(format!("masks/{i}.jpg"))).unwrap();
        rows.push_str(&format!("images/{i}.jpg,masks/{i}.jpg,polyp {i},{split}\n"));
    }
    std::fs::write(root.join("list.csv"), rows).unwrap();
    let out = dir.path().join("k.zarr");
    let mut opts = ConvertOptions::new(
        Layout::Table,
        root.join("list.csv"),
        &out,
        "kvasir",
        Modality::Endoscopy,
    );
    opts.height = H as usize;
    opts.width = W as usize;
    // JPEG masks are not exactly binary: refused without a threshold, nothing written.
    let e = convert(&opts, &NoProgress).unwrap_err().to_string();
    assert!(
        e.contains("masks/") && e.contains("--mask-threshold"),
        "{e}"
    );
    assert!(!out.exists());

    opts.mask_rule = MaskRule::Threshold(1.5);
    assert!(convert(&opts, &NoProgress)
        .unwrap_err()
        .to_string()
        .contains("mask_threshold"));
    opts.mask_rule = MaskRule::Threshold(0.5);
    let summary = convert(&opts, &NoProgress).unwrap();
    assert_eq!(summary.counts, [3, 1, 1]);
    let store = crate::store::Store::open(&out).unwrap();
    assert_eq!(store.info().provenance["importer"], "table");
    assert_eq!(store.info().provenance["mask_threshold"], 0.5);
    let s = store.sample(4).unwrap();
    assert_eq!(
        (s.name.as_str(), s.split, s.report.as_str()),
        ("4.jpg", Split::Test, "polyp 4")
    );
    let want: Vec<u8> = (0..H * W).map(|p| u8::from(p % W < 6)).collect();
    assert_eq!(s.mask, want);

    // An output that holds the dataset's files is refused even with --force (it is no store).
    opts.output = root.join("masks");
    opts.force = true;
    let e = convert(&opts, &NoProgress).unwrap_err().to_string();
    assert!(e.contains("is not a tmca store"), "{e}");
    assert!(root.join("masks/0.jpg").exists());
    // A folder as input names the layout's expectation.
    opts.input = root.clone();
    opts.output = dir.path().join("k2.zarr");
    let e = convert(&opts, &NoProgress).unwrap_err().to_string();
    assert!(e.contains("table file as --input"), "{e}");
}

/// `--dry-run` lists every kind of problem at once: a report without its image (the layout's
/// own check), an image and mask of different sizes (headers) and a mask of bad values (its
/// pixels) — before, the last two showed only once the first was fixed.
#[test]
fn a_dry_run_lists_layout_header_and_mask_problems_together() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    generic_input(&input);
    std::fs::write(input.join("reports/orphan.txt"), "text of no image").unwrap();
    write_mask_sized(&input.join("masks/b.png"), W + 3, H, 4, 255);
    write_mask(&input.join("masks/c.png"), 4, 128);
    let opts = ConvertOptions::new(
        Layout::Generic,
        &input,
        dir.path().join("out"),
        "g",
        Modality::Ct,
    );
    let e = dry_run(&opts, &NoProgress).unwrap_err().to_string();
    for part in ["orphan", "b.png", "c.png"] {
        assert!(e.contains(part), "{part} missing from: {e}");
    }
    // The import itself stops at the layout's and the headers' problems, before decoding.
    let e = plan(&opts, &NoProgress).unwrap_err().to_string();
    assert!(e.contains("orphan") && e.contains("b.png"), "{e}");
}
