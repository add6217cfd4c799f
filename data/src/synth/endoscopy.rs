//! Colonoscopy (Kvasir-SEG-like), RGB: pink-red mucosa with low-frequency shading, haustral
//! folds around a dark lumen, vessel lines, specular spots and a lens vignette; polyps are raised
//! domes, lit from one direction with a specular highlight, as targets and distractors.
//!
//! Zones are the cells of a 3×3 grid over the image: rows upper, middle, lower and columns left,
//! center, right (the image's own sides); the central cell is called "center", the others
//! "`<row> <column>`" (e.g. "upper left", "middle right", "lower center").

use super::canvas::{lerp, smoothstep, Blob, Canvas, Noise, Rect, Role};
use super::random::{chance, normal, plan_zones, uni, weighted};
use super::report::{polyp_report, PolypDesc};
use super::{Scene, SynthConfig};
use rand::Rng;
use std::f32::consts::PI;

/// Canonical name of grid cell `z` (row-major, 0..9).
pub(crate) fn zone_name(z: usize) -> String {
    let (r, c) = (z / 3, z % 3);
    if r == 1 && c == 1 {
        return "center".to_string();
    }
    format!(
        "{} {}",
        ["upper", "middle", "lower"][r.min(2)],
        ["left", "center", "right"][c]
    )
}

/// The box of grid cell `z`.
pub(crate) fn zone_rect(z: usize, w: f32, h: f32) -> Rect {
    let (r, c) = ((z / 3) as f32, (z % 3) as f32);
    Rect::new(
        c * w / 3.0,
        r * h / 3.0,
        (c + 1.0) * w / 3.0,
        (r + 1.0) * h / 3.0,
    )
}

const SIZES: [(&str, f32, f32); 3] = [
    ("small", 0.2, 0.27),
    ("medium", 0.28, 0.36),
    ("large", 0.37, 0.46),
];

/// Draws one polyp in cell `z`: the same distribution for targets and distractors.
fn polyp(
    cv: &mut Canvas,
    rng: &mut impl Rng,
    z: usize,
    light: [f32; 3],
    mucosa: [f32; 3],
    role: Role,
) -> PolypDesc {
    let rect = zone_rect(z, cv.wf(), cv.hf());
    let (size, lo, hi) = SIZES[weighted(rng, &[1.0, 1.0, 1.0])];
    let r = uni(rng, lo, hi) * rect.w().min(rect.h());
    let (shape, aspect, irr) = match weighted(rng, &[0.4, 0.4, 0.2]) {
        0 => ("round", uni(rng, 0.85, 1.0), 0.04),
        1 => ("oval", uni(rng, 0.55, 0.75), 0.06),
        _ => ("irregular", uni(rng, 0.7, 1.0), uni(rng, 0.15, 0.25)),
    };
    let angle = uni(rng, 0.0, PI);
    let blob = Blob::new(r, r * aspect, angle)
        .irregular(rng, irr)
        .soft(0.12, 0.6)
        .place_in(rng, &rect, |_, _| true);
    let tint = [uni(rng, 1.0, 1.1), uni(rng, 1.0, 1.3), uni(rng, 1.0, 1.25)];
    let color: Vec<f32> = (0..3).map(|c| mucosa[c] * tint[c]).collect();
    let tex = Noise::new(rng);
    let s = cv.scale();
    let rm = blob.radius();
    // Half-vector of the light and the viewer (looking down +z).
    let hv = normalise([light[0], light[1], light[2] + 1.0]);
    cv.paint(&blob, role, |pt, p| {
        let (nx, ny) = ((pt.x - blob.cx) / rm, (pt.y - blob.cy) / rm);
        let height = (1.0 - pt.d * pt.d).max(0.0).sqrt();
        let n = normalise([nx, ny, 1.3 * height + 0.05]);
        let diffuse = (n[0] * light[0] + n[1] * light[1] + n[2] * light[2]).max(0.0);
        let spec = (n[0] * hv[0] + n[1] * hv[1] + n[2] * hv[2])
            .max(0.0)
            .powi(40);
        let grain = 0.93 + 0.14 * tex.fbm(pt.x / (1.5 * s), pt.y / (1.5 * s), 2);
        for c in 0..3 {
            let lit = color[c] * (0.45 + 0.7 * diffuse) * grain + 0.85 * spec;
            p[c] = lerp(p[c], lit, pt.alpha);
        }
    });
    PolypDesc {
        size,
        shape,
        zone: zone_name(z),
    }
}

fn normalise(v: [f32; 3]) -> [f32; 3] {
    let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt().max(1e-6);
    [v[0] / n, v[1] / n, v[2] / n]
}

pub(crate) fn render(rng: &mut impl Rng, cfg: &SynthConfig) -> Scene {
    let mut cv = Canvas::new(3, cfg.height, cfg.width);
    let (w, h, s) = (cv.wf(), cv.hf(), cv.scale());
    let m = w.min(h);

    let n_targets = if chance(rng, cfg.empty_rate) {
        0
    } else {
        1 + weighted(rng, &[0.75, 0.2, 0.05])
    };
    let (targets, distractors) = plan_zones(rng, 9, n_targets, cfg.max_distractors);

    let mucosa = [
        uni(rng, 0.78, 0.92),
        uni(rng, 0.36, 0.5),
        uni(rng, 0.3, 0.42),
    ];
    let (lx, ly, lr) = (
        uni(rng, 0.1, 0.9) * w,
        uni(rng, 0.1, 0.9) * h,
        uni(rng, 0.08, 0.16) * m,
    );
    let shade_n = Noise::new(rng);
    let vessel_n = Noise::new(rng);
    let fold_freq = uni(rng, 0.25, 0.4) / s;
    let fold_amp = uni(rng, 0.04, 0.1);
    let (cx, cy) = (0.5 * w, 0.5 * h);
    let half_diag = (cx * cx + cy * cy).sqrt();
    cv.shade(|x, y, p| {
        let dist = ((x - lx).powi(2) + (y - ly).powi(2)).sqrt();
        let warp = 6.0 * s * shade_n.value(x / (10.0 * s), y / (10.0 * s));
        let fold = 1.0 - fold_amp * (0.5 + 0.5 * ((dist + warp) * fold_freq).sin());
        let lumen = 0.12 + 0.88 * smoothstep(0.3 * lr, 2.2 * lr, dist);
        let light =
            (0.78 + 0.4 * (shade_n.fbm(x / (20.0 * s), y / (20.0 * s), 3) - 0.5)) * fold * lumen;
        let vn = (vessel_n.fbm(x / (9.0 * s), y / (9.0 * s), 2) - 0.5).abs();
        let vessel = 1.0 - smoothstep(0.006, 0.02, vn);
        let tone = [
            1.0 - 0.08 * vessel,
            1.0 - 0.22 * vessel,
            1.0 - 0.18 * vessel,
        ];
        for c in 0..3 {
            p[c] = mucosa[c] * tone[c] * light;
        }
    });

    // Specular reflections of the wet mucosa (decor).
    for _ in 0..(2 + (rng.random::<u32>() % 7)) {
        let r = uni(rng, 0.3, 1.1) * s + 0.3;
        let spot = Blob::new(r, r * uni(rng, 0.4, 1.0), uni(rng, 0.0, PI))
            .soft(0.3, 0.3)
            .at(uni(rng, 0.0, w), uni(rng, 0.0, h));
        cv.paint(&spot, Role::Decor, |pt, p| {
            for v in p.iter_mut() {
                *v = lerp(*v, 1.0, 0.9 * pt.alpha);
            }
        });
    }

    let light = normalise([uni(rng, -0.6, 0.6), uni(rng, -0.6, 0.6), 0.8]);
    let mut all: Vec<(usize, Role)> = targets.iter().map(|&z| (z, Role::Target)).collect();
    all.extend(distractors.iter().map(|&z| (z, Role::Distractor)));
    all.sort_unstable_by_key(|a| a.0);
    let mut descs = Vec::new();
    for (z, role) in all {
        let d = polyp(&mut cv, rng, z, light, mucosa, role);
        if role == Role::Target {
            descs.push(d);
        }
    }

    let sigma = uni(rng, 0.005, 0.015);
    // Lens vignette and sensor noise over everything.
    cv.shade(|x, y, p| {
        let vig =
            1.0 - 0.55 * ((((x - cx).powi(2) + (y - cy).powi(2)).sqrt() / half_diag).powf(2.5));
        for v in p.iter_mut() {
            *v = *v * vig + sigma * normal(rng);
        }
    });

    Scene {
        rendered: cv.finish(),
        report: polyp_report(rng, &descs, cfg.contradiction_rate),
        targets: targets.iter().map(|&z| zone_name(z)).collect(),
        distractors: distractors.iter().map(|&z| zone_name(z)).collect(),
    }
}
