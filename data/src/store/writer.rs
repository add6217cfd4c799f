//! Writing a store: everything goes to `<path>.tmp-<pid>` and is renamed into place only when
//! complete, so an interrupted conversion never leaves a store that looks finished.

use super::{ATTR_KEY, CONTENT_KEY, SCHEMA_VERSION};
use crate::{DataError, Result, Sample, StoreInfo};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zarrs::array::codec::ZstdCodec;
use zarrs::array::{data_type, Array, ArrayBuilder, ArraySubset, CodecOptions};
use zarrs::filesystem::FilesystemStore;
use zarrs::group::GroupBuilder;

/// How a store is written.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Replace an existing store at the output path (only once the new one is complete).
    pub force: bool,
    /// Samples per shard file of `image` and `mask` (each sample is one subchunk).
    pub shard_samples: usize,
    /// zstd compression level.
    pub zstd_level: i32,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            force: false,
            shard_samples: 64,
            zstd_level: 3,
        }
    }
}

/// Appends samples to a new store; see the module docs for the guarantees.
pub struct StoreWriter {
    path: PathBuf,
    tmp: PathBuf,
    info: StoreInfo,
    n: usize,
    opts: WriteOptions,
    storage: Arc<FilesystemStore>,
    image: Array<FilesystemStore>,
    mask: Array<FilesystemStore>,
    /// Samples pushed so far.
    written: usize,
    /// Start index of the buffered (not yet stored) samples.
    buf_start: usize,
    buf_image: Vec<u8>,
    buf_mask: Vec<u8>,
    reports: Vec<String>,
    names: Vec<String>,
    splits: Vec<u8>,
    seen_names: HashSet<String>,
    content: super::digest::ContentHasher,
    finished: bool,
}

/// Subchunks in C order inside each shard, so the same samples always give the same bytes
/// (zarrs' default writes them in whatever order its threads finish).
fn c_order() -> zarrs::array::CodecSpecificOptions {
    use zarrs::array::codec::{ShardingCodecOptions, SubchunkWriteOrder};
    zarrs::array::CodecSpecificOptions::default().with_option(
        ShardingCodecOptions::default().with_subchunk_write_order(SubchunkWriteOrder::C),
    )
}

/// `<path>.tmp-<pid>-<n>`: the process, and the writer within it (two writers of one process
/// to one output each have their own).
fn tmp_path(path: &Path) -> PathBuf {
    static WRITERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    path.with_file_name(name)
}

impl StoreWriter {
    /// Starts a store of `n` samples at `path` (written to a temporary sibling first).
    pub fn create(path: &Path, info: &StoreInfo, n: usize, opts: &WriteOptions) -> Result<Self> {
        if n == 0 {
            return Err(DataError::bad(
                path,
                "refusing to write a store with no samples",
            ));
        }
        if info.channels == 0 || info.height == 0 || info.width == 0 {
            return Err(DataError::bad(
                path,
                "image channels, height and width must be > 0",
            ));
        }
        // First, so that a store a killed `--force` writer had moved aside is back in place.
        remove_stale_tmp(path);
        if path.exists() && !opts.force {
            return Err(DataError::AlreadyExists { path: path.into() });
        }
        if path.exists() && !replaceable(path) {
            return Err(DataError::bad(
                path,
                "exists and is not a tmca store: --force replaces only a store (or an empty folder); choose another output or move it away yourself",
            ));
        }
        let tmp = tmp_path(path);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| DataError::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| DataError::io(&tmp, e))?;
        let z = |e: &dyn std::fmt::Display| DataError::zarr(&tmp, e);
        let storage = Arc::new(FilesystemStore::new(&tmp).map_err(|e| z(&e))?);
        let mut group = GroupBuilder::new()
            .build(storage.clone(), "/")
            .map_err(|e| z(&e))?;
        group
            .attributes_mut()
            .insert(ATTR_KEY.into(), attributes(info, n, false)?);
        group.store_metadata().map_err(|e| z(&e))?;

        let (c, h, w) = (info.channels as u64, info.height as u64, info.width as u64);
        let shard = opts.shard_samples.clamp(1, n) as u64;
        let zstd = || zstd(opts.zstd_level);
        let image = ArrayBuilder::new(
            vec![n as u64, c, h, w],
            vec![shard, c, h, w],
            data_type::uint8(),
            0u8,
        )
        .subchunk_shape(vec![1, c, h, w])
        .codec_specific_options(c_order())
        .bytes_to_bytes_codecs(zstd())
        .dimension_names(["sample", "channel", "y", "x"].into())
        .build(storage.clone(), "/image")
        .map_err(|e| z(&e))?;
        image.store_metadata().map_err(|e| z(&e))?;
        let mask = ArrayBuilder::new(
            vec![n as u64, h, w],
            vec![shard, h, w],
            data_type::uint8(),
            0u8,
        )
        .subchunk_shape(vec![1, h, w])
        .codec_specific_options(c_order())
        .bytes_to_bytes_codecs(zstd())
        .dimension_names(["sample", "y", "x"].into())
        .build(storage.clone(), "/mask")
        .map_err(|e| z(&e))?;
        mask.store_metadata().map_err(|e| z(&e))?;

        Ok(Self {
            path: path.into(),
            tmp,
            info: info.clone(),
            n,
            opts: opts.clone(),
            storage,
            image,
            mask,
            written: 0,
            buf_start: 0,
            buf_image: Vec::with_capacity(shard as usize * info.image_len()),
            buf_mask: Vec::with_capacity(shard as usize * info.mask_len()),
            reports: Vec::with_capacity(n),
            names: Vec::with_capacity(n),
            splits: Vec::with_capacity(n),
            seen_names: HashSet::with_capacity(n),
            content: super::digest::ContentHasher::new(info.channels, info.height, info.width),
            finished: false,
        })
    }

    /// Number of samples pushed so far.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Appends the next sample, after checking it against the store's description.
    pub fn push(&mut self, sample: Sample) -> Result<()> {
        let index = self.written;
        let bad = |message: String| DataError::BadSample {
            path: self.path.clone(),
            index,
            name: sample.name.clone(),
            message,
        };
        if index >= self.n {
            return Err(bad(format!("more samples than the {} announced", self.n)));
        }
        if sample.image.len() != self.info.image_len() {
            return Err(bad(format!(
                "image has {} bytes, expected {}x{}x{} = {}",
                sample.image.len(),
                self.info.channels,
                self.info.height,
                self.info.width,
                self.info.image_len()
            )));
        }
        if sample.mask.len() != self.info.mask_len() {
            return Err(bad(format!(
                "mask has {} bytes, expected {}x{} = {}",
                sample.mask.len(),
                self.info.height,
                self.info.width,
                self.info.mask_len()
            )));
        }
        if let Some(v) = sample.mask.iter().find(|&&v| v > 1) {
            return Err(bad(format!("mask value {v} outside {{0, 1}}")));
        }
        if sample.report.trim().is_empty() {
            return Err(bad("empty report".into()));
        }
        if sample.name.is_empty() {
            return Err(bad("empty sample name".into()));
        }
        if !self.seen_names.insert(sample.name.clone()) {
            return Err(bad("duplicate sample name".into()));
        }
        self.content.add(&super::digest::sample_digest(
            &sample.name,
            sample.split.code(),
            &sample.report,
            &sample.image,
            &sample.mask,
        ));
        self.buf_image.extend_from_slice(&sample.image);
        self.buf_mask.extend_from_slice(&sample.mask);
        self.reports.push(sample.report);
        self.names.push(sample.name);
        self.splits.push(sample.split.code());
        self.written += 1;
        if self.written - self.buf_start >= self.opts.shard_samples.max(1) {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let (start, end) = (self.buf_start as u64, self.written as u64);
        if end == start {
            return Ok(());
        }
        let (c, h, w) = (
            self.info.channels as u64,
            self.info.height as u64,
            self.info.width as u64,
        );
        let z = |e: zarrs::array::ArrayError| DataError::zarr(&self.tmp, e);
        let img = std::mem::take(&mut self.buf_image);
        self.image
            .store_array_subset_opt(
                &ArraySubset::new_with_ranges(&[start..end, 0..c, 0..h, 0..w]),
                &img,
                &every_chunk(),
            )
            .map_err(z)?;
        let msk = std::mem::take(&mut self.buf_mask);
        self.mask
            .store_array_subset_opt(
                &ArraySubset::new_with_ranges(&[start..end, 0..h, 0..w]),
                &msk,
                &every_chunk(),
            )
            .map_err(z)?;
        self.buf_image = img;
        self.buf_image.clear();
        self.buf_mask = msk;
        self.buf_mask.clear();
        self.buf_start = self.written;
        Ok(())
    }

    fn store_strings(&self, name: &str, values: &[String]) -> Result<()> {
        let z = |e: &dyn std::fmt::Display| DataError::zarr(&self.tmp, e);
        let n = values.len() as u64;
        let array = ArrayBuilder::new(vec![n], vec![n.clamp(1, 1024)], data_type::string(), "")
            .bytes_to_bytes_codecs(zstd(self.opts.zstd_level))
            .dimension_names(["sample"].into())
            .build(self.storage.clone(), &format!("/{name}"))
            .map_err(|e| z(&e))?;
        array.store_metadata().map_err(|e| z(&e))?;
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        array
            .store_array_subset_opt(&ArraySubset::new_with_shape(vec![n]), refs, &every_chunk())
            .map_err(|e| z(&e))?;
        Ok(())
    }

    /// Writes the remaining data and the attributes, then renames the store into place.
    pub fn finish(mut self) -> Result<PathBuf> {
        if self.written != self.n {
            return Err(DataError::bad(
                &self.path,
                format!(
                    "only {} of the {} announced samples were written",
                    self.written, self.n
                ),
            ));
        }
        self.flush()?;
        self.store_strings("report", &self.reports)?;
        self.store_strings("source_name", &self.names)?;
        let z = |e: &dyn std::fmt::Display| DataError::zarr(&self.tmp, e);
        let n = self.n as u64;
        let split = ArrayBuilder::new(vec![n], vec![n.clamp(1, 65536)], data_type::uint8(), 0u8)
            .bytes_to_bytes_codecs(zstd(self.opts.zstd_level))
            .dimension_names(["sample"].into())
            .build(self.storage.clone(), "/split")
            .map_err(|e| z(&e))?;
        split.store_metadata().map_err(|e| z(&e))?;
        split
            .store_array_subset_opt(
                &ArraySubset::new_with_shape(vec![n]),
                &self.splits,
                &every_chunk(),
            )
            .map_err(|e| z(&e))?;
        let mut group = GroupBuilder::new()
            .build(self.storage.clone(), "/")
            .map_err(|e| z(&e))?;
        let content = std::mem::replace(
            &mut self.content,
            super::digest::ContentHasher::new(0, 0, 0),
        );
        let mut attrs = attributes(&self.info, self.n, true)?;
        if let Some(obj) = attrs.as_object_mut() {
            obj.insert(CONTENT_KEY.into(), content.finish().into());
        }
        group.attributes_mut().insert(ATTR_KEY.into(), attrs);
        group.store_metadata().map_err(|e| z(&e))?;
        sync_tree(&self.tmp)?;
        replace_dir(&self.tmp, &self.path, self.opts.force)?;
        self.finished = true;
        Ok(self.path.clone())
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        if !self.finished {
            // An unfinished store is never left behind under any name that looks complete.
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// zstd with the frame checksum (a 32-bit xxHash of the decompressed bytes, checked on every
/// read): a flipped byte inside a chunk is an error, not different pixels.
fn zstd(level: i32) -> Vec<Arc<dyn zarrs::array::BytesToBytesCodecTraits>> {
    vec![Arc::new(ZstdCodec::new(level, true))]
}

/// Chunks are stored even when they hold only the fill value (all-empty masks, all-training
/// splits): in a schema-2 store every chunk file exists, so a missing one is damage.
fn every_chunk() -> CodecOptions {
    CodecOptions::default().with_store_empty_chunks(true)
}

fn attributes(info: &StoreInfo, n: usize, complete: bool) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(info)
        .map_err(|e| DataError::bad("store attributes", e.to_string()))?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("schema_version".into(), SCHEMA_VERSION.into());
        obj.insert("num_samples".into(), n.into());
        obj.insert("complete".into(), complete.into());
    }
    Ok(v)
}

/// Records `digest` (the store's content digest, computed from its samples) in the attributes
/// of the store at `path`, which has none: its `zarr.json` is replaced whole (written beside,
/// then renamed), nothing else changes.
pub fn record_content_digest(path: &Path, digest: &str) -> Result<()> {
    let meta = path.join("zarr.json");
    let text = std::fs::read_to_string(&meta).map_err(|e| DataError::io(&meta, e))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| DataError::bad(&meta, e.to_string()))?;
    let attrs = v
        .get_mut("attributes")
        .and_then(|a| a.get_mut(ATTR_KEY))
        .and_then(|a| a.as_object_mut())
        .ok_or_else(|| DataError::bad(&meta, format!("no '{ATTR_KEY}' attributes")))?;
    attrs.insert(CONTENT_KEY.into(), digest.into());
    let out = serde_json::to_string_pretty(&v).map_err(|e| DataError::bad(&meta, e.to_string()))?;
    let tmp = path.join(".zarr.json.tmp");
    std::fs::write(&tmp, out + "\n").map_err(|e| DataError::io(&tmp, e))?;
    std::fs::rename(&tmp, &meta).map_err(|e| DataError::io(&meta, e))
}

/// Whether `--force` may replace `path`: a tmca store (complete or not: its group metadata
/// carries the `tmca` attribute) or an empty folder. Never a file or a folder of other things.
pub fn replaceable(path: &Path) -> bool {
    if !path.is_dir() {
        return false;
    }
    let empty = std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none());
    let store = std::fs::read_to_string(path.join("zarr.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["attributes"].get(ATTR_KEY).is_some());
    empty || store
}

/// Tidies what writers killed before they could clean up (Ctrl-C, SIGKILL, a crash) left
/// beside `path`, when their process is gone: removes `<path>.tmp-<pid>` folders, and puts a
/// `<path>.old-<pid>` (the store a `--force` writer had moved aside) back when nothing took its
/// place, else removes it.
fn remove_stale_tmp(path: &Path) {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let (tmp, old) = (
        format!("{}.tmp-", name.to_string_lossy()),
        format!("{}.old-", name.to_string_lossy()),
    );
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(f) = file.to_str() else { continue };
        // Only names a writer makes: `.tmp-<pid>`, `.tmp-<pid>-<writer>`, `.old-<pid>`; a
        // user's `<name>.old-backup` is none of them.
        let (pid, moved_aside) = match (f.strip_prefix(&tmp), f.strip_prefix(&old)) {
            (Some(rest), _) => match rest.split_once('-') {
                Some((pid, n)) if digits(pid) && digits(n) => (pid, false),
                None if digits(rest) => (rest, false),
                _ => continue,
            },
            (_, Some(pid)) if digits(pid) => (pid, true),
            _ => continue,
        };
        let alive = pid
            .parse::<u32>()
            .map_or(true, |p| Path::new(&format!("/proc/{p}")).exists());
        let stale = e.path();
        // And only what a writer leaves: a tmca store (complete or not) or an empty folder.
        if alive || !Path::new("/proc/self").exists() || !replaceable(&stale) {
            continue;
        }
        if moved_aside && !path.exists() {
            if std::fs::rename(&stale, path).is_ok() {
                tracing::warn!(
                    "put back {} (moved aside by an interrupted --force write)",
                    path.display()
                );
            }
        } else if std::fs::remove_dir_all(&stale).is_ok() {
            tracing::info!("removed {} (left by an interrupted write)", stale.display());
        }
    }
}

/// fsyncs every file below `dir` so the rename publishes durable data.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let p = entry.path();
        if p.is_dir() {
            sync_tree(&p)?;
        } else {
            std::fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|e| DataError::io(&p, e))?;
        }
    }
    Ok(())
}

/// Moves `src` to `dst`; an existing `dst` is only removed once `src` is in place.
/// Without `force`, an output another writer published meanwhile is not replaced: the new
/// store is dropped (`AlreadyExists`) instead of silently taking its place.
fn replace_dir(src: &Path, dst: &Path, force: bool) -> Result<()> {
    let taken = || DataError::AlreadyExists { path: dst.into() };
    if dst.exists() && !force {
        return Err(taken());
    }
    if dst.exists() {
        let mut old = dst.file_name().unwrap_or_default().to_os_string();
        old.push(format!(".old-{}", std::process::id()));
        let old = dst.with_file_name(old);
        std::fs::rename(dst, &old).map_err(|e| DataError::io(dst, e))?;
        std::fs::rename(src, dst).map_err(|e| DataError::io(dst, e))?;
        std::fs::remove_dir_all(&old).map_err(|e| DataError::io(&old, e))?;
    } else {
        // rename(2) onto a folder that appeared since (another writer's store) fails: not
        // empty.
        std::fs::rename(src, dst).map_err(|e| match e.kind() {
            std::io::ErrorKind::DirectoryNotEmpty | std::io::ErrorKind::AlreadyExists => taken(),
            _ => DataError::io(dst, e),
        })?;
    }
    if let Some(parent) = dst.parent() {
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
