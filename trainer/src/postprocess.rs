//! Post-processing of predicted masks: removal of small connected components (specks of false
//! positives, which cost little Dice but much HD95).
//!
//! Components are 8-connected. The size limit is given as a fraction of the image's area
//! (`min_area`), so the same setting means the same at the model's input size (`tmca eval`) and
//! at an image's own size (`tmca predict`).

/// The smallest component kept at `h`x`w` for `min_area` (a fraction of the area; 0 = keep all).
pub fn min_pixels(min_area: f32, h: usize, w: usize) -> usize {
    if min_area <= 0.0 {
        return 0;
    }
    ((f64::from(min_area) * (h * w) as f64).ceil() as usize).max(1)
}

/// Clears the 8-connected foreground components of `mask` (`h`x`w`, row-major) smaller than
/// `min_pixels`; returns how many pixels it cleared.
pub fn remove_small_components(mask: &mut [bool], h: usize, w: usize, min_pixels: usize) -> usize {
    if min_pixels <= 1 {
        return 0;
    }
    let mut seen = vec![false; h * w];
    let mut component = Vec::new();
    let mut stack = Vec::new();
    let mut cleared = 0;
    for start in 0..h * w {
        if !mask[start] || seen[start] {
            continue;
        }
        component.clear();
        seen[start] = true;
        stack.push(start);
        while let Some(i) = stack.pop() {
            component.push(i);
            let (y, x) = (i / w, i % w);
            for ny in y.saturating_sub(1)..(y + 2).min(h) {
                for nx in x.saturating_sub(1)..(x + 2).min(w) {
                    let j = ny * w + nx;
                    if mask[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        if component.len() < min_pixels {
            for &i in &component {
                mask[i] = false;
            }
            cleared += component.len();
        }
    }
    cleared
}

/// Applies [`remove_small_components`] to a batch of probability maps (`n` images of
/// `h`x`w`): pixels of removed components get probability 0, so every later use of `probs`
/// at `threshold` (≥ 0) sees the cleaned masks.
pub fn clear_small_in_probs(
    probs: &mut [f32],
    n: usize,
    (h, w): (usize, usize),
    threshold: f32,
    min_area: f32,
) {
    let keep = min_pixels(min_area, h, w);
    if keep <= 1 {
        return;
    }
    for img in probs.chunks_exact_mut(h * w).take(n) {
        let mut mask: Vec<bool> = img.iter().map(|&p| p > threshold).collect();
        if remove_small_components(&mut mask, h, w, keep) > 0 {
            for (p, &m) in img.iter_mut().zip(&mask) {
                if !m && *p > threshold {
                    *p = 0.0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(rows: &[&str]) -> (Vec<bool>, usize, usize) {
        let w = rows[0].len();
        let m = rows
            .iter()
            .flat_map(|r| r.chars().map(|c| c == '#'))
            .collect();
        (m, rows.len(), w)
    }

    #[test]
    fn small_components_go_diagonal_neighbours_connect() {
        let (mut m, h, w) = parse(&[
            "#....##", //
            ".#...##", // a diagonal pair (2 px) and a 2x2 block (4 px)
            ".......", //
            "##.....", // a 3 px component on the border
            "#......",
        ]);
        let cleared = remove_small_components(&mut m, h, w, 3);
        assert_eq!(cleared, 2, "only the diagonal pair is below 3");
        let (want, _, _) = parse(&[
            ".....##", //
            ".....##", //
            ".......", //
            "##.....", //
            "#......",
        ]);
        assert_eq!(m, want);
        assert_eq!(remove_small_components(&mut m, h, w, 5), 7);
        assert!(m.iter().all(|&v| !v));
    }

    #[test]
    fn area_fraction_and_probabilities() {
        assert_eq!(min_pixels(0.0, 10, 10), 0);
        assert_eq!(min_pixels(0.011, 10, 10), 2);
        assert_eq!(min_pixels(1e-9, 10, 10), 1);
        // Two 3x3 images; image 0 has a lone pixel and a 3-pixel bar; image 1 is left alone.
        let mut p = vec![
            0.9, 0.0, 0.0, //
            0.0, 0.0, 0.0, //
            0.7, 0.8, 0.6, //
            0.2, 0.3, 0.4, //
            0.1, 0.2, 0.3, //
            0.0, 0.0, 0.0,
        ];
        let before = p.clone();
        clear_small_in_probs(&mut p, 2, (3, 3), 0.5, 2.0 / 9.0);
        assert_eq!(p[0], 0.0);
        assert_eq!(&p[1..], &before[1..]);
        clear_small_in_probs(&mut p, 2, (3, 3), 0.5, 0.0);
        assert_eq!(p[6..9], [0.7, 0.8, 0.6]);
    }
}
