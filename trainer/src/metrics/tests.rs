//! Hand-computed checks of Dice and IoU under both protocols.

use super::*;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

fn summary_of(pred: &[f32], mask: &[f32], n: usize, ppi: usize) -> SegSummary {
    let mut m = SegMetrics::default();
    m.update(pred, mask, n, 1, ppi, 0.5).unwrap();
    m.summary()
}

#[test]
fn perfect_prediction_is_one() {
    let mask = [0., 1., 1., 0., 1., 0.];
    let s = summary_of(&mask, &mask, 2, 3);
    assert_eq!(
        s,
        SegSummary {
            dice_per_image: 1.0,
            iou_per_image: 1.0,
            dice_pooled: 1.0,
            iou_pooled: 1.0,
            hd95_per_image: 0.0,
            assd_per_image: 0.0,
            images: 2,
            empty_masks: 0
        }
    );
}

/// Images whose mask is empty are counted (merged and reduced like the other sums): their
/// score conventions move the per-image means.
#[test]
fn empty_masks_are_counted() {
    // Image 0: empty mask, empty prediction; image 1: empty mask, one false positive; image
    // 2: a target found.
    let mask = [0., 0., 0., 0., 0., 0., 0., 1.];
    let pred = [0., 0., 0., 1., 0., 0., 0., 1.];
    let mut m = SegMetrics::default();
    m.update(&pred, &mask, 4, 1, 2, 0.5).unwrap();
    let s = m.summary();
    assert_eq!((s.images, s.empty_masks), (4, 3));
    let back = SegMetrics::from_vec(&m.to_vec()).unwrap();
    assert_eq!(back.summary().empty_masks, 3);
    let mut v = m.to_vec();
    v[8] = 5.0;
    assert!(
        SegMetrics::from_vec(&v).is_err(),
        "more empty masks than images"
    );
}

#[test]
fn disjoint_prediction_is_zero() {
    let pred = [1., 1., 0., 0.];
    let mask = [0., 0., 1., 1.];
    let s = summary_of(&pred, &mask, 1, 4);
    assert_eq!(
        (
            s.dice_per_image,
            s.iou_per_image,
            s.dice_pooled,
            s.iou_pooled
        ),
        (0., 0., 0., 0.)
    );
}

#[test]
fn empty_vs_empty_is_one_and_empty_vs_nonempty_is_zero() {
    // All empty: 1 under both protocols.
    let s = summary_of(&[0.; 8], &[0.; 8], 2, 4);
    assert_eq!(
        (
            s.dice_per_image,
            s.iou_per_image,
            s.dice_pooled,
            s.iou_pooled
        ),
        (1., 1., 1., 1.)
    );
    // Empty prediction, non-empty mask (and the reverse): 0.
    let s = summary_of(&[0., 0.], &[0., 1.], 1, 2);
    assert_eq!(
        (
            s.dice_per_image,
            s.iou_per_image,
            s.dice_pooled,
            s.iou_pooled
        ),
        (0., 0., 0., 0.)
    );
    let s = summary_of(&[1., 0.], &[0., 0.], 1, 2);
    assert_eq!(
        (
            s.dice_per_image,
            s.iou_per_image,
            s.dice_pooled,
            s.iou_pooled
        ),
        (0., 0., 0., 0.)
    );
}

#[test]
fn partial_overlap_and_an_empty_image() {
    // Image A: TP 1, FP 1, FN 1 -> Dice 2/4, IoU 1/3. Image B: empty vs empty -> 1, 1.
    let pred = [1., 1., 0., 0., /* B */ 0., 0., 0., 0.];
    let mask = [1., 0., 1., 0., /* B */ 0., 0., 0., 0.];
    let mut m = SegMetrics::default();
    m.update(&pred, &mask, 2, 1, 4, 0.5).unwrap();
    assert_eq!(
        m.pooled(),
        Confusion {
            true_pos: 1,
            false_pos: 1,
            false_neg: 1
        }
    );
    let s = m.summary();
    assert!(close(s.dice_per_image, 0.75), "{s}");
    assert!(close(s.iou_per_image, 2.0 / 3.0), "{s}");
    assert!(close(s.dice_pooled, 0.5), "{s}");
    assert!(close(s.iou_pooled, 1.0 / 3.0), "{s}");
    assert_eq!(s.images, 2);
}

#[test]
fn protocols_differ_on_a_missed_small_target() {
    // Image 1: 100x100, 1000 foreground pixels, predicted perfectly.
    // Image 2: 100x100, one foreground pixel, missed.
    let ppi = 100 * 100;
    let mut mask = vec![0f32; 2 * ppi];
    mask[..1000].fill(1.0);
    mask[ppi + 5000] = 1.0;
    let mut pred = vec![0f32; 2 * ppi];
    pred[..1000].fill(0.9);
    let s = summary_of(&pred, &mask, 2, ppi);
    assert!(close(s.dice_per_image, 0.5), "{s}");
    assert!(close(s.iou_per_image, 0.5), "{s}");
    assert!(close(s.dice_pooled, 2000.0 / 2001.0), "{s}"); // ~0.9995
    assert!(close(s.iou_pooled, 1000.0 / 1001.0), "{s}"); // ~0.9990
}

#[test]
fn threshold_is_strict_and_works_on_logits() {
    let mask = [1., 1., 0., 0.];
    // Probabilities: 0.5 is not above 0.5.
    let mut m = SegMetrics::default();
    m.update(&[0.5, 0.51, 0.49, f32::NAN], &mask, 1, 1, 4, 0.5)
        .unwrap();
    assert_eq!(
        m.pooled(),
        Confusion {
            true_pos: 1,
            false_pos: 0,
            false_neg: 1
        }
    );
    // Logits with threshold 0 mean probability 0.5.
    let mut m = SegMetrics::default();
    m.update(&[3.0, 0.1, -0.1, -4.0], &mask, 1, 1, 4, 0.0)
        .unwrap();
    assert_eq!(
        m.pooled(),
        Confusion {
            true_pos: 2,
            false_pos: 0,
            false_neg: 0
        }
    );
    // Soft masks: > 0.5 is foreground.
    let mut m = SegMetrics::default();
    m.update(&[1., 1.], &[0.6, 0.5], 1, 1, 2, 0.5).unwrap();
    assert_eq!(
        m.pooled(),
        Confusion {
            true_pos: 1,
            false_pos: 1,
            false_neg: 0
        }
    );
}

#[test]
fn binary_update_matches_float_update() {
    let pred_u8 = [0u8, 255, 1, 0, 0, 0, 7, 7, 0];
    let mask_u8 = [0u8, 1, 0, 1, 0, 0, 1, 1, 0];
    let pred_f: Vec<f32> = pred_u8
        .iter()
        .map(|&x| f32::from(u8::from(x != 0)))
        .collect();
    let mask_f: Vec<f32> = mask_u8.iter().map(|&x| f32::from(x)).collect();
    let mut a = SegMetrics::default();
    a.update_binary(&pred_u8, &mask_u8, 1, 3, 3).unwrap();
    let mut b = SegMetrics::default();
    b.update(&pred_f, &mask_f, 1, 3, 3, 0.5).unwrap();
    assert_eq!(a, b);
}

fn batches() -> Vec<(Vec<f32>, Vec<f32>)> {
    vec![
        (
            vec![1., 1., 0., 0., 0., 0., 0., 0.],
            vec![1., 0., 1., 0., 0., 0., 0., 0.],
        ),
        (vec![0., 1., 1., 1.], vec![0., 1., 1., 0.]),
        (
            vec![0., 0., 0., 0., 1., 0., 0., 0., 0., 0., 0., 1.],
            vec![1., 0., 0., 0., 1., 1., 0., 0., 0., 0., 0., 1.],
        ),
    ]
}

#[test]
fn merge_and_vector_sum_are_exact() {
    let mut whole = SegMetrics::default();
    let (mut all_p, mut all_m) = (Vec::new(), Vec::new());
    let mut parts = Vec::new();
    for (p, m) in batches() {
        let mut part = SegMetrics::default();
        part.update(&p, &m, p.len() / 4, 2, 2, 0.5).unwrap();
        parts.push(part);
        all_p.extend(p);
        all_m.extend(m);
    }
    whole
        .update(&all_p, &all_m, all_p.len() / 4, 2, 2, 0.5)
        .unwrap();

    let mut merged = SegMetrics::default();
    for p in &parts {
        merged.merge(p);
    }
    assert_eq!(merged.pooled(), whole.pooled());
    assert_eq!(merged.images(), whole.images());
    let (a, b) = (merged.summary(), whole.summary());
    assert!(close(a.dice_per_image, b.dice_per_image) && close(a.iou_per_image, b.iou_per_image));
    assert_eq!((a.dice_pooled, a.iou_pooled), (b.dice_pooled, b.iou_pooled));

    // "All-reduce": element-wise sum of the vectors.
    let mut sum = vec![0f64; SegMetrics::VEC_LEN];
    for p in &parts {
        for (s, x) in sum.iter_mut().zip(p.to_vec()) {
            *s += x;
        }
    }
    let reduced = SegMetrics::from_vec(&sum).unwrap();
    assert_eq!(reduced, merged);
    assert_eq!(SegMetrics::from_vec(&whole.to_vec()).unwrap(), whole);
}

#[test]
fn no_images_gives_nan() {
    let s = SegMetrics::default().summary();
    assert_eq!(s.images, 0);
    assert!(s.dice_per_image.is_nan() && s.iou_per_image.is_nan());
    assert!(s.dice_pooled.is_nan() && s.iou_pooled.is_nan());
    let mut m = SegMetrics::default();
    m.update(&[], &[], 0, 4, 4, 0.5).unwrap();
    assert_eq!(m.images(), 0);
}

#[test]
fn shape_errors() {
    let mut m = SegMetrics::default();
    let err = m.update(&[0.; 7], &[0.; 8], 2, 2, 2, 0.5).unwrap_err();
    assert!(matches!(
        err,
        MetricsError::Shape {
            what: "prediction",
            got: 7,
            expected: 8,
            ..
        }
    ));
    let err = m.update(&[0.; 8], &[0.; 6], 2, 2, 2, 0.5).unwrap_err();
    assert!(matches!(
        err,
        MetricsError::Shape {
            what: "mask",
            got: 6,
            ..
        }
    ));
    let err = m.update_binary(&[], &[], 3, 0, 5).unwrap_err();
    assert!(matches!(err, MetricsError::BadSize { .. }), "{err}");
    let err = m.update(&[], &[], usize::MAX, 1, 2, 0.5).unwrap_err();
    assert!(matches!(err, MetricsError::BadSize { .. }), "{err}");
    assert_eq!(m, SegMetrics::default()); // nothing half-applied
}

#[test]
fn from_vec_rejects_invalid_sums() {
    let v = |x: [f64; 6]| [x[0], x[1], x[2], x[3], x[4], x[5], 0.0, 0.0, 0.0];
    assert!(SegMetrics::from_vec(&[0.; 6]).is_err());
    assert!(SegMetrics::from_vec(&v([0., 0., 1.5, 0., 0., 0.])).is_err()); // fractional count
    assert!(SegMetrics::from_vec(&v([0., 0., 1., -1., 0., 0.])).is_err()); // negative count
    assert!(SegMetrics::from_vec(&v([3., 0., 2., 0., 0., 0.])).is_err()); // dice sum > images
    assert!(SegMetrics::from_vec(&v([f64::NAN, 0., 2., 0., 0., 0.])).is_err());
    assert!(SegMetrics::from_vec(&[2., 2., 2., 0., 0., 0., -1., 0., 0.]).is_err()); // distance < 0
    assert!(SegMetrics::from_vec(&[2., 2., 2., 0., 0., 0., 0., f64::INFINITY, 0.]).is_err());
    let ok = SegMetrics::from_vec(&[2., 2., 2., 0., 0., 0., 3., 1., 2.]).unwrap();
    assert_eq!(ok.summary().dice_per_image, 1.0);
    assert_eq!(ok.summary().hd95_per_image, 1.5);
    assert_eq!(ok.summary().assd_per_image, 0.5);
}

#[test]
fn distances_are_averaged_per_image_and_old_results_read_as_nan() {
    // 2x3 images. A: perfect (0). B: empty prediction on a target: the diagonal, sqrt(13).
    let pred = [1., 1., 0., 0., 0., 0., /* B */ 0., 0., 0., 0., 0., 0.];
    let mask = [1., 1., 0., 0., 0., 0., /* B */ 0., 0., 1., 0., 0., 0.];
    let mut m = SegMetrics::default();
    m.update(&pred, &mask, 2, 2, 3, 0.5).unwrap();
    let s = m.summary();
    assert!(close(s.hd95_per_image, 13f64.sqrt() / 2.0), "{s}");
    assert!(close(s.assd_per_image, 13f64.sqrt() / 2.0), "{s}");
    let old = r#"{"dice_per_image":1,"iou_per_image":1,"dice_pooled":1,"iou_pooled":1,"images":2}"#;
    let s: SegSummary = serde_json::from_str(old).unwrap();
    assert_eq!(s.empty_masks, 0);
    assert!(s.hd95_per_image.is_nan() && s.assd_per_image.is_nan());
}

#[test]
fn standalone_functions() {
    let c = Confusion::from_pairs([(true, true), (true, true), (true, false), (false, true)]);
    assert_eq!(
        c,
        Confusion {
            true_pos: 2,
            false_pos: 1,
            false_neg: 1
        }
    );
    assert!(close(dice(&c), 4.0 / 6.0));
    assert!(close(iou(&c), 0.5));
    assert_eq!(dice(&Confusion::default()), 1.0);
    assert_eq!(iou(&Confusion::default()), 1.0);
    let s = SegMetrics::default();
    let json = serde_json::to_string(&SegSummary {
        images: 3,
        ..s.summary()
    })
    .unwrap();
    assert!(json.contains("\"images\":3"), "{json}");
}
