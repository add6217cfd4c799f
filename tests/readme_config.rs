//! The README's Configuration table against the config itself: every field has a row, and the
//! default a row states is the value a config that leaves the field out gets.

use std::collections::BTreeMap;
use std::path::Path;
use tmca_trainer::config::Config;

/// Only what a config must set, with its stores given or generated.
const MINIMAL: [&str; 2] = [
    "[run]\ndir = \"runs/x\"\n[data]\nimage_size = 64\nbatch_size = 4\nstores = [\"a.zarr\"]\n",
    "[run]\ndir = \"runs/x\"\n[data]\nimage_size = 64\nbatch_size = 4\n[data.synth]\ndir = \"ds\"\n",
];

/// What a config must set (the README says "required").
const REQUIRED: [&str; 5] = [
    "run.dir",
    "data.image_size",
    "data.batch_size",
    "data.stores",
    "data.synth.dir",
];

/// The Configuration table: each field named in a row's first cell (with `a.{b,c}` expanded)
/// mapped to the row's default cell.
fn table() -> BTreeMap<String, String> {
    let readme = include_str!("../README.md");
    let start = readme
        .find("| field | default | meaning |")
        .expect("the README's Configuration table");
    let mut rows = BTreeMap::new();
    for line in readme[start..].lines().skip(2) {
        let Some(line) = line.strip_prefix("| ") else {
            break;
        };
        let cells: Vec<&str> = line.split(" | ").collect();
        assert!(cells.len() >= 3, "a row without three cells: {line}");
        for name in cells[0].split('`').skip(1).step_by(2) {
            for field in expand(name) {
                let before = rows.insert(field.clone(), cells[1].to_string());
                assert!(before.is_none(), "{field} has two rows");
            }
        }
    }
    rows
}

/// `data.augment.{flip,rotate}` → `data.augment.flip`, `data.augment.rotate`.
fn expand(name: &str) -> Vec<String> {
    match name.split_once(".{") {
        Some((prefix, rest)) => rest
            .trim_end_matches('}')
            .split(',')
            .map(|s| format!("{prefix}.{s}"))
            .collect(),
        None => vec![name.to_string()],
    }
}

/// The value `` `short = value` `` in a default cell states, parsed as TOML.
fn stated(cell: &str, short: &str) -> Option<toml::Value> {
    let text = cell
        .split('`')
        .skip(1)
        .step_by(2)
        .find_map(|s| s.strip_prefix(&format!("{short} = ")))?;
    let doc: toml::Table = toml::from_str(&format!("v = {text}")).ok()?;
    doc.get("v").cloned()
}

/// TOML values equal, numbers compared as numbers (`2e-3` states `0.002`).
fn same(a: &toml::Value, b: &toml::Value) -> bool {
    use toml::Value::{Array, Float, Integer};
    match (a, b) {
        (Float(x), Float(y)) => (x - y).abs() <= 1e-12 * x.abs().max(1.0),
        (Integer(x), Float(y)) | (Float(y), Integer(x)) => (*x as f64 - y).abs() < 1e-12,
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        _ => a == b,
    }
}

#[test]
fn every_field_has_a_row_with_its_default() {
    let rows = table();
    let mut wrong = vec![];
    for text in MINIMAL {
        let cfg = Config::from_toml(text, Path::new("minimal.toml")).unwrap();
        for (field, value) in cfg.fields() {
            let Some(cell) = rows.get(&field) else {
                wrong.push(format!("{field}: no row (default {value})"));
                continue;
            };
            let short = field.rsplit('.').next().unwrap();
            if REQUIRED.contains(&field.as_str()) {
                if !cell.contains(&format!("`{short}` required")) && cell != "required" {
                    wrong.push(format!("{field}: required, but its row says {cell:?}"));
                }
                continue;
            }
            match stated(cell, short) {
                Some(v) if same(&v, &value) => {}
                Some(v) => wrong.push(format!(
                    "{field}: the README says {v}, the default is {value}"
                )),
                None => wrong.push(format!(
                    "{field}: its row states no `{short} = ...` ({cell:?}); the default is {value}"
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "README Configuration table:\n{}",
        wrong.join("\n")
    );
}

/// The table names no field the config does not have: each row's fields are accepted (as
/// unknown ones are not).
#[test]
fn every_row_names_a_field() {
    let base = Config::from_toml(MINIMAL[0], Path::new("minimal.toml")).unwrap();
    let known = base.fields();
    for field in table().keys() {
        if known.contains_key(field) {
            continue;
        }
        // Fields a minimal config leaves out of its resolved form (unset options, the synth
        // section): setting one to an absurd value must fail naming it, not as unknown.
        let (section, key) = field.rsplit_once('.').unwrap();
        let text = format!(
            "{}[{section}]\n{key} = \"?\"\n",
            MINIMAL[1].replace("[data.synth]\ndir = \"ds\"\n", "")
        );
        let err = match Config::from_toml(&text, Path::new("t.toml")) {
            Ok(_) => continue,
            Err(e) => e.to_string(),
        };
        assert!(
            !err.contains("unknown field"),
            "{field} is no config field: {err}"
        );
    }
}
