//! Flip test-time augmentation that keeps the report true: the prediction of an image is
//! averaged with that of its left–right mirror image described by the mirrored report
//! ("left" ↔ "right", as the training flips rewrite it), mirrored back.

use crate::model::{Inputs, Tmca};
use crate::Result;
use candle_core::{Device, Tensor};
use tmca_data::augment::swap_left_right;
use tmca_data::tokenize::TextTokenizer;

/// Token ids and attention (B, L) of `reports`.
pub fn report_tokens(
    tokenizer: &TextTokenizer,
    reports: &[String],
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let (mut ids, mut att) = (vec![], vec![]);
    for r in reports {
        let t = tokenizer.encode(r)?;
        ids.extend(t.ids);
        att.extend(t.attention);
    }
    let l = ids.len() / reports.len().max(1);
    Ok((
        Tensor::from_vec(ids, (reports.len(), l), device)?,
        Tensor::from_vec(att, (reports.len(), l), device)?,
    ))
}

/// Token ids and attention (B, L) of the mirrored `reports`.
pub fn mirrored_tokens(
    tokenizer: &TextTokenizer,
    reports: &[String],
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let mirrored: Vec<String> = reports.iter().map(|r| swap_left_right(r)).collect();
    report_tokens(tokenizer, &mirrored, device)
}

/// Foreground probabilities (B, 1, H, W) of `x`; with `mirrored` (the mirrored reports' tokens,
/// [`mirrored_tokens`]) the mean of those and of the mirrored images' probabilities, mirrored
/// back.
pub fn probabilities(
    model: &Tmca,
    x: &Inputs,
    mirrored: Option<(Tensor, Tensor)>,
) -> Result<Tensor> {
    Ok(probabilities_and_maps(model, x, mirrored)?.0)
}

/// [`probabilities`] and the enhancement maps A_l (B, 1, h, w) of the direct pass, with their
/// level.
pub fn probabilities_and_maps(
    model: &Tmca,
    x: &Inputs,
    mirrored: Option<(Tensor, Tensor)>,
) -> Result<(Tensor, Vec<(usize, Tensor)>)> {
    let out = model.forward(x)?;
    let p = candle_nn::ops::sigmoid(&out.logits)?;
    let Some((token_ids, attention)) = mirrored else {
        return Ok((p, out.maps));
    };
    let flipped = Inputs {
        images: x.images.flip(&[3])?,
        token_ids,
        attention,
        masks: None,
        drop_path: None,
    };
    let q = candle_nn::ops::sigmoid(&model.forward(&flipped)?.logits)?.flip(&[3])?;
    Ok((((p + q)? * 0.5)?, out.maps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::build;
    use crate::model::ModelConfig;
    use candle_core::DType;

    /// The averaged prediction is left–right equivariant: the mirrored image with the mirrored
    /// report gets the mirrored prediction (one forward pass alone need not be), and without
    /// `mirrored` it is the plain sigmoid of the logits.
    #[test]
    fn flip_tta_is_mirror_equivariant() {
        let cfg = ModelConfig {
            preset: "cpu-tiny".into(),
            ..Default::default()
        };
        let (_, model, vocab) = build(cfg, DType::F32, 3);
        let reports: Vec<String> = ["left", "right, left"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let tok = TextTokenizer::learn(&reports, vocab, 8).unwrap();
        let dev = Device::Cpu;
        let tokens = |rs: &[String]| {
            let (mut ids, mut att) = (vec![], vec![]);
            for r in rs {
                let t = tok.encode(r).unwrap();
                ids.extend(t.ids);
                att.extend(t.attention);
            }
            (
                Tensor::from_vec(ids, (rs.len(), 8), &dev).unwrap(),
                Tensor::from_vec(att, (rs.len(), 8), &dev).unwrap(),
            )
        };
        let images = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &dev).unwrap();
        let (ids, att) = tokens(&reports);
        let x = Inputs {
            images: images.clone(),
            token_ids: ids,
            attention: att,
            masks: None,
            drop_path: None,
        };
        let plain = probabilities(&model, &x, None).unwrap();
        let logits = model.forward(&x).unwrap().logits;
        let diff = (plain.clone() - candle_nn::ops::sigmoid(&logits).unwrap()).unwrap();
        assert_eq!(
            diff.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );

        let tta = probabilities(
            &model,
            &x,
            Some(mirrored_tokens(&tok, &reports, &dev).unwrap()),
        )
        .unwrap();
        let swapped: Vec<String> = reports.iter().map(|r| swap_left_right(r)).collect();
        let (ids, att) = tokens(&swapped);
        let x_m = Inputs {
            images: images.flip(&[3]).unwrap(),
            token_ids: ids,
            attention: att,
            masks: None,
            drop_path: None,
        };
        let tta_m = probabilities(
            &model,
            &x_m,
            Some(mirrored_tokens(&tok, &swapped, &dev).unwrap()),
        )
        .unwrap();
        let d = (tta_m.flip(&[3]).unwrap() - &tta)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5, "{d}");
        let plain_m = probabilities(&model, &x_m, None)
            .unwrap()
            .flip(&[3])
            .unwrap();
        let d = (plain_m - plain).unwrap().abs().unwrap().max_all().unwrap();
        assert!(
            d.to_scalar::<f32>().unwrap() > 1e-4,
            "a single pass is not equivariant"
        );
    }
}
