//! Reading a store: checks that it is a complete tmca store of a schema this build understands,
//! keeps the small per-sample arrays (reports, names, splits) in memory and reads images and
//! masks on demand, one subchunk each.

use super::{ARRAYS, ATTR_KEY, CONTENT_KEY, SCHEMA_VERSION};
use crate::{DataError, Result, Sample, Split, StoreInfo};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zarrs::array::{data_type, Array, ArrayBytes, ArraySubset, DataType};
use zarrs::filesystem::FilesystemStore;
use zarrs::group::Group;

/// An open dataset store. Cheap to share between threads (`&Store` is `Sync`).
pub struct Store {
    path: PathBuf,
    info: StoreInfo,
    schema_version: u32,
    image: Array<FilesystemStore>,
    mask: Array<FilesystemStore>,
    reports: Vec<String>,
    names: Vec<String>,
    splits: Vec<Split>,
    /// The content digest: recorded by the writer, or computed once when asked.
    content: std::sync::OnceLock<String>,
    content_recorded: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("info", &self.info)
            .field("len", &self.reports.len())
            .finish()
    }
}

fn not_a_store(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::NotAStore {
        path: path.into(),
        reason: reason.into(),
    }
}

impl Store {
    /// Opens the store at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_dir() {
            let why = if path.exists() {
                "not a directory"
            } else {
                "no such directory"
            };
            return Err(not_a_store(path, why));
        }
        if !path.join("zarr.json").is_file() {
            return Err(not_a_store(path, "no zarr.json: not a Zarr v3 group"));
        }
        let storage = Arc::new(FilesystemStore::new(path).map_err(|e| DataError::zarr(path, e))?);
        let group =
            Group::open(storage.clone(), "/").map_err(|e| not_a_store(path, e.to_string()))?;
        let attrs = group
            .attributes()
            .get(ATTR_KEY)
            .and_then(|v| v.as_object())
            .ok_or_else(|| {
                not_a_store(path, format!("the group has no '{ATTR_KEY}' attributes"))
            })?;
        let schema_version = attrs
            .get("schema_version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| not_a_store(path, "attribute tmca.schema_version is missing"))?;
        // A number past u32 is newer than any schema, not a small one.
        let schema_version = u32::try_from(schema_version).unwrap_or(u32::MAX);
        if schema_version > SCHEMA_VERSION {
            return Err(DataError::SchemaTooNew {
                path: path.into(),
                found: schema_version,
                supported: SCHEMA_VERSION,
            });
        }
        if attrs.get("complete").and_then(|v| v.as_bool()) != Some(true) {
            return Err(not_a_store(path, "the store was not completely written"));
        }
        let mut info_attrs = attrs.clone();
        for k in ["schema_version", "complete", "num_samples", CONTENT_KEY] {
            info_attrs.remove(k);
        }
        let content = std::sync::OnceLock::new();
        if let Some(d) = attrs.get(CONTENT_KEY).and_then(|v| v.as_str()) {
            let _ = content.set(d.to_string());
        }
        let info: StoreInfo = serde_json::from_value(serde_json::Value::Object(info_attrs))
            .map_err(|e| not_a_store(path, format!("bad tmca attributes: {e}")))?;
        for name in ARRAYS {
            if !path.join(name).join("zarr.json").is_file() {
                return Err(not_a_store(path, format!("array '{name}' is missing")));
            }
        }
        let open = |name: &str,
                    dtype: DataType,
                    shape: Option<Vec<u64>>|
         -> Result<Array<FilesystemStore>> {
            let a = Array::open(storage.clone(), &format!("/{name}"))
                .map_err(|e| not_a_store(path, format!("array '{name}': {e}")))?;
            if a.data_type() != &dtype {
                return Err(not_a_store(
                    path,
                    format!(
                        "array '{name}' has data type {}, expected {}",
                        a.data_type(),
                        dtype
                    ),
                ));
            }
            if let Some(shape) = shape {
                if a.shape() != shape.as_slice() {
                    return Err(not_a_store(
                        path,
                        format!(
                            "array '{name}' has shape {:?}, expected {:?}",
                            a.shape(),
                            shape
                        ),
                    ));
                }
            }
            Ok(a)
        };
        let split_arr = open("split", data_type::uint8(), None)?;
        let n = split_arr.shape().first().copied().unwrap_or(0);
        let (c, h, w) = (info.channels as u64, info.height as u64, info.width as u64);
        let image = open("image", data_type::uint8(), Some(vec![n, c, h, w]))?;
        let mask = open("mask", data_type::uint8(), Some(vec![n, h, w]))?;
        let report_arr = open("report", data_type::string(), Some(vec![n]))?;
        let name_arr = open("source_name", data_type::string(), Some(vec![n]))?;
        if schema_version >= 2 {
            // Every chunk was written: a missing file would read as fill values (empty masks,
            // empty reports, all samples in training) without a word.
            let arrays = [
                ("image", &image),
                ("mask", &mask),
                ("split", &split_arr),
                ("report", &report_arr),
                ("source_name", &name_arr),
            ];
            let mut missing = vec![];
            for (name, a) in arrays {
                for (range, file) in missing_chunks(path, a)? {
                    missing.push(format!(
                        "{name}: {} (samples {}–{})",
                        file.display(),
                        range.start,
                        range.end.saturating_sub(1)
                    ));
                }
            }
            if !missing.is_empty() {
                return Err(DataError::bad(
                    path,
                    format!(
                        "the store is damaged: {} chunk file{} missing ({}); write it again (tmca data convert / synth). A schema-2 store written by another tool must write every chunk (zarr-python: config={{\"write_empty_chunks\": True}}), or say schema_version 1",
                        missing.len(),
                        if missing.len() == 1 { " is" } else { "s are" },
                        missing.join("; ")
                    ),
                ));
            }
        }

        let codes: Vec<u8> = split_arr
            .retrieve_array_subset(&split_arr.subset_all())
            .map_err(|e| DataError::zarr(path, e))?;
        let names = read_strings(path, &name_arr, "source_name", None)?;
        let splits = codes
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                Split::from_code(c).ok_or_else(|| DataError::BadSample {
                    path: path.into(),
                    index: i,
                    name: names[i].clone(),
                    message: format!("split code {c} is not 0 (train), 1 (val) or 2 (test)"),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let reports = read_strings(path, &report_arr, "report", Some(&names))?;
        if let Some(declared) = attrs.get("num_samples").and_then(|v| v.as_u64()) {
            if declared != n {
                return Err(not_a_store(
                    path,
                    format!("its attributes say num_samples = {declared}, but its arrays hold {n} samples"),
                ));
            }
        }
        Ok(Self {
            path: path.into(),
            info,
            schema_version,
            image,
            mask,
            reports,
            names,
            splits,
            content_recorded: content.get().is_some(),
            content,
        })
    }

    /// The digest of the store's content (see `digest.rs`): the recorded one, or for a store
    /// without one (written by another tool or an older tmca) computed from every sample.
    pub fn content_digest(&self) -> Result<String> {
        if let Some(d) = self.content.get() {
            return Ok(d.clone());
        }
        tracing::info!(
            "{}: no content digest recorded (a store another tool or an older tmca wrote): \
             computing it from its {} samples; `tmca data validate --record` records it",
            self.path.display(),
            self.len()
        );
        let d = self.compute_content_digest()?;
        Ok(self.content.get_or_init(|| d).clone())
    }

    /// Whether the digest was recorded when the store was written.
    pub fn content_digest_recorded(&self) -> bool {
        self.content_recorded
    }

    /// The content digest computed from the samples as they are now (to check the recorded one).
    pub fn compute_content_digest(&self) -> Result<String> {
        use rayon::prelude::*;
        let samples = (0..self.len())
            .into_par_iter()
            .map(|i| self.sample_digest(i, &self.image(i)?, &self.mask(i)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(self.combine_digests(&samples))
    }

    /// The digest of sample `i` given its image and mask bytes (see `digest.rs`).
    pub fn sample_digest(&self, i: usize, image: &[u8], mask: &[u8]) -> Result<[u8; 32]> {
        self.check_index(i)?;
        Ok(super::digest::sample_digest(
            &self.names[i],
            self.splits[i].code(),
            &self.reports[i],
            image,
            mask,
        ))
    }

    /// The store's digest from every sample's [`Self::sample_digest`], in order.
    pub fn combine_digests(&self, samples: &[[u8; 32]]) -> String {
        let mut h = super::digest::ContentHasher::new(
            self.info.channels,
            self.info.height,
            self.info.width,
        );
        samples.iter().for_each(|d| h.add(d));
        h.finish()
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The dataset description.
    pub fn info(&self) -> &StoreInfo {
        &self.info
    }

    /// Schema version the store was written with.
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.reports.len()
    }

    /// Whether the store holds no samples.
    pub fn is_empty(&self) -> bool {
        self.reports.is_empty()
    }

    /// All reports, in sample order.
    pub fn reports(&self) -> &[String] {
        &self.reports
    }

    /// All source names, in sample order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The split of every sample.
    pub fn splits(&self) -> &[Split] {
        &self.splits
    }

    /// Indices of the samples in `split`, ascending.
    pub fn split_indices(&self, split: Split) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.splits[i] == split)
            .collect()
    }

    /// Like [`split_indices`](Self::split_indices), but an empty split is an error naming it.
    pub fn require_split(&self, split: Split) -> Result<Vec<usize>> {
        let idx = self.split_indices(split);
        if idx.is_empty() {
            return Err(DataError::EmptySplit {
                path: self.path.clone(),
                split: split.name().into(),
            });
        }
        Ok(idx)
    }

    fn check_index(&self, i: usize) -> Result<()> {
        if i >= self.len() {
            return Err(DataError::bad(
                &self.path,
                format!("sample index {i} out of range (store has {})", self.len()),
            ));
        }
        Ok(())
    }

    /// The planar `C*H*W` image of sample `i`.
    pub fn image(&self, i: usize) -> Result<Vec<u8>> {
        self.check_index(i)?;
        let (c, h, w) = (
            self.info.channels as u64,
            self.info.height as u64,
            self.info.width as u64,
        );
        let i = i as u64;
        self.image
            .retrieve_array_subset(&ArraySubset::new_with_ranges(&[i..i + 1, 0..c, 0..h, 0..w]))
            .map_err(|e| DataError::zarr(&self.path, format!("image of sample {i}: {e}")))
    }

    /// Sample ranges whose image shard file is absent: they would read as black images (the
    /// fill value). A store tmca wrote has every image shard (in a schema-1 store masks may
    /// lack shards legitimately: Zarr left out chunks that are all zero, i.e. empty masks; a
    /// schema-2 store with any chunk missing does not open).
    pub fn missing_image_shards(&self) -> Result<Vec<(std::ops::Range<usize>, PathBuf)>> {
        missing_chunks(&self.path, &self.image)
    }

    /// The `H*W` mask of sample `i` (values as stored; a valid store holds 0/1).
    pub fn mask(&self, i: usize) -> Result<Vec<u8>> {
        self.check_index(i)?;
        let (h, w) = (self.info.height as u64, self.info.width as u64);
        let i = i as u64;
        self.mask
            .retrieve_array_subset(&ArraySubset::new_with_ranges(&[i..i + 1, 0..h, 0..w]))
            .map_err(|e| DataError::zarr(&self.path, format!("mask of sample {i}: {e}")))
    }

    /// The whole sample `i`.
    pub fn sample(&self, i: usize) -> Result<Sample> {
        Ok(Sample {
            name: self.names.get(i).cloned().unwrap_or_default(),
            split: self.splits.get(i).copied().unwrap_or(Split::Train),
            image: self.image(i)?,
            mask: self.mask(i)?,
            report: self.reports.get(i).cloned().unwrap_or_default(),
        })
    }
}

/// Reads a string array element by element, naming the sample whose bytes are not UTF-8.
fn read_strings(
    path: &Path,
    array: &Array<FilesystemStore>,
    what: &str,
    names: Option<&[String]>,
) -> Result<Vec<String>> {
    let bytes: ArrayBytes = array
        .retrieve_array_subset(&array.subset_all())
        .map_err(|e| DataError::zarr(path, format!("{what}: {e}")))?;
    let (data, offsets) = bytes
        .into_variable()
        .map_err(|e| DataError::zarr(path, format!("{what}: {e}")))?
        .into_parts();
    let offsets: Vec<usize> = offsets.iter().copied().collect();
    offsets
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            String::from_utf8(data[w[0]..w[1]].to_vec()).map_err(|_| DataError::BadSample {
                path: path.into(),
                index: i,
                name: names
                    .and_then(|n| n.get(i).cloned())
                    .unwrap_or_else(|| format!("#{i}")),
                message: format!("{what} is not valid UTF-8"),
            })
        })
        .collect()
}

/// The chunk files of `a` (chunked along the sample axis only) that do not exist, with the
/// samples each holds.
fn missing_chunks(
    path: &Path,
    a: &Array<FilesystemStore>,
) -> Result<Vec<(std::ops::Range<usize>, PathBuf)>> {
    let mut out = Vec::new();
    let chunks = a.chunk_grid_shape().first().copied().unwrap_or(0);
    for k in 0..chunks {
        let mut at = vec![0u64; a.shape().len()];
        at[0] = k;
        let file = path.join(a.chunk_key(&at).as_str());
        if !file.is_file() {
            let sub = a.chunk_subset(&at).map_err(|e| DataError::zarr(path, e))?;
            let start = sub.start()[0] as usize;
            out.push((start..start + sub.shape()[0] as usize, file));
        }
    }
    Ok(out)
}
