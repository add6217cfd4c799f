//! Small on-disk fixtures for the importer tests.

use image::{GrayImage, Luma, Rgb, RgbImage};
use std::path::Path;

/// Fixture images are 20 wide and 16 high.
pub const W: u32 = 20;
pub const H: u32 = 16;

fn mkparent(path: &Path) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
}

/// A gray gradient image whose first pixel is `seed`.
pub fn write_image(path: &Path, seed: u8) {
    mkparent(path);
    GrayImage::from_fn(W, H, |x, y| Luma([seed.wrapping_add((x + y) as u8)]))
        .save(path)
        .unwrap();
}

/// An RGB image.
pub fn write_rgb_image(path: &Path, seed: u8) {
    mkparent(path);
    RgbImage::from_fn(W, H, |x, y| Rgb([seed, x as u8, y as u8]))
        .save(path)
        .unwrap();
}

/// A mask whose left `cols` columns are `on` (255 or 1), the rest 0.
pub fn write_mask(path: &Path, cols: u32, on: u8) {
    write_mask_sized(path, W, H, cols, on);
}

/// A mask of a given size.
pub fn write_mask_sized(path: &Path, w: u32, h: u32, cols: u32, on: u8) {
    mkparent(path);
    GrayImage::from_fn(w, h, |x, _| Luma([if x < cols { on } else { 0 }]))
        .save(path)
        .unwrap();
}

/// A CSV table with the given header and two-column rows (extra header cells stay empty).
pub fn write_csv(path: &Path, header: &[&str], rows: &[(&str, &str)]) {
    mkparent(path);
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record(header).unwrap();
    for (a, b) in rows {
        let mut rec = vec![a.to_string(), b.to_string()];
        rec.resize(header.len().max(2), String::new());
        w.write_record(&rec).unwrap();
    }
    w.flush().unwrap();
}

/// An `.xlsx` workbook with the given header and two-column rows.
pub fn write_xlsx(path: &Path, header: &[&str], rows: &[(&str, &str)]) {
    mkparent(path);
    let mut wb = rust_xlsxwriter::Workbook::new();
    let ws = wb.add_worksheet();
    for (c, h) in header.iter().enumerate() {
        ws.write_string(0, c as u16, *h).unwrap();
    }
    for (r, (a, b)) in rows.iter().enumerate() {
        let r = r as u32 + 1;
        if !a.is_empty() {
            ws.write_string(r, 0, *a).unwrap();
        }
        if !b.is_empty() {
            ws.write_string(r, 1, *b).unwrap();
        }
    }
    wb.save(path).unwrap();
}

/// (name, split, report) of every planned sample, in plan order.
pub fn plan_rows(plan: &super::Plan) -> Vec<(&str, crate::Split, &str)> {
    plan.samples
        .iter()
        .map(|s| (s.name.as_str(), s.split, s.report.as_str()))
        .collect()
}
