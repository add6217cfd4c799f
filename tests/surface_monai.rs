//! The boundary distances (HD95, ASSD) of `tmca_trainer::metrics::surface` against MONAI's
//! `compute_hausdorff_distance(percentile=95)` and `compute_average_surface_distance(
//! symmetric=True)` (tests/python/check_surface.py), on random blobs, noise, thin lines, single
//! pixels, masks on the image border and non-square images; empty masks against tmca's
//! documented convention (MONAI gives NaN there). Needs `python3` with `monai` (installed by
//! `.ci/run`); TMCA_SKIP_PYTHON=1 skips it.

use tmca_trainer::metrics::surface_distances;

mod common;
use common::Lcg;

/// A random mask of one of several kinds.
fn mask(rng: &mut Lcg, h: usize, w: usize, kind: usize) -> Vec<bool> {
    let mut m = vec![false; h * w];
    match kind {
        // One or more discs (may cross the border).
        0 => {
            for _ in 0..1 + rng.below(3) {
                let (cy, cx) = (rng.next() * h as f64, rng.next() * w as f64);
                let r = 1.0 + rng.next() * (h.min(w) as f64 / 3.0);
                for (i, v) in m.iter_mut().enumerate() {
                    let (y, x) = ((i / w) as f64, (i % w) as f64);
                    *v |= (y - cy).powi(2) + (x - cx).powi(2) <= r * r;
                }
            }
        }
        // Salt noise.
        1 => m.iter_mut().for_each(|v| *v = rng.next() < 0.15),
        // A thin line.
        2 => {
            let y = rng.below(h);
            for x in rng.below(w / 2)..w {
                m[y * w + x] = true;
            }
        }
        // A single pixel.
        3 => m[rng.below(h * w)] = true,
        // Everything.
        4 => m.fill(true),
        // Empty.
        _ => {}
    }
    m
}

#[test]
fn surface_distances_match_monai() {
    let mut rng = Lcg(11);
    let mut cases = Vec::new();
    for (h, w) in [(16, 16), (23, 40), (64, 31), (1, 9), (96, 96)] {
        for k in 0..12 {
            let (kp, km) = (k % 6, (k * 5 + 1) % 6);
            let pred = mask(&mut rng, h, w, kp);
            let truth = mask(&mut rng, h, w, km);
            let d = surface_distances(&pred, &truth, h, w);
            let bits = |m: &[bool]| {
                m.iter()
                    .map(|&b| if b { '1' } else { '0' })
                    .collect::<String>()
            };
            cases.push(serde_json::json!({
                "h": h, "w": w,
                "pred": bits(&pred), "mask": bits(&truth),
                "hd95": d.hd95, "assd": d.assd,
            }));
        }
    }
    if std::env::var_os("TMCA_SKIP_PYTHON").is_some() {
        eprintln!("TMCA_SKIP_PYTHON set: the MONAI check of the boundary distances is skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.json");
    std::fs::write(&path, serde_json::to_string(&cases).unwrap()).unwrap();
    let out = common::python_check("check_surface.py", &[path.as_os_str()]);
    eprintln!("{out}");
}
