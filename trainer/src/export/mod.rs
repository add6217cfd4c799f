//! `tmca export`: a trained run as a self-contained PyTorch folder, for prediction and analysis
//! in Python without tmca: the PyTorch mirror of the model (`tmca_torch.py`, the file the parity
//! suite checks tmca against), every weight it needs in one `weights.safetensors` (a frozen
//! pretrained BERT included), the tokenizer, `model.json` (architecture, input geometry and
//! normalisation, threshold) and `tmca_predict.py` (tmca's preprocessing, a `Predictor` class and
//! a command line).

use crate::checkpoint::Checkpointer;
use crate::inference::{Ensemble, Trained};
use crate::model::text_encoder::TextEncoder;
use crate::params::ParamStore;
use crate::train::setup;
use crate::{Result, TrainError};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The PyTorch mirror of the model (parameter names equal tmca's checkpoint keys).
pub const MIRROR: &str = include_str!("../../../tests/reference/tmca_ref.py");
/// Preprocessing, the `Predictor` class and the command line of an export.
pub const PREDICTOR: &str = include_str!("tmca_predict.py");
/// The export's own README.
pub const README: &str = include_str!("README.md");

/// What [`export_torch`] wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub dir: PathBuf,
    /// Weight tensors written (of which from a frozen pretrained BERT).
    pub tensors: usize,
    pub bert_tensors: usize,
}

/// Every tensor the model needs: the checkpoint's weights, plus a frozen pretrained BERT's
/// (which checkpoints leave out) under `text.`, exactly the names the encoder uses.
pub fn model_tensors(trained: &Trained) -> Result<(HashMap<String, Tensor>, usize)> {
    let cpu = Device::Cpu;
    let cfg = &trained.cfg;
    let mut weights =
        Checkpointer::load(&trained.checkpoint, &cpu)?.model_weights(cfg.optim.ema > 0.0);
    let mut from_bert = 0;
    if setup::uses_pretrained_bert(cfg) && cfg.text.freeze {
        let bert_cfg = setup::bert_config(cfg, trained.tokenizer.vocab_size())?;
        let (path, bert) = setup::bert_tensors(cfg, &cpu)?;
        // The encoder's names and shapes, from a throwaway instance.
        let names = ParamStore::new(0);
        TextEncoder::new(&bert_cfg, names.var_builder(&cpu))?;
        for (name, var) in names.vars() {
            let t = bert.get(&name).ok_or_else(|| {
                TrainError::file(
                    &path,
                    format!("no tensor for {name} (the BERT config needs it)"),
                )
            })?;
            if t.dims() != var.dims() {
                return Err(TrainError::file(
                    &path,
                    format!(
                        "{name} has shape {:?}, the BERT config needs {:?}",
                        t.dims(),
                        var.dims()
                    ),
                ));
            }
            weights.insert(format!("text.{name}"), t.to_dtype(DType::F32)?);
            from_bert += 1;
        }
    }
    Ok((weights, from_bert))
}

/// The `model.json` of an export.
fn metadata(trained: &Trained) -> Result<serde_json::Value> {
    let cfg = &trained.cfg;
    let mut model = serde_json::to_value(&cfg.model).map_err(|e| TrainError::Config {
        field: "model".into(),
        message: e.to_string(),
    })?;
    if let Some(m) = model.as_object_mut() {
        // Initial values of training, not architecture.
        m.remove("image_weights");
    }
    let bert = setup::bert_config(cfg, trained.tokenizer.vocab_size())?;
    let spec = trained.input_spec();
    Ok(serde_json::json!({
        "format": "tmca-torch-export",
        "version": 1,
        "tmca_version": env!("CARGO_PKG_VERSION"),
        "checkpoint": std::fs::canonicalize(&trained.checkpoint)
            .unwrap_or_else(|_| trained.checkpoint.clone())
            .display()
            .to_string(),
        "step": trained.step,
        "seed": cfg.run.seed,
        "trained_on": trained.trained_on,
        "exported_by": crate::provenance::Provenance::now(&trained.device, 1),
        "model": model,
        "bert": bert,
        "input": {
            "channels": spec.channels,
            "stored_channels": trained.prepared_channels(),
            "bit_depth": trained.imported_bit_depth(),
            "height": spec.height,
            "width": spec.width,
            "mean": short(&spec.mean),
            "std": short(&spec.std),
        },
        "max_len": trained.tokenizer.max_len(),
        "pad_id": trained.tokenizer.pad_id(),
        "threshold": short(&[cfg.train.threshold])[0],
    }))
}

/// f32 settings as the decimals they were written as (`0.3`, not `0.30000001192092896`).
fn short(values: &[f32]) -> Vec<f64> {
    values
        .iter()
        .map(|v| v.to_string().parse().unwrap_or(f64::from(*v)))
        .collect()
}

/// Writes one model's files into `dir`: `weights.safetensors`, `tokenizer.json`, `model.json`.
/// Returns the tensors written and how many came from a frozen BERT.
fn write_model(trained: &Trained, dir: &Path) -> Result<(usize, usize)> {
    let (weights, bert_tensors) = model_tensors(trained)?;
    let mut meta = metadata(trained)?;
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let wp = dir.join("weights.safetensors");
    candle_core::safetensors::save(&weights, &wp)
        .map_err(|e| TrainError::file(&wp, e.to_string()))?;
    meta["weights_sha256"] = crate::checkpoint::sha256_file(&wp)?.into();
    trained.tokenizer.save(&dir.join("tokenizer.json"))?;
    let mp = dir.join("model.json");
    let meta =
        serde_json::to_string_pretty(&meta).map_err(|e| TrainError::file(&mp, e.to_string()))?;
    std::fs::write(&mp, format!("{meta}\n")).map_err(|e| TrainError::io(&mp, e))?;
    crate::checkpoint::same_permissions(&wp, &mp)?;
    Ok((weights.len(), bert_tensors))
}

/// Writes the export of `models` to `out` (a new or empty folder), completely or not at all:
/// the files are written to a temporary folder beside it, which is renamed at the end. One
/// run writes a plain export; several, their ensemble (the mean probability, as `tmca predict
/// RUN RUN…`): each member's files in `member-K/`, and a top-level `model.json` listing them
/// (`ensemble`) with the first member's threshold and input.
pub fn export_torch(models: &Ensemble, out: &Path) -> Result<Exported> {
    let members = models.members();
    let first = models.first();
    if out.exists() && !out.is_dir() {
        return Err(TrainError::config(
            "--output",
            format!(
                "{} is a file, not a folder; choose a new folder (nothing was written)",
                out.display()
            ),
        ));
    }
    if out.exists()
        && std::fs::read_dir(out)
            .map_err(|e| TrainError::io(out, e))?
            .next()
            .is_some()
    {
        return Err(TrainError::config(
            "--output",
            format!(
                "{} exists and is not empty; choose a new folder (nothing was written)",
                out.display()
            ),
        ));
    }
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    let tmp = out.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    let written = (|| {
        let (mut tensors, mut bert_tensors) = (0, 0);
        if members.len() == 1 {
            (tensors, bert_tensors) = write_model(first, &tmp)?;
        } else {
            let mut names = Vec::new();
            for (k, m) in members.iter().enumerate() {
                let member = format!("member-{k}");
                let (t, b) = write_model(m, &tmp.join(&member))?;
                (tensors, bert_tensors) = (tensors + t, bert_tensors + b);
                names.push(member);
            }
            let spec = first.input_spec();
            let meta = serde_json::json!({
                "format": "tmca-torch-export",
                "version": 1,
                "tmca_version": env!("CARGO_PKG_VERSION"),
                "ensemble": names,
                "checkpoints": members.iter().map(|m| m.checkpoint.display().to_string()).collect::<Vec<_>>(),
                "input": { "channels": spec.channels, "stored_channels": first.prepared_channels(),
                           "bit_depth": first.imported_bit_depth(),
                           "height": spec.height, "width": spec.width,
                           "mean": short(&spec.mean), "std": short(&spec.std) },
                "threshold": short(&[first.cfg.train.threshold])[0],
            });
            let mp = tmp.join("model.json");
            let text = serde_json::to_string_pretty(&meta)
                .map_err(|e| TrainError::file(&mp, e.to_string()))?;
            std::fs::write(&mp, format!("{text}\n")).map_err(|e| TrainError::io(&mp, e))?;
        }
        for (file, text) in [
            ("tmca_torch.py", MIRROR),
            ("tmca_predict.py", PREDICTOR),
            ("README.md", README),
        ] {
            let p = tmp.join(file);
            std::fs::write(&p, text).map_err(|e| TrainError::io(&p, e))?;
        }
        Ok((tensors, bert_tensors))
    })();
    let (tensors, bert_tensors) = match written {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if out.exists() {
        std::fs::remove_dir(out).map_err(|e| TrainError::io(out, e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| TrainError::io(out, e))?;
    Ok(Exported {
        dir: out.to_path_buf(),
        tensors,
        bert_tensors,
    })
}
