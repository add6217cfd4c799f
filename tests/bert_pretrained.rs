//! A pretrained Hugging Face BERT (written here in the HF layout: `config.json`,
//! `model.safetensors` with `bert.` keys, `vocab.txt`) is loaded by tmca's encoder with the
//! same outputs as candle-transformers' BertModel, trains frozen and unfrozen, and a tokenizer
//! that does not fit the encoder is refused.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;
use tmca_trainer::config::Config;
use tmca_trainer::model::text_encoder::TextEncoder;
use tmca_trainer::model::BertConfig;
use tmca_trainer::params::ParamStore;
use tmca_trainer::sync::SingleProcess;
use tmca_trainer::train::Resume;

mod common;

const WORDS: [&str; 18] = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "left",
    "right",
    "upper",
    "lower",
    "middle",
    "lung",
    "infection",
    "polyp",
    "one",
    "two",
    ",",
    ".",
    "the",
];

fn write_bert(dir: &Path, vocab_words: usize) -> HashMap<String, Tensor> {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = serde_json::json!({
        "architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": WORDS.len(),
        "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 32, "type_vocab_size": 2, "initializer_range": 0.02,
        "layer_norm_eps": 1e-12, "pad_token_id": 0, "position_embedding_type": "absolute", "use_cache": true
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    std::fs::write(dir.join("vocab.txt"), WORDS[..vocab_words].join("\n")).unwrap();
    let bert: BertConfig = serde_json::from_value(cfg).unwrap();
    let store = ParamStore::new(42);
    TextEncoder::new(&bert, store.var_builder(&Device::Cpu).pp("bert")).unwrap();
    let tensors: HashMap<String, Tensor> = store
        .vars()
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    tensors
}

#[test]
fn same_outputs_as_candle_transformers_bert() {
    let dir = tempfile::tempdir().unwrap();
    write_bert(dir.path(), WORDS.len());
    let dev = Device::Cpu;
    let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    let ours_cfg: BertConfig = serde_json::from_str(&text).unwrap();
    let theirs_cfg: candle_transformers::models::bert::Config =
        serde_json::from_str(&text).unwrap();
    let weights =
        candle_core::safetensors::load(dir.path().join("model.safetensors"), &dev).unwrap();
    let vb = candle_nn::VarBuilder::from_tensors(weights, DType::F32, &dev);
    let ours = TextEncoder::new(&ours_cfg, vb.pp("bert")).unwrap();
    let theirs =
        candle_transformers::models::bert::BertModel::load(vb.clone(), &theirs_cfg).unwrap();
    let ids = Tensor::new(&[[2u32, 5, 10, 11, 16, 3], [2, 13, 12, 7, 6, 3]], &dev).unwrap();
    let att = ids.ones_like().unwrap();
    let (t_ours, _) = ours.forward(&ids, &att).unwrap();
    let t_theirs = theirs
        .forward(&ids, &ids.zeros_like().unwrap(), Some(&att))
        .unwrap();
    let diff = common::max_abs_diff(&t_ours, &t_theirs);
    assert!(diff < 1e-4, "token features differ by {diff}");
}

fn config(run: &Path, data: &Path, bert: &Path, freeze: bool) -> Config {
    let text = format!(
        r#"
[run]
dir = "{}"
[data]
image_size = 32
batch_size = 4
[data.synth]
dir = "{}"
size = 32
train = 8
val = 4
test = 4
modalities = ["xray"]
[model]
preset = "cpu-tiny"
[text]
encoder = "bert"
bert_dir = "{}"
freeze = {freeze}
max_len = 12
[train]
epochs = 1
"#,
        run.display(),
        data.display(),
        bert.display()
    );
    Config::from_toml(&text, Path::new("bert.toml")).unwrap()
}

fn run(cfg: &Config) -> tmca_trainer::Result<tmca_trainer::train::TrainSummary> {
    common::train_cpu(cfg, &mut SingleProcess, Resume::No)
}

#[test]
fn trains_frozen_and_fine_tuned_and_refuses_a_mismatched_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let (bert, data) = (dir.path().join("bert"), dir.path().join("data"));
    let original = write_bert(&bert, WORDS.len());

    let frozen = run(&config(&dir.path().join("frozen"), &data, &bert, true)).unwrap();
    let w = candle_core::safetensors::load(
        frozen.last_checkpoint.unwrap().join("weights.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert!(
        w.keys().all(|k| !k.starts_with("text.")),
        "a frozen BERT is not part of the trained weights"
    );
    assert!(w.keys().any(|k| k.starts_with("tssd.")));

    let tuned = run(&config(&dir.path().join("tuned"), &data, &bert, false)).unwrap();
    let w = candle_core::safetensors::load(
        tuned.last_checkpoint.unwrap().join("weights.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let key = "bert.encoder.layer.0.attention.self.query.weight";
    let after = &w[&format!("text.{}", key.trim_start_matches("bert."))];
    let moved = common::max_abs_diff(after, &original[key]);
    assert!(moved > 0.0, "an unfrozen BERT is fine-tuned");

    // An export of the frozen run holds the BERT's tensors (which its checkpoints leave out):
    // the same names as the fine-tuned run's weights, the BERT file's values.
    let trained =
        tmca_trainer::inference::Trained::load(&dir.path().join("frozen"), "latest", &Device::Cpu)
            .unwrap();
    let (exported, from_bert) = tmca_trainer::export::model_tensors(&trained).unwrap();
    let mut names: Vec<&String> = exported.keys().collect();
    let mut tuned_names: Vec<&String> = w.keys().collect();
    names.sort();
    tuned_names.sort();
    assert_eq!(names, tuned_names);
    assert_eq!(
        from_bert,
        w.keys().filter(|k| k.starts_with("text.")).count()
    );
    let q = &exported["text.encoder.layer.0.attention.self.query.weight"];
    assert_eq!(
        q.to_vec2::<f32>().unwrap(),
        original[key].to_vec2::<f32>().unwrap()
    );

    // Evaluating the fine-tuned run takes its BERT from the checkpoint, not from the file; the
    // frozen run's BERT is only in the file.
    let file = bert.join("model.safetensors");
    std::fs::rename(&file, bert.join("away")).unwrap();
    let load = |run: &str| {
        tmca_trainer::inference::Trained::load(&dir.path().join(run), "latest", &Device::Cpu)
    };
    assert!(load("tuned").is_ok());
    let err = load("frozen").err().unwrap().to_string();
    assert!(err.contains("no model.safetensors"), "{err}");
    std::fs::rename(bert.join("away"), &file).unwrap();

    // Fine-tuning needs every encoder tensor in the file: none is silently drawn at random.
    let mut partial = original.clone();
    partial.remove("bert.encoder.layer.1.output.dense.bias");
    candle_core::safetensors::save(&partial, bert.join("model.safetensors")).unwrap();
    let err = run(&config(&dir.path().join("partial"), &data, &bert, false))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no tensor for encoder.layer.1.output.dense.bias")
            && err.contains("model.safetensors"),
        "{err}"
    );

    write_bert(&bert, WORDS.len() - 3);
    let err = run(&config(&dir.path().join("bad"), &data, &bert, true))
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer/encoder mismatch"), "{err}");
}

/// A BERT published as `pytorch_model.bin` (a PyTorch pickle, written by torch here) with a
/// pooler, a masked-LM head and the `position_ids` buffer older transformers saved: it trains fine-tuned, and the parameters are the encoder's only.
#[test]
fn a_pytorch_model_bin_loads_without_its_pooler_and_heads() {
    if std::env::var_os("TMCA_SKIP_PYTHON").is_some() {
        eprintln!("TMCA_SKIP_PYTHON set: skipping the pytorch_model.bin check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (bert, data) = (dir.path().join("bert"), dir.path().join("data"));
    write_bert(&bert, WORDS.len());
    let script = "import sys, torch\nfrom safetensors.torch import load_file\n\
        d = sys.argv[1]\nsd = load_file(d + '/model.safetensors')\n\
        sd['bert.pooler.dense.weight'] = torch.zeros(16, 16)\n\
        sd['cls.predictions.bias'] = torch.zeros(18)\n\
        sd['bert.embeddings.position_ids'] = torch.arange(32).unsqueeze(0)\n\
        torch.save(sd, d + '/pytorch_model.bin')\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&bert)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(bert.join("model.safetensors")).unwrap();
    let tuned = run(&config(&dir.path().join("tuned"), &data, &bert, false)).unwrap();
    let w = candle_core::safetensors::load(
        tuned.last_checkpoint.unwrap().join("weights.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert!(w.contains_key("text.encoder.layer.1.output.dense.weight"));
    assert!(
        w.keys()
            .all(|k| !k.contains("pooler") && !k.contains("cls.") && !k.contains("position_ids")),
        "only the encoder's tensors become parameters"
    );
}
