//! Pictures of what the model computes, shared by TensorBoard's validation images and
//! `tmca predict`: bilinear resizing of maps and a heat colour ramp.

/// The (sh, sw) map `src` resized bilinearly to (h, w), pixel centres aligned (PyTorch's
/// `interpolate(mode="bilinear", align_corners=False)`, no antialiasing).
pub fn resize_bilinear(src: &[f32], (sh, sw): (usize, usize), (h, w): (usize, usize)) -> Vec<f32> {
    let axis = |n_out: usize, n_in: usize| -> Vec<(usize, usize, f32)> {
        (0..n_out)
            .map(|o| {
                let s = ((o as f32 + 0.5) * n_in as f32 / n_out as f32 - 0.5).max(0.0);
                let i0 = (s.floor() as usize).min(n_in - 1);
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, s - i0 as f32)
            })
            .collect()
    };
    let (ys, xs) = (axis(h, sh), axis(w, sw));
    let mut out = Vec::with_capacity(h * w);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            let at = |y: usize, x: usize| src[y * sw + x];
            let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
            let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

/// The colour of `v` ∈ [0, 1] on a black–purple–red–yellow–white ramp (after matplotlib's
/// "inferno"), so low values stay dark and high ones stand out on gray images.
pub fn inferno(v: f32) -> [f32; 3] {
    const STOPS: [[f32; 3]; 5] = [
        [0.0, 0.0, 4.0],
        [87.0, 16.0, 110.0],
        [188.0, 55.0, 84.0],
        [249.0, 142.0, 9.0],
        [252.0, 255.0, 164.0],
    ];
    let x = v.clamp(0.0, 1.0) * (STOPS.len() - 1) as f32;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let t = x - i as f32;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    [0, 1, 2].map(|c| a[c] + (b[c] - a[c]) * t)
}

/// `rgb` (H·W·3, interleaved) blended half and half with [`inferno`] of `map` (H·W).
pub fn heat_overlay(rgb: &[u8], map: &[f32]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .zip(map)
        .flat_map(|(px, v)| {
            let heat = inferno(*v);
            [0, 1, 2].map(|c| {
                (0.5 * px[c] as f32 + 0.5 * heat[c])
                    .round()
                    .clamp(0.0, 255.0) as u8
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ramp_runs_from_dark_to_light() {
        assert_eq!(inferno(0.0), [0.0, 0.0, 4.0]);
        assert_eq!(inferno(1.0), [252.0, 255.0, 164.0]);
        let lum = |c: [f32; 3]| 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
        let mut last = -1.0;
        for k in 0..=20 {
            let l = lum(inferno(k as f32 / 20.0));
            assert!(l > last, "luminance rises: {k}");
            last = l;
        }
        assert_eq!(inferno(-3.0), inferno(0.0));
    }

    #[test]
    fn resizing_is_bilinear_with_aligned_pixel_centres() {
        // Same size: unchanged; a constant stays constant.
        let src: Vec<f32> = (0..12).map(|i| i as f32).collect();
        assert_eq!(resize_bilinear(&src, (3, 4), (3, 4)), src);
        assert!(resize_bilinear(&[0.25; 6], (2, 3), (5, 7))
            .iter()
            .all(|v| *v == 0.25));
        // 1×2 → 1×4: edges clamp, inner pixels interpolate (PyTorch gives 0, .25, .75, 1).
        assert_eq!(
            resize_bilinear(&[0.0, 1.0], (1, 2), (1, 4)),
            [0.0, 0.25, 0.75, 1.0]
        );
        // Downsampling 4 → 2 averages the two middle source pixels of each half.
        let r = resize_bilinear(&[0.0, 1.0, 2.0, 3.0], (1, 4), (1, 2));
        assert!(
            (r[0] - 0.5).abs() < 1e-6 && (r[1] - 2.5).abs() < 1e-6,
            "{r:?}"
        );
    }
}
