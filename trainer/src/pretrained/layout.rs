//! Where each ConvNeXt weight lives in the layouts pretrained ConvNeXts are published in, and
//! how a file's layout is recognised.

/// A naming scheme of ConvNeXt weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// tmca's own (`image_encoder.*` of a tmca checkpoint).
    Tmca,
    /// timm's `convnext_*` (`stem.0`, `stages.I.blocks.J.conv_dw`, …).
    Timm,
    /// Hugging Face transformers' `ConvNextModel` (`embeddings.patch_embeddings`, …).
    HuggingFace,
    /// torchvision's `convnext_*` (`features.K.J.block.N`, …).
    Torchvision,
    /// The original facebookresearch/ConvNeXt code (`downsample_layers`, `stages.I.J`).
    Original,
}

/// One tensor-holding layer of the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    StemConv,
    StemNorm,
    /// LayerNorm before the downsampling convolution into stage `s` (1..=3).
    DownNorm(usize),
    /// The 2×2 stride-2 convolution into stage `s` (1..=3).
    DownConv(usize),
    /// Layer `layer` of block `index` of stage `stage` (0..=3).
    Block {
        stage: usize,
        index: usize,
        layer: BlockLayer,
    },
}

/// The layers of a ConvNeXt block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockLayer {
    DwConv,
    Norm,
    Fc1,
    Fc2,
    /// The layer scale (a vector; torchvision stores it as (C, 1, 1)).
    Scale,
}

impl Layout {
    pub const ALL: [Layout; 5] = [
        Layout::Tmca,
        Layout::Timm,
        Layout::HuggingFace,
        Layout::Torchvision,
        Layout::Original,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Layout::Tmca => "tmca",
            Layout::Timm => "timm",
            Layout::HuggingFace => "Hugging Face",
            Layout::Torchvision => "torchvision",
            Layout::Original => "original ConvNeXt",
        }
    }

    /// The stem convolution's weight key, by which a file's layout and key prefix are found.
    pub fn marker(self) -> String {
        self.key(Part::StemConv, "weight")
    }

    /// Key prefixes of this layout the encoder has no place for: classifier heads, final norms.
    pub fn ignored(self) -> &'static [&'static str] {
        match self {
            Layout::Tmca => &[],
            Layout::Timm => &["head.", "norm_pre."],
            Layout::HuggingFace => &["layernorm.", "pooler."],
            Layout::Torchvision => &["classifier."],
            Layout::Original => &["norm.", "head."],
        }
    }

    /// This layout's key of `part`'s `leaf` (`weight` or `bias`; empty for the layer scale).
    pub fn key(self, part: Part, leaf: &str) -> String {
        let base = self.module(part);
        if leaf.is_empty() {
            base
        } else {
            format!("{base}.{leaf}")
        }
    }

    fn module(self, part: Part) -> String {
        use BlockLayer::*;
        use Layout::*;
        match (self, part) {
            (Tmca, Part::StemConv) => "stem.conv".into(),
            (Tmca, Part::StemNorm) => "stem.norm".into(),
            (Tmca, Part::DownNorm(s)) => format!("downsample.{}.norm", s - 1),
            (Tmca, Part::DownConv(s)) => format!("downsample.{}.conv", s - 1),
            (Timm, Part::StemConv) => "stem.0".into(),
            (Timm, Part::StemNorm) => "stem.1".into(),
            (Timm, Part::DownNorm(s)) => format!("stages.{s}.downsample.0"),
            (Timm, Part::DownConv(s)) => format!("stages.{s}.downsample.1"),
            (HuggingFace, Part::StemConv) => "embeddings.patch_embeddings".into(),
            (HuggingFace, Part::StemNorm) => "embeddings.layernorm".into(),
            (HuggingFace, Part::DownNorm(s)) => format!("encoder.stages.{s}.downsampling_layer.0"),
            (HuggingFace, Part::DownConv(s)) => format!("encoder.stages.{s}.downsampling_layer.1"),
            (Torchvision, Part::StemConv) => "features.0.0".into(),
            (Torchvision, Part::StemNorm) => "features.0.1".into(),
            (Torchvision, Part::DownNorm(s)) => format!("features.{}.0", 2 * s),
            (Torchvision, Part::DownConv(s)) => format!("features.{}.1", 2 * s),
            (Original, Part::StemConv) => "downsample_layers.0.0".into(),
            (Original, Part::StemNorm) => "downsample_layers.0.1".into(),
            (Original, Part::DownNorm(s)) => format!("downsample_layers.{s}.0"),
            (Original, Part::DownConv(s)) => format!("downsample_layers.{s}.1"),
            (
                layout,
                Part::Block {
                    stage,
                    index,
                    layer,
                },
            ) => {
                let (block, name) = match layout {
                    Tmca | Original => (
                        format!("stages.{stage}.{index}"),
                        match layer {
                            DwConv => "dwconv",
                            Norm => "norm",
                            Fc1 => "pwconv1",
                            Fc2 => "pwconv2",
                            Scale => "gamma",
                        },
                    ),
                    Timm => (
                        format!("stages.{stage}.blocks.{index}"),
                        match layer {
                            DwConv => "conv_dw",
                            Norm => "norm",
                            Fc1 => "mlp.fc1",
                            Fc2 => "mlp.fc2",
                            Scale => "gamma",
                        },
                    ),
                    HuggingFace => (
                        format!("encoder.stages.{stage}.layers.{index}"),
                        match layer {
                            DwConv => "dwconv",
                            Norm => "layernorm",
                            Fc1 => "pwconv1",
                            Fc2 => "pwconv2",
                            Scale => "layer_scale_parameter",
                        },
                    ),
                    Torchvision => (
                        format!("features.{}.{index}", 2 * stage + 1),
                        match layer {
                            DwConv => "block.0",
                            Norm => "block.2",
                            Fc1 => "block.3",
                            Fc2 => "block.5",
                            Scale => "layer_scale",
                        },
                    ),
                };
                format!("{block}.{name}")
            }
        }
    }
}

impl Part {
    /// Parses a tmca encoder key (without the `image_encoder.` prefix) into its part and leaf.
    pub fn parse(key: &str) -> Option<(Part, &str)> {
        let (module, leaf) = match key.rsplit_once('.') {
            Some((m, "weight" | "bias")) => (m, &key[m.len() + 1..]),
            _ => (key, ""),
        };
        let f: Vec<&str> = module.split('.').collect();
        let num = |s: &str| s.parse::<usize>().ok();
        let part = match f.as_slice() {
            ["stem", "conv"] => Part::StemConv,
            ["stem", "norm"] => Part::StemNorm,
            ["downsample", i, "norm"] => Part::DownNorm(num(i)? + 1),
            ["downsample", i, "conv"] => Part::DownConv(num(i)? + 1),
            ["stages", i, j, name] => Part::Block {
                stage: num(i)?,
                index: num(j)?,
                layer: match *name {
                    "dwconv" => BlockLayer::DwConv,
                    "norm" => BlockLayer::Norm,
                    "pwconv1" => BlockLayer::Fc1,
                    "pwconv2" => BlockLayer::Fc2,
                    "gamma" => BlockLayer::Scale,
                    _ => return None,
                },
            },
            _ => return None,
        };
        let scale = matches!(
            part,
            Part::Block {
                layer: BlockLayer::Scale,
                ..
            }
        );
        (scale == leaf.is_empty()).then_some((part, leaf))
    }
}

/// The layout and key prefix of a file's keys: the one layout whose stem key ends some key
/// (after a prefix such as `module.`, `model.`, `convnext.` or `image_encoder.`).
pub fn detect<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<(Layout, String), String> {
    let mut found: Vec<(Layout, String)> = vec![];
    for key in keys {
        for layout in Layout::ALL {
            let marker = layout.marker();
            if let Some(prefix) = key.strip_suffix(marker.as_str()) {
                if (prefix.is_empty() || prefix.ends_with('.'))
                    && !found.iter().any(|(l, p)| *l == layout && p == prefix)
                {
                    found.push((layout, prefix.to_string()));
                }
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!(
            "not a ConvNeXt in a known layout: no key ends in {}",
            Layout::ALL
                .iter()
                .map(|l| format!("`{}` ({})", l.marker(), l.name()))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        _ => Err(format!(
            "holds several ConvNeXt encoders: {}",
            found
                .iter()
                .map(|(l, p)| format!("`{p}{}` ({})", l.marker(), l.name()))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}
