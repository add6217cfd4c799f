//! Lung CT (MosMedData+-like), one channel, lung window: an axial slice with the scanner table,
//! body ellipse (skin, fat ring, soft tissue, rib cross-sections), two dark lung fields with
//! vessel dots, mediastinum (heart, aorta) and vertebra; ground-glass opacities as targets and
//! distractors.
//!
//! Radiological convention as in X-ray: the patient's left lung is on the image right. Zones are
//! the thirds of each lung's bounding box height (upper = anterior in the slice).

use super::canvas::{lerp, smoothstep, Blob, Canvas, Noise, Rect, Role};
use super::random::{chance, jitter as j, normal, plan_zones, uni, weighted};
use super::report::{lung_report, LungZone};
use super::{Scene, SynthConfig};
use rand::Rng;
use std::f32::consts::PI;

/// A lung field: a superellipse with a medial notch for the hilum.
#[derive(Debug, Clone, Copy)]
struct Lung {
    cx: f32,
    cy: f32,
    rx: f32,
    ry: f32,
    /// +1 if the medial side is towards +x.
    medial: f32,
}

impl Lung {
    fn alpha(&self, x: f32, y: f32) -> f32 {
        let nx = (x - self.cx) / self.rx;
        let ny = (y - self.cy) / self.ry;
        let mut d = (nx.abs().powf(2.3) + ny.abs().powf(2.3)).powf(1.0 / 2.3);
        // Hilum notch on the medial side, mid-height.
        let m = nx * self.medial;
        if m > 0.0 {
            d += 0.35 * m * m * (-(ny / 0.3).powi(2)).exp();
        }
        1.0 - smoothstep(0.92, 1.02, d)
    }

    fn zone(&self, row: usize) -> Rect {
        let h = 2.0 * self.ry / 3.0;
        let y0 = self.cy - self.ry + h * row as f32;
        Rect::new(self.cx - self.rx, y0, self.cx + self.rx, y0 + h)
    }
}

struct Slice {
    /// `[image left = patient right, image right = patient left]`.
    lungs: [Lung; 2],
    body: Blob,
    heart: Blob,
    aorta: Blob,
    vertebra: Blob,
    canal: Blob,
    table_y: f32,
}

impl Slice {
    fn sample(rng: &mut impl Rng, w: f32, h: f32) -> Self {
        let m = w.min(h);
        let body = Blob::new(w * (0.44 + j(rng, 0.02)), h * (0.36 + j(rng, 0.02)), 0.0)
            .soft(0.0, 0.7)
            .at(0.5 * w, h * (0.52 + j(rng, 0.01)));
        let cy = h * (0.49 + j(rng, 0.015));
        let spread = w * (0.2 + j(rng, 0.01));
        let (rx, ry) = (w * (0.15 + j(rng, 0.01)), h * (0.24 + j(rng, 0.015)));
        let lungs = [
            Lung {
                cx: 0.5 * w - spread,
                cy,
                rx,
                ry,
                medial: 1.0,
            },
            Lung {
                cx: 0.5 * w + spread,
                cy: cy + j(rng, 0.01) * h,
                rx: rx * 0.95,
                ry,
                medial: -1.0,
            },
        ];
        let heart = Blob::new(w * 0.1, h * 0.12, j(rng, 0.3))
            .soft(0.2, 0.5)
            .at(w * (0.52 + j(rng, 0.015)), h * (0.47 + j(rng, 0.015)));
        let aorta = Blob::new(m * 0.04, m * 0.04, 0.0)
            .soft(0.1, 0.4)
            .at(w * 0.545, h * 0.64);
        let vertebra = Blob::new(m * 0.07, m * 0.065, 0.0)
            .soft(0.1, 0.4)
            .at(0.5 * w, h * 0.75);
        let canal = Blob::new(m * 0.025, m * 0.025, 0.0)
            .soft(0.1, 0.3)
            .at(0.5 * w, h * 0.83);
        Self {
            lungs,
            body,
            heart,
            aorta,
            vertebra,
            canal,
            table_y: body.cy + body.ry + 0.04 * h,
        }
    }
}

/// Draws one ground-glass opacity in `zone`: the same distribution for targets and distractors.
fn opacity(cv: &mut Canvas, rng: &mut impl Rng, lungs: &[Lung; 2], zone: LungZone, role: Role) {
    let lung = lungs[usize::from(zone.left)];
    let rect = lung.zone(zone.row);
    let r = uni(rng, 0.32, 0.5) * rect.w().min(rect.h());
    let (aspect, angle, irregular) = (uni(rng, 0.6, 1.0), uni(rng, 0.0, PI), uni(rng, 0.0, 0.22));
    let blob = Blob::new(r, r * aspect, angle)
        .irregular(rng, irregular)
        .soft(0.3, 0.5)
        .place_in(rng, &rect, |x, y| lung.alpha(x, y) > 0.9);
    let amp = uni(rng, 0.2, 0.34);
    let tex = Noise::new(rng);
    let s = cv.scale();
    cv.paint(&blob, role, |pt, p| {
        let haze = 0.5 + 0.9 * tex.fbm(pt.x / (2.0 * s), pt.y / (2.0 * s), 3);
        p[0] += pt.alpha * amp * haze;
    });
}

pub(crate) fn render(rng: &mut impl Rng, cfg: &SynthConfig) -> Scene {
    let mut cv = Canvas::new(1, cfg.height, cfg.width);
    let (w, h, s) = (cv.wf(), cv.hf(), cv.scale());
    let sl = Slice::sample(rng, w, h);

    let n_targets = if chance(rng, cfg.empty_rate) {
        0
    } else {
        1 + weighted(rng, &[0.45, 0.35, 0.15, 0.05])
    };
    let (targets, distractors) =
        plan_zones(rng, LungZone::ALL.len(), n_targets, cfg.max_distractors);

    let tissue_n = Noise::new(rng);
    let lung_n = Noise::new(rng);
    let fat = uni(rng, 0.05, 0.09);
    cv.shade(|x, y, p| {
        let bp = sl.body.point(x, y);
        let soft = 0.5 + 0.06 * tissue_n.fbm(x / (5.0 * s), y / (5.0 * s), 3);
        // Skin, then subcutaneous fat ring, then muscle and organs.
        let ring =
            smoothstep(1.0 - 2.0 * fat, 1.0 - fat, bp.d) * (1.0 - smoothstep(0.985, 1.0, bp.d));
        let mut v = lerp(soft, 0.33, ring);
        v += 0.08 * sl.heart.point(x, y).alpha;
        v += 0.12 * sl.aorta.point(x, y).alpha;
        let vert = sl.vertebra.point(x, y);
        v = lerp(v, 0.72 + 0.2 * smoothstep(0.7, 0.9, vert.d), vert.alpha);
        v = lerp(v, 0.35, sl.canal.point(x, y).alpha);
        let lung_a = sl.lungs[0].alpha(x, y).max(sl.lungs[1].alpha(x, y));
        let lung_v = 0.06 + 0.05 * lung_n.fbm(x / (3.0 * s), y / (3.0 * s), 3);
        v = lerp(v, lung_v, lung_a);
        v = lerp(0.02, v, bp.alpha);
        // Scanner table.
        let dy = (y - sl.table_y) / (0.012 * h + 0.4);
        let table = (-dy * dy).exp() * (1.0 - smoothstep(0.36 * w, 0.42 * w, (x - 0.5 * w).abs()));
        p[0] = v.max(0.4 * table);
    });

    // Rib cross-sections inside the body wall, vessel dots in the lungs (decor).
    let n_ribs = 8 + (rng.random::<u32>() % 5) as usize;
    for k in 0..n_ribs {
        let t =
            std::f32::consts::PI * (0.15 + 0.7 * (k as f32 + uni(rng, -0.3, 0.3)) / n_ribs as f32);
        let side = if k % 2 == 0 { -1.0 } else { 1.0 };
        let (bx, by) = (
            sl.body.cx + side * 0.86 * sl.body.rx * t.sin(),
            sl.body.cy - 0.86 * sl.body.ry * t.cos(),
        );
        let rib = Blob::new(1.1 * s + 0.4, 0.7 * s + 0.4, t)
            .soft(0.1, 0.4)
            .at(bx, by);
        cv.paint(&rib, Role::Decor, |pt, p| p[0] = lerp(p[0], 0.85, pt.alpha));
    }
    for l in &sl.lungs {
        for _ in 0..(6 + (rng.random::<u32>() % 10)) {
            let (x, y) = (l.cx + uni(rng, -l.rx, l.rx), l.cy + uni(rng, -l.ry, l.ry));
            if l.alpha(x, y) < 0.9 {
                continue;
            }
            let r = uni(rng, 0.35, 0.8) * s + 0.25;
            let dot = Blob::new(r, r, 0.0).soft(0.2, 0.3).at(x, y);
            let amp = uni(rng, 0.15, 0.35);
            cv.paint(&dot, Role::Decor, |pt, p| p[0] += pt.alpha * amp);
        }
    }

    let mut all: Vec<(usize, Role)> = targets.iter().map(|&z| (z, Role::Target)).collect();
    all.extend(distractors.iter().map(|&z| (z, Role::Distractor)));
    all.sort_unstable_by_key(|a| a.0);
    for (z, role) in all {
        opacity(&mut cv, rng, &sl.lungs, LungZone::ALL[z], role);
    }

    let sigma = uni(rng, 0.01, 0.025);
    cv.shade(|_, _, p| p[0] += sigma * normal(rng));

    let target_zones: Vec<LungZone> = targets.iter().map(|&z| LungZone::ALL[z]).collect();
    Scene {
        rendered: cv.finish(),
        report: lung_report(rng, &target_zones, true, cfg.contradiction_rate),
        targets: target_zones.iter().map(|z| z.name()).collect(),
        distractors: distractors
            .iter()
            .map(|&z| LungZone::ALL[z].name())
            .collect(),
    }
}
