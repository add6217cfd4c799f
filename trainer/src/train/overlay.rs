//! Validation overlays for TensorBoard: the input image, the prediction in red, the ground
//! truth outline in yellow.

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
    let (c, h, w) = (b.channels, b.height, b.width);
    let plane = h * w;
    let img = &b.images[row * c * plane..(row + 1) * c * plane];
    let mask = &b.masks[row * plane..(row + 1) * plane];
    let pred = &probs[row * plane..(row + 1) * plane];
    let px = |ch: usize, p: usize| -> f32 {
        let ch = ch.min(c - 1);
        ((img[ch * plane + p] * std[ch] + mean[ch]) * 255.0).clamp(0.0, 255.0)
    };
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
