//! The wording of the reports, per modality. Every writer produces a clean sentence from one of
//! several templates and synonyms, then passes it through [`roughen`].
//!
//! Invariants the tests rely on (and a reader of the data may rely on):
//! * zone words (`upper`, `middle`, `lower`, `left`, `right`, `center`) appear only inside zone
//!   phrases, and in each lung or quadrant phrase as exactly one row word and one side word;
//! * a non-empty report states its count with a number word (`one`, `two`, …) except in
//!   histopathology, which states densities;
//! * an empty report (no target) starts with the word "No".

use super::random::{below, chance, pick, weighted};
use super::text::{count_word, join_list, noun, roughen, stated_count};
use rand::Rng;

/// A lung zone: `row` 0, 1, 2 = upper, middle, lower third of the patient's left or right lung.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LungZone {
    pub row: usize,
    /// The patient's left (drawn on the image right).
    pub left: bool,
}

impl LungZone {
    /// All six zones.
    pub const ALL: [LungZone; 6] = [
        LungZone {
            row: 0,
            left: false,
        },
        LungZone {
            row: 1,
            left: false,
        },
        LungZone {
            row: 2,
            left: false,
        },
        LungZone { row: 0, left: true },
        LungZone { row: 1, left: true },
        LungZone { row: 2, left: true },
    ];

    pub fn row_word(&self) -> &'static str {
        ["upper", "middle", "lower"][self.row.min(2)]
    }

    pub fn side_word(&self) -> &'static str {
        if self.left {
            "left"
        } else {
            "right"
        }
    }

    /// Canonical name, e.g. "upper left".
    pub fn name(&self) -> String {
        format!("{} {}", self.row_word(), self.side_word())
    }
}

fn capitalise_first(s: &str) -> String {
    let mut cs = s.chars();
    match cs.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + cs.as_str(),
        None => String::new(),
    }
}

fn maybe_extra(rng: &mut impl Rng, s: &mut String, p: f32, extras: &[&str]) {
    if !extras.is_empty() && chance(rng, p) {
        let e = extras[below(rng, extras.len())];
        if s.ends_with('.') && chance(rng, 0.7) {
            s.push(' ');
            s.push_str(e);
            s.push('.');
        } else {
            let base = s.trim_end_matches('.').to_string();
            let keep_caps = e.chars().nth(1).is_some_and(|c| !c.is_ascii_lowercase());
            let e = if keep_caps {
                e.to_string()
            } else {
                e.to_ascii_lowercase()
            };
            *s = format!("{base}, {e}.");
        }
    }
}

const XRAY_EXTRAS: [&str; 6] = [
    "No pleural effusion",
    "Heart size is normal",
    "Costophrenic angles are clear",
    "Cardiac silhouette within normal limits",
    "Trachea is midline",
    "No pneumothorax",
];

const CT_EXTRAS: [&str; 6] = [
    "No pleural effusion",
    "Mediastinal structures unremarkable",
    "Airways are patent",
    "No lymphadenopathy",
    "Slice at the level of the carina",
    "Reticular pattern absent",
];

/// A QaTa-COV19 / MosMedData+ style report naming the infected lung zones.
pub(crate) fn lung_report(
    rng: &mut impl Rng,
    zones: &[LungZone],
    ct: bool,
    contradiction_rate: f32,
) -> String {
    let extras: &[&str] = if ct { &CT_EXTRAS } else { &XRAY_EXTRAS };
    let mut s = if zones.is_empty() {
        let area = noun(rng, 0, "infected area", "infected areas", 0.1);
        match weighted(rng, &[0.55, 0.15, 0.15, 0.15]) {
            0 => format!("No pulmonary infection, zero {area}."),
            1 => format!("No signs of pulmonary infection, zero {area}."),
            2 => "No pulmonary infection.".to_string(),
            _ => format!(
                "No lung infection, zero {}.",
                noun(rng, 0, "lesion", "lesions", 0.1)
            ),
        }
    } else {
        let bilateral = zones.iter().any(|z| z.left) && zones.iter().any(|z| !z.left);
        let lat = match (bilateral, chance(rng, 0.1)) {
            (true, false) => "Bilateral",
            (true, true) => "Bilat.",
            (false, false) => "Unilateral",
            (false, true) => "Unilat.",
        };
        let findings: &[(&str, f32)] = if ct {
            &[
                ("pulmonary infection", 0.5),
                ("ground-glass opacity", 0.15),
                ("pulmonary opacities", 0.1),
                ("pulm. infection", 0.05),
                ("lung infection", 0.1),
                ("consolidation", 0.1),
            ]
        } else {
            &[
                ("pulmonary infection", 0.55),
                ("pulmonary infections", 0.05),
                ("pulmonary opacity", 0.1),
                ("pulm. infection", 0.05),
                ("lung infection", 0.1),
                ("infection", 0.05),
                ("lesions", 0.1),
            ]
        };
        let w: Vec<f32> = findings.iter().map(|f| f.1).collect();
        let finding = findings[weighted(rng, &w)].0;
        let head = format!("{lat} {finding}");

        let stated = stated_count(rng, zones.len(), contradiction_rate);
        let cw = count_word(stated);
        let count = match weighted(rng, &[0.6, 0.15, 0.15, 0.1]) {
            0 => format!(
                "{cw} {}",
                noun(rng, stated, "infected area", "infected areas", 0.1)
            ),
            1 => format!(
                "{cw} infected {}",
                noun(rng, stated, "region", "regions", 0.1)
            ),
            2 => format!("{cw} {}", noun(rng, stated, "lesion", "lesions", 0.1)),
            _ => format!(
                "{cw} {} of infection",
                noun(rng, stated, "area", "areas", 0.1)
            ),
        };

        let mut order: Vec<LungZone> = zones.to_vec();
        if chance(rng, 0.3) {
            order.reverse();
        }
        let style = weighted(rng, &[0.5, 0.15, 0.15, 0.1, 0.1]);
        let mut uniform = true;
        let phrases: Vec<String> = order
            .iter()
            .map(|z| {
                let st = if chance(rng, 0.15) {
                    below(rng, 5)
                } else {
                    style
                };
                uniform &= st == style;
                let (r, sd) = (z.row_word(), z.side_word());
                match st {
                    0 => format!("{r} {sd} lung"),
                    1 => format!("{sd} {r} lung"),
                    2 => format!("{r} {sd}"),
                    3 => format!("{r} zone of the {sd} lung"),
                    _ => format!("{sd} lung {r} zone"),
                }
            })
            .collect();
        let mut loc = join_list(rng, &phrases);
        if style == 2 && uniform && chance(rng, 0.5) {
            loc.push_str(if zones.len() > 1 { " lungs" } else { " lung" });
        }
        let body = match weighted(rng, &[0.55, 0.1, 0.15, 0.1, 0.1]) {
            0 => format!("{head}, {count}, {loc}."),
            1 => format!("{head}: {count}, {loc}."),
            2 => format!("{head} with {count} in the {loc}."),
            3 => format!("{}, {loc}. {head}.", capitalise_first(&count)),
            _ => format!("{head}, {count} ({loc})."),
        };
        if ct && chance(rng, 0.1) {
            format!(
                "{} {body}",
                pick(rng, &["CT:", "Axial slice:", "Chest CT -"])
            )
        } else {
            body
        }
    };
    maybe_extra(rng, &mut s, 0.2, extras);
    roughen(rng, &s)
}

/// One polyp as the report describes it.
#[derive(Debug, Clone)]
pub(crate) struct PolypDesc {
    /// "small", "medium" or "large".
    pub size: &'static str,
    /// "round", "oval" or "irregular".
    pub shape: &'static str,
    /// Canonical zone name, e.g. "upper left" or "center".
    pub zone: String,
}

fn size_word(rng: &mut impl Rng, size: &'static str) -> &'static str {
    match (size, chance(rng, 0.3)) {
        ("medium", true) => "medium-sized",
        ("small", true) => "little",
        (s, _) => s,
    }
}

fn shape_phrase(rng: &mut impl Rng, shape: &'static str) -> String {
    match weighted(rng, &[0.5, 0.3, 0.2]) {
        0 => format!("{shape} shaped"),
        1 => shape.to_string(),
        _ => format!("{shape}-shaped"),
    }
}

fn endo_zone(rng: &mut impl Rng, zone: &str) -> String {
    match weighted(rng, &[0.5, 0.2, 0.15, 0.15]) {
        0 => zone.to_string(),
        1 => format!("the {zone}"),
        2 => format!("the {zone} region"),
        _ => format!("the {zone} area"),
    }
}

const ENDO_EXTRAS: [&str; 5] = [
    "sessile",
    "with a smooth surface",
    "mucosa otherwise normal",
    "good bowel preparation",
    "surface slightly lobulated",
];

/// A Kvasir-style polyp description.
pub(crate) fn polyp_report(
    rng: &mut impl Rng,
    polyps: &[PolypDesc],
    contradiction_rate: f32,
) -> String {
    let mut s = if polyps.is_empty() {
        pick(
            rng,
            &[
                "no polyp",
                "No polyps seen",
                "no polyp detected, normal mucosa",
                "No polyp, zero lesions",
            ],
        )
        .to_string()
    } else {
        let stated = stated_count(rng, polyps.len(), contradiction_rate);
        let cw = count_word(stated);
        let poly = noun(rng, stated, "polyp", "polyps", 0.08);
        if polyps.len() == 1 {
            let p = &polyps[0];
            let (sz, sh, z) = (
                size_word(rng, p.size),
                shape_phrase(rng, p.shape),
                p.zone.as_str(),
            );
            match weighted(rng, &[0.4, 0.2, 0.15, 0.1, 0.15]) {
                0 => format!("{cw} {sz} {poly}, located at {z}, {sh}"),
                1 => format!("{cw} {sz} {} {poly} in {}", p.shape, endo_zone(rng, z)),
                2 => format!("{cw} {sz} {poly} at {}, {sh}", endo_zone(rng, z)),
                3 => format!("{poly}: {cw}, {sz}, {sh}, {z}"),
                _ => format!(
                    "{cw} {poly}, {sz} and {sh}, located in {}",
                    endo_zone(rng, z)
                ),
            }
        } else {
            let sizes: Vec<String> = polyps
                .iter()
                .map(|p| size_word(rng, p.size).to_string())
                .collect();
            let zones: Vec<String> = polyps.iter().map(|p| p.zone.clone()).collect();
            match weighted(rng, &[0.45, 0.3, 0.25]) {
                0 => format!(
                    "{cw} {poly}, {}, in the {}",
                    join_list(rng, &sizes),
                    join_list(rng, &zones)
                ),
                1 => {
                    let shapes: Vec<String> = polyps.iter().map(|p| p.shape.to_string()).collect();
                    format!(
                        "{cw} {poly} located at {}, {}, {} shaped",
                        join_list(rng, &zones),
                        join_list(rng, &sizes),
                        join_list(rng, &shapes)
                    )
                }
                _ => {
                    let each: Vec<String> = polyps
                        .iter()
                        .zip(&sizes)
                        .map(|(p, sz)| format!("{sz} {} at {}", p.shape, endo_zone(rng, &p.zone)))
                        .collect();
                    format!("{cw} {poly}: {}", each.join("; "))
                }
            }
        }
    };
    if chance(rng, 0.15) {
        let e = ENDO_EXTRAS[below(rng, ENDO_EXTRAS.len())];
        s = format!("{s}, {e}");
    }
    if chance(rng, 0.35) {
        s.push('.');
    }
    if chance(rng, 0.3) {
        s = capitalise_first(&s);
    }
    roughen(rng, &s)
}

fn dens(rng: &mut impl Rng, d: &'static str) -> &'static str {
    match (d, chance(rng, 0.3)) {
        ("high", true) => "very high",
        ("moderate", true) => "medium",
        (d, _) => d,
    }
}

const HISTO_EXTRAS: [&str; 4] = [
    "H&E stain",
    "Tissue appears well preserved",
    "Stroma is eosinophilic",
    "Mild staining variation",
];

/// A MoNuSeg-style density statement naming the regions whose nuclei are the targets;
/// `empty` names a region said (truly) to hold no nuclei when there is no target.
pub(crate) fn nuclei_report(
    rng: &mut impl Rng,
    regions: &[(String, &'static str)],
    empty: Option<&str>,
) -> String {
    let mut s = match (regions, empty) {
        ([], z) => {
            let z = z.unwrap_or("center");
            match below(rng, 3) {
                0 => format!("No nuclei in the {z}."),
                1 => format!("No nuclei are seen in the {z} region."),
                _ => format!("No nuclei, the {z} is stroma only."),
            }
        }
        ([(z, d)], _) => {
            let d = dens(rng, d);
            match weighted(rng, &[0.45, 0.15, 0.15, 0.1, 0.15]) {
                0 => format!("The nuclei density in the {z} is {d}."),
                1 => format!("Nuclei density in the {z} is {d}."),
                2 => format!("{} nuclei density in the {z}.", capitalise_first(d)),
                3 => format!("The {z} region shows {d} nuclear density."),
                _ => format!("In the {z}, the density of nuclei is {d}."),
            }
        }
        (many, _) => {
            let zones: Vec<String> = many.iter().map(|r| r.0.clone()).collect();
            let same = many.iter().all(|r| r.1 == many[0].1);
            if same && chance(rng, 0.7) {
                let d = dens(rng, many[0].1);
                format!(
                    "The nuclei density in the {} is {d}.",
                    join_list(rng, &zones)
                )
            } else {
                let parts: Vec<String> = many
                    .iter()
                    .enumerate()
                    .map(|(i, (z, d))| {
                        let d = dens(rng, d);
                        if i == 0 {
                            format!("The nuclei density in the {z} is {d}")
                        } else {
                            format!("in the {z} it is {d}")
                        }
                    })
                    .collect();
                format!("{}.", parts.join(", and "))
            }
        }
    };
    maybe_extra(rng, &mut s, 0.15, &HISTO_EXTRAS);
    roughen(rng, &s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::random::sample_rng;
    use crate::Modality;

    #[test]
    fn lung_reports_look_like_qata() {
        let mut rng = sample_rng(0, Modality::Xray, 0);
        let zones = [
            LungZone { row: 0, left: true },
            LungZone {
                row: 2,
                left: false,
            },
        ];
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let r = lung_report(&mut rng, &zones, false, 0.0);
            let l = r.to_ascii_lowercase();
            assert!(
                l.contains("upper")
                    && l.contains("left")
                    && l.contains("lower")
                    && l.contains("right"),
                "{r}"
            );
            assert!(l.contains("two"), "{r}");
            seen.insert(r);
        }
        assert!(seen.len() > 60, "only {} distinct reports", seen.len());
        let empty = lung_report(&mut rng, &[], true, 0.5);
        assert!(empty.to_ascii_lowercase().starts_with("no"), "{empty}");
    }
}
