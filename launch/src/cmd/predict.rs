//! `tmca predict`: masks and overlays from images and reports.

use crate::cli::PredictArgs;
use anyhow::Context;
use std::path::Path;
use tmca_data::augment::Planar;
use tmca_data::store::Store;
use tmca_trainer::inference::Trained;

/// Writes `<name>_mask.png` (0/255 at the image's size) and `<name>_overlay.png`.
fn write_outputs(
    out: &Path,
    name: &str,
    img: Planar<'_>,
    probs: &[f32],
    model_hw: (usize, usize),
    threshold: f32,
) -> anyhow::Result<()> {
    let (mh, mw) = model_hw;
    let (h, w) = (img.height, img.width);
    let plane = h * w;
    let mut mask = vec![0u8; plane];
    let mut overlay = Vec::with_capacity(plane * 3);
    for y in 0..h {
        for x in 0..w {
            let p = probs[(y * mh / h) * mw + x * mw / w];
            let on = p > threshold;
            mask[y * w + x] = if on { 255 } else { 0 };
            let px = |c: usize| img.data[c.min(img.channels - 1) * plane + y * w + x] as f32;
            let (r, g, b) = (px(0), px(1), px(2));
            let (r, g, b) = if on {
                (0.5 * r + 127.5, 0.5 * g, 0.5 * b)
            } else {
                (r, g, b)
            };
            overlay.extend([r as u8, g as u8, b as u8]);
        }
    }
    let stem = Path::new(name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(name);
    let mp = out.join(format!("{stem}_mask.png"));
    image::GrayImage::from_raw(w as u32, h as u32, mask)
        .context("mask size")?
        .save(&mp)
        .with_context(|| format!("writing {}", mp.display()))?;
    let op = out.join(format!("{stem}_overlay.png"));
    image::RgbImage::from_raw(w as u32, h as u32, overlay)
        .context("overlay size")?
        .save(&op)
        .with_context(|| format!("writing {}", op.display()))?;
    Ok(())
}

/// Runs prediction for one image or a store split.
pub fn run(a: &PredictArgs) -> anyhow::Result<()> {
    let device = tmca_worker::bind_device("auto", 0)?;
    let t = Trained::load(&a.run, &a.checkpoint, &device)?;
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("creating {}", a.output.display()))?;
    let hw = (t.cfg.data.image_size, t.cfg.data.image_size);
    let thr = t.cfg.train.threshold;
    if let (Some(path), Some(report)) = (&a.image, &a.report) {
        let (w, h) = tmca_data::imageops::image_size(path)?;
        let (w, h) = (w as usize, h as usize);
        let data = tmca_data::imageops::load_image(path, 3, h, w)?;
        let img = Planar {
            data: &data,
            channels: 3,
            height: h,
            width: w,
        };
        let probs = t.predict(img, report)?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("image");
        write_outputs(&a.output, name, img, &probs, hw, thr)?;
        println!(
            "{}: mask and overlay in {}",
            path.display(),
            a.output.display()
        );
        return Ok(());
    }
    let Some(store_path) = &a.store else {
        anyhow::bail!(tmca_data::DataError::Config {
            field: "--image/--store".into(),
            message: "give --image with --report, or --store".into()
        });
    };
    let store = Store::open(store_path)?;
    let idx = store.require_split(a.split)?;
    let info = store.info().clone();
    for &i in &idx {
        let data = store.image(i)?;
        let img = Planar {
            data: &data,
            channels: info.channels,
            height: info.height,
            width: info.width,
        };
        let probs = t.predict(img, &store.reports()[i])?;
        write_outputs(&a.output, &store.names()[i], img, &probs, hw, thr)?;
    }
    println!(
        "{} samples of {} ({}): masks and overlays in {}",
        idx.len(),
        store_path.display(),
        a.split,
        a.output.display()
    );
    Ok(())
}
