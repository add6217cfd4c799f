use super::*;
use crate::model::image_encoder::ImageEncoder;
use crate::model::TextConfig;

fn model_cfg(preset: &str, in_channels: usize) -> ModelConfig {
    let mut cfg = ModelConfig {
        preset: preset.into(),
        in_channels,
        ..Default::default()
    };
    cfg.resolve(&mut TextConfig::default()).unwrap();
    cfg
}

/// The encoder's parameters of a fresh model seeded by `seed`.
fn encoder(cfg: &ModelConfig, seed: u64) -> ParamStore {
    let store = ParamStore::new(seed);
    ImageEncoder::new(cfg, store.var_builder(&Device::Cpu).pp("image_encoder")).unwrap();
    store
}

fn tensors(store: &ParamStore) -> HashMap<String, Tensor> {
    store
        .vars()
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect()
}

/// `store`'s encoder written in `layout` under `prefix` as `dtype`, plus that layout's head.
fn export(
    store: &ParamStore,
    layout: Layout,
    prefix: &str,
    dtype: DType,
) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    for (name, t) in tensors(store) {
        let (part, leaf) = Part::parse(name.strip_prefix(PREFIX).unwrap()).unwrap();
        let t = match (layout, part) {
            (
                Layout::Torchvision,
                Part::Block {
                    layer: BlockLayer::Scale,
                    ..
                },
            ) => t.reshape((t.elem_count(), 1, 1)).unwrap(),
            // As timm's conv_mlp variants store the MLP: 1×1 convolutions.
            (
                Layout::Timm,
                Part::Block {
                    layer: BlockLayer::Fc1,
                    ..
                },
            ) if leaf == "weight" => {
                let (o, i) = t.dims2().unwrap();
                t.reshape((o, i, 1, 1)).unwrap().to_dtype(dtype).unwrap()
            }
            _ => t.to_dtype(dtype).unwrap(),
        };
        out.insert(format!("{prefix}{}", layout.key(part, leaf)), t);
    }
    for head in layout.ignored() {
        let w = Tensor::ones((5, 3), DType::F32, &Device::Cpu).unwrap();
        out.insert(format!("{prefix}{head}weight"), w);
    }
    out
}

fn save(dir: &Path, name: &str, t: &HashMap<String, Tensor>) -> PathBuf {
    let p = dir.join(name);
    candle_core::safetensors::save(t, &p).unwrap();
    p
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn layouts_name_the_keys_their_libraries_use() {
    let block = |stage, index, layer| Part::Block {
        stage,
        index,
        layer,
    };
    let cases = [
        (Layout::Timm, Part::StemConv, "weight", "stem.0.weight"),
        (
            Layout::Timm,
            Part::DownConv(2),
            "bias",
            "stages.2.downsample.1.bias",
        ),
        (
            Layout::Timm,
            block(2, 5, BlockLayer::Fc1),
            "weight",
            "stages.2.blocks.5.mlp.fc1.weight",
        ),
        (
            Layout::Timm,
            block(0, 1, BlockLayer::Scale),
            "",
            "stages.0.blocks.1.gamma",
        ),
        (
            Layout::HuggingFace,
            Part::StemNorm,
            "bias",
            "embeddings.layernorm.bias",
        ),
        (
            Layout::HuggingFace,
            Part::DownNorm(1),
            "weight",
            "encoder.stages.1.downsampling_layer.0.weight",
        ),
        (
            Layout::HuggingFace,
            block(3, 2, BlockLayer::Scale),
            "",
            "encoder.stages.3.layers.2.layer_scale_parameter",
        ),
        (
            Layout::HuggingFace,
            block(1, 0, BlockLayer::Norm),
            "weight",
            "encoder.stages.1.layers.0.layernorm.weight",
        ),
        (
            Layout::Torchvision,
            Part::StemConv,
            "weight",
            "features.0.0.weight",
        ),
        (
            Layout::Torchvision,
            Part::DownConv(3),
            "weight",
            "features.6.1.weight",
        ),
        (
            Layout::Torchvision,
            block(1, 2, BlockLayer::DwConv),
            "bias",
            "features.3.2.block.0.bias",
        ),
        (
            Layout::Torchvision,
            block(3, 0, BlockLayer::Fc2),
            "weight",
            "features.7.0.block.5.weight",
        ),
        (
            Layout::Torchvision,
            block(0, 0, BlockLayer::Scale),
            "",
            "features.1.0.layer_scale",
        ),
        (
            Layout::Original,
            Part::StemNorm,
            "weight",
            "downsample_layers.0.1.weight",
        ),
        (
            Layout::Original,
            Part::DownNorm(2),
            "bias",
            "downsample_layers.2.0.bias",
        ),
        (
            Layout::Original,
            block(2, 8, BlockLayer::Fc2),
            "bias",
            "stages.2.8.pwconv2.bias",
        ),
        (
            Layout::Tmca,
            Part::DownConv(1),
            "weight",
            "downsample.0.conv.weight",
        ),
        (
            Layout::Tmca,
            block(2, 1, BlockLayer::Scale),
            "",
            "stages.2.1.gamma",
        ),
    ];
    for (layout, part, leaf, key) in cases {
        assert_eq!(layout.key(part, leaf), key, "{layout:?} {part:?}");
    }
    assert_eq!(
        Part::parse("stages.2.1.pwconv1.weight"),
        Some((block(2, 1, BlockLayer::Fc1), "weight"))
    );
    assert_eq!(
        Part::parse("stages.2.1.gamma"),
        Some((block(2, 1, BlockLayer::Scale), ""))
    );
    assert_eq!(Part::parse("stages.2.1.gamma.weight"), None);
    assert_eq!(Part::parse("stem.norm"), None);
}

#[test]
fn every_layout_loads_under_any_prefix_and_leaves_heads_out() {
    let cfg = model_cfg("cpu-tiny", 3);
    let source = encoder(&cfg, 1);
    let dir = tempfile::tempdir().unwrap();
    for (layout, prefix) in [
        (Layout::Timm, ""),
        (Layout::HuggingFace, "convnext."),
        (Layout::Torchvision, ""),
        (Layout::Original, "module."),
        (Layout::Tmca, "image_encoder."),
    ] {
        let file = save(
            dir.path(),
            "w.safetensors",
            &export(&source, layout, prefix, DType::F16),
        );
        let target = encoder(&cfg, 2);
        let loaded = load_image_encoder(&file, &target, &cfg).unwrap();
        assert_eq!((loaded.layout, loaded.prefix.as_str()), (layout, prefix));
        assert_eq!(loaded.tensors, target.len());
        assert_eq!(loaded.ignored, layout.ignored().len());
        let (want, got) = (tensors(&source), tensors(&target));
        for (name, t) in &want {
            // Written as f16 (all but torchvision's scales): equal to f16 rounding.
            let d = max_diff(t, &got[name]);
            assert!(d < 2e-3, "{layout:?} {name}: {d}");
        }
    }
}

#[test]
fn a_tmca_checkpoint_folder_loads_its_encoder_only() {
    let cfg = model_cfg("cpu-tiny", 3);
    let source = encoder(&cfg, 1);
    let mut all = tensors(&source);
    let other = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
    all.insert("tssd.1.pixel.weight".into(), other.clone());
    all.insert("text.embeddings.word_embeddings.weight".into(), other);
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), "weights.safetensors", &all);
    let target = encoder(&cfg, 2);
    let loaded = load_image_encoder(dir.path(), &target, &cfg).unwrap();
    assert_eq!(loaded.file, dir.path().join("weights.safetensors"));
    for (name, t) in tensors(&source) {
        assert_eq!(max_diff(&t, &tensors(&target)[&name]), 0.0, "{name}");
    }
}

#[test]
fn a_three_channel_stem_is_summed_into_a_gray_model() {
    let rgb = model_cfg("cpu-tiny", 3);
    let gray = model_cfg("cpu-tiny", 1);
    let source = encoder(&rgb, 1);
    let dir = tempfile::tempdir().unwrap();
    let file = save(
        dir.path(),
        "w.safetensors",
        &export(&source, Layout::Timm, "", DType::F32),
    );
    let target = encoder(&gray, 2);
    load_image_encoder(&file, &target, &gray).unwrap();
    // A gray image through the gray model = the same image replicated through the RGB one.
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (2, 1, 64, 64), &dev).unwrap();
    let vb = |s: &ParamStore| candle_nn::VarBuilder::from_tensors(tensors(s), DType::F32, &dev);
    let theirs = ImageEncoder::new(&rgb, vb(&source).pp("image_encoder")).unwrap();
    let ours = ImageEncoder::new(&gray, vb(&target).pp("image_encoder")).unwrap();
    let a = theirs.forward(&x.repeat((1, 3, 1, 1)).unwrap()).unwrap();
    let b = ours.forward(&x).unwrap();
    for (a, b) in a.iter().zip(&b) {
        assert!(max_diff(a, b) < 1e-4, "{}", max_diff(a, b));
    }
}

#[test]
fn what_does_not_fit_is_named_and_nothing_is_loaded() {
    let cfg = model_cfg("cpu-tiny", 3);
    let deeper = ModelConfig {
        depths: vec![1, 2, 1, 1],
        ..cfg.clone()
    };
    let wider = ModelConfig {
        dims: vec![8, 16, 24, 40],
        ..cfg.clone()
    };
    let dir = tempfile::tempdir().unwrap();
    let msg = |file: &Path| {
        let target = encoder(&cfg, 2);
        let before = tensors(&target);
        let err = load_image_encoder(file, &target, &cfg)
            .unwrap_err()
            .to_string();
        for (name, t) in tensors(&target) {
            assert_eq!(max_diff(&t, &before[&name]), 0.0, "{name} changed");
        }
        err
    };
    let f = save(
        dir.path(),
        "deep.safetensors",
        &export(&encoder(&deeper, 1), Layout::Timm, "", DType::F32),
    );
    let e = msg(&f);
    assert!(
        e.contains("deep.safetensors") && e.contains("no place in the model"),
        "{e}"
    );
    assert!(
        e.contains("stages.1.blocks.1.conv_dw.weight") && e.contains("model.depths"),
        "{e}"
    );
    let f = save(
        dir.path(),
        "wide.safetensors",
        &export(&encoder(&wider, 1), Layout::Original, "", DType::F32),
    );
    let e = msg(&f);
    assert!(
        e.contains("other shapes") && e.contains("stages.3.0.dwconv.weight is [40, 1, 7, 7]"),
        "{e}"
    );
    let mut partial = export(&encoder(&cfg, 1), Layout::HuggingFace, "", DType::F32);
    partial.remove("encoder.stages.2.layers.0.layer_scale_parameter");
    let e = msg(&save(dir.path(), "partial.safetensors", &partial));
    assert!(
        e.contains("missing from the file: encoder.stages.2.layers.0.layer_scale_parameter"),
        "{e}"
    );
    let mut unknown = HashMap::new();
    unknown.insert(
        "conv1.weight".to_string(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let e = msg(&save(dir.path(), "resnet.safetensors", &unknown));
    assert!(
        e.contains("not a ConvNeXt") && e.contains("stem.0.weight"),
        "{e}"
    );
    let e = msg(&dir.path().join("absent.safetensors"));
    assert!(
        e.contains("absent.safetensors") && e.contains("no such file"),
        "{e}"
    );
    let e = msg(&save(dir.path(), "garbage.pth", &HashMap::new()));
    assert!(e.contains("garbage.pth"), "{e}");
}
