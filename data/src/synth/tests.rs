//! Cross-modality tests: determinism, label consistency, the information only the text carries,
//! and report variety and noise.

use super::*;
use crate::NoProgress;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

fn cfg(m: Modality, h: usize, w: usize) -> SynthConfig {
    let mut c = SynthConfig::new(m);
    c.height = h;
    c.width = w;
    c
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_lowercase())
        .collect()
}

const ROWS: [&str; 3] = ["upper", "middle", "lower"];

/// The zones a report names, in canonical form, parsed from its words alone.
fn parse_zones(m: Modality, report: &str) -> std::result::Result<Vec<String>, String> {
    let toks: Vec<String> = words(report)
        .into_iter()
        .filter(|w| text::ZONE_WORDS.contains(&w.as_str()))
        .collect();
    let mut out = Vec::new();
    if m == Modality::Endoscopy {
        let mut row: Option<&str> = None;
        for t in &toks {
            match (row, t.as_str()) {
                (None, r) if ROWS.contains(&r) => {
                    row = Some(ROWS[ROWS.iter().position(|x| *x == r).unwrap_or(0)])
                }
                (None, "center") => out.push("center".to_string()),
                (Some(r), c) if ["left", "center", "right"].contains(&c) => {
                    out.push(format!("{r} {c}"));
                    row = None;
                }
                _ => return Err(format!("unexpected zone word '{t}' in {report:?}")),
            }
        }
        if row.is_some() {
            return Err(format!("dangling row word in {report:?}"));
        }
    } else {
        if toks.len() & 1 == 1 {
            return Err(format!("odd number of zone words in {report:?}"));
        }
        for pair in toks.chunks(2) {
            let (a, b) = (pair[0].as_str(), pair[1].as_str());
            let (r, s) = if ROWS.contains(&a) { (a, b) } else { (b, a) };
            if !ROWS.contains(&r) || !["left", "right"].contains(&s) {
                return Err(format!("bad zone pair {a} {b} in {report:?}"));
            }
            if m == Modality::Histopathology && r == "middle" {
                return Err(format!("no middle quadrant: {report:?}"));
            }
            out.push(format!("{r} {s}"));
        }
    }
    out.sort();
    Ok(out)
}

/// A box (x0, y0, x1, y1) in pixels that must contain a zone's targets, derived from the
/// nominal layout independently of the generator's code, with room for anatomy jitter.
fn nominal_box(m: Modality, zone: &str, h: f32, w: f32) -> (f32, f32, f32, f32) {
    let mut it = zone.split(' ');
    let a = it.next().unwrap_or("");
    let b = it.next().unwrap_or("");
    match m {
        Modality::Xray | Modality::Ct => {
            // Patient's left lung on the image right.
            let (x0, x1) = if b == "left" {
                (0.5 * w, w)
            } else {
                (0.0, 0.5 * w)
            };
            let (top, bottom, tol) = if m == Modality::Xray {
                (0.14, 0.80, 0.06)
            } else {
                (0.25, 0.73, 0.045)
            };
            let third = (bottom - top) / 3.0;
            let r = ROWS.iter().position(|x| *x == a).unwrap_or(9) as f32;
            (
                x0,
                h * (top + r * third - tol),
                x1,
                h * (top + (r + 1.0) * third + tol),
            )
        }
        Modality::Endoscopy => {
            let (r, c) = if zone == "center" {
                (1.0, 1.0)
            } else {
                (
                    ROWS.iter().position(|x| *x == a).unwrap_or(9) as f32,
                    ["left", "center", "right"]
                        .iter()
                        .position(|x| *x == b)
                        .unwrap_or(9) as f32,
                )
            };
            (
                c * w / 3.0,
                r * h / 3.0,
                (c + 1.0) * w / 3.0,
                (r + 1.0) * h / 3.0,
            )
        }
        Modality::Histopathology => {
            let r = if a == "upper" { 0.0 } else { 1.0 };
            let c = if b == "left" { 0.0 } else { 1.0 };
            (
                c * w / 2.0,
                r * h / 2.0,
                (c + 1.0) * w / 2.0,
                (r + 1.0) * h / 2.0,
            )
        }
    }
}

fn inside(b: (f32, f32, f32, f32), x: usize, y: usize) -> bool {
    let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
    px >= b.0 && px <= b.2 && py >= b.1 && py <= b.3
}

#[test]
fn deterministic_by_config_and_index() {
    for m in Modality::ALL {
        let c = cfg(m, 48, 80);
        let a = generate_sample(&c, 17);
        assert_eq!(a, generate_sample(&c, 17));
        assert_eq!(a.name, format!("{}-000017", dataset_name(m)));
        assert_ne!(a.image, generate_sample(&c, 18).image);
        let mut other = c.clone();
        other.seed = 1;
        assert_ne!(
            a.image,
            generate_sample(&other, 17).image,
            "{m}: seed ignored"
        );
        // Generation order and threads do not matter.
        let all: Vec<Sample> = generate(&c, &NoProgress).unwrap().take(20).collect();
        assert_eq!(all[17], a);
    }
}

#[test]
fn shapes_values_and_splits() {
    for m in Modality::ALL {
        for (h, w) in [(48, 80), (32, 32), (70, 33), (224, 224)] {
            let c = cfg(m, h, w);
            for i in [0, 1, 2] {
                let s = generate_sample(&c, i);
                assert_eq!(s.image.len(), m.channels() * h * w, "{m} {h}x{w}");
                assert_eq!(s.mask.len(), h * w);
                assert!(s.mask.iter().all(|&v| v <= 1), "{m}: mask not binary");
                assert!(!s.report.trim().is_empty());
            }
        }
        let c = cfg(m, 32, 32);
        assert_eq!(generate_sample(&c, 159).split, Split::Train);
        assert_eq!(generate_sample(&c, 160).split, Split::Val);
        assert_eq!(generate_sample(&c, 200).split, Split::Test);
    }
}

#[test]
fn reports_name_exactly_the_zones_of_the_mask() {
    for m in Modality::ALL {
        let mut empties = 0;
        for (i, (h, w)) in (0..120).map(|i| (i, if i % 3 == 0 { (48, 80) } else { (64, 64) })) {
            let c = cfg(m, h, w);
            let sc = render(&c, i);
            let r = &sc.rendered;
            let (hf, wf) = (h as f32, w as f32);
            assert!(
                r.mask.iter().zip(&r.distractors).all(|(a, b)| a + b <= 1),
                "{m}: overlap"
            );
            let empty_report = words(&sc.report).first().map(String::as_str) == Some("no");
            let fg = r.mask.iter().filter(|&&v| v == 1).count();
            if empty_report {
                empties += 1;
                assert_eq!(fg, 0, "{m} #{i}: {:?} but the mask is not empty", sc.report);
                assert!(sc.targets.is_empty());
                if m != Modality::Histopathology {
                    assert_eq!(parse_zones(m, &sc.report), Ok(vec![]), "{:?}", sc.report);
                }
                continue;
            }
            let zones = parse_zones(m, &sc.report).unwrap_or_else(|e| panic!("{m} #{i}: {e}"));
            let mut truth = sc.targets.clone();
            truth.sort();
            assert_eq!(zones, truth, "{m} #{i}: {:?}", sc.report);
            assert!(fg > 0, "{m} #{i}: report names zones but the mask is empty");
            let boxes: Vec<_> = zones.iter().map(|z| nominal_box(m, z, hf, wf)).collect();
            let mut hit = vec![false; boxes.len()];
            for y in 0..h {
                for x in 0..w {
                    if r.mask[y * w + x] == 1 {
                        let mut any = false;
                        for (k, b) in boxes.iter().enumerate() {
                            if inside(*b, x, y) {
                                any = true;
                                hit[k] = true;
                            }
                        }
                        assert!(
                            any,
                            "{m} #{i}: mask pixel ({x},{y}) outside {zones:?}: {:?}",
                            sc.report
                        );
                    }
                }
            }
            assert!(
                hit.iter().all(|&b| b),
                "{m} #{i}: a named zone has no mask pixel"
            );
        }
        if m == Modality::Ct {
            assert!((15..=50).contains(&empties), "CT: {empties} of 120 empty");
        } else {
            assert_eq!(empties, 0, "{m}: unexpected empty samples");
        }
    }
}

fn dilate(mask: &[u8], h: usize, w: usize, r: usize) -> Vec<u8> {
    let mut out = vec![0u8; h * w];
    for y in 0..h {
        for x in 0..w {
            if mask[y * w + x] == 0 {
                continue;
            }
            for yy in y.saturating_sub(r)..(y + r + 1).min(h) {
                for xx in x.saturating_sub(r)..(x + r + 1).min(w) {
                    out[yy * w + xx] = 1;
                }
            }
        }
    }
    out
}

/// Mean over channels of (mean inside `m`) − (mean in a 2-pixel ring around `m` free of labels).
fn contrast(img: &[u8], m: &[u8], labels: &[u8], h: usize, w: usize) -> Option<f32> {
    let ring = dilate(m, h, w, 2);
    let c = img.len() / (h * w);
    let (mut si, mut ni, mut sr, mut nr) = (0f64, 0f64, 0f64, 0f64);
    for ch in 0..c {
        for i in 0..h * w {
            let v = img[ch * h * w + i] as f64;
            if m[i] == 1 {
                si += v;
                ni += 1.0;
            } else if ring[i] == 1 && labels[i] == 0 {
                sr += v;
                nr += 1.0;
            }
        }
    }
    (ni > 0.0 && nr > 0.0).then(|| (si / ni - sr / nr) as f32)
}

#[test]
fn distractors_look_like_targets_outside_the_mask() {
    for m in Modality::ALL {
        let c = cfg(m, 64, 64);
        let n = 150;
        let (mut with_d, mut ct, mut cd, mut nt, mut nd) = (0, 0.0, 0.0, 0, 0);
        let (mut area_t, mut area_d, mut zones_t, mut zones_d) = (0usize, 0usize, 0usize, 0usize);
        for i in 0..n {
            let sc = render(&c, i);
            let r = &sc.rendered;
            let labels: Vec<u8> = r
                .mask
                .iter()
                .zip(&r.distractors)
                .map(|(a, b)| a | b)
                .collect();
            let dpx = r.distractors.iter().filter(|&&v| v == 1).count();
            assert_eq!(dpx > 0, !sc.distractors.is_empty(), "{m} #{i}");
            if dpx > 0 {
                with_d += 1;
            }
            area_t += r.mask.iter().filter(|&&v| v == 1).count();
            area_d += dpx;
            zones_t += sc.targets.len();
            zones_d += sc.distractors.len();
            if let Some(v) = contrast(&r.image, &r.mask, &labels, 64, 64) {
                ct += v;
                nt += 1;
            }
            if let Some(v) = contrast(&r.image, &r.distractors, &labels, 64, 64) {
                cd += v;
                nd += 1;
            }
        }
        let (ct, cd) = (ct / nt.max(1) as f32, cd / nd.max(1) as f32);
        assert!(
            with_d as f32 >= 0.6 * n as f32,
            "{m}: only {with_d} of {n} images have distractors"
        );
        assert!(
            ct.abs() > 8.0,
            "{m}: targets barely visible (contrast {ct})"
        );
        assert!(
            (ct - cd).abs() < 0.2 * ct.abs(),
            "{m}: target contrast {ct} vs distractor {cd}"
        );
        let (at, ad) = (
            area_t as f32 / zones_t as f32,
            area_d as f32 / zones_d as f32,
        );
        assert!(
            (at - ad).abs() < 0.2 * at,
            "{m}: target area {at} vs distractor area {ad} per zone"
        );
    }
}

#[test]
fn no_distractors_when_disabled() {
    for m in Modality::ALL {
        let mut c = cfg(m, 32, 48);
        c.max_distractors = 0;
        for i in 0..20 {
            let sc = render(&c, i);
            assert!(sc.distractors.is_empty() && sc.rendered.distractors.iter().all(|&v| v == 0));
        }
    }
}

fn first_count(report: &str) -> Option<usize> {
    words(report)
        .iter()
        .find_map(|w| text::COUNT_WORDS.iter().position(|c| c == w))
}

#[test]
fn count_words_follow_the_contradiction_rate() {
    for m in [Modality::Xray, Modality::Ct, Modality::Endoscopy] {
        for rate in [0.0, 1.0] {
            let mut c = cfg(m, 32, 32);
            c.contradiction_rate = rate;
            c.empty_rate = 0.0;
            for i in 0..60 {
                let sc = render(&c, i);
                let stated = first_count(&sc.report)
                    .unwrap_or_else(|| panic!("no count in {:?}", sc.report));
                assert_eq!(
                    stated == sc.targets.len(),
                    rate == 0.0,
                    "{m} rate {rate}: {:?}",
                    sc.report
                );
            }
        }
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let sub = prev[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[test]
fn reports_are_varied_and_noisy() {
    for m in Modality::ALL {
        let c = cfg(m, 32, 32);
        let reports: Vec<String> = (0..300).map(|i| render(&c, i).report).collect();
        let distinct: HashSet<&String> = reports.iter().collect();
        assert!(
            distinct.len() > 150,
            "{m}: only {} distinct reports of 300",
            distinct.len()
        );
        let doubled = reports.iter().filter(|r| r.ends_with("..")).count();
        let lower = reports
            .iter()
            .filter(|r| r.chars().all(|c| !c.is_ascii_uppercase()))
            .count();
        let caps = reports
            .iter()
            .filter(|r| {
                r.split(' ')
                    .any(|w| w.len() > 1 && w.chars().all(|c| c.is_ascii_uppercase()))
            })
            .count();
        let vocab = [
            "pulmonary",
            "infection",
            "infected",
            "bilateral",
            "unilateral",
            "polyp",
            "polyps",
            "located",
            "density",
            "nuclei",
        ];
        let typos = reports
            .iter()
            .filter(|r| {
                words(r).iter().any(|w| {
                    vocab
                        .iter()
                        .any(|v| w.len() >= 5 && *w != *v && edit_distance(w, v) == 1)
                })
            })
            .count();
        assert!(doubled >= 5, "{m}: {doubled} doubled periods");
        assert!(lower >= 15, "{m}: {lower} all-lower-case reports");
        assert!(caps >= 2, "{m}: {caps} reports with capitals");
        assert!(typos >= 5, "{m}: {typos} typos");
    }
    let c = cfg(Modality::Xray, 32, 32);
    let slips = (0..300)
        .map(|i| render(&c, i).report.to_ascii_lowercase())
        .filter(|r| {
            r.contains("one infected areas")
                || r.contains("two infected area,")
                || r.contains("one lesions")
        })
        .count();
    assert!(slips >= 3, "{slips} grammar slips");
}

#[test]
fn validate_names_the_field() {
    let field = |c: &SynthConfig| match c.validate() {
        Err(DataError::Config { field, .. }) => field,
        other => panic!("expected a config error, got {other:?}"),
    };
    let ok = SynthConfig::new(Modality::Ct);
    assert!(ok.validate().is_ok());
    assert_eq!(
        field(&SynthConfig {
            height: 16,
            ..ok.clone()
        }),
        "height"
    );
    assert_eq!(
        field(&SynthConfig {
            width: 5000,
            ..ok.clone()
        }),
        "width"
    );
    assert_eq!(
        field(&SynthConfig {
            n_train: 0,
            n_val: 0,
            n_test: 0,
            ..ok.clone()
        }),
        "n_train"
    );
    assert_eq!(
        field(&SynthConfig {
            max_distractors: 99,
            ..ok.clone()
        }),
        "max_distractors"
    );
    assert_eq!(
        field(&SynthConfig {
            contradiction_rate: 1.5,
            ..ok.clone()
        }),
        "contradiction_rate"
    );
    assert_eq!(
        field(&SynthConfig {
            empty_rate: f32::NAN,
            ..ok.clone()
        }),
        "empty_rate"
    );
    assert!(generate(&SynthConfig { height: 0, ..ok }, &NoProgress).is_err());
}

struct Count(AtomicU64, AtomicU64, AtomicU64);

impl Progress for Count {
    fn start(&self, _what: &str, total: u64) {
        self.0.store(total, Ordering::SeqCst);
    }
    fn inc(&self, n: u64) {
        self.1.fetch_add(n, Ordering::SeqCst);
    }
    fn finish(&self) {
        self.2.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn generate_yields_all_samples_in_order_and_reports_progress() {
    let mut c = cfg(Modality::Histopathology, 32, 40);
    (c.n_train, c.n_val, c.n_test) = (70, 20, 10);
    let p = Count(AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let it = generate(&c, &p).unwrap();
    assert_eq!(it.len(), 100);
    let all: Vec<Sample> = it.collect();
    assert_eq!(all.len(), 100);
    for (i, s) in all.iter().enumerate() {
        assert_eq!(s.name, format!("synth-histopathology-{i:06}"));
    }
    assert_eq!(all.iter().filter(|s| s.split == Split::Val).count(), 20);
    assert_eq!(
        (
            p.0.load(Ordering::SeqCst),
            p.1.load(Ordering::SeqCst),
            p.2.load(Ordering::SeqCst)
        ),
        (100, 100, 1)
    );
    let info = store_info(&c);
    assert_eq!(info.name, "synth-histopathology");
    assert_eq!((info.channels, info.height, info.width), (3, 32, 40));
    assert_eq!(info.provenance["generator"], "tmca synth");
    assert_eq!(info.provenance["max_distractors"], 2);
    assert_eq!(info.class_map["1"], "nucleus");
}

/// A generation asked to stop (a signal, through the progress reporter) ends at once with
/// `Interrupted`, leaving neither a store nor its temporary folder; an old store stays.
#[test]
fn a_stopped_generation_keeps_nothing_and_replaces_nothing() {
    struct StopAfter(AtomicU64);
    impl crate::Progress for StopAfter {
        fn start(&self, _: &str, _: u64) {}
        fn inc(&self, n: u64) {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
        fn finish(&self) {}
        fn cancelled(&self) -> bool {
            self.0.load(Ordering::Relaxed) >= 3
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(Modality::Xray, 32, 32);
    (c.n_train, c.n_val, c.n_test) = (8, 2, 2);
    let path = dir.path().join("s");
    let err = ensure_store(&c, &path, &StopAfter(AtomicU64::new(0))).unwrap_err();
    assert!(matches!(err, crate::DataError::Interrupted { .. }), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let mut old = c.clone();
    old.seed += 1;
    ensure_store(&old, &path, &NoProgress).unwrap();
    assert!(ensure_store(&c, &path, &StopAfter(AtomicU64::new(0))).is_err());
    let kept = crate::store::Store::open(&path).unwrap();
    assert_eq!(kept.info(), &store_info(&old));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
