//! `optim.freeze`: parameters under the given prefixes keep their initial values (no
//! gradient, no AdamW update, no weight decay, none in the optimiser state), in one process and
//! across ranks (which all-reduce only the trainable gradients); a run resumed without the
//! freeze trains them from zero moments; a `freeze` or `lr_scale` prefix that names no
//! parameter is refused.

use candle_core::Device;
use std::collections::HashMap;
use std::path::Path;
use tmca_trainer::config::Config;
use tmca_trainer::model::image_encoder::ImageEncoder;
use tmca_trainer::params::ParamStore;
use tmca_trainer::sync::{SingleProcess, ThreadGroup};
use tmca_trainer::train::{Resume, TrainSummary};

mod common;

const FROZEN: &str = r#"freeze = ["image_encoder.stem.", "image_encoder.stages.0."]"#;

fn config(run: &Path, data: &Path, batch: usize, freeze: &str) -> Config {
    let text = common::config_text(run, data, batch, 1).replace(
        "[optim]\n",
        &format!("[optim]\n{freeze}\nweight_decay = 0.1\n"),
    );
    Config::from_toml(&text, Path::new("freeze.toml")).unwrap()
}

use common::train_cpu as run;

fn load(ckpt: &Path, file: &str) -> HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(ckpt.join(file), &Device::Cpu).unwrap()
}

/// The image encoder's initial values (a pure function of seed and name).
fn initial(cfg: &Config) -> HashMap<String, Vec<f32>> {
    let store = ParamStore::new(cfg.run.seed);
    ImageEncoder::new(
        &cfg.model,
        store.var_builder(&Device::Cpu).pp("image_encoder"),
    )
    .unwrap();
    store
        .vars()
        .into_iter()
        .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

/// (frozen tensors equal to their initial values, trainable encoder tensors that moved).
fn frozen_and_moved(cfg: &Config, ckpt: &Path) -> (usize, usize) {
    let w = load(ckpt, "weights.safetensors");
    let (mut frozen, mut moved) = (0, 0);
    for (name, init) in initial(cfg) {
        let now: Vec<f32> = w[&name].flatten_all().unwrap().to_vec1().unwrap();
        let is_frozen =
            name.starts_with("image_encoder.stem.") || name.starts_with("image_encoder.stages.0.");
        if is_frozen {
            assert_eq!(now, init, "{name} is frozen but changed");
            frozen += 1;
        } else if now != init {
            moved += 1;
        }
    }
    (frozen, moved)
}

#[test]
fn frozen_parameters_keep_their_values_in_one_process_and_across_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let one = config(&dir.path().join("one"), &data, 4, FROZEN);
    let single = run(&one, &mut SingleProcess, Resume::No).unwrap();
    let ckpt = single.last_checkpoint.unwrap();
    let (frozen, moved) = frozen_and_moved(&one, &ckpt);
    assert!(frozen >= 6 && moved > 10, "{frozen} frozen, {moved} moved");
    let opt = load(&ckpt, "optimizer.safetensors");
    assert!(opt.keys().all(|k| !k.contains("image_encoder.stem.")));
    assert!(opt.contains_key("m.image_encoder.stages.1.0.dwconv.weight"));

    let two = config(&dir.path().join("two"), &data, 2, FROZEN);
    let ranks: Vec<TrainSummary> = ThreadGroup::new(2)
        .into_iter()
        .map(|mut g| {
            let cfg = two.clone();
            std::thread::spawn(move || run(&cfg, &mut g, Resume::No).unwrap())
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let ckpt2 = ranks[0].last_checkpoint.clone().unwrap();
    frozen_and_moved(&two, &ckpt2);
    common::assert_trained_alike(&ckpt, &ckpt2);

    // Unfrozen on resume: the formerly frozen tensors train from zero moments.
    let text = common::config_text(&dir.path().join("one"), &data, 4, 2);
    let more = Config::from_toml(&text, Path::new("more.toml")).unwrap();
    let resumed = run(&more, &mut SingleProcess, Resume::Latest).unwrap();
    let w = load(&resumed.last_checkpoint.unwrap(), "weights.safetensors");
    let init = initial(&more);
    let stem: Vec<f32> = w["image_encoder.stem.conv.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_ne!(
        stem, init["image_encoder.stem.conv.weight"],
        "trains once unfrozen"
    );
}

#[test]
fn a_prefix_that_names_no_parameter_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &dir.path().join("run"),
        &dir.path().join("data"),
        4,
        r#"freeze = ["image_encoder.stage."]"#,
    );
    let err = run(&cfg, &mut SingleProcess, Resume::No)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("optim.freeze") && err.contains("'image_encoder.stage.'"),
        "{err}"
    );
    let cfg = config(
        &dir.path().join("run2"),
        &dir.path().join("data"),
        4,
        r#"lr_scale = { "image_encoder." = 0.1, "decoder.x" = 2.0 }"#,
    );
    let err = run(&cfg, &mut SingleProcess, Resume::No)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("optim.lr_scale") && err.contains("'decoder.x'"),
        "{err}"
    );
    let text = |optim: &str| {
        common::config_text(&dir.path().join("r"), &dir.path().join("d"), 4, 1)
            .replace("[optim]\n", &format!("[optim]\n{optim}\n"))
    };
    for (optim, field) in [
        (r#"freeze = [""]"#, "optim.freeze"),
        (r#"lr_scale = { "text." = -1.0 }"#, "optim.lr_scale"),
    ] {
        let err = Config::from_toml(&text(optim), Path::new("e.toml")).unwrap_err();
        assert!(err.to_string().contains(field), "{err}");
    }
}
