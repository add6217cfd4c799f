//! One image–mask–report sample and the description of a dataset.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which part of the dataset a sample belongs to. Stored as a `uint8` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train = 0,
    Val = 1,
    Test = 2,
}

impl Split {
    /// All splits in code order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// The `uint8` code stored in the `split` array.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The split for a stored code, if valid.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(code as usize).copied()
    }

    /// Lower-case name (`train`, `val`, `test`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" | "training" => Ok(Split::Train),
            "val" | "valid" | "validation" => Ok(Split::Val),
            "test" | "testing" => Ok(Split::Test),
            _ => Err(format!(
                "unknown split '{}' (expected train/training, val/valid/validation or test/testing)",
                s.trim()
            )),
        }
    }
}

/// Imaging modality; decides the channel count and which augmentations keep reports true.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    /// Chest X-ray (QaTa-COV19-like), 1 channel.
    Xray,
    /// Lung CT slice (MosMedData+-like), 1 channel.
    Ct,
    /// Endoscopy (Kvasir-SEG-like), RGB.
    Endoscopy,
    /// Histopathology (MoNuSeg-like), RGB.
    Histopathology,
}

impl Modality {
    /// All modalities.
    pub const ALL: [Modality; 4] = [
        Modality::Xray,
        Modality::Ct,
        Modality::Endoscopy,
        Modality::Histopathology,
    ];

    /// Number of image channels stored for this modality.
    pub fn channels(self) -> usize {
        match self {
            Modality::Xray | Modality::Ct => 1,
            Modality::Endoscopy | Modality::Histopathology => 3,
        }
    }

    /// Lower-case name as written in configs and store attributes.
    pub fn name(self) -> &'static str {
        match self {
            Modality::Xray => "xray",
            Modality::Ct => "ct",
            Modality::Endoscopy => "endoscopy",
            Modality::Histopathology => "histopathology",
        }
    }
}

impl fmt::Display for Modality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Modality {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "xray" | "x-ray" | "cxr" => Ok(Modality::Xray),
            "ct" => Ok(Modality::Ct),
            "endoscopy" | "endo" => Ok(Modality::Endoscopy),
            "histopathology" | "histo" | "pathology" => Ok(Modality::Histopathology),
            other => Err(format!(
                "unknown modality '{other}' (expected xray, ct, endoscopy or histopathology)"
            )),
        }
    }
}

/// One sample as stored: planar image, binary mask, verbatim report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Original file name (or generated id); unique within a store.
    pub name: String,
    /// Which split the sample belongs to.
    pub split: Split,
    /// `C*H*W` bytes, channel-major (planar).
    pub image: Vec<u8>,
    /// `H*W` bytes, each 0 or 1.
    pub mask: Vec<u8>,
    /// The report, verbatim (real reports are noisy; they are never "fixed").
    pub report: String,
}

/// What a store holds, written as group attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreInfo {
    /// Dataset name (`qata`, `mosmed`, `synth-xray`, …).
    pub name: String,
    /// Imaging modality.
    pub modality: Modality,
    /// Channels per image (1 or 3).
    pub channels: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Where the data came from: importer, source folder, generator and seed, tmca version.
    pub provenance: serde_json::Value,
    /// Mask class map, e.g. `{"0": "background", "1": "infection"}`.
    pub class_map: serde_json::Map<String, serde_json::Value>,
}

impl StoreInfo {
    /// Bytes of one image.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Bytes of one mask.
    pub fn mask_len(&self) -> usize {
        self.height * self.width
    }

    /// Default class map for a modality's target.
    pub fn default_class_map(modality: Modality) -> serde_json::Map<String, serde_json::Value> {
        let target = match modality {
            Modality::Xray | Modality::Ct => "infection",
            Modality::Endoscopy => "polyp",
            Modality::Histopathology => "nucleus",
        };
        let mut m = serde_json::Map::new();
        m.insert("0".into(), "background".into());
        m.insert("1".into(), target.into());
        m
    }
}
