//! Target enhancement maps as heat overlays (`tmca predict --maps`): where the model finds
//! what the report describes, level by level.

use anyhow::Context;
use std::path::Path;
use tmca_data::augment::Planar;
use tmca_trainer::inference::EnhancementMap;
use tmca_trainer::viz::{heat_overlay, resize_bilinear};

/// Writes `<stem>_lte<L>.png` for each map: the map resampled bilinearly to the image's size,
/// coloured and blended half and half with the image ([`heat_overlay`]).
pub fn write_maps(
    out: &Path,
    stem: &str,
    img: Planar<'_>,
    maps: &[EnhancementMap],
) -> anyhow::Result<()> {
    let (h, w) = (img.height, img.width);
    let plane = h * w;
    let rgb: Vec<u8> = (0..plane)
        .flat_map(|i| [0, 1, 2].map(|c| img.data[c.min(img.channels - 1) * plane + i]))
        .collect();
    for m in maps {
        let a = resize_bilinear(&m.values, (m.height, m.width), (h, w));
        let p = out.join(format!("{stem}_lte{}.png", m.level));
        image::RgbImage::from_raw(w as u32, h as u32, heat_overlay(&rgb, &a))
            .context("map size")?
            .save(&p)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
