//! Everything before the first step: datasets (generated if configured), tokenizer, model
//! (scratch or pretrained BERT text encoder, pretrained image encoder) and its parameters.

use crate::config::Config;
use crate::model::{BertConfig, Tmca};
use crate::params::ParamStore;
use crate::{Result, TrainError};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tmca_data::store::Store;
use tmca_data::synth::{self, SynthConfig};
use tmca_data::tokenize::TextTokenizer;
use tmca_data::{Progress, Split};

/// The stores of a run: `[data] stores`, or the synthetic ones (generated when missing).
pub fn open_stores(cfg: &Config, progress: &dyn Progress) -> Result<Vec<Arc<Store>>> {
    let mut paths: Vec<PathBuf> = cfg.data.stores.clone();
    if let Some(s) = &cfg.data.synth {
        for m in cfg.synth_modalities() {
            let mut sc = SynthConfig::new(m);
            (
                sc.height, sc.width, sc.n_train, sc.n_val, sc.n_test, sc.seed,
            ) = (s.size, s.size, s.train, s.val, s.test, s.seed);
            let path = s.dir.join(synth::dataset_name(m));
            if synth::ensure_store(&sc, &path, progress)? {
                tracing::info!("generated {}", path.display());
            }
            paths.push(path);
        }
    }
    paths
        .iter()
        .map(|p| Ok(Arc::new(Store::open(p)?)))
        .collect()
}

/// The dataset names of the run's stores without opening the synthetic ones (which may not be
/// generated yet): `synth-<modality>`, and each of `data.stores` by its metadata (its file
/// stem when it cannot be opened).
pub fn store_names(cfg: &Config) -> Vec<String> {
    let stem = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned());
    let given = cfg.data.stores.iter().filter_map(|p| match Store::open(p) {
        Ok(s) => Some(s.info().name.clone()),
        Err(_) => stem(p),
    });
    let synth = cfg
        .data
        .synth
        .as_ref()
        .map(|_| cfg.synth_modalities())
        .unwrap_or_default()
        .into_iter()
        .map(|m| synth::dataset_name(m).to_string());
    given.chain(synth).collect()
}

/// Warns for each store whose images are not at the model's input size: images and masks are
/// resampled to it (masks by nearest neighbour), so `scored` (the metrics, HD95 and ASSD in
/// pixels) are of the resampled masks, not the stored ones.
pub fn warn_resampled(stores: &[Arc<Store>], input: &tmca_data::augment::InputSpec, scored: &str) {
    for s in stores {
        let i = s.info();
        let (h, w) = (input.height, input.width);
        if (i.height, i.width) != (h, w) {
            tracing::warn!(
                "{}: stored at {}×{}, the model reads {h}×{w}: images and masks are resampled (masks by nearest neighbour) and {scored} are of {h}×{w} masks, not the stored ones",
                i.name,
                i.height,
                i.width
            );
        }
    }
}

/// Warns when training reports have more than `text.max_len` tokens: the model sees only
/// their beginning, and a target named after it is one it is never told about.
pub fn warn_truncated_reports(
    cfg: &Config,
    stores: &[Arc<Store>],
    tokenizer: &TextTokenizer,
) -> Result<()> {
    let max_len = tokenizer.max_len();
    for s in stores {
        let idx = tmca_data::folds::samples(s, Split::Train, cfg.data.cv().as_ref())?;
        let (mut cut, mut longest) = (0usize, 0usize);
        for &i in &idx {
            let n = tokenizer.token_count(&s.reports()[i])?;
            cut += usize::from(n > max_len);
            longest = longest.max(n);
        }
        if cut > 0 {
            tracing::warn!(
                "{}: {cut} of {} training reports ({:.1}%) have more than text.max_len = {max_len} tokens (the longest {longest}): the model reads only their first {max_len}; a larger text.max_len keeps them whole",
                s.info().name,
                idx.len(),
                100.0 * cut as f64 / idx.len() as f64
            );
        }
    }
    Ok(())
}

/// The run's tokenizer. Ranks other than 0 read the one rank 0 saved. Rank 0 reuses the run
/// directory's when `resuming` (a resume of a run with checkpoints), else takes the run of
/// `resume_from` (a checkpoint `<run>/checkpoints/<name>` of another run directory: its text
/// encoder was trained with that run's vocabulary), else loaded from `[text]`, else learned
/// from the training reports; saved as `<run>/tokenizer.json`.
pub fn tokenizer(
    cfg: &Config,
    stores: &[Arc<Store>],
    resume_from: Option<&Path>,
    resuming: bool,
    rank0: bool,
) -> Result<Arc<TextTokenizer>> {
    let t = &cfg.text;
    let saved = cfg.run.dir.join("tokenizer.json");
    if !rank0 {
        if !saved.is_file() {
            // Rank 0 writes it before the others start; gone means rank 0 gave up meanwhile.
            return Err(TrainError::Collective(format!(
                "{} is missing: rank 0 writes it before the other ranks read it (its error says why it is gone)",
                saved.display()
            )));
        }
        return Ok(Arc::new(TextTokenizer::from_file(&saved, t.max_len, true)?));
    }
    // A checkpoint of this same run (anywhere under its checkpoints/, superseded ones too)
    // brings this run's own tokenizer.json.
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    let own = resume_from.is_some_and(|p| {
        matches!((canon(p), canon(&cfg.run.dir.join("checkpoints"))), (Some(p), Some(c)) if p.starts_with(&c))
    });
    let theirs = resume_from
        .filter(|_| !own)
        .and_then(|p| p.parent()?.parent().map(|run| run.join("tokenizer.json")))
        .filter(|p| p.is_file());
    // The run's own tokenizer.json counts only beside its checkpoints: one left by a run
    // without any (its checkpoints deleted to retrain) is made anew from this config.
    let keep = (resuming || own) && saved.is_file();
    if !keep && saved.is_file() {
        tracing::info!(
            "{}: left by a run without checkpoints; made anew from this config",
            saved.display()
        );
    }
    let tok = if keep {
        TextTokenizer::from_file(&saved, t.max_len, true)?
    } else if let Some(p) = theirs {
        tracing::info!("tokenizer of the checkpoint's run: {}", p.display());
        TextTokenizer::from_file(&p, t.max_len, true)?
    } else if t.encoder == "bert" {
        let dir = t.bert_dir.as_deref().unwrap_or(Path::new("."));
        let json = dir.join("tokenizer.json");
        let path = if json.is_file() {
            json
        } else {
            dir.join("vocab.txt")
        };
        TextTokenizer::from_file(&path, t.max_len, TextTokenizer::bert_lowercase(dir)?)?
    } else if let Some(p) = &t.tokenizer {
        TextTokenizer::from_file(p, t.max_len, true)?
    } else {
        // The training reports only: under cross-validation the fold's (the validation
        // fold's reports shape no vocabulary).
        let mut reports: Vec<String> = Vec::new();
        for s in stores {
            let idx = tmca_data::folds::samples(s, Split::Train, cfg.data.cv().as_ref())?;
            reports.extend(idx.into_iter().map(|i| s.reports()[i].clone()));
        }
        TextTokenizer::learn(&reports, t.vocab_size, t.max_len)?
    };
    std::fs::create_dir_all(&cfg.run.dir).map_err(|e| TrainError::io(&cfg.run.dir, e))?;
    if !keep {
        tok.save(&saved)?;
    }
    Ok(Arc::new(tok))
}

/// Every `optim.freeze` and `optim.lr_scale` prefix must name some parameter of the built
/// model.
pub fn check_prefixes(cfg: &Config, store: &ParamStore) -> Result<()> {
    let names: Vec<String> = store.vars().into_iter().map(|(n, _)| n).collect();
    let prefixes = (cfg.optim.freeze.iter().map(|p| ("optim.freeze", p)))
        .chain(cfg.optim.lr_scale.keys().map(|p| ("optim.lr_scale", p)));
    for (field, p) in prefixes {
        if !names.iter().any(|n| n.starts_with(p.as_str())) {
            let hint = if p.starts_with("text.") && cfg.text.encoder == "bert" && cfg.text.freeze {
                " (a pretrained BERT with text.freeze = true is frozen already and has no parameters)"
            } else {
                ""
            };
            return Err(TrainError::config(
                field,
                format!("'{p}' is the start of no parameter name{hint}; names are checkpoint keys such as image_encoder.stem.conv.weight or image_encoder.stages.0.0.dwconv.weight"),
            ));
        }
    }
    Ok(())
}

/// Overwrites the image encoder in `params` with `model.image_weights` when set (a fresh run);
/// `log` (rank 0) reports what was read and warns about a normalisation that does not suit
/// ImageNet weights.
pub fn pretrained_image_encoder(cfg: &Config, params: &ParamStore, log: bool) -> Result<()> {
    let Some(path) = &cfg.model.image_weights else {
        return Ok(());
    };
    let p = crate::pretrained::load_image_encoder(path, params, &cfg.model)?;
    if !log {
        return Ok(());
    }
    let prefix = if p.prefix.is_empty() {
        String::new()
    } else {
        format!(", prefix `{}`", p.prefix)
    };
    tracing::info!(
        "image encoder: {} tensors from {} ({} layout{prefix}; {} left out)",
        p.tensors,
        p.file.display(),
        p.layout.name(),
        p.ignored
    );
    let default_norm =
        cfg.data.mean.iter().all(|&m| m == 0.5) && cfg.data.std.iter().all(|&s| s == 0.25);
    if default_norm {
        tracing::warn!(
            "data.mean/data.std are tmca's defaults; ImageNet-pretrained ConvNeXts expect \
             mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225]"
        );
    }
    Ok(())
}

/// Whether the text encoder is a pretrained BERT read from `text.bert_dir`.
pub fn uses_pretrained_bert(cfg: &Config) -> bool {
    cfg.text.encoder == "bert" && cfg.model.text_guidance
}

/// The text encoder's configuration: `[text]`'s scratch encoder over `vocab_size` entries, or
/// the pretrained BERT's `config.json` (checked against the tokenizer and `text.max_len`).
pub fn bert_config(cfg: &Config, vocab_size: usize) -> Result<BertConfig> {
    if !uses_pretrained_bert(cfg) {
        return Ok(BertConfig::scratch(&cfg.text, vocab_size));
    }
    let dir = cfg.text.bert_dir.clone().unwrap_or_default();
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| TrainError::io(&cfg_path, e))?;
    let bert: BertConfig = serde_json::from_str(&text)
        .map_err(|e| TrainError::file(&cfg_path, format!("not a BERT config: {e}")))?;
    if bert.vocab_size != vocab_size {
        return Err(TrainError::config(
            "text.bert_dir",
            format!("tokenizer/encoder mismatch: the tokenizer has {vocab_size} entries, {} says vocab_size = {}", cfg_path.display(), bert.vocab_size),
        ));
    }
    if bert.max_position_embeddings < cfg.text.max_len {
        return Err(TrainError::config(
            "text.max_len",
            format!(
                "{} exceeds the BERT's max_position_embeddings {}",
                cfg.text.max_len, bert.max_position_embeddings
            ),
        ));
    }
    Ok(bert)
}

/// The pretrained BERT's tensors (from `model.safetensors` or `pytorch_model.bin` in
/// `text.bert_dir`) under the encoder's names (no `bert.` prefix, no pooler, `LayerNorm.weight`
/// for `gamma`), with the file they came from.
pub fn bert_tensors(cfg: &Config, device: &Device) -> Result<(PathBuf, HashMap<String, Tensor>)> {
    let dir = cfg.text.bert_dir.clone().unwrap_or_default();
    let wpath = ["model.safetensors", "pytorch_model.bin"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            TrainError::file(
                &dir,
                "text.bert_dir: no model.safetensors or pytorch_model.bin",
            )
        })?;
    let mut tensors = crate::pretrained::read_tensors(&wpath)?
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_device(device)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    if tensors
        .keys()
        .all(|k| k.starts_with("bert.") || !k.starts_with("embeddings."))
        && tensors.contains_key("bert.embeddings.word_embeddings.weight")
    {
        tensors = tensors
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix("bert.").map(|s| (s.to_string(), v)))
            .collect();
    }
    // Older checkpoints name LayerNorm parameters gamma/beta; the pooler is not used (the
    // sentence embedding is the mean over tokens).
    let tensors = tensors
        .into_iter()
        .filter(|(k, _)| !k.starts_with("pooler."))
        .map(|(k, v)| {
            (
                k.replace("LayerNorm.gamma", "LayerNorm.weight")
                    .replace("LayerNorm.beta", "LayerNorm.bias"),
                v,
            )
        })
        .collect();
    Ok((wpath, tensors))
}

/// Builds the model; parameters are created in `store` (seeded by `[run] seed`). A pretrained,
/// frozen BERT is loaded as constants; an unfrozen one joins the parameters, initialised from
/// its file unless `from_checkpoint` (the caller then assigns a checkpoint, which holds them:
/// the file is not read).
pub fn build_model(
    cfg: &Config,
    vocab_size: usize,
    store: &ParamStore,
    device: &Device,
    from_checkpoint: bool,
) -> Result<Tmca> {
    let vb = store.var_builder(device);
    let bert = bert_config(cfg, vocab_size)?;
    if !uses_pretrained_bert(cfg) || (from_checkpoint && !cfg.text.freeze) {
        return Ok(Tmca::new(&cfg.model, &bert, vb.clone(), vb.pp("text"))?);
    }
    let (wpath, tensors) = bert_tensors(cfg, device)?;
    if cfg.text.freeze {
        let text_vb = VarBuilder::from_tensors(
            tensors
                .into_iter()
                .map(|(k, v)| (k, v.to_dtype(DType::F32).unwrap_or(v)))
                .collect(),
            DType::F32,
            device,
        );
        return Tmca::new(&cfg.model, &bert, vb.clone(), text_vb)
            .map_err(|e| TrainError::file(&wpath, format!("does not fit the BERT config: {e}")));
    }
    // Fine-tuned: the file's tensors are the initial values of the parameters the encoder
    // requests; the file must hold every one of them, and what the encoder does not use (heads,
    // buffers such as `embeddings.position_ids`) does not become a parameter.
    let given: std::collections::BTreeSet<String> =
        tensors.keys().map(|k| format!("text.{k}")).collect();
    store.preload(
        tensors
            .into_iter()
            .map(|(k, v)| Ok((format!("text.{k}"), v.to_dtype(DType::F32)?)))
            .collect::<Result<Vec<_>>>()?,
    );
    let model = Tmca::new(&cfg.model, &bert, vb.clone(), vb.pp("text"))
        .map_err(|e| TrainError::file(&wpath, format!("does not fit the BERT config: {e}")))?;
    let unused = store.take_unused_preloaded();
    if !unused.is_empty() {
        tracing::debug!(file = %wpath.display(), "BERT tensors the encoder does not use: {}", unused.join(", "));
    }
    let missing: Vec<String> = store
        .vars()
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("text.") && !given.contains(k))
        .collect();
    if !missing.is_empty() {
        return Err(TrainError::file(
            &wpath,
            format!(
                "does not fit the BERT config: no tensor for {} (the encoder would start them at random)",
                missing
                    .iter()
                    .map(|k| k.trim_start_matches("text."))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(model)
}
