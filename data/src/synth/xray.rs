//! Chest X-ray (QaTa-COV19-like), one channel: PA view with torso and shoulders, two dark lung
//! fields with vascular texture, ribs and clavicles, mediastinum and spine, heart shadow, and
//! ground-glass opacities (brighter mottled patches) as targets and distractors.
//!
//! The patient's right lung is drawn on the image left, the patient's left lung on the image
//! right (radiological convention). Zones are the thirds of each lung field's bounding box.

use super::canvas::{lerp, smoothstep, Blob, Canvas, Noise, Rect, Role};
use super::random::{chance, jitter as j, normal, plan_zones, uni, weighted};
use super::report::{lung_report, LungZone};
use super::{Scene, SynthConfig};
use rand::Rng;
use std::f32::consts::PI;

/// One lung field, an ellipse narrowing towards the apex.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lung {
    pub cx: f32,
    pub cy: f32,
    pub rx: f32,
    pub ry: f32,
}

impl Lung {
    /// 1 inside the lung field, 0 outside, soft in between.
    pub fn alpha(&self, x: f32, y: f32) -> f32 {
        let ny = (y - self.cy) / self.ry;
        let narrowing = 0.55 + 0.45 * smoothstep(-1.0, -0.15, ny);
        let nx = (x - self.cx) / (self.rx * narrowing);
        let d = (nx * nx + ny.abs().powf(2.6)).sqrt();
        1.0 - smoothstep(0.86, 1.02, d)
    }

    /// Bounding box of the field.
    pub fn bbox(&self) -> Rect {
        Rect::new(
            self.cx - self.rx,
            self.cy - self.ry,
            self.cx + self.rx,
            self.cy + self.ry,
        )
    }

    /// The box of the third `row` (0 upper, 1 middle, 2 lower).
    pub fn zone(&self, row: usize) -> Rect {
        let b = self.bbox();
        let h = b.h() / 3.0;
        Rect::new(
            b.x0,
            b.y0 + h * row as f32,
            b.x1,
            b.y0 + h * (row as f32 + 1.0),
        )
    }
}

/// The sampled geometry of one chest.
struct Chest {
    /// `[image left = patient right, image right = patient left]`.
    lungs: [Lung; 2],
    heart: Blob,
    torso_cy: f32,
    torso_ry: f32,
}

impl Chest {
    fn sample(rng: &mut impl Rng, w: f32, h: f32) -> Self {
        let cy = h * (0.47 + j(rng, 0.02));
        let ry = h * (0.33 + j(rng, 0.02));
        let spread = w * (0.20 + j(rng, 0.012));
        let rx = w * (0.165 + j(rng, 0.01));
        let lungs = [
            Lung {
                cx: 0.5 * w - spread,
                cy: cy + h * j(rng, 0.01),
                rx,
                ry,
            },
            Lung {
                cx: 0.5 * w + spread,
                cy: cy + h * j(rng, 0.01),
                rx: rx * 0.97,
                ry: ry * 0.97,
            },
        ];
        let heart = Blob::new(
            w * (0.15 + j(rng, 0.015)),
            h * (0.13 + j(rng, 0.01)),
            j(rng, 0.2),
        )
        .soft(0.25, 0.5)
        .at(w * (0.55 + j(rng, 0.015)), h * (0.67 + j(rng, 0.015)));
        Self {
            lungs,
            heart,
            torso_cy: h * 0.68,
            torso_ry: h * 0.62,
        }
    }

    fn lung(&self, z: LungZone) -> &Lung {
        &self.lungs[usize::from(z.left)]
    }
}

fn torso_alpha(x: f32, y: f32, w: f32, h: f32, chest: &Chest) -> f32 {
    let nx = ((x - 0.5 * w) / (0.5 * w)).abs();
    let ny = ((y - chest.torso_cy) / chest.torso_ry).abs();
    let d = (nx.powi(3) + ny.powi(3)).cbrt();
    let torso = 1.0 - smoothstep(0.93, 1.0, d);
    let neck = (1.0 - smoothstep(0.1 * w, 0.13 * w, (x - 0.5 * w).abs()))
        * (1.0 - smoothstep(0.25 * h, 0.35 * h, y));
    torso.max(neck)
}

/// Brightness of a rib band at `(x, y)` over one side of the chest.
fn ribs(x: f32, y: f32, w: f32, h: f32, phase: f32) -> f32 {
    let m = ((x - 0.5 * w).abs() / (0.42 * w)).clamp(0.0, 1.2);
    let thick = 0.015 * h + 0.3;
    let mut v = 0.0f32;
    let mut y0 = h * 0.08 + phase;
    for k in 0..9 {
        y0 += h * (0.062 + 0.004 * k as f32);
        // Posterior ribs rise a little from the spine, then droop laterally.
        let yc = y0 - 0.03 * h * m + 0.2 * h * m * m;
        let dy = (y - yc) / thick;
        v = v.max((-dy * dy).exp());
    }
    v
}

fn clavicle(x: f32, y: f32, w: f32, h: f32) -> f32 {
    let m = (x - 0.5 * w).abs() / w;
    if !(0.05..0.38).contains(&m) {
        return 0.0;
    }
    let yc = h * (0.175 - 0.15 * (m - 0.05));
    let dy = (y - yc) / (0.018 * h + 0.3);
    (-dy * dy).exp() * smoothstep(0.05, 0.09, m) * (1.0 - smoothstep(0.33, 0.38, m))
}

/// Draws one ground-glass opacity in `zone`: the same distribution for targets and distractors.
fn opacity(cv: &mut Canvas, rng: &mut impl Rng, chest: &Chest, zone: LungZone, role: Role) {
    let lung = *chest.lung(zone);
    let rect = lung.zone(zone.row);
    let r = uni(rng, 0.32, 0.5) * rect.w().min(rect.h());
    let (aspect, angle, irregular) = (uni(rng, 0.65, 1.0), uni(rng, 0.0, PI), uni(rng, 0.0, 0.2));
    let blob = Blob::new(r, r * aspect, angle)
        .irregular(rng, irregular)
        .soft(0.35, 0.5)
        .place_in(rng, &rect, |x, y| {
            lung.alpha(x, y) > 0.85 && chest.heart.point(x, y).alpha < 0.3
        });
    let amp = uni(rng, 0.16, 0.28);
    let tex = Noise::new(rng);
    let s = cv.scale();
    cv.paint(&blob, role, |pt, p| {
        let mottle = 0.55 + 0.9 * tex.fbm(pt.x / (2.5 * s), pt.y / (2.5 * s), 3);
        p[0] += pt.alpha * amp * mottle;
    });
}

pub(crate) fn render(rng: &mut impl Rng, cfg: &SynthConfig) -> Scene {
    let mut cv = Canvas::new(1, cfg.height, cfg.width);
    let (w, h, s) = (cv.wf(), cv.hf(), cv.scale());
    let chest = Chest::sample(rng, w, h);

    let n_targets = if chance(rng, cfg.empty_rate) {
        0
    } else {
        1 + weighted(rng, &[0.4, 0.4, 0.15, 0.05])
    };
    let (targets, distractors) =
        plan_zones(rng, LungZone::ALL.len(), n_targets, cfg.max_distractors);

    let body_n = Noise::new(rng);
    let lung_n = Noise::new(rng);
    let rib_phase = uni(rng, -0.015, 0.015) * h;
    let exposure = uni(rng, -0.05, 0.05);
    let lung_dark = uni(rng, 0.1, 0.18);
    cv.shade(|x, y, p| {
        let body = torso_alpha(x, y, w, h, &chest);
        let soft_tissue = 0.48
            + 0.1 * body_n.fbm(x / (16.0 * s), y / (16.0 * s), 3)
            + 0.13 * (-((x - 0.5 * w) / (0.065 * w)).powi(2)).exp()
            + 0.1 * smoothstep(0.6 * h, 0.95 * h, y);
        let mut lung_a = 0.0f32;
        let mut lung_v = 0.0f32;
        for l in &chest.lungs {
            let a = l.alpha(x, y);
            if a > lung_a {
                lung_a = a;
                // Vascular markings, denser towards the hilum.
                let medial = 1.0 - ((x - 0.5 * w).abs() / (0.42 * w)).min(1.0);
                lung_v =
                    lung_dark + 0.09 * lung_n.fbm(x / (2.2 * s), y / (2.2 * s), 3) + 0.1 * medial;
            }
        }
        let heart = chest.heart.point(x, y).alpha;
        let lung_a = lung_a * (1.0 - 0.85 * heart);
        let mut v = lerp(soft_tissue, lung_v, lung_a) + 0.08 * heart;
        v += 0.07 * ribs(x, y, w, h, rib_phase) * (0.3 + 0.7 * lung_a);
        v += 0.12 * clavicle(x, y, w, h);
        v = lerp(
            0.05 + 0.03 * body_n.value(x / (6.0 * s), y / (6.0 * s)),
            v,
            body,
        );
        p[0] = v + exposure;
    });

    let mut all: Vec<(usize, Role)> = targets.iter().map(|&z| (z, Role::Target)).collect();
    all.extend(distractors.iter().map(|&z| (z, Role::Distractor)));
    // Draw in zone order so drawing order says nothing about the role.
    all.sort_unstable_by_key(|a| a.0);
    for (z, role) in all {
        opacity(&mut cv, rng, &chest, LungZone::ALL[z], role);
    }

    let grain = uni(rng, 0.008, 0.02);
    cv.shade(|_, _, p| p[0] += grain * normal(rng));

    let target_zones: Vec<LungZone> = targets.iter().map(|&z| LungZone::ALL[z]).collect();
    Scene {
        rendered: cv.finish(),
        report: lung_report(rng, &target_zones, false, cfg.contradiction_rate),
        targets: target_zones.iter().map(|z| z.name()).collect(),
        distractors: distractors
            .iter()
            .map(|&z| LungZone::ALL[z].name())
            .collect(),
    }
}
