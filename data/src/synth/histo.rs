//! Histopathology (MoNuSeg-like), RGB, H&E: pink eosin stroma with fibre texture, darker
//! cytoplasm blotches and pale empty spaces; nuclei are dark purple ellipses with chromatin
//! texture.
//!
//! Zones are the image quadrants "upper left", "upper right", "lower left", "lower right"
//! (the image's own sides). The report names one or two quadrants and their nuclei density;
//! the targets are all nuclei of the named quadrants. A distractor is a whole unnamed quadrant
//! populated from the same density distribution; the other quadrants hold stroma only.
//! A sample without target names one nucleus-free quadrant ("No nuclei in the lower left.").

use super::canvas::{lerp, smoothstep, Blob, Canvas, Noise, Rect, Role};
use super::random::{chance, normal, plan_zones, uni, weighted};
use super::report::nuclei_report;
use super::{Scene, SynthConfig};
use rand::Rng;
use std::f32::consts::PI;

/// Canonical name of quadrant `z` (0 upper left, 1 upper right, 2 lower left, 3 lower right).
pub(crate) fn zone_name(z: usize) -> String {
    format!(
        "{} {}",
        ["upper", "lower"][(z / 2).min(1)],
        ["left", "right"][z % 2]
    )
}

/// The box of quadrant `z`.
pub(crate) fn zone_rect(z: usize, w: f32, h: f32) -> Rect {
    let (r, c) = ((z / 2) as f32, (z % 2) as f32);
    Rect::new(
        c * w / 2.0,
        r * h / 2.0,
        (c + 1.0) * w / 2.0,
        (r + 1.0) * h / 2.0,
    )
}

/// Density words and nuclei counts per quadrant.
const DENSITIES: [(&str, usize, usize); 3] = [("low", 3, 5), ("moderate", 6, 10), ("high", 11, 16)];

/// Populates quadrant `z` with nuclei: the same distribution for targets and distractors.
/// Returns the density word.
fn nuclei(
    cv: &mut Canvas,
    rng: &mut impl Rng,
    z: usize,
    hema: [f32; 3],
    role: Role,
) -> &'static str {
    let rect = zone_rect(z, cv.wf(), cv.hf());
    let (word, lo, hi) = DENSITIES[weighted(rng, &[1.0, 1.0, 1.0])];
    let n = lo + (rng.random::<u32>() as usize) % (hi - lo + 1);
    let m = cv.wf().min(cv.hf());
    let s = cv.scale();
    let mut placed: Vec<Blob> = Vec::new();
    for _ in 0..n {
        let r = (uni(rng, 0.028, 0.048) * m).max(1.0);
        let (aspect, angle, irr) = (uni(rng, 0.55, 1.0), uni(rng, 0.0, PI), uni(rng, 0.0, 0.12));
        let shape = Blob::new(r, r * aspect, angle)
            .irregular(rng, irr)
            .soft(0.12, 0.35);
        let blob = shape.place_in(rng, &rect, |x, y| {
            placed
                .iter()
                .all(|b| ((b.cx - x).powi(2) + (b.cy - y).powi(2)).sqrt() > 0.85 * (b.radius() + r))
        });
        let shade = uni(rng, 0.8, 1.15);
        let tex = Noise::new(rng);
        cv.paint(&blob, role, |pt, p| {
            let chromatin = 0.82 + 0.36 * tex.fbm(pt.x / (0.8 * s), pt.y / (0.8 * s), 2);
            for c in 0..3 {
                p[c] = lerp(p[c], hema[c] * shade * chromatin, pt.alpha);
            }
        });
        placed.push(blob);
    }
    word
}

pub(crate) fn render(rng: &mut impl Rng, cfg: &SynthConfig) -> Scene {
    let mut cv = Canvas::new(3, cfg.height, cfg.width);
    let (w, h, s) = (cv.wf(), cv.hf(), cv.scale());

    let empty = chance(rng, cfg.empty_rate);
    let n_targets = if empty {
        1
    } else {
        1 + weighted(rng, &[0.65, 0.35])
    };
    // When empty, the one "target" quadrant is the one the report says is free of nuclei.
    let (targets, distractors) = plan_zones(rng, 4, n_targets, cfg.max_distractors);

    let eosin = [
        uni(rng, 0.86, 0.95),
        uni(rng, 0.52, 0.68),
        uni(rng, 0.7, 0.84),
    ];
    let hema = [uni(rng, 0.26, 0.4), uni(rng, 0.1, 0.2), uni(rng, 0.4, 0.56)];
    let fibre_n = Noise::new(rng);
    let blotch_n = Noise::new(rng);
    let angle = uni(rng, 0.0, PI);
    let (ca, sa) = (angle.cos(), angle.sin());
    cv.shade(|x, y, p| {
        let (u, v) = (x * ca + y * sa, -x * sa + y * ca);
        let fibre = fibre_n.fbm(u / (10.0 * s), v / (1.6 * s), 3);
        let blotch = smoothstep(0.45, 0.7, blotch_n.fbm(x / (8.0 * s), y / (8.0 * s), 3));
        let k = 0.88 + 0.22 * fibre;
        p[0] = eosin[0] * k;
        p[1] = eosin[1] * (0.8 + 0.35 * fibre) * (1.0 - 0.15 * blotch);
        p[2] = eosin[2] * k * (1.0 - 0.06 * blotch);
    });

    // Pale empty spaces (vessels, fat, tears): decor.
    for _ in 0..(rng.random::<u32>() % 3) {
        let r = uni(rng, 0.035, 0.08) * w.min(h);
        let space = Blob::new(r, r * uni(rng, 0.4, 1.0), uni(rng, 0.0, PI))
            .irregular(rng, 0.2)
            .soft(0.2, 0.5)
            .at(uni(rng, 0.0, w), uni(rng, 0.0, h));
        cv.paint(&space, Role::Decor, |pt, p| {
            let white = [0.97, 0.93, 0.95];
            for c in 0..3 {
                p[c] = lerp(p[c], white[c], 0.8 * pt.alpha);
            }
        });
    }

    let mut all: Vec<(usize, Role)> = distractors.iter().map(|&z| (z, Role::Distractor)).collect();
    if !empty {
        all.extend(targets.iter().map(|&z| (z, Role::Target)));
    }
    all.sort_unstable_by_key(|a| a.0);
    let mut regions = Vec::new();
    for (z, role) in all {
        let word = nuclei(&mut cv, rng, z, hema, role);
        if role == Role::Target {
            regions.push((zone_name(z), word));
        }
    }

    let sigma = uni(rng, 0.005, 0.015);
    cv.shade(|_, _, p| {
        for v in p.iter_mut() {
            *v += sigma * normal(rng);
        }
    });

    let empty_zone = if empty {
        targets.first().map(|&z| zone_name(z))
    } else {
        None
    };
    Scene {
        rendered: cv.finish(),
        report: nuclei_report(rng, &regions, empty_zone.as_deref()),
        targets: if empty {
            Vec::new()
        } else {
            targets.iter().map(|&z| zone_name(z)).collect()
        },
        distractors: distractors.iter().map(|&z| zone_name(z)).collect(),
    }
}
