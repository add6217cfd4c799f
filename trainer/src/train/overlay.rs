//! Validation pictures for TensorBoard: the input image with the prediction in red and the
//! ground truth outlined in yellow; and the target enhancement maps as heat overlays.

use crate::viz::{heat_overlay, resize_bilinear};
use tmca_data::loader::Batch;

/// RGB (H·W·3) overlay of row `row` of `b` with predicted probabilities `probs` (B·H·W).
pub fn overlay(
    b: &Batch,
    probs: &[f32],
    row: usize,
    mean: &[f32],
    std: &[f32],
    threshold: f32,
) -> Vec<u8> {
    let (h, w) = (b.height, b.width);
    let plane = h * w;
    let rgb = image_rgb(b, row, mean, std);
    let mask = &b.masks[row * plane..(row + 1) * plane];
    let pred = &probs[row * plane..(row + 1) * plane];
    let px = |ch: usize, p: usize| -> f32 { rgb[p * 3 + ch] as f32 };
    let edge = |p: usize| {
        let (y, x) = (p / w, p % w);
        mask[p] > 0.5
            && (x == 0
                || y == 0
                || x + 1 == w
                || y + 1 == h
                || mask[p - 1] < 0.5
                || mask[p + 1] < 0.5
                || mask[p - w] < 0.5
                || mask[p + w] < 0.5)
    };
    let mut out = Vec::with_capacity(plane * 3);
    for (p, &prob) in pred.iter().enumerate().take(plane) {
        let (mut r, mut g, mut bl) = (px(0, p), px(1, p), px(2, p));
        if prob > threshold {
            r = 0.5 * r + 127.5;
            g *= 0.5;
            bl *= 0.5;
        }
        if edge(p) {
            (r, g, bl) = (255.0, 220.0, 0.0);
        }
        out.extend([r as u8, g as u8, bl as u8]);
    }
    out
}

/// The input image of row `row` of `b` as RGB (H·W·3).
fn image_rgb(b: &Batch, row: usize, mean: &[f32], std: &[f32]) -> Vec<u8> {
    let (c, plane) = (b.channels, b.height * b.width);
    let img = &b.images[row * c * plane..(row + 1) * c * plane];
    (0..plane)
        .flat_map(|p| {
            [0, 1, 2].map(|ch| {
                let ch = ch.min(c - 1);
                ((img[ch * plane + p] * std[ch] + mean[ch]) * 255.0).clamp(0.0, 255.0) as u8
            })
        })
        .collect()
}

/// The enhancement maps `(level, A (h·w), (h, w))` of row `row` side by side, coarsest level
/// first, each resized to the image and laid over it as heat: RGB (H · n·W · 3) and its width.
pub fn map_strip(
    b: &Batch,
    row: usize,
    mean: &[f32],
    std: &[f32],
    maps: &[(usize, Vec<f32>, (usize, usize))],
) -> (Vec<u8>, usize) {
    let (h, w) = (b.height, b.width);
    let rgb = image_rgb(b, row, mean, std);
    let mut sorted: Vec<&(usize, Vec<f32>, (usize, usize))> = maps.iter().collect();
    sorted.sort_by_key(|(level, _, _)| std::cmp::Reverse(*level));
    let tiles: Vec<Vec<u8>> = sorted
        .iter()
        .map(|(_, a, hw)| heat_overlay(&rgb, &resize_bilinear(a, *hw, (h, w))))
        .collect();
    let width = w * tiles.len();
    let mut out = Vec::with_capacity(h * width * 3);
    for y in 0..h {
        for t in &tiles {
            out.extend_from_slice(&t[y * w * 3..(y + 1) * w * 3]);
        }
    }
    (out, width)
}
