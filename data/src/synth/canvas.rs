//! Drawing primitives: a floating-point planar canvas that records target and distractor pixels,
//! soft-edged irregular ellipses ([`Blob`]), and hash-based value noise ([`Noise`]).
//!
//! Coordinates are in pixels; pixel `(x, y)` has its centre at `(x + 0.5, y + 0.5)`.
//! A blob covers a pixel (in the mask) exactly when the pixel centre lies inside its outline
//! (`d <= 1`), which is where its drawn opacity `alpha >= 0.5`: the mask is the half-opacity
//! contour of what is drawn.

use super::random::{splitmix64, uni};
use rand::Rng;
use std::f32::consts::TAU;

/// An axis-aligned box in pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rect {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

impl Rect {
    pub fn new(x0: f32, y0: f32, x1: f32, y1: f32) -> Self {
        Self { x0, y0, x1, y1 }
    }
    pub fn w(&self) -> f32 {
        self.x1 - self.x0
    }
    pub fn h(&self) -> f32 {
        self.y1 - self.y0
    }
}

/// What a drawn shape means for the labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Anatomy or texture: no label.
    Decor,
    /// A target named by the report: its pixels go into the mask.
    Target,
    /// Drawn exactly like a target, in a zone the report does not name: not in the mask.
    Distractor,
}

/// A pixel of a blob, as handed to a painting closure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlobPoint {
    /// Pixel centre.
    pub x: f32,
    pub y: f32,
    /// Normalised distance to the outline: < 1 inside, 1 on the outline.
    pub d: f32,
    /// Opacity: 1 well inside, 0.5 on the outline, 0 beyond the soft edge.
    pub alpha: f32,
}

/// A soft-edged, rotated ellipse whose radius is perturbed by two angular harmonics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Blob {
    pub cx: f32,
    pub cy: f32,
    pub rx: f32,
    pub ry: f32,
    cos: f32,
    sin: f32,
    /// `(amplitude, frequency, phase)` of the outline perturbation.
    harmonics: [(f32, f32, f32); 2],
    /// Edge softness: half-width of the opacity ramp = `soft_frac * mean radius + soft_px`.
    soft_frac: f32,
    soft_px: f32,
}

impl Blob {
    /// An ellipse with radii `rx`, `ry`, rotated by `angle`, at the origin.
    pub fn new(rx: f32, ry: f32, angle: f32) -> Self {
        Self {
            cx: 0.0,
            cy: 0.0,
            rx: rx.max(0.5),
            ry: ry.max(0.5),
            cos: angle.cos(),
            sin: angle.sin(),
            harmonics: [(0.0, 0.0, 0.0); 2],
            soft_frac: 0.0,
            soft_px: 0.5,
        }
    }

    /// Perturbs the outline by up to `amount` (0 to 0.3) of its radius.
    pub fn irregular(mut self, rng: &mut impl Rng, amount: f32) -> Self {
        let amount = amount.clamp(0.0, 0.3);
        let a = uni(rng, 0.0, amount);
        self.harmonics = [
            (
                a,
                2.0 + (rng.random::<u32>() % 3) as f32,
                uni(rng, 0.0, TAU),
            ),
            (
                amount - a,
                3.0 + (rng.random::<u32>() % 3) as f32,
                uni(rng, 0.0, TAU),
            ),
        ];
        self
    }

    /// Sets the edge softness (see the field).
    pub fn soft(mut self, frac: f32, px: f32) -> Self {
        self.soft_frac = frac.max(0.0);
        self.soft_px = px.max(0.05);
        self
    }

    pub fn at(mut self, cx: f32, cy: f32) -> Self {
        self.cx = cx;
        self.cy = cy;
        self
    }

    /// Mean radius in pixels.
    pub fn radius(&self) -> f32 {
        0.5 * (self.rx + self.ry)
    }

    /// Largest distance from the centre to the outline.
    pub fn extent(&self) -> f32 {
        self.rx.max(self.ry) * (1.0 + self.harmonics[0].0 + self.harmonics[1].0)
    }

    fn softness(&self) -> f32 {
        self.soft_frac * self.radius() + self.soft_px
    }

    /// Scales both radii (the shape stays).
    pub fn scaled(mut self, f: f32) -> Self {
        self.rx = (self.rx * f).max(0.5);
        self.ry = (self.ry * f).max(0.5);
        self
    }

    /// The blob's view of the point `(x, y)`.
    pub fn point(&self, x: f32, y: f32) -> BlobPoint {
        let dx = x - self.cx;
        let dy = y - self.cy;
        let u = (dx * self.cos + dy * self.sin) / self.rx;
        let v = (-dx * self.sin + dy * self.cos) / self.ry;
        let rho = (u * u + v * v).sqrt();
        let mut outline = 1.0;
        if self.harmonics[0].0 > 0.0 || self.harmonics[1].0 > 0.0 {
            let theta = v.atan2(u);
            for (a, k, p) in self.harmonics {
                outline += a * (k * theta + p).cos();
            }
        }
        let d = rho / outline.max(0.2);
        let s = self.softness();
        let signed = (d - 1.0) * self.radius();
        let alpha = 1.0 - smoothstep(-s, s, signed);
        BlobPoint { x, y, d, alpha }
    }

    /// Places the blob at a random pixel centre such that its whole outline lies inside `zone`,
    /// shrinking it first if it cannot fit. Tries up to 40 centres for which `ok` holds and
    /// keeps the last one otherwise.
    pub fn place_in(
        mut self,
        rng: &mut impl Rng,
        zone: &Rect,
        ok: impl Fn(f32, f32) -> bool,
    ) -> Self {
        let room = 0.5 * zone.w().min(zone.h()) - 0.6;
        let ext = self.extent();
        if ext > room {
            self = self.scaled((room / ext).max(0.05));
        }
        let m = self.extent() + 0.5;
        let (mut cx, mut cy) = (zone.x0 + 0.5 * zone.w(), zone.y0 + 0.5 * zone.h());
        for _ in 0..40 {
            cx = uni(rng, zone.x0 + m, zone.x1 - m).floor() + 0.5;
            cy = uni(rng, zone.y0 + m, zone.y1 - m).floor() + 0.5;
            if ok(cx, cy) {
                break;
            }
        }
        self.at(cx, cy)
    }
}

/// Hermite smoothstep from 0 at `e0` to 1 at `e1`.
pub(crate) fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    if e1 <= e0 {
        return if x < e0 { 0.0 } else { 1.0 };
    }
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Linear interpolation.
pub(crate) fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

/// Smooth value noise in `[0, 1]` on an infinite integer lattice (hash-based, no storage).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Noise {
    seed: u64,
}

impl Noise {
    pub fn new(rng: &mut impl Rng) -> Self {
        Self { seed: rng.random() }
    }

    fn lattice(&self, i: i64, j: i64) -> f32 {
        let h = splitmix64(
            self.seed
                ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ (j as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F),
        );
        (h >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Value noise at `(x, y)` in lattice units: features about one unit wide.
    pub fn value(&self, x: f32, y: f32) -> f32 {
        let (fx, fy) = (x.floor(), y.floor());
        let (i, j) = (fx as i64, fy as i64);
        let (tx, ty) = (x - fx, y - fy);
        // Quintic fade: no visible lattice creases.
        let fade = |t: f32| t * t * t * (t * (t * 6.0 - 15.0) + 10.0);
        let (sx, sy) = (fade(tx), fade(ty));
        let a = lerp(self.lattice(i, j), self.lattice(i + 1, j), sx);
        let b = lerp(self.lattice(i, j + 1), self.lattice(i + 1, j + 1), sx);
        lerp(a, b, sy)
    }

    /// Fractal sum of `octaves` octaves (each twice as fine, half as strong), in `[0, 1]`.
    pub fn fbm(&self, x: f32, y: f32, octaves: u32) -> f32 {
        let (mut sum, mut amp, mut norm, mut f) = (0.0, 1.0, 0.0, 1.0);
        let (mut x, mut y) = (x, y);
        for o in 0..octaves.max(1) {
            // Offset and rotate each octave (by about 37°) so lattices do not line up.
            let off = 17.3 * o as f32;
            sum += amp * self.value(x * f + off, y * f - off);
            (x, y) = (0.8 * x - 0.6 * y, 0.6 * x + 0.8 * y);
            norm += amp;
            amp *= 0.5;
            f *= 2.0;
        }
        sum / norm
    }
}

/// Labels and 8-bit pixels of a finished canvas.
#[derive(Debug, Clone)]
pub(crate) struct Rendered {
    /// `C*H*W`, planar.
    pub image: Vec<u8>,
    /// `H*W`, 1 where a target covers the pixel.
    pub mask: Vec<u8>,
    /// `H*W`, 1 where a distractor covers the pixel (read by the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub distractors: Vec<u8>,
}

/// A planar floating-point image (values nominally in `[0, 1]`) with its label planes.
pub(crate) struct Canvas {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    px: Vec<f32>,
    mask: Vec<u8>,
    distractors: Vec<u8>,
}

impl Canvas {
    /// A black canvas of `c` channels (at most 3).
    pub fn new(c: usize, h: usize, w: usize) -> Self {
        let c = c.clamp(1, 3);
        Self {
            c,
            h,
            w,
            px: vec![0.0; c * h * w],
            mask: vec![0; h * w],
            distractors: vec![0; h * w],
        }
    }

    /// Pixels per unit of the 64-pixel reference size (`min(H, W) / 64`).
    pub fn scale(&self) -> f32 {
        self.h.min(self.w) as f32 / 64.0
    }

    pub fn wf(&self) -> f32 {
        self.w as f32
    }

    pub fn hf(&self) -> f32 {
        self.h as f32
    }

    /// Calls `f(x, y, pixel)` for every pixel, with the pixel's channels in `pixel[..c]`.
    pub fn shade(&mut self, mut f: impl FnMut(f32, f32, &mut [f32; 3])) {
        let plane = self.h * self.w;
        for y in 0..self.h {
            for x in 0..self.w {
                let i = y * self.w + x;
                let mut p = [0.0f32; 3];
                for (ch, v) in p.iter_mut().enumerate().take(self.c) {
                    *v = self.px[ch * plane + i];
                }
                f(x as f32 + 0.5, y as f32 + 0.5, &mut p);
                for (ch, v) in p.iter().enumerate().take(self.c) {
                    self.px[ch * plane + i] = *v;
                }
            }
        }
    }

    /// Calls `f(point, pixel)` for every pixel within the blob's soft edge, and records the
    /// pixels inside its outline in the mask (targets) or the distractor plane (distractors).
    pub fn paint(&mut self, blob: &Blob, role: Role, mut f: impl FnMut(&BlobPoint, &mut [f32; 3])) {
        let reach = blob.extent() + 2.0 * blob.softness() + 1.0;
        let x0 = clamp_index(blob.cx - reach, self.w);
        let x1 = clamp_index(blob.cx + reach + 1.0, self.w);
        let y0 = clamp_index(blob.cy - reach, self.h);
        let y1 = clamp_index(blob.cy + reach + 1.0, self.h);
        let plane = self.h * self.w;
        for y in y0..y1 {
            for x in x0..x1 {
                let pt = blob.point(x as f32 + 0.5, y as f32 + 0.5);
                if pt.alpha <= 0.0 && pt.d > 1.0 {
                    continue;
                }
                let i = y * self.w + x;
                if pt.d <= 1.0 {
                    match role {
                        Role::Target => self.mask[i] = 1,
                        Role::Distractor => self.distractors[i] = 1,
                        Role::Decor => {}
                    }
                }
                let mut p = [0.0f32; 3];
                for (ch, v) in p.iter_mut().enumerate().take(self.c) {
                    *v = self.px[ch * plane + i];
                }
                f(&pt, &mut p);
                for (ch, v) in p.iter().enumerate().take(self.c) {
                    self.px[ch * plane + i] = *v;
                }
            }
        }
    }

    /// Quantises to 8 bits (clamping to `[0, 1]`).
    pub fn finish(self) -> Rendered {
        let image = self
            .px
            .iter()
            .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        Rendered {
            image,
            mask: self.mask,
            distractors: self.distractors,
        }
    }
}

/// `v` as an index clamped to `0..=n` (NaN maps to 0).
fn clamp_index(v: f32, n: usize) -> usize {
    if v.is_nan() || v <= 0.0 {
        0
    } else {
        (v as usize).min(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::random::sample_rng;
    use crate::Modality;

    #[test]
    fn mask_is_the_half_opacity_contour_and_stays_in_its_zone() {
        let mut rng = sample_rng(1, Modality::Xray, 0);
        for k in 0..50 {
            let mut cv = Canvas::new(1, 40, 56);
            let zone = Rect::new(8.0, 4.0, 30.0, 20.0);
            let blob = Blob::new(6.0 + k as f32 * 0.2, 4.0, 0.3 * k as f32)
                .irregular(&mut rng, 0.2)
                .soft(0.3, 0.5)
                .place_in(&mut rng, &zone, |_, _| true);
            cv.paint(&blob, Role::Target, |pt, p| p[0] = pt.alpha);
            let r = cv.finish();
            let mut n = 0;
            for y in 0..40 {
                for x in 0..56 {
                    let i = y * 56 + x;
                    if r.mask[i] == 1 {
                        n += 1;
                        let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                        assert!(px >= zone.x0 && px <= zone.x1 && py >= zone.y0 && py <= zone.y1);
                        assert!(r.image[i] >= 127, "masked pixel drawn at {}", r.image[i]);
                    } else {
                        assert!(r.image[i] <= 128);
                    }
                }
            }
            assert!(n > 0);
        }
    }

    #[test]
    fn tiny_blobs_still_cover_their_centre_pixel() {
        let mut rng = sample_rng(2, Modality::Xray, 0);
        let mut cv = Canvas::new(1, 32, 32);
        let blob =
            Blob::new(0.6, 0.6, 0.0)
                .place_in(&mut rng, &Rect::new(0.0, 0.0, 4.0, 4.0), |_, _| true);
        cv.paint(&blob, Role::Distractor, |_, _| {});
        assert!(cv.finish().distractors.contains(&1));
    }

    #[test]
    fn noise_is_smooth_and_bounded() {
        let mut rng = sample_rng(3, Modality::Xray, 0);
        let n = Noise::new(&mut rng);
        let mut prev = n.fbm(0.0, 0.0, 4);
        for i in 1..500 {
            let v = n.fbm(i as f32 * 0.01, 0.3, 4);
            assert!((0.0..=1.0).contains(&v));
            assert!((v - prev).abs() < 0.2);
            prev = v;
        }
    }
}
