//! `tmca data preview`: a PNG grid of images with their masks overlaid (red fill, yellow
//! outline) and their reports printed underneath, for a person to look at.

use crate::store::Store;
use crate::{DataError, Result};
use font8x8::{UnicodeFonts, BASIC_FONTS};
use std::path::Path;

/// Preview layout.
#[derive(Debug, Clone)]
pub struct PreviewOptions {
    /// Tile edge in pixels (images are scaled to fit, nearest neighbour).
    pub tile: usize,
    /// Tiles per row.
    pub columns: usize,
    /// Lines of report text under each tile.
    pub text_lines: usize,
}

impl Default for PreviewOptions {
    fn default() -> Self {
        Self {
            tile: 192,
            columns: 4,
            text_lines: 6,
        }
    }
}

const GLYPH: usize = 8;
const PAD: usize = 6;

/// An RGB canvas.
struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize, bg: [u8; 3]) -> Self {
        let mut px = Vec::with_capacity(w * h * 3);
        for _ in 0..w * h {
            px.extend_from_slice(&bg);
        }
        Self { w, h, px }
    }

    fn set(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.w && y < self.h {
            let o = (y * self.w + x) * 3;
            self.px[o..o + 3].copy_from_slice(&c);
        }
    }

    fn text(&mut self, x0: usize, y0: usize, s: &str, color: [u8; 3]) {
        for (k, ch) in s.chars().enumerate() {
            let glyph = BASIC_FONTS
                .get(ch)
                .or_else(|| BASIC_FONTS.get('?'))
                .unwrap_or([0; 8]);
            for (gy, row) in glyph.iter().enumerate() {
                for gx in 0..GLYPH {
                    if row >> gx & 1 == 1 {
                        self.set(x0 + k * GLYPH + gx, y0 + gy, color);
                    }
                }
            }
        }
    }
}

/// Greedy word wrap to `width` characters, at most `lines` lines (the last ends in "…" if cut).
pub fn wrap(text: &str, width: usize, lines: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        let word: String = word.chars().take(width).collect();
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > width {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(&word);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    if out.len() > lines {
        out.truncate(lines);
        if let Some(last) = out.last_mut() {
            let keep: String = last.chars().take(width.saturating_sub(3)).collect();
            *last = format!("{keep}...");
        }
    }
    out
}

/// Renders samples `indices` of `store` into a PNG at `out`.
pub fn preview(store: &Store, indices: &[usize], out: &Path, opts: &PreviewOptions) -> Result<()> {
    if indices.is_empty() {
        return Err(DataError::bad(
            store.path(),
            "nothing to preview: no samples selected",
        ));
    }
    let info = store.info();
    let tile = opts.tile.max(32);
    let cols = opts.columns.clamp(1, indices.len());
    let rows = indices.len().div_ceil(cols);
    let text_h = opts.text_lines * (GLYPH + 2) + GLYPH + 4;
    let cell_w = tile + 2 * PAD;
    let cell_h = tile + text_h + 2 * PAD;
    let mut canvas = Canvas::new(cols * cell_w, rows * cell_h, [24, 24, 28]);
    let scale = (tile as f32 / info.width.max(info.height) as f32).max(f32::MIN_POSITIVE);
    let (tw, th) = (
        (info.width as f32 * scale) as usize,
        (info.height as f32 * scale) as usize,
    );
    let plane = info.height * info.width;
    for (k, &i) in indices.iter().enumerate() {
        let (cx, cy) = ((k % cols) * cell_w + PAD, (k / cols) * cell_h + PAD);
        let img = store.image(i)?;
        let mask = store.mask(i)?;
        let at = |x: usize, y: usize| -> (usize, usize) {
            (
                ((x as f32 / scale) as usize).min(info.width - 1),
                ((y as f32 / scale) as usize).min(info.height - 1),
            )
        };
        for y in 0..th {
            for x in 0..tw {
                let (sx, sy) = at(x, y);
                let p = sy * info.width + sx;
                let rgb = if info.channels >= 3 {
                    [img[p], img[plane + p], img[2 * plane + p]]
                } else {
                    [img[p]; 3]
                };
                let on = mask[p] > 0;
                let edge = on && {
                    let n = |dx: isize, dy: isize| {
                        let (nx, ny) = (sx as isize + dx, sy as isize + dy);
                        nx < 0
                            || ny < 0
                            || nx >= info.width as isize
                            || ny >= info.height as isize
                            || mask[ny as usize * info.width + nx as usize] == 0
                    };
                    n(-1, 0) || n(1, 0) || n(0, -1) || n(0, 1)
                };
                let c = if edge {
                    [255, 220, 0]
                } else if on {
                    [
                        (rgb[0] as u16 * 6 / 10 + 102) as u8,
                        (rgb[1] as u16 * 6 / 10) as u8,
                        (rgb[2] as u16 * 6 / 10) as u8,
                    ]
                } else {
                    rgb
                };
                canvas.set(cx + x, cy + y, c);
            }
        }
        let ty = cy + tile + 4;
        let title: String = format!("#{i} {}", store.names()[i])
            .chars()
            .take(tile / GLYPH)
            .collect();
        canvas.text(cx, ty, &title, [150, 200, 255]);
        for (l, line) in wrap(&store.reports()[i], tile / GLYPH, opts.text_lines)
            .iter()
            .enumerate()
        {
            canvas.text(cx, ty + (l + 1) * (GLYPH + 2) + 2, line, [235, 235, 235]);
        }
    }
    let buf = image::RgbImage::from_raw(canvas.w as u32, canvas.h as u32, canvas.px)
        .ok_or_else(|| DataError::bad(out, "preview canvas size mismatch"))?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
    }
    buf.save(out).map_err(|e| DataError::Image {
        path: out.into(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_respects_width_and_lines() {
        let w = wrap("Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung.", 20, 3);
        assert_eq!(w.len(), 3);
        assert!(w.iter().all(|l| l.chars().count() <= 20), "{w:?}");
        assert!(w[2].ends_with("..."));
        assert_eq!(wrap("short", 20, 3), vec!["short".to_string()]);
    }
}
