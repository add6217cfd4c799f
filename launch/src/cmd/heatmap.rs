//! Target enhancement maps as heat overlays (`tmca predict --maps`): where the model finds
//! what the report describes, level by level.

use anyhow::Context;
use std::path::Path;
use tmca_data::augment::Planar;
use tmca_trainer::inference::EnhancementMap;

/// The colour of `v` ∈ [0, 1] on a black–purple–red–yellow–white ramp (after matplotlib's
/// "inferno"), so low attention stays dark and high attention stands out on gray images.
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

/// Writes `<stem>_lte<L>.png` for each map: the map resampled bilinearly to the image's size,
/// coloured with [`inferno`] and blended half and half with the image.
pub fn write_maps(
    out: &Path,
    stem: &str,
    img: Planar<'_>,
    maps: &[EnhancementMap],
) -> anyhow::Result<()> {
    let (h, w) = (img.height, img.width);
    let plane = h * w;
    for m in maps {
        let a = super::predict::resample(&m.values, (m.height, m.width), (h, w));
        let mut rgb = Vec::with_capacity(plane * 3);
        for (i, v) in a.iter().enumerate() {
            let heat = inferno(*v);
            for (c, hc) in heat.iter().enumerate() {
                let px = img.data[c.min(img.channels - 1) * plane + i] as f32;
                rgb.push((0.5 * px + 0.5 * hc).round().clamp(0.0, 255.0) as u8);
            }
        }
        let p = out.join(format!("{stem}_lte{}.png", m.level));
        image::RgbImage::from_raw(w as u32, h as u32, rgb)
            .context("map size")?
            .save(&p)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
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
}
