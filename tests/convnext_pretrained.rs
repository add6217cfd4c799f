//! Pretrained ConvNeXt weights (`model.image_weights`). One random ConvNeXt of Hugging Face
//! transformers, written by `tests/python/convnext_export.py` in the layouts of transformers
//! (safetensors and `pytorch_model.bin`), timm (f16), torchvision (`.pth`) and the original code
//! (`.pth` with a `model` key), loads into tmca's image encoder, whose stage outputs then equal
//! transformers' (also for a gray model, whose stem is the RGB one summed). Needs `python3` with
//! `torch`, `safetensors` and `transformers` (installed by `.ci/run`); TMCA_SKIP_PYTHON=1 skips
//! that test. Training starts from the weights and a resumed run does not read them again.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;
use tmca_trainer::config::Config;
use tmca_trainer::model::image_encoder::ImageEncoder;
use tmca_trainer::model::{ModelConfig, TextConfig};
use tmca_trainer::params::ParamStore;
use tmca_trainer::pretrained::{load_image_encoder, Layout};
use tmca_trainer::sync::SingleProcess;
use tmca_trainer::train::Resume;

mod common;

fn model_cfg(in_channels: usize) -> ModelConfig {
    let mut cfg = ModelConfig {
        preset: "cpu-tiny".into(),
        dims: vec![8, 16, 24, 32],
        depths: vec![1, 2, 1, 1],
        in_channels,
        ..Default::default()
    };
    cfg.resolve(&mut TextConfig::default()).unwrap();
    cfg
}

fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let s = b.abs().unwrap().max_all().unwrap();
    (d.to_scalar::<f32>().unwrap()) / s.to_scalar::<f32>().unwrap().max(1e-12)
}

fn encoder_params(store: &ParamStore) -> HashMap<String, Tensor> {
    store
        .vars()
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect()
}

/// Loads `path` into a fresh encoder and returns its stage outputs on `x`.
fn features(path: &Path, cfg: &ModelConfig, x: &Tensor) -> (Layout, Vec<Tensor>, ParamStore) {
    let store = ParamStore::new(7);
    ImageEncoder::new(cfg, store.var_builder(&Device::Cpu).pp("image_encoder")).unwrap();
    let loaded = load_image_encoder(path, &store, cfg).unwrap();
    assert_eq!(loaded.tensors, store.len(), "{}", path.display());
    let vb = candle_nn::VarBuilder::from_tensors(encoder_params(&store), DType::F32, &Device::Cpu);
    let enc = ImageEncoder::new(cfg, vb.pp("image_encoder")).unwrap();
    (loaded.layout, enc.forward(x).unwrap(), store)
}

#[test]
fn matches_hugging_face_convnext_in_every_layout() {
    if std::env::var_os("TMCA_SKIP_PYTHON").is_some() {
        eprintln!("TMCA_SKIP_PYTHON set: skipping the transformers ConvNeXt check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/convnext_export.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(dir.path())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{} failed (needs torch, safetensors, transformers):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let io =
        candle_core::safetensors::load(dir.path().join("io.safetensors"), &Device::Cpu).unwrap();
    let (rgb, gray) = (model_cfg(3), model_cfg(1));
    let (_, _, reference) = features(&dir.path().join("hf"), &rgb, &io["x"]);
    for (file, layout, exact) in [
        ("hf", Layout::HuggingFace, true),
        ("hf_bin", Layout::HuggingFace, true),
        ("torchvision.pth", Layout::Torchvision, true),
        ("original.pth", Layout::Original, true),
        ("timm.safetensors", Layout::Timm, false),
    ] {
        let (got, f, store) = features(&dir.path().join(file), &rgb, &io["x"]);
        assert_eq!(got, layout, "{file}");
        if exact {
            for (i, f) in f.iter().enumerate() {
                let d = rel_diff(f, &io[&format!("f{}", i + 1)]);
                assert!(
                    d < 1e-4,
                    "{file}: stage {} differs from transformers by {d}",
                    i + 1
                );
            }
        } else {
            // f16 in the file: the weights equal transformers' to f16 rounding.
            let (a, b) = (encoder_params(&store), encoder_params(&reference));
            for (name, t) in &a {
                let d = rel_diff(t, &b[name]);
                assert!(d < 1e-3, "{file}: {name} differs by {d}");
            }
        }
    }
    let (_, g, _) = features(&dir.path().join("original.pth"), &gray, &io["gray"]);
    for (i, g) in g.iter().enumerate() {
        let d = rel_diff(g, &io[&format!("g{}", i + 1)]);
        assert!(d < 1e-4, "gray model: stage {} differs by {d}", i + 1);
    }
}

/// The shared tiny run (`common::config_text`) with this test's encoder depths, the weights
/// to start from, `steps` optimiser steps and a learning rate too small to move them visibly.
fn config(run: &Path, data: &Path, weights: &Path, steps: u64) -> Config {
    let text = common::config_text(run, data, 4, 1)
        .replace(
            "preset = \"cpu-tiny\"\n",
            &format!(
                "preset = \"cpu-tiny\"\ndepths = [1, 2, 1, 1]\nimage_weights = \"{}\"\n",
                weights.display()
            ),
        )
        .replace("warmup_steps = 1", "warmup_steps = 0\nlr = 1e-7")
        .replace("[train]\n", &format!("[train]\nmax_steps = {steps}\n"));
    let cfg = Config::from_toml(&text, Path::new("pretrained.toml")).unwrap();
    assert_eq!(cfg.model.image_weights.as_deref(), Some(weights));
    cfg
}

fn run(cfg: &Config, resume: Resume) -> tmca_trainer::Result<tmca_trainer::train::TrainSummary> {
    common::train_cpu(cfg, &mut SingleProcess, resume)
}

#[test]
fn training_starts_from_the_weights_and_a_resumed_run_does_not_reread_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = model_cfg(3);
    let source = ParamStore::new(99);
    ImageEncoder::new(&cfg, source.var_builder(&Device::Cpu).pp("image_encoder")).unwrap();
    // A timm-layout file with a classifier head.
    let mut file: HashMap<String, Tensor> = HashMap::new();
    for (k, t) in encoder_params(&source) {
        let k = k.strip_prefix("image_encoder.").unwrap();
        let k = match k.split('.').collect::<Vec<_>>().as_slice() {
            ["stem", "conv", leaf] => format!("stem.0.{leaf}"),
            ["stem", "norm", leaf] => format!("stem.1.{leaf}"),
            ["downsample", i, "norm", leaf] => format!(
                "stages.{}.downsample.0.{leaf}",
                i.parse::<usize>().unwrap() + 1
            ),
            ["downsample", i, "conv", leaf] => format!(
                "stages.{}.downsample.1.{leaf}",
                i.parse::<usize>().unwrap() + 1
            ),
            ["stages", i, j, "gamma"] => format!("stages.{i}.blocks.{j}.gamma"),
            ["stages", i, j, layer, leaf] => {
                let l = match *layer {
                    "dwconv" => "conv_dw",
                    "norm" => "norm",
                    "pwconv1" => "mlp.fc1",
                    "pwconv2" => "mlp.fc2",
                    other => panic!("{other}"),
                };
                format!("stages.{i}.blocks.{j}.{l}.{leaf}")
            }
            other => panic!("{other:?}"),
        };
        file.insert(k, t);
    }
    file.insert(
        "head.fc.weight".into(),
        Tensor::zeros((3, 32), DType::F32, &Device::Cpu).unwrap(),
    );
    let weights = dir.path().join("convnext.safetensors");
    candle_core::safetensors::save(&file, &weights).unwrap();

    let (run_dir, data) = (dir.path().join("run"), dir.path().join("data"));
    let first = run(&config(&run_dir, &data, &weights, 2), Resume::No).unwrap();
    let saved = candle_core::safetensors::load(
        first.last_checkpoint.unwrap().join("weights.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for (name, t) in encoder_params(&source) {
        // Two AdamW steps of lr 1e-7 move a weight by at most ~2e-7.
        let d = common::max_abs_diff(&saved[&name], &t);
        assert!(d < 1e-5, "{name} did not start from the file ({d})");
    }
    std::fs::remove_file(&weights).unwrap();
    let resumed = run(&config(&run_dir, &data, &weights, 3), Resume::Latest).unwrap();
    assert_eq!(resumed.steps, 3);
    let err = run(
        &config(&dir.path().join("fresh"), &data, &weights, 1),
        Resume::No,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("convnext.safetensors") && err.contains("no such file"),
        "{err}"
    );
}
