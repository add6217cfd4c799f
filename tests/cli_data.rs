//! End-to-end tests of `tmca data …`: the real binary, run in temporary folders.
//!
//! Covers synth (determinism, refusal to overwrite), inspect, validate (clean and corrupted
//! stores), store opening errors, preview, convert for every layout (good and bad inputs, with
//! the guarantee that a failed conversion leaves nothing behind and keeps an old store), and the
//! help texts. Exit codes are those documented in `launch/src/exit.rs`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use image::{GrayImage, Luma};
use zarrs::array::{Array, ArraySubset};
use zarrs::filesystem::FilesystemStore;

// ---------------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------------

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    cmdline: String,
}

impl Run {
    /// Panics with the whole transcript unless the exit code is `want`.
    #[track_caller]
    fn expect_code(&self, want: i32) -> &Self {
        assert_eq!(
            self.code, want,
            "`{}` exited {} (expected {want})\n--- stdout\n{}\n--- stderr\n{}",
            self.cmdline, self.code, self.stdout, self.stderr
        );
        self
    }
}

fn tmca<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let cmdline = format!(
        "tmca {}",
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tmca"))
        .args(&args)
        .env_remove("TMCA_LOG")
        .output()
        .expect("running the tmca binary");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        cmdline,
    }
}

/// Shorthand for an argument list mixing strings and paths.
macro_rules! args {
    ($($a:expr),* $(,)?) => {
        vec![$(std::ffi::OsString::from($a)),*]
    };
}

#[track_caller]
fn assert_contains(haystack: &str, needles: &[&str]) {
    for n in needles {
        assert!(
            haystack.contains(n),
            "expected the output to contain {n:?}; it was:\n{haystack}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// File helpers
// ---------------------------------------------------------------------------------------------

/// Every file below `dir`, by relative path, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Entries of `dir` that look like leftovers of a store write (`*.tmp-*`, `*.old-*`).
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-") || n.contains(".old-"))
        .collect()
}

/// `tmca data synth` of the given modalities into `out` at 32x32; must succeed.
fn synth(out: &Path, modality: &str, counts: [usize; 3], seed: u64) {
    synth_sized(out, modality, counts, seed, 32);
}

fn synth_sized(out: &Path, modality: &str, counts: [usize; 3], seed: u64, size: usize) {
    let [tr, va, te] = counts;
    tmca(args![
        "data",
        "synth",
        "--output",
        out,
        "--modality",
        modality,
        "--train",
        tr.to_string(),
        "--val",
        va.to_string(),
        "--test",
        te.to_string(),
        "--size",
        size.to_string(),
        "--seed",
        seed.to_string(),
    ])
    .expect_code(0);
}

/// Sample counts per split as printed by `tmca data inspect` (rows `train  N …`).
fn inspect_counts(stdout: &str) -> [usize; 3] {
    let mut counts = [usize::MAX; 3];
    for line in stdout.lines() {
        let mut it = line.split_whitespace();
        let slot = match it.next() {
            Some("train") => 0,
            Some("val") => 1,
            Some("test") => 2,
            _ => continue,
        };
        counts[slot] = it
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in inspect line {line:?}"));
    }
    assert!(
        counts.iter().all(|&c| c != usize::MAX),
        "inspect did not print all three splits:\n{stdout}"
    );
    counts
}

fn open_array(store: &Path, name: &str) -> Array<FilesystemStore> {
    let fs = Arc::new(FilesystemStore::new(store).unwrap());
    Array::open(fs, &format!("/{name}")).unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. synth
// ---------------------------------------------------------------------------------------------

#[test]
fn synth_is_deterministic_validates_modalities_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    synth(&a, "xray,endoscopy", [6, 2, 2], 5);
    synth(&b, "xray,endoscopy", [6, 2, 2], 5);
    synth(&c, "xray,endoscopy", [6, 2, 2], 6);

    let (sa, sb, sc) = (snapshot(&a), snapshot(&b), snapshot(&c));
    // Both datasets, each a complete store.
    for ds in ["synth-xray", "synth-endoscopy"] {
        for arr in ["", "image/", "mask/", "report/", "source_name/", "split/"] {
            let p = PathBuf::from(format!("{ds}/{arr}zarr.json"));
            assert!(sa.contains_key(&p), "missing {}", p.display());
        }
    }
    assert!(
        !sa.keys().any(|k| k.starts_with("synth-ct")),
        "only the requested modalities are written"
    );
    assert_eq!(
        sa.keys().collect::<Vec<_>>(),
        sb.keys().collect::<Vec<_>>(),
        "same seed, same files"
    );
    // First the decoded content (a generator problem), then the bytes on disk (the layout).
    for ds in ["synth-xray", "synth-endoscopy"] {
        for arr in ["image", "mask", "split"] {
            let (x, y) = (open_array(&a.join(ds), arr), open_array(&b.join(ds), arr));
            let vx: Vec<u8> = x.retrieve_array_subset(&x.subset_all()).unwrap();
            let vy: Vec<u8> = y.retrieve_array_subset(&y.subset_all()).unwrap();
            assert!(vx == vy, "same seed, but the decoded {ds}/{arr} differs");
        }
    }
    for (k, v) in &sa {
        assert!(
            sb[k] == *v,
            "same seed and same decoded data, but the file {} differs (e.g. subchunk order \
             inside a shard)",
            k.display()
        );
    }
    assert_ne!(sa, sc, "a different seed gives a different store");
    // Larger shards (64 subchunks of 96x96), written several times, make an unstable on-disk
    // order all but certain to show (zarrs encodes bigger shards in parallel).
    let first = dir.path().join("ct0");
    synth_sized(&first, "ct", [60, 2, 2], 5, 96);
    let want = snapshot(&first);
    for k in 1..4 {
        let again = dir.path().join(format!("ct{k}"));
        synth_sized(&again, "ct", [60, 2, 2], 5, 96);
        let got = snapshot(&again);
        assert_eq!(
            want.keys().collect::<Vec<_>>(),
            got.keys().collect::<Vec<_>>()
        );
        for (f, v) in &want {
            assert!(
                got[f] == *v,
                "same seed, but the file {} differs in run {k} (64 samples)",
                f.display()
            );
        }
    }
    // The difference is in the data, not only in the recorded seed.
    let img = |s: &BTreeMap<PathBuf, Vec<u8>>| -> Vec<(PathBuf, Vec<u8>)> {
        s.iter()
            .filter(|(k, _)| k.starts_with("synth-xray/image") && !k.ends_with("zarr.json"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_ne!(img(&sa), img(&sc), "a different seed gives other images");

    // An unknown modality: exit 2, the allowed values named, nothing written.
    let bogus = dir.path().join("bogus");
    let r = tmca(args![
        "data",
        "synth",
        "--output",
        &bogus,
        "--modality",
        "bogus",
        "--train",
        "2",
        "--val",
        "0",
        "--test",
        "0",
        "--size",
        "32"
    ]);
    r.expect_code(2);
    assert_contains(
        &r.stderr,
        &["bogus", "xray", "ct", "endoscopy", "histopathology"],
    );
    assert!(!bogus.exists(), "nothing is created for a bad command line");
    // Nor for a size out of range or a modality listed twice.
    for (modality, size, want) in [("xray", "3", "32 to 4096"), ("xray,xray", "32", "twice")] {
        let r = tmca(args![
            "data",
            "synth",
            "--output",
            &bogus,
            "--modality",
            modality,
            "--size",
            size
        ]);
        r.expect_code(2);
        assert_contains(&r.stderr, &[want]);
        assert!(!bogus.exists(), "nothing is created for {modality} {size}");
    }

    // Writing over an existing store without --force: exit 2, old store untouched.
    let r = tmca(args![
        "data",
        "synth",
        "--output",
        &a,
        "--modality",
        "xray,endoscopy",
        "--train",
        "3",
        "--val",
        "1",
        "--test",
        "1",
        "--size",
        "32",
        "--seed",
        "9"
    ]);
    r.expect_code(2);
    assert_contains(&r.stderr, &["already exists", "--force"]);
    assert!(
        snapshot(&a) == sa,
        "the refused write changed the old store"
    );
    assert!(leftovers(&a).is_empty(), "left {:?}", leftovers(&a));
}

// ---------------------------------------------------------------------------------------------
// 2. inspect and validate on a good store
// ---------------------------------------------------------------------------------------------

#[test]
fn inspect_and_validate_a_good_store() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), "xray,endoscopy", [6, 2, 2], 5);
    for (ds, modality) in [("synth-xray", "xray"), ("synth-endoscopy", "endoscopy")] {
        let store = dir.path().join(ds);
        let r = tmca(args!["data", "inspect", &store]);
        r.expect_code(0);
        assert_contains(&r.stdout, &[ds, modality, "schema       v2"]);
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with("dataset") && l.contains(ds) && l.contains(modality)),
            "{}",
            r.stdout
        );
        assert_eq!(inspect_counts(&r.stdout), [6, 2, 2], "{}", r.stdout);
        let channels = if modality == "xray" { 1 } else { 3 };
        assert_contains(&r.stdout, &[&format!("{channels} x 32 x 32")]);

        let r = tmca(args!["data", "validate", &store]);
        r.expect_code(0);
        assert_contains(&r.stdout, &["10 samples", "no problems"]);
        assert!(
            !r.stdout.contains("sample "),
            "a clean store lists no problems:\n{}",
            r.stdout
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. validate on corrupted stores
// ---------------------------------------------------------------------------------------------

#[test]
fn validate_names_a_bad_mask_and_a_duplicate_image() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), "xray", [6, 2, 2], 5);
    let store = dir.path().join("synth-xray");
    let problems = |r: &Run| -> Vec<String> {
        r.stdout
            .lines()
            .filter(|l| l.starts_with("sample "))
            .map(String::from)
            .collect()
    };

    // Sample 3's mask becomes all 7s.
    let mask = open_array(&store, "mask");
    let (h, w) = (32u64, 32u64);
    mask.store_array_subset(
        &ArraySubset::new_with_ranges(&[3..4, 0..h, 0..w]),
        vec![7u8; (h * w) as usize],
    )
    .unwrap();
    let r = tmca(args!["data", "validate", &store]);
    r.expect_code(5);
    let ps = problems(&r);
    // The bad mask, and the store's content no longer matching the digest recorded when it
    // was written (it was changed in place).
    assert_eq!(ps.len(), 2, "two problems expected:\n{}", r.stdout);
    let find = |needle: &str| {
        ps.iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?}:\n{}", r.stdout))
            .clone()
    };
    assert_contains(&find("sample 3 "), &["synth-xray-000003", "7", "mask"]);
    find("content has changed since it was written");
    assert_contains(&r.stderr, &["2 problem(s)"]);

    // Sample 4's image becomes a copy of sample 0's.
    let image = open_array(&store, "image");
    let c = 1u64;
    let img0: Vec<u8> = image
        .retrieve_array_subset(&ArraySubset::new_with_ranges(&[0..1, 0..c, 0..h, 0..w]))
        .unwrap();
    assert_eq!(img0.len(), (c * h * w) as usize);
    // And sample 9's (the last of the test split): a test image the model trains on.
    for i in [4, 9] {
        image
            .store_array_subset(
                &ArraySubset::new_with_ranges(&[i..i + 1, 0..c, 0..h, 0..w]),
                &img0,
            )
            .unwrap();
    }
    let r = tmca(args!["data", "validate", &store]);
    r.expect_code(5);
    let ps = problems(&r);
    assert_eq!(ps.len(), 4, "four problems expected:\n{}", r.stdout);
    let leak = ps
        .iter()
        .find(|l| l.starts_with("sample 9 "))
        .unwrap_or_else(|| panic!("sample 9 not named:\n{}", r.stdout));
    assert_contains(leak, &["sample 0", "the same image in train and test"]);
    let dup = ps
        .iter()
        .find(|l| l.starts_with("sample 4 "))
        .unwrap_or_else(|| panic!("sample 4 not named:\n{}", r.stdout));
    assert_contains(
        dup,
        &[
            "synth-xray-000004",
            "identical",
            "sample 0",
            "synth-xray-000000",
        ],
    );
    assert!(!dup.contains("the same image in"), "{dup}");
    assert!(
        ps.iter().any(|l| l.starts_with("sample 3 ")),
        "sample 3 still reported:\n{}",
        r.stdout
    );

    // inspect still works on the corrupted store (it only summarises).
    tmca(args!["data", "inspect", &store]).expect_code(0);

    // A lost image shard file: a schema-2 store (every chunk written) does not open, and says
    // which file and samples; in a schema-1 store (zero chunks left out) validate finds it.
    std::fs::remove_file(store.join("image/c/0/0/0/0")).unwrap();
    for cmd in ["validate", "inspect"] {
        let r = tmca(args!["data", cmd, &store]);
        r.expect_code(3);
        assert_contains(&r.stderr, &["damaged", "image/c/0/0/0/0", "samples 0–9"]);
    }
    let meta = store.join("zarr.json");
    let text = std::fs::read_to_string(&meta).unwrap();
    std::fs::write(
        &meta,
        text.replace("\"schema_version\": 2", "\"schema_version\": 1"),
    )
    .unwrap();
    let r = tmca(args!["data", "validate", &store]);
    r.expect_code(5);
    assert_contains(
        &r.stdout,
        &["image data of samples 0..=9 is missing", "image/c/0/0/0/0"],
    );

    // Attributes that do not match the arrays: not a store to trust (exit 3, named).
    let meta = store.join("zarr.json");
    let text = std::fs::read_to_string(&meta).unwrap();
    assert!(text.contains("\"num_samples\": 10"), "{text}");
    std::fs::write(
        &meta,
        text.replace("\"num_samples\": 10", "\"num_samples\": 11"),
    )
    .unwrap();
    let r = tmca(args!["data", "inspect", &store]);
    r.expect_code(3);
    assert_contains(&r.stderr, &["num_samples = 11", "hold 10 samples"]);
}

// ---------------------------------------------------------------------------------------------
// 4. things that are not (readable) stores
// ---------------------------------------------------------------------------------------------

#[test]
fn not_a_store_and_a_newer_schema_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for cmd in ["inspect", "validate"] {
        let r = tmca(args!["data", cmd, &empty]);
        r.expect_code(3);
        assert_contains(
            &r.stderr,
            &["not a tmca dataset store", &empty.display().to_string()],
        );
    }
    let r = tmca(args!["data", "inspect", dir.path().join("missing")]);
    r.expect_code(3);
    assert_contains(
        &r.stderr,
        &["not a tmca dataset store", "no such directory"],
    );

    synth(dir.path(), "xray", [2, 1, 1], 1);
    let store = dir.path().join("synth-xray");
    let meta_path = store.join("zarr.json");
    let meta = std::fs::read_to_string(&meta_path).unwrap();
    let newer = meta.replace("\"schema_version\": 2", "\"schema_version\": 99");
    assert_ne!(
        newer, meta,
        "zarr.json should hold \"schema_version\": 2:\n{meta}"
    );
    std::fs::write(&meta_path, newer).unwrap();
    for cmd in ["inspect", "validate"] {
        let r = tmca(args!["data", cmd, &store]);
        r.expect_code(3);
        assert_contains(&r.stderr, &["newer than this tmca understands", "99"]);
    }
    let r = tmca(args![
        "data",
        "preview",
        &store,
        "--output",
        dir.path().join("p.png")
    ]);
    r.expect_code(3);
    assert!(!dir.path().join("p.png").exists());
}

// ---------------------------------------------------------------------------------------------
// 5. preview
// ---------------------------------------------------------------------------------------------

#[test]
fn preview_writes_a_png_and_names_an_empty_split() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), "xray,endoscopy", [6, 2, 0], 3);
    for ds in ["synth-xray", "synth-endoscopy"] {
        let store = dir.path().join(ds);
        let png = dir.path().join(format!("{ds}.png"));
        let r = tmca(args![
            "data", "preview", &store, "--output", &png, "--count", "5", "--split", "train"
        ]);
        r.expect_code(0);
        assert_contains(&r.stdout, &["5 samples", "train"]);
        let img =
            image::open(&png).unwrap_or_else(|e| panic!("{} does not decode: {e}", png.display()));
        assert!(img.width() > 0 && img.height() > 0);
        assert_eq!(
            image::ImageFormat::from_path(&png).unwrap(),
            image::ImageFormat::Png
        );
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a real PNG file");

        let missing = dir.path().join(format!("{ds}-test.png"));
        let r = tmca(args![
            "data", "preview", &store, "--output", &missing, "--split", "test"
        ]);
        r.expect_code(3);
        assert_contains(&r.stderr, &["no samples in split 'test'"]);
        assert!(!missing.exists(), "no PNG for an empty split");
        // A preview is a PNG: another name, or no samples asked for, is a usage error.
        let noext = dir.path().join("p3");
        tmca(args!["data", "preview", &store, "--output", &noext]).expect_code(2);
        tmca(args![
            "data", "preview", &store, "--output", &png, "--count", "0"
        ])
        .expect_code(2);
        assert!(!noext.exists());
    }
}

// ---------------------------------------------------------------------------------------------
// 6. convert
// ---------------------------------------------------------------------------------------------

const FW: u32 = 20;
const FH: u32 = 16;

fn mkparent(p: &Path) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
}

/// A gray 20x16 gradient image whose first pixel is `seed`.
fn write_image(p: &Path, seed: u8) {
    mkparent(p);
    GrayImage::from_fn(FW, FH, |x, y| {
        Luma([seed.wrapping_add((x * 3 + y * 5) as u8)])
    })
    .save(p)
    .unwrap();
}

/// A `w`x`h` mask whose left `cols` columns are `on`.
fn write_mask_sized(p: &Path, w: u32, h: u32, cols: u32, on: u8) {
    mkparent(p);
    GrayImage::from_fn(w, h, |x, _| Luma([if x < cols { on } else { 0 }]))
        .save(p)
        .unwrap();
}

fn write_mask(p: &Path, cols: u32) {
    write_mask_sized(p, FW, FH, cols, 255);
}

/// A 0/255 mask with a few pixels of value 128.
fn write_mask_128(p: &Path) {
    mkparent(p);
    let mut m = GrayImage::from_fn(FW, FH, |x, _| Luma([if x < 5 { 255 } else { 0 }]));
    m.put_pixel(10, 3, Luma([128]));
    m.put_pixel(11, 3, Luma([128]));
    m.save(p).unwrap();
}

fn write_xlsx(p: &Path, rows: &[(&str, &str)]) {
    mkparent(p);
    let mut wb = rust_xlsxwriter::Workbook::new();
    let ws = wb.add_worksheet();
    ws.write_string(0, 0, "Image").unwrap();
    ws.write_string(0, 1, "Description").unwrap();
    for (r, (a, b)) in rows.iter().enumerate() {
        ws.write_string(r as u32 + 1, 0, *a).unwrap();
        ws.write_string(r as u32 + 1, 1, *b).unwrap();
    }
    wb.save(p).unwrap();
}

/// LViT (QaTa-style): 4 train images + 1 test image, masks `mask_<name>`, an .xlsx table for
/// train keyed by mask name and a .csv table for test. No Val_Folder: with the default
/// `--val-fraction` 0.2 one train sample becomes validation → 3/1/1.
fn lvit_fixture(root: &Path) {
    for i in 1..=4u8 {
        let n = format!("covid_{i}.png");
        write_image(&root.join("Train_Folder/img").join(&n), i * 10);
        write_mask(
            &root.join("Train_Folder/labelcol").join(format!("mask_{n}")),
            u32::from(i) + 2,
        );
    }
    write_image(&root.join("Test_Folder/img/covid_9.png"), 90);
    write_mask(&root.join("Test_Folder/labelcol/mask_covid_9.png"), 6);
    write_xlsx(
        &root.join("Train_Folder/Train_text.xlsx"),
        &[
            (
                "mask_covid_1.png",
                "Bilateral pulmonary infection, two infected areas.",
            ),
            (
                "mask_covid_2.png",
                "Unilateral pulmonary infection, one infected area.",
            ),
            ("mask_covid_3.png", "all right lung.."),
            ("mask_covid_4.png", "upper left lung"),
        ],
    );
    std::fs::write(
        root.join("Test_Folder/Test_text.csv"),
        "Image,Description\ncovid_9.png,test text\n",
    )
    .unwrap();
}

/// GuideDecoder: Images/, GTs/, train.csv (4 rows), val.csv (1), test.csv (1) → 4/1/1.
fn guide_fixture(root: &Path) {
    for (i, n) in ["a", "b", "c", "d", "e", "f"].iter().enumerate() {
        write_image(&root.join(format!("Images/{n}.png")), i as u8 * 30);
        write_mask(&root.join(format!("GTs/{n}.png")), i as u32 + 1);
    }
    std::fs::write(
        root.join("train.csv"),
        "Image,Description\na.png,polyp a\nb.png,polyp b\nc.png,polyp c\nd.png,polyp d\n",
    )
    .unwrap();
    std::fs::write(root.join("val.csv"), "Image,Description\ne.png,polyp e\n").unwrap();
    std::fs::write(root.join("test.csv"), "Image,Description\nf.png,polyp f\n").unwrap();
}

/// Generic: images/, masks/, reports/, splits.json with 3/1/1.
fn generic_fixture(root: &Path) {
    std::fs::create_dir_all(root.join("reports")).unwrap();
    for (i, id) in ["n1", "n2", "n3", "n4", "n5"].iter().enumerate() {
        write_image(&root.join(format!("images/{id}.png")), i as u8 * 40);
        write_mask(&root.join(format!("masks/{id}.png")), i as u32 + 2);
        std::fs::write(
            root.join(format!("reports/{id}.txt")),
            format!("  nuclei {id}\n"),
        )
        .unwrap();
    }
    std::fs::write(
        root.join("splits.json"),
        r#"{"train": ["n1", "n2", "n3"], "val": ["n4"], "test": ["n5"]}"#,
    )
    .unwrap();
}

/// Table: `list.csv` naming images and masks in two folders (masks by another name, one
/// image by an absolute path), a report column called `text` and a split column, 3/1/1.
fn table_fixture(root: &Path) {
    let mut rows = String::from("Split,Image,Mask,Text\n");
    for (i, split) in ["train", "train", "val", "train", "test"]
        .iter()
        .enumerate()
    {
        write_image(&root.join(format!("scans/s{i}.png")), i as u8 * 30);
        write_mask(&root.join(format!("labels/s{i}_seg.png")), i as u32 + 3);
        let image = if i == 4 {
            root.join("scans/s4.png").display().to_string()
        } else {
            format!("scans/s{i}.png")
        };
        rows.push_str(&format!(
            "{split},{image},labels/s{i}_seg.png,\"lesion {i}, left\"\n"
        ));
    }
    std::fs::write(root.join("list.csv"), rows).unwrap();
}

fn convert(layout: &str, input: &Path, output: &Path, modality: &str, force: bool) -> Run {
    let mut a = args![
        "data",
        "convert",
        "--layout",
        layout,
        "--input",
        input,
        "--output",
        output,
        "--name",
        "fixture",
        "--modality",
        modality,
        "--size",
        "16"
    ];
    if force {
        a.push("--force".into());
    }
    tmca(a)
}

/// Asserts that a failed conversion left neither the output nor a temporary folder.
#[track_caller]
fn assert_nothing_written(output: &Path) {
    assert!(
        !output.exists(),
        "{} exists after a failed conversion",
        output.display()
    );
    let left = leftovers(output.parent().unwrap());
    assert!(left.is_empty(), "leftovers beside the output: {left:?}");
}

#[test]
fn convert_each_layout_then_validate_and_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    type Fixture = fn(&Path);
    let cases: [(&str, Fixture, &str, [usize; 3]); 4] = [
        ("lvit", lvit_fixture, "xray", [3, 1, 1]),
        ("guidedecoder", guide_fixture, "endoscopy", [4, 1, 1]),
        ("generic", generic_fixture, "histopathology", [3, 1, 1]),
        ("table", table_fixture, "ct", [3, 1, 1]),
    ];
    for (layout, fixture, modality, counts) in cases {
        let root = dir.path().join(format!("in-{layout}"));
        fixture(&root);
        let input = if layout == "table" {
            root.join("list.csv")
        } else {
            root
        };
        let out = outdir.join(format!("{layout}.zarr"));
        // A dry run plans, counts and writes nothing.
        let mut dry = args!["data", "convert", "--layout", layout, "--input", &input];
        dry.extend(args![
            "--output",
            &out,
            "--name",
            "x",
            "--modality",
            modality,
            "--dry-run"
        ]);
        let r = tmca(dry);
        r.expect_code(0);
        let [tr, va, te] = counts;
        assert_contains(
            &r.stdout,
            &[
                &format!(
                    "{} samples would be imported (train {tr}, val {va}",
                    tr + va + te
                ),
                &format!("test {te}); nothing written"),
            ],
        );
        assert!(!out.exists(), "{layout}: a dry run wrote {}", out.display());
        let r = convert(layout, &input, &out, modality, false);
        r.expect_code(0);
        assert_contains(
            &r.stdout,
            &[&format!(
                "{} samples (train {tr}, val {va}, test {te})",
                tr + va + te
            )],
        );

        let r = tmca(args!["data", "validate", &out]);
        r.expect_code(0);
        assert_contains(&r.stdout, &["no problems"]);

        let r = tmca(args!["data", "inspect", &out]);
        r.expect_code(0);
        assert_eq!(inspect_counts(&r.stdout), counts, "{layout}:\n{}", r.stdout);
        assert_contains(&r.stdout, &["fixture", modality, layout, "x 16 x 16"]);

        // Converting again without --force: exit 2, store untouched.
        let before = snapshot(&out);
        let r = convert(layout, &input, &out, modality, false);
        r.expect_code(2);
        assert_contains(&r.stderr, &["already exists", "--force"]);
        assert!(snapshot(&out) == before);

        // Masks were stored as 0/1 (the 0/255 fixtures), with foreground.
        let mask = open_array(&out, "mask");
        let m: Vec<u8> = mask.retrieve_array_subset(&mask.subset_all()).unwrap();
        assert!(m.iter().all(|&v| v <= 1), "{layout}: mask not 0/1");
        assert!(m.contains(&1), "{layout}: empty masks");
    }
    assert!(leftovers(&outdir).is_empty(), "{:?}", leftovers(&outdir));
}

#[test]
fn convert_rejects_bad_inputs_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let out = outdir.join("store.zarr");

    // A missing input folder: bad input (3), naming the path.
    let missing = dir.path().join("no-such-input");
    for layout in ["lvit", "guidedecoder", "generic"] {
        let r = convert(layout, &missing, &out, "xray", false);
        r.expect_code(3);
        assert_contains(
            &r.stderr,
            &[&missing.display().to_string(), "does not exist"],
        );
        assert_nothing_written(&out);
    }

    // A mask with value 128 (found while decoding, after the writer started).
    let input = dir.path().join("mask128");
    generic_fixture(&input);
    let bad_mask = input.join("masks/n2.png");
    write_mask_128(&bad_mask);
    let r = convert("generic", &input, &out, "histopathology", false);
    r.expect_code(3);
    assert_contains(&r.stderr, &[&bad_mask.display().to_string(), "128"]);
    assert_nothing_written(&out);

    // Image and mask of different sizes: both files named.
    let input = dir.path().join("mismatch");
    generic_fixture(&input);
    let small_mask = input.join("masks/n3.png");
    write_mask_sized(&small_mask, 18, 16, 4, 255);
    let r = convert("generic", &input, &out, "histopathology", false);
    r.expect_code(3);
    assert_contains(
        &r.stderr,
        &[
            &input.join("images/n3.png").display().to_string(),
            &small_mask.display().to_string(),
            "size mismatch",
        ],
    );
    assert_nothing_written(&out);

    // LViT: a text row whose image does not exist.
    let input = dir.path().join("orphan-row");
    lvit_fixture(&input);
    std::fs::remove_file(input.join("Train_Folder/img/covid_2.png")).unwrap();
    let r = convert("lvit", &input, &out, "xray", false);
    r.expect_code(3);
    assert_contains(
        &r.stderr,
        &[
            &input
                .join("Train_Folder/Train_text.xlsx")
                .display()
                .to_string(),
            "row 3",
            "mask_covid_2.png",
            "no such image",
        ],
    );
    assert_nothing_written(&out);

    // GuideDecoder: a text row whose image does not exist.
    let input = dir.path().join("orphan-row-guide");
    guide_fixture(&input);
    std::fs::write(
        input.join("test.csv"),
        "Image,Description\nf.png,polyp f\nzz.png,ghost\n",
    )
    .unwrap();
    let r = convert("guidedecoder", &input, &out, "endoscopy", false);
    r.expect_code(3);
    assert_contains(
        &r.stderr,
        &[
            &input.join("test.csv").display().to_string(),
            "row 3",
            "zz.png",
        ],
    );
    assert_nothing_written(&out);

    // An unknown layout is a command-line error.
    let r = convert("voc", &input, &out, "xray", false);
    r.expect_code(2);
    assert_contains(&r.stderr, &["voc"]);
    assert_nothing_written(&out);
}

#[test]
fn failed_forced_conversion_keeps_the_old_store() {
    let dir = tempfile::tempdir().unwrap();
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let out = outdir.join("store.zarr");
    let good = dir.path().join("good");
    generic_fixture(&good);
    convert("generic", &good, &out, "histopathology", false).expect_code(0);
    let before = snapshot(&out);

    // Bad pixel values are only found while decoding, i.e. after the new store was started.
    let bad = dir.path().join("bad");
    generic_fixture(&bad);
    write_mask_128(&bad.join("masks/n5.png"));
    let r = convert("generic", &bad, &out, "histopathology", true);
    r.expect_code(3);
    assert_contains(&r.stderr, &["n5.png", "128"]);
    assert!(snapshot(&out) == before, "the old store was changed");
    assert!(leftovers(&outdir).is_empty(), "{:?}", leftovers(&outdir));
    let r = tmca(args!["data", "inspect", &out]);
    r.expect_code(0);
    assert_eq!(inspect_counts(&r.stdout), [3, 1, 1]);
    tmca(args!["data", "validate", &out]).expect_code(0);

    // Problems found while planning (size mismatch) leave it intact too.
    let bad2 = dir.path().join("bad2");
    generic_fixture(&bad2);
    write_mask_sized(&bad2.join("masks/n1.png"), 20, 15, 3, 255);
    convert("generic", &bad2, &out, "histopathology", true).expect_code(3);
    assert!(snapshot(&out) == before, "the old store was changed");
    assert!(leftovers(&outdir).is_empty(), "{:?}", leftovers(&outdir));

    // A good forced conversion does replace it.
    let other = dir.path().join("other");
    guide_fixture(&other);
    convert("guidedecoder", &other, &out, "endoscopy", true).expect_code(0);
    assert!(snapshot(&out) != before);
    let r = tmca(args!["data", "inspect", &out]);
    r.expect_code(0);
    assert_eq!(inspect_counts(&r.stdout), [4, 1, 1]);
    assert!(leftovers(&outdir).is_empty(), "{:?}", leftovers(&outdir));

    // --force replaces a store, never a folder of other things or a file (exit 2, untouched),
    // also in a dry run.
    let thesis = outdir.join("notastore");
    std::fs::create_dir(&thesis).unwrap();
    std::fs::write(thesis.join("thesis.docx"), "precious").unwrap();
    let file = outdir.join("somefile");
    std::fs::write(&file, "hi").unwrap();
    for target in [&thesis, &file] {
        let r = convert("guidedecoder", &other, target, "endoscopy", true);
        r.expect_code(2);
        assert_contains(&r.stderr, &["is not a tmca store", "--force"]);
        let mut dry = vec![
            "data",
            "convert",
            "--layout",
            "guidedecoder",
            "--name",
            "x",
            "--modality",
            "xray",
            "--force",
            "--dry-run",
        ]
        .into_iter()
        .map(std::ffi::OsString::from)
        .collect::<Vec<_>>();
        dry.extend(args!["--input", &other, "--output", target]);
        tmca(dry).expect_code(2);
    }
    assert_eq!(
        std::fs::read_to_string(thesis.join("thesis.docx")).unwrap(),
        "precious"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hi");

    // The temporary folder of a killed conversion (its process gone) is removed by the next
    // write to the same output.
    let stale = outdir.join("store.zarr.tmp-4194303");
    std::fs::create_dir(&stale).unwrap();
    // What a writer creates first: the group's metadata with the tmca attribute. A folder of
    // that name that is no store is someone else's and stays.
    std::fs::write(
        stale.join("zarr.json"),
        r#"{"zarr_format": 3, "node_type": "group", "attributes": {"tmca": {"complete": false}}}"#,
    )
    .unwrap();
    let foreign = outdir.join("store.zarr.tmp-4194302");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    convert("guidedecoder", &other, &out, "endoscopy", true).expect_code(0);
    assert!(!stale.exists(), "stale temporary folder left");
    assert!(
        foreign.join("notes.txt").is_file(),
        "a folder that is no store was removed"
    );
    std::fs::remove_dir_all(&foreign).unwrap();
    assert!(leftovers(&outdir).is_empty(), "{:?}", leftovers(&outdir));
}

#[test]
fn jpeg_masks_need_and_take_a_mask_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("kvasir");
    table_fixture(&root);
    // Kvasir-SEG ships its masks as JPEG: values near 0 and 255, not exactly.
    for i in 0..5 {
        let png = root.join(format!("labels/s{i}_seg.png"));
        image::open(&png)
            .unwrap()
            .save(root.join(format!("labels/s{i}_seg.jpg")))
            .unwrap();
        std::fs::remove_file(png).unwrap();
    }
    let list = std::fs::read_to_string(root.join("list.csv")).unwrap();
    std::fs::write(root.join("list.csv"), list.replace("_seg.png", "_seg.jpg")).unwrap();
    let out = dir.path().join("k.zarr");
    let table = root.join("list.csv");
    // A dry run reads every mask and names each JPEG one.
    let mut dry = args!["data", "convert", "--layout", "table", "--input", &table];
    dry.extend(args![
        "--output",
        &out,
        "--name",
        "k",
        "--modality",
        "endoscopy",
        "--dry-run"
    ]);
    let r = tmca(dry);
    r.expect_code(3);
    for i in 0..5 {
        assert_contains(&r.stderr, &[&format!("s{i}_seg.jpg")]);
    }
    assert_nothing_written(&out);
    let r = convert("table", &table, &out, "endoscopy", false);
    r.expect_code(3);
    assert_contains(&r.stderr, &["_seg.jpg", "--mask-threshold"]);
    assert_nothing_written(&out);

    let mut a = args!["data", "convert", "--layout", "table", "--input", &table, "--output", &out];
    a.extend(args![
        "--name",
        "kvasir",
        "--modality",
        "endoscopy",
        "--size",
        "16"
    ]);
    a.extend(args!["--mask-threshold", "0.5"]);
    let r = tmca(a.clone());
    r.expect_code(0);
    assert_contains(&r.stdout, &["5 samples (train 3, val 1, test 1)"]);
    tmca(args!["data", "validate", &out]).expect_code(0);
    // Sample i's mask covers its left i + 3 of 20 columns; stored at 16 wide, nearest.
    let mask = open_array(&out, "mask");
    let m: Vec<u8> = mask.retrieve_array_subset(&mask.subset_all()).unwrap();
    let fg: Vec<usize> = m
        .chunks(16 * 16)
        .map(|s| s.iter().filter(|&&v| v == 1).count())
        .collect();
    let want: Vec<usize> = [0u32, 1, 3, 2, 4]
        .iter()
        .map(|&i| (0..16u32).filter(|&x| ((x * 20 + 10) / 16) < i + 3).count() * 16)
        .collect();
    assert_eq!(fg, want);

    let pos = a.iter().position(|x| x == "0.5").unwrap();
    a[pos] = "0".into();
    a.push("--force".into());
    let r = tmca(a);
    r.expect_code(2);
    assert_contains(&r.stderr, &["mask_threshold", "(0, 1]"]);
}

/// With --mask-threshold, a 0/1 mask saved as JPEG keeps its target (it is not cut at 127.5),
/// the samples whose mask is empty are named, and a colour-coded label map (two classes in two
/// colours) is refused naming the file instead of merged into one target.
#[test]
fn thresholded_0_1_jpeg_masks_empty_masks_named_colour_label_maps_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    table_fixture(&root);
    let gray = |i: usize| {
        image::open(root.join(format!("labels/s{i}_seg.png")))
            .unwrap()
            .to_luma8()
    };
    // s0: 0/1 as JPEG; s1: empty.
    let mut m0 = gray(0);
    m0.pixels_mut().for_each(|p| p.0[0] = u8::from(p.0[0] > 0));
    m0.save(root.join("labels/s0_seg.jpg")).unwrap();
    let mut m1 = gray(1);
    m1.pixels_mut().for_each(|p| p.0[0] = 0);
    m1.save(root.join("labels/s1_seg.png")).unwrap();
    let list = std::fs::read_to_string(root.join("list.csv")).unwrap();
    std::fs::write(
        root.join("list.csv"),
        list.replace("s0_seg.png", "s0_seg.jpg"),
    )
    .unwrap();
    let table = root.join("list.csv");
    let out = dir.path().join("t.zarr");
    let mut a = args!["data", "convert", "--layout", "table", "--input", &table, "--output", &out];
    a.extend(args![
        "--name",
        "t",
        "--modality",
        "xray",
        "--size",
        "16",
        "--mask-threshold",
        "0.5"
    ]);
    let r = tmca(a.clone());
    r.expect_code(0);
    assert_contains(&r.stdout, &["1 with an empty mask: s1"]);
    let mask = open_array(&out, "mask");
    let m: Vec<u8> = mask.retrieve_array_subset(&mask.subset_all()).unwrap();
    assert!(m[..256].contains(&1), "s0's 0/1 JPEG mask came out empty");

    // s2: lung in green, lesion in red.
    image::RgbImage::from_fn(20, 16, |x, _| match x {
        0..8 => image::Rgb([0, 255, 0]),
        8..11 => image::Rgb([255, 0, 0]),
        _ => image::Rgb([0, 0, 0]),
    })
    .save(root.join("labels/s2_seg.png"))
    .unwrap();
    for threshold in [true, false] {
        let mut b = a.clone();
        b.push("--force".into());
        if !threshold {
            b.truncate(b.len() - 3);
            b.push("--force".into());
            std::fs::write(
                &table,
                std::fs::read_to_string(&table)
                    .unwrap()
                    .replace("s0_seg.jpg", "s0_seg.png"),
            )
            .unwrap();
        }
        let r = tmca(b);
        r.expect_code(3);
        assert_contains(
            &r.stderr,
            &[
                "s2_seg.png",
                "several colours",
                "green in 128 pixels, red in 48 pixels",
            ],
        );
    }
    // The store of the first conversion is kept.
    tmca(args!["data", "validate", &out]).expect_code(0);
}

/// A dataset's 16-bit images share one scale: a slice whose largest value is 1023 is read at
/// the same 12 bits as its neighbours (not at 10, four times brighter); `--bit-depth` sets
/// the depth; the store records it, and `tmca predict` reads new 16-bit images of a run
/// trained on it at that depth.
#[test]
fn sixteen_bit_datasets_have_one_scale_that_predict_reuses() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ct");
    table_fixture(&root);
    let value = |i: u32, x: u32, y: u32| {
        if i == 0 {
            (x * 40 + y * 13) % 1024
        } else {
            (x * 150 + y * 7 + i) % 3001
        }
    };
    for i in 0..5u32 {
        image::ImageBuffer::<Luma<u16>, Vec<u16>>::from_fn(FW, FH, |x, y| {
            Luma([value(i, x, y) as u16])
        })
        .save(root.join(format!("scans/s{i}.png")))
        .unwrap();
    }
    let table = root.join("list.csv");
    let out = dir.path().join("ct.zarr");
    let mut a = args!["data", "convert", "--layout", "table", "--input", &table, "--output", &out];
    a.extend(args![
        "--name",
        "ct",
        "--modality",
        "ct",
        "--height",
        "16",
        "--width",
        "20"
    ]);
    tmca(a.clone()).expect_code(0);
    let at = |bits: u32, v: u32| {
        ((v as f32 * 255.0 / ((1u32 << bits) - 1) as f32).round()).min(255.0) as u8
    };
    let images = open_array(&out, "image");
    let names = |store: &Path| {
        let n: Vec<String> = open_array(store, "source_name")
            .retrieve_array_subset(&open_array(store, "source_name").subset_all())
            .unwrap();
        n
    };
    let px: Vec<u8> = images.retrieve_array_subset(&images.subset_all()).unwrap();
    let k = names(&out).iter().position(|n| n == "s0.png").unwrap();
    let s0 = &px[k * 320..(k + 1) * 320];
    let want: Vec<u8> = (0..FH)
        .flat_map(|y| (0..FW).map(move |x| (x, y)))
        .map(|(x, y)| at(12, value(0, x, y)))
        .collect();
    assert_eq!(s0, want.as_slice(), "s0 read at the dataset's 12 bits");
    let r = tmca(args!["data", "inspect", &out]);
    assert_contains(&r.stdout, &["\"bit_depth\":12"]);

    // Set by hand: 16 bits.
    let mut b = a.clone();
    b.extend(args!["--bit-depth", "16", "--force"]);
    tmca(b).expect_code(0);
    let px: Vec<u8> = open_array(&out, "image")
        .retrieve_array_subset(&open_array(&out, "image").subset_all())
        .unwrap();
    let want16: Vec<u8> = (0..FH)
        .flat_map(|y| (0..FW).map(move |x| (x, y)))
        .map(|(x, y)| at(16, value(0, x, y)))
        .collect();
    assert_eq!(&px[k * 320..(k + 1) * 320], want16.as_slice());
    let mut c = a.clone();
    c.extend(args!["--bit-depth", "7", "--force"]);
    let r = tmca(c);
    r.expect_code(2);
    assert_contains(&r.stderr, &["bit_depth", "between 8 and 16"]);
    let mut d = a.clone();
    d.push("--force".into());
    tmca(d).expect_code(0);

    // A run trained on the store reads a new 16-bit image (own largest value 1000: 10 bits)
    // at the store's 12 bits: as the 8-bit picture of those values.
    let run = dir.path().join("run");
    let cfg = dir.path().join("ct.toml");
    std::fs::write(
        &cfg,
        format!(
            "[run]\ndir = \"{}\"\n[data]\nstores = [\"{}\"]\nimage_size = 32\nbatch_size = 2\n[model]\npreset = \"cpu-tiny\"\n[text]\nmax_len = 12\n[train]\nepochs = 1\n",
            run.display(),
            out.display()
        ),
    )
    .unwrap();
    tmca(args!["train", &cfg]).expect_code(0);
    let new16 = dir.path().join("new16.png");
    let new8 = dir.path().join("new8.png");
    let v = |x: u32, y: u32| (x * 37 + y * 11) % 1001;
    image::ImageBuffer::<Luma<u16>, Vec<u16>>::from_fn(FW, FH, |x, y| Luma([v(x, y) as u16]))
        .save(&new16)
        .unwrap();
    GrayImage::from_fn(FW, FH, |x, y| Luma([at(12, v(x, y))]))
        .save(&new8)
        .unwrap();
    let probs = |img: &Path, o: &str| {
        let o = dir.path().join(o);
        tmca(args![
            "predict",
            &run,
            "--image",
            img,
            "--report",
            "lesion 1, left",
            "--probs",
            "--output",
            &o
        ])
        .expect_code(0);
        let stem = img.file_stem().unwrap().to_str().unwrap().to_string();
        std::fs::read(o.join(format!("{stem}_prob.npy"))).unwrap()
    };
    assert_eq!(probs(&new16, "p16"), probs(&new8, "p8"));
}

// ---------------------------------------------------------------------------------------------
// 7. help
// ---------------------------------------------------------------------------------------------

#[test]
fn help_texts() {
    let r = tmca(["--help"]);
    r.expect_code(0);
    assert_contains(&r.stdout, &["data", "quickstart", "bench"]);

    let r = tmca(["data", "--help"]);
    r.expect_code(0);
    assert_contains(
        &r.stdout,
        &["convert", "synth", "inspect", "validate", "preview"],
    );

    // `import` is `convert` by another name (what the help line says it does).
    for (cmd, flag) in [
        ("convert", "--help"),
        ("convert", "-h"),
        ("import", "--help"),
    ] {
        let r = tmca(["data", cmd, flag]);
        r.expect_code(0);
        assert_contains(
            &r.stdout,
            &[
                "--layout",
                "lvit",
                "guidedecoder",
                "generic",
                "table",
                "--mask-threshold",
                "--force",
            ],
        );
    }

    let r = tmca(["data", "synth", "--help"]);
    r.expect_code(0);
    assert_contains(
        &r.stdout,
        &["xray", "ct", "endoscopy", "histopathology", "--seed"],
    );
}
