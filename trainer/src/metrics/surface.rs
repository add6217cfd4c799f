//! Boundary distances of one image: the 95th-percentile Hausdorff distance (HD95) and the
//! average symmetric surface distance (ASSD), in pixels of the evaluated image.
//!
//! The conventions are MONAI's (`compute_hausdorff_distance(percentile=95)`,
//! `compute_average_surface_distance(symmetric=True)`), which CI checks against MONAI itself:
//!
//! * The **surface** of a mask is its foreground pixels that have a 4-neighbour outside it
//!   (`mask XOR erosion(mask)` with a cross; a foreground pixel on the image border is surface).
//! * The distance from a surface pixel of one mask to the other mask is the Euclidean distance
//!   to the nearest surface pixel of the other (an exact distance transform).
//! * **HD95** = the larger of the two directed 95th percentiles (linear interpolation, as
//!   `torch.quantile`); **ASSD** = the mean over both surfaces' distances together.
//!
//! Empty masks, where MONAI returns NaN: prediction and mask both empty score 0 (a correct
//! empty prediction, as Dice scores it 1); exactly one empty scores the image diagonal, the
//! largest distance possible, so that a model cannot improve its mean by missing targets.

/// HD95 and ASSD of one image, in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SurfaceDistances {
    pub hd95: f64,
    pub assd: f64,
}

/// Squared distances are "infinite" beyond any image.
const FAR: f64 = 1e20;

/// The surface of `mask` (`h`x`w`, row-major).
fn surface(mask: &[bool], h: usize, w: usize) -> Vec<bool> {
    let at = |y: usize, x: usize| mask[y * w + x];
    (0..h * w)
        .map(|i| {
            let (y, x) = (i / w, i % w);
            at(y, x)
                && (y == 0
                    || x == 0
                    || y + 1 == h
                    || x + 1 == w
                    || !at(y - 1, x)
                    || !at(y + 1, x)
                    || !at(y, x - 1)
                    || !at(y, x + 1))
        })
        .collect()
}

/// One-dimensional squared distance transform of `f` (Felzenszwalb & Huttenlocher), into `d`.
fn edt_1d(f: &[f64], d: &mut [f64], v: &mut [usize], z: &mut [f64]) {
    let n = f.len();
    let mut k = 0usize;
    v[0] = 0;
    z[0] = f64::NEG_INFINITY;
    z[1] = f64::INFINITY;
    let meet = |q: usize, p: usize| {
        ((f[q] + (q * q) as f64) - (f[p] + (p * p) as f64)) / (2.0 * (q - p) as f64)
    };
    for q in 1..n {
        let mut s = meet(q, v[k]);
        while s <= z[k] {
            // z[0] is -inf, so k stays >= 0.
            k -= 1;
            s = meet(q, v[k]);
        }
        k += 1;
        v[k] = q;
        z[k] = s;
        z[k + 1] = f64::INFINITY;
    }
    k = 0;
    for (q, dq) in d.iter_mut().enumerate() {
        while z[k + 1] < q as f64 {
            k += 1;
        }
        let p = v[k];
        let diff = q as f64 - p as f64;
        *dq = diff * diff + f[p];
    }
}

/// Squared Euclidean distance of every pixel to the nearest `true` pixel of `seeds`.
fn squared_distance_map(seeds: &[bool], h: usize, w: usize) -> Vec<f64> {
    let n = h.max(w);
    let (mut f, mut d) = (vec![0.0; n], vec![0.0; n]);
    let (mut v, mut z) = (vec![0usize; n], vec![0.0; n + 1]);
    let mut out: Vec<f64> = seeds.iter().map(|&s| if s { 0.0 } else { FAR }).collect();
    for x in 0..w {
        for y in 0..h {
            f[y] = out[y * w + x];
        }
        edt_1d(&f[..h], &mut d[..h], &mut v, &mut z);
        for y in 0..h {
            out[y * w + x] = d[y];
        }
    }
    for y in 0..h {
        f[..w].copy_from_slice(&out[y * w..(y + 1) * w]);
        edt_1d(&f[..w], &mut d[..w], &mut v, &mut z);
        out[y * w..(y + 1) * w].copy_from_slice(&d[..w]);
    }
    out
}

/// Distances from each pixel of `from` to the nearest pixel of `to` (both surfaces).
fn directed(from: &[bool], to: &[bool], h: usize, w: usize) -> Vec<f64> {
    let map = squared_distance_map(to, h, w);
    from.iter()
        .zip(&map)
        .filter(|(&f, _)| f)
        .map(|(_, &d2)| d2.sqrt())
        .collect()
}

/// The `q` quantile (in [0, 1]) of `values` with linear interpolation (`torch.quantile`).
fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let pos = q * (values.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
}

/// HD95 and ASSD between a predicted and a true mask (`h`x`w`, row-major; see the module docs).
pub fn surface_distances(pred: &[bool], mask: &[bool], h: usize, w: usize) -> SurfaceDistances {
    let (sp, sm) = (surface(pred, h, w), surface(mask, h, w));
    let (any_p, any_m) = (sp.contains(&true), sm.contains(&true));
    if !any_p || !any_m {
        let worst = if any_p == any_m {
            0.0
        } else {
            ((h * h + w * w) as f64).sqrt()
        };
        return SurfaceDistances {
            hd95: worst,
            assd: worst,
        };
    }
    let mut pm = directed(&sp, &sm, h, w);
    let mut mp = directed(&sm, &sp, h, w);
    let total: f64 = pm.iter().chain(&mp).sum();
    let assd = total / (pm.len() + mp.len()) as f64;
    let hd95 = quantile(&mut pm, 0.95).max(quantile(&mut mp, 0.95));
    SurfaceDistances { hd95, assd }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(h: usize, w: usize, y0: usize, y1: usize, x0: usize, x1: usize) -> Vec<bool> {
        (0..h * w)
            .map(|i| (y0..y1).contains(&(i / w)) && (x0..x1).contains(&(i % w)))
            .collect()
    }

    #[test]
    fn distance_map_matches_brute_force() {
        let (h, w) = (7, 11);
        let mut state = 12345u64;
        let seeds: Vec<bool> = (0..h * w)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 60) == 0
            })
            .collect();
        assert!(seeds.contains(&true));
        let map = squared_distance_map(&seeds, h, w);
        for (i, &got) in map.iter().enumerate() {
            let (y, x) = ((i / w) as f64, (i % w) as f64);
            let best = (0..h * w)
                .filter(|&j| seeds[j])
                .map(|j| ((j / w) as f64 - y).powi(2) + ((j % w) as f64 - x).powi(2))
                .fold(f64::INFINITY, f64::min);
            assert_eq!(got, best, "pixel {i}");
        }
    }

    #[test]
    fn identical_masks_score_zero_and_a_shift_scores_its_length() {
        let (h, w) = (12, 16);
        let a = rect(h, w, 2, 8, 3, 9);
        assert_eq!(
            surface_distances(&a, &a, h, w),
            SurfaceDistances {
                hd95: 0.0,
                assd: 0.0
            }
        );
        // Shifted right by 2: every surface pixel of one lies within 2 of the other's surface.
        let b = rect(h, w, 2, 8, 5, 11);
        let d = surface_distances(&a, &b, h, w);
        assert_eq!(d.hd95, 2.0);
        assert!(d.assd > 0.0 && d.assd < 2.0, "{d:?}");
        // Symmetric.
        assert_eq!(surface_distances(&b, &a, h, w), d);
    }

    #[test]
    fn empty_masks() {
        let (h, w) = (3, 4);
        let empty = vec![false; h * w];
        let dot = rect(h, w, 1, 2, 1, 2);
        assert_eq!(
            surface_distances(&empty, &empty, h, w),
            SurfaceDistances {
                hd95: 0.0,
                assd: 0.0
            }
        );
        for (p, m) in [(&empty, &dot), (&dot, &empty)] {
            let d = surface_distances(p, m, h, w);
            assert_eq!((d.hd95, d.assd), (5.0, 5.0));
        }
    }

    #[test]
    fn quantile_interpolates_like_torch() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        // torch.quantile([1,2,3,4], 0.95) = 3.85
        assert!((quantile(&mut v, 0.95) - 3.85).abs() < 1e-12);
        assert_eq!(quantile(&mut [7.0], 0.95), 7.0);
    }
}
