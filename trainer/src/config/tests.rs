use super::*;

fn parse(extra_run: &str) -> Result<Config> {
    let text = DEFAULT_CONFIG.replace("[run]\n", &format!("[run]\n{extra_run}"));
    Config::from_toml(&text, Path::new("t.toml"))
}

#[test]
fn the_default_resolves_and_round_trips() {
    let cfg = Config::default_config().unwrap();
    assert!(cfg.run.tf32, "TF32 on by default");
    let again = Config::from_toml(&cfg.to_toml().unwrap(), Path::new("resolved")).unwrap();
    assert_eq!(again, cfg);
    assert_eq!(again.model_hash().unwrap(), cfg.model_hash().unwrap());
}

#[test]
fn fields_are_checked_by_name() {
    let text = DEFAULT_CONFIG.replace("tf32 = true", "tf32 = false");
    let cfg = Config::from_toml(&text, Path::new("t.toml")).unwrap();
    assert!(!cfg.run.tf32);
    let err = parse("colour = 3\n").unwrap_err().to_string();
    assert!(err.contains("t.toml") && err.contains("colour"), "{err}");
    let tpu = DEFAULT_CONFIG.replace("device = \"auto\"", "device = \"tpu\"");
    let err = Config::from_toml(&tpu, Path::new("t.toml")).unwrap_err();
    assert!(err.to_string().contains("run.device"), "{err}");
    // Where the run starts from does not change what the model is.
    let mut a = Config::default_config().unwrap();
    let h = a.model_hash().unwrap();
    a.model.image_weights = Some("convnext.safetensors".into());
    a.optim.freeze = vec!["image_encoder.".into()];
    a.run.tf32 = false;
    assert_eq!(a.model_hash().unwrap(), h);
    a.model.dims[0] += 8;
    assert_ne!(a.model_hash().unwrap(), h);
}

/// Checkpoints written before a field was added keep their hash: the embedded default's, as
/// checkpoints of 2026-11-30 (before `model.target_sensitive`) recorded it. The ablation is
/// another model.
#[test]
fn fields_added_later_leave_older_hashes_alone() {
    let mut cfg = Config::default_config().unwrap();
    assert_eq!(cfg.model_hash().unwrap(), "fcadbf3985c3fe85");
    cfg.model.target_sensitive = false;
    assert_ne!(cfg.model_hash().unwrap(), "fcadbf3985c3fe85");
}

/// Values that parse but make no sense are refused naming their field (exit 2 in the
/// binary), before a run writes anything: NaN and infinities anywhere, negative level
/// weights, a store listed twice, one value too many, …
#[test]
fn senseless_values_are_refused_by_field() {
    let cases: [(&str, &str, &str); 18] = [
        (
            "[optim]\n",
            "[optim]\nweight_decay = nan\n",
            "optim.weight_decay",
        ),
        ("grad_clip = 1.0", "grad_clip = nan", "optim.grad_clip"),
        ("[optim]\n", "[optim]\neps = 0.0\n", "optim.eps"),
        ("[data]\n", "[data]\nstd = [inf, inf, inf]\n", "data.std"),
        (
            "[data]\n",
            "[data]\nmean = [0.5, 0.5, 0.5, 0.5, 0.5]\n",
            "data.mean",
        ),
        ("[model]\n", "[model]\nlte_tau = nan\n", "model.lte_tau"),
        (
            "[1.0, 1.0, 1.0, 1.0]",
            "[-1.0, 1.0, 1.0, 1.0]",
            "model.contrastive_weights",
        ),
        ("max_len = 40", "max_len = 100000", "text.max_len"),
        (
            "stores = []",
            "stores = [\"a/x.zarr\", \"a//x.zarr/\"]",
            "data.stores",
        ),
        ("\nsize = 64", "\nsize = 0", "data.synth.size"),
        ("keep_last = 2", "keep_last = 0", "train.keep_last"),
        ("[train]\n", "[train]\nthreshold = 0.0\n", "train.threshold"),
        ("[optim]\n", "[optim]\nbeta2 = 1.0\n", "optim.beta2"),
        (
            "stores = []",
            "stores = []\nweights = [-1.0, 1.0, 1.0, 1.0]",
            "data.weights",
        ),
        (
            "encoder = \"scratch\"",
            "encoder = \"bert\"\nbert_dir = \"b\"\ntokenizer = \"t.json\"",
            "text.tokenizer",
        ),
        (
            "[data.augment]\n",
            "[data.augment]\nbrightness = nan\n",
            "data.augment.brightness",
        ),
        (
            "stores = []",
            "stores = []\nfold_group = \"^(p\\\\d+)_\"",
            "data.fold_group",
        ),
        (
            "stores = []",
            "stores = []\nfolds = 5\nfold_group = \"(\"",
            "data.fold_group",
        ),
    ];
    for (from, to, field) in cases {
        assert!(DEFAULT_CONFIG.contains(from), "{from}");
        let text = DEFAULT_CONFIG.replacen(from, to, 1);
        let err = match Config::from_toml(&text, Path::new("t.toml")) {
            Ok(_) => panic!("{to:?} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(field), "{to:?}: {err}");
    }
}

/// The example config of the README's step-by-step section is a valid config.
#[test]
fn the_readme_example_config_is_valid() {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("cat > qata.toml <<'TOML'\n")
        .expect("the README's example config");
    let body = &readme[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    let text = &body[..body.find("\nTOML\n").expect("its end")];
    let mut cfg = Config::from_toml(text, Path::new("qata.toml")).unwrap();
    cfg.resolve().unwrap();
    assert_eq!(cfg.model.dims, [96, 192, 384, 768]);
    assert_eq!(cfg.text.encoder, "bert");
}

#[test]
fn selection_compares_each_metric_its_own_way() {
    let up = Select::DicePooled;
    assert!(up.improves(0.5, None) && up.improves(0.6, Some(0.5)));
    assert!(!up.improves(0.5, Some(0.5)) && !up.improves(0.4, Some(0.5)));
    let down = Select::Hd95;
    assert!(down.improves(3.0, Some(4.0)) && !down.improves(5.0, Some(4.0)));
    assert!(!down.improves(4.0, Some(4.0)));
    // A NaN (no images) never becomes the best, and anything replaces a NaN best.
    assert!(!up.improves(f64::NAN, None) && !down.improves(f64::NAN, Some(1.0)));
    assert!(down.improves(9.0, Some(f64::NAN)));
    for s in Select::ALL {
        let toml = format!("[train]\nselect = \"{}\"", s.name());
        let text = DEFAULT_CONFIG.replace("[train]", &toml);
        assert_eq!(
            Config::from_toml(&text, Path::new("t.toml"))
                .unwrap()
                .train
                .select,
            s
        );
    }
}

/// Manifests from before the metric was recorded keep their best value.
#[test]
fn old_manifests_read_their_best_dice() {
    let old = r#"{"version":1,"tmca_version":"0.1.0","step":4,"epoch":1,"next_batch":0,"seed":0,"model_hash":"h","model_config":{},"best_val_dice":0.25,"stale_validations":0,"files":{}}"#;
    let m: crate::checkpoint::Manifest = serde_json::from_str(old).unwrap();
    assert_eq!((m.best_val, m.select), (Some(0.25), None));
    let text = serde_json::to_string(&m).unwrap();
    assert!(text.contains("\"best_val\":0.25"), "{text}");
}

/// Settings that would train something other than asked are refused for a new run, but a
/// config holding them still loads (a run trained before the check evaluates and resumes).
#[test]
fn settings_that_change_nothing_are_refused_for_new_runs_only() {
    for (from, to, field) in [
        // Text guidance that nothing reads: the image-only model with an idle text encoder.
        (
            "lambda = 0.1\ncontrastive_levels = [1, 2, 3, 4]\ncontrastive_weights = [1.0, 1.0, 1.0, 1.0]\nlte_levels = [1, 2, 3, 4]",
            "lambda = 0.0\ncontrastive_levels = [1, 2, 3, 4]\ncontrastive_weights = [1.0, 1.0, 1.0, 1.0]\nlte_levels = []",
            "model.text_guidance",
        ),
        (
            "lambda = 0.1",
            "lambda = 0.0\ntarget_sensitive = false",
            "model.target_sensitive",
        ),
    ] {
        let text = DEFAULT_CONFIG.replace(from, to);
        assert_ne!(text, DEFAULT_CONFIG, "{from}");
        let cfg = Config::from_toml(&text, Path::new("t.toml")).unwrap();
        let err = cfg.model.check_new_run().unwrap_err().to_string();
        assert!(err.contains(field), "{err}");
    }
    let cfg = Config::default_config().unwrap();
    cfg.model.check_new_run().unwrap();
}
