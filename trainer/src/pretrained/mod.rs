//! The image encoder initialised from pretrained ConvNeXt weights (`model.image_weights`), as
//! the paper setting fine-tunes an ImageNet ConvNeXt-T: a safetensors or PyTorch (`.pth`,
//! `.bin`) file in the layout of timm, Hugging Face transformers, torchvision, the original
//! ConvNeXt code or a tmca checkpoint. Every encoder parameter must be found with its shape
//! and every block of the file must have a place in the model (only classifier heads and final
//! norms are left out), else nothing is loaded and the error lists what does not fit. A 3-channel
//! stem goes into a 1-channel model summed over its input channels (timm's convention); a
//! 1-channel stem into a 3-channel model is split evenly; an MLP stored as 1×1 convolutions
//! (timm's `conv_mlp` variants) is read as the linear layers it is.

mod layout;
#[cfg(test)]
mod tests;

pub use layout::{detect, BlockLayer, Layout, Part};

use crate::model::ModelConfig;
use crate::params::ParamStore;
use crate::{Result, TrainError};
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// What [`load_image_encoder`] loaded.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The file read (a folder's weight file when a folder was given).
    pub file: PathBuf,
    pub layout: Layout,
    /// The key prefix of the encoder in the file (e.g. `convnext.`; often empty).
    pub prefix: String,
    /// Tensors assigned.
    pub tensors: usize,
    /// Keys under the prefix left out on purpose (classifier head, final norm).
    pub ignored: usize,
}

const PREFIX: &str = "image_encoder.";

/// The weight file of `path`: itself, or a folder's `model.safetensors` (Hugging Face),
/// `weights.safetensors` (a tmca checkpoint) or `pytorch_model.bin`.
pub fn weight_file(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        if !path.exists() {
            return Err(TrainError::file(path, "model.image_weights: no such file"));
        }
        return Ok(path.to_path_buf());
    }
    ["model.safetensors", "weights.safetensors", "pytorch_model.bin"]
        .iter()
        .map(|f| path.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            TrainError::file(
                path,
                "model.image_weights: a folder without model.safetensors, weights.safetensors or pytorch_model.bin",
            )
        })
}

/// Reads every tensor of a safetensors or PyTorch pickle file onto the CPU.
pub fn read_tensors(file: &Path) -> Result<HashMap<String, Tensor>> {
    let bad = |e: candle_core::Error| TrainError::file(file, format!("cannot read weights: {e}"));
    if file.extension().is_some_and(|e| e == "safetensors") {
        return candle_core::safetensors::load(file, &Device::Cpu).map_err(bad);
    }
    // A state dict, or a training checkpoint holding one under a common key.
    let mut last = None;
    for key in [
        Some("model"),
        Some("state_dict"),
        Some("model_state_dict"),
        None,
    ] {
        match candle_core::pickle::PthTensors::new(file, key) {
            Ok(pth) if !pth.tensor_infos().is_empty() => {
                let mut out = HashMap::new();
                for name in pth.tensor_infos().keys() {
                    if let Some(t) = pth.get(name).map_err(bad)? {
                        out.insert(name.clone(), t);
                    }
                }
                return Ok(out);
            }
            Ok(_) => {}
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => bad(e),
        None => TrainError::file(file, "holds no tensors"),
    })
}

/// Overwrites the image encoder's parameters in `params` with the ConvNeXt weights at `path`
/// (a file or a folder, see [`weight_file`]). Nothing is assigned unless everything fits.
pub fn load_image_encoder(path: &Path, params: &ParamStore, cfg: &ModelConfig) -> Result<Loaded> {
    let file = weight_file(path)?;
    let tensors = read_tensors(&file)?;
    let (layout, prefix) =
        detect(tensors.keys().map(String::as_str)).map_err(|m| TrainError::file(&file, m))?;
    let mut used = BTreeSet::new();
    let mut missing = vec![];
    let mut misfits = vec![];
    let mut assign = vec![];
    for (name, var) in params.vars() {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some((part, leaf)) = Part::parse(rest) else {
            missing.push(format!("{name} (no counterpart in any layout)"));
            continue;
        };
        let key = format!("{prefix}{}", layout.key(part, leaf));
        let Some(t) = tensors.get(&key) else {
            missing.push(key);
            continue;
        };
        used.insert(key.clone());
        match adapt(t, part, leaf, var.dims()) {
            Ok(t) => assign.push((var, t)),
            Err(got) => misfits.push(format!(
                "{key} is {got:?}, the model's {name} {:?}",
                var.dims()
            )),
        }
    }
    let ignored = |k: &str| layout.ignored().iter().any(|i| k.starts_with(i));
    let under: Vec<&String> = tensors.keys().filter(|k| k.starts_with(&prefix)).collect();
    let mut unused: Vec<&str> = under
        .iter()
        .filter(|k| !used.contains(k.as_str()) && !ignored(&k[prefix.len()..]))
        .map(|k| k.as_str())
        .collect();
    unused.sort_unstable();
    if !(missing.is_empty() && misfits.is_empty() && unused.is_empty()) {
        let list = |what: &str, v: &[String]| {
            (!v.is_empty()).then(|| {
                let more = if v.len() > 4 {
                    format!(", … ({} in all)", v.len())
                } else {
                    String::new()
                };
                format!("{what}: {}{more}", v[..v.len().min(4)].join("; "))
            })
        };
        let unused: Vec<String> = unused.iter().map(|s| s.to_string()).collect();
        let parts: Vec<String> = [
            list("missing from the file", &missing),
            list("other shapes", &misfits),
            list("no place in the model", &unused),
        ]
        .into_iter()
        .flatten()
        .collect();
        return Err(TrainError::file(
            &file,
            format!(
                "the {} ConvNeXt in this file does not fit the image encoder (model.dims = {:?}, model.depths = {:?}, model.kernel_size = {}; ConvNeXt-T is preset = \"tiny\"): {}",
                layout.name(),
                cfg.dims,
                cfg.depths,
                cfg.kernel_size,
                parts.join(" | ")
            ),
        ));
    }
    let n = assign.len();
    for (var, t) in assign {
        var.set(&t.to_device(var.device())?)?;
    }
    Ok(Loaded {
        file,
        layout,
        prefix: prefix.clone(),
        tensors: n,
        ignored: under.len() - used.len(),
    })
}

/// `t` as the f32 tensor of shape `want`, or the file's shape when it cannot be.
fn adapt(
    t: &Tensor,
    part: Part,
    leaf: &str,
    want: &[usize],
) -> std::result::Result<Tensor, Vec<usize>> {
    let got = t.dims().to_vec();
    let t = t.to_dtype(DType::F32).map_err(|_| got.clone())?;
    if got == want {
        return Ok(t);
    }
    let scale = matches!(
        part,
        Part::Block {
            layer: BlockLayer::Scale,
            ..
        }
    );
    if scale && t.elem_count() == want.iter().product::<usize>() && want.len() == 1 {
        return t.reshape(want).map_err(|_| got);
    }
    // timm's `conv_mlp` variants hold the MLP as 1×1 convolutions: (Cout, Cin, 1, 1).
    let mlp = matches!(
        part,
        Part::Block {
            layer: BlockLayer::Fc1 | BlockLayer::Fc2,
            ..
        }
    );
    if mlp && got.len() == 4 && got[2..] == [1, 1] && got[..2] == *want {
        return t.reshape(want).map_err(|_| got);
    }
    // The stem of a 3-channel ConvNeXt in a 1-channel model and the reverse.
    if part == Part::StemConv && leaf == "weight" && got.len() == 4 && want.len() == 4 {
        let same_else = got[0] == want[0] && got[2..] == want[2..];
        let r = match (got[1], want[1]) {
            (c, 1) if same_else && c > 1 => t.sum_keepdim(1),
            (1, c) if same_else && c > 1 => t.repeat((1, c, 1, 1)).and_then(|r| r / c as f64),
            _ => return Err(got),
        };
        return r.map_err(|_| got);
    }
    Err(got)
}
