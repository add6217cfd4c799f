//! The prefetching batch loader: background threads read, augment and tokenise samples into
//! dense host buffers, in a deterministic order, at most `prefetch` batches ahead.
//!
//! Determinism: the augmentation of the sample at global epoch position `p` is seeded by
//! `(seed, epoch, p)`, where `p = k·R + r` for local position `k` on rank `r` — so `R` ranks with
//! batch `b` augment every sample exactly as one process with batch `R·b` does, whatever the
//! thread scheduling.

use crate::augment::{self, AugmentConfig, InputSpec, Planar};
use crate::sampler::{derive_seed, Item, ShardedSampler};
use crate::store::Store;
use crate::tokenize::TextTokenizer;
use crate::{DataError, Result};
use crossbeam_channel::{unbounded, Receiver};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// One batch in host memory, ready to become tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Number of samples.
    pub size: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Token sequence length.
    pub max_len: usize,
    /// `B·C·H·W`, normalised.
    pub images: Vec<f32>,
    /// `B·H·W`, 0/1.
    pub masks: Vec<f32>,
    /// `B·L` token ids and attention mask.
    pub token_ids: Vec<u32>,
    pub attention: Vec<u32>,
    /// Hash of each normalised report: equal hashes are contrastive positives of each other.
    pub report_groups: Vec<u64>,
    /// Reports as fed to the model (rewritten if flipped).
    pub reports: Vec<String>,
    /// Which dataset and sample each row came from.
    pub items: Vec<Item>,
}

/// Loader settings.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Drop the last incomplete batch (training) or keep it (evaluation).
    pub drop_last: bool,
    /// Background threads building batches.
    pub workers: usize,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
    /// Model input geometry and normalisation.
    pub input: InputSpec,
    /// Augmentation (training); `None` only resizes and normalises.
    pub augment: Option<AugmentConfig>,
    /// Seed of the augmentation streams.
    pub seed: u64,
}

/// Normalises a report for positive grouping: lower case, words only, single spaces.
pub fn normalise_report(report: &str) -> String {
    report
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Stable 64-bit FNV-1a hash of the normalised report (identical on every rank and build).
pub fn report_group(report: &str) -> u64 {
    normalise_report(report)
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        })
}

/// The contrastive group of a report cut at `text.max_len`: a hash of the token ids the model
/// sees (FNV-1a like [`report_group`], over a marker byte and the ids' bytes).
pub fn token_group(ids: &[u32]) -> u64 {
    std::iter::once(0xffu8)
        .chain(ids.iter().flat_map(|i| i.to_le_bytes()))
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        })
}

/// Builds batches for one rank from one or more stores.
pub struct Loader {
    stores: Vec<Arc<Store>>,
    sampler: ShardedSampler,
    tokenizer: Arc<TextTokenizer>,
    cfg: LoaderConfig,
}

impl Loader {
    /// `sampler` draws items whose `source` indexes `stores`.
    pub fn new(
        stores: Vec<Arc<Store>>,
        sampler: ShardedSampler,
        tokenizer: Arc<TextTokenizer>,
        cfg: LoaderConfig,
    ) -> Result<Self> {
        let cfgerr = |field: &str, message: String| DataError::Config {
            field: field.into(),
            message,
        };
        if cfg.batch_size == 0 {
            return Err(cfgerr("batch_size", "must be at least 1".into()));
        }
        let inp = &cfg.input;
        if inp.mean.len() != inp.channels || inp.std.len() != inp.channels {
            return Err(cfgerr(
                "data.mean/std",
                format!("need {} values each", inp.channels),
            ));
        }
        if inp.std.iter().any(|&s| s <= 0.0) {
            return Err(cfgerr("data.std", "must be > 0".into()));
        }
        if let Some(a) = &cfg.augment {
            a.validate()?;
        }
        for s in &stores {
            let c = s.info().channels;
            if c != inp.channels && c != 1 && c != 3 {
                return Err(DataError::bad(
                    s.path(),
                    format!("{c} channels cannot feed a {}-channel model", inp.channels),
                ));
            }
        }
        Ok(Self {
            stores,
            sampler,
            tokenizer,
            cfg,
        })
    }

    /// Batches per epoch on this rank.
    pub fn batches_per_epoch(&self) -> usize {
        // This rank's own share: unpadded (evaluation) shards may differ by one sample.
        let n = self.sampler.len_this_rank();
        if self.cfg.drop_last {
            n / self.cfg.batch_size
        } else {
            n.div_ceil(self.cfg.batch_size)
        }
    }

    /// The sampler in use.
    pub fn sampler(&self) -> &ShardedSampler {
        &self.sampler
    }

    /// Iterates epoch `epoch` from batch `start` (to resume mid-epoch).
    pub fn epoch(&self, epoch: u64, start: usize) -> BatchIter {
        let items = self.sampler.epoch(epoch);
        let bs = self.cfg.batch_size;
        let n_batches = self.batches_per_epoch();
        let job = Arc::new(Job {
            stores: self.stores.clone(),
            tokenizer: self.tokenizer.clone(),
            cfg: self.cfg.clone(),
            items,
            epoch,
            rank: self.sampler.rank(),
            world: self.sampler.world(),
        });
        let gate = Arc::new((
            Mutex::new(Gate {
                next: start,
                consumed: start,
                stop: false,
            }),
            Condvar::new(),
        ));
        let (tx, rx) = unbounded();
        let workers = (0..self.cfg.workers.max(1))
            .map(|_| {
                let (job, gate, tx) = (job.clone(), gate.clone(), tx.clone());
                let prefetch = self.cfg.prefetch.max(1);
                std::thread::spawn(move || loop {
                    let b = {
                        let (lock, cv) = &*gate;
                        let Ok(mut g) = lock.lock() else { return };
                        while !g.stop && g.next < n_batches && g.next >= g.consumed + prefetch {
                            g = match cv.wait(g) {
                                Ok(g) => g,
                                Err(_) => return,
                            };
                        }
                        if g.stop || g.next >= n_batches {
                            return;
                        }
                        g.next += 1;
                        g.next - 1
                    };
                    let lo = b * bs;
                    let hi = ((b + 1) * bs).min(job.items.len());
                    // A panic while building (a bug) becomes this batch's error: the batch
                    // would never arrive, and the consumer would wait for it forever.
                    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        job.build(lo, hi)
                    }))
                    .unwrap_or_else(|panic| Err(DataError::Internal(panicked(b, &*panic))));
                    if tx.send((b, built)).is_err() {
                        return;
                    }
                })
            })
            .collect();
        BatchIter {
            rx,
            gate,
            workers,
            pending: BTreeMap::new(),
            next: start,
            end: n_batches,
        }
    }
}

struct Gate {
    next: usize,
    consumed: usize,
    stop: bool,
}

struct Job {
    stores: Vec<Arc<Store>>,
    tokenizer: Arc<TextTokenizer>,
    cfg: LoaderConfig,
    items: Vec<Item>,
    epoch: u64,
    rank: usize,
    world: usize,
}

impl Job {
    fn build(&self, lo: usize, hi: usize) -> Result<Batch> {
        let inp = &self.cfg.input;
        let (c, h, w, l) = (
            inp.channels,
            inp.height,
            inp.width,
            self.tokenizer.max_len(),
        );
        let b = hi - lo;
        #[cfg(test)]
        if b == tests::PANICKING_BATCH {
            panic!("test panic in batch building");
        }
        let mut batch = Batch {
            size: b,
            channels: c,
            height: h,
            width: w,
            max_len: l,
            images: vec![0.0; b * c * h * w],
            masks: vec![0.0; b * h * w],
            token_ids: Vec::with_capacity(b * l),
            attention: Vec::with_capacity(b * l),
            report_groups: Vec::with_capacity(b),
            reports: Vec::with_capacity(b),
            items: self.items[lo..hi].to_vec(),
        };
        for (row, k) in (lo..hi).enumerate() {
            let item = self.items[k];
            let store = &self.stores[item.source];
            let info = store.info();
            let image = store.image(item.index)?;
            let mask = store.mask(item.index)?;
            let report = &store.reports()[item.index];
            let global_pos = (k * self.world + self.rank) as u64;
            let mut rng =
                ChaCha8Rng::seed_from_u64(derive_seed(&[self.cfg.seed, self.epoch, global_pos]));
            let src = Planar {
                data: &image,
                channels: info.channels,
                height: info.height,
                width: info.width,
            };
            let report = augment::process(
                src,
                &mask,
                report,
                inp,
                self.cfg.augment.as_ref(),
                &mut rng,
                augment::SampleOut {
                    image: &mut batch.images[row * c * h * w..(row + 1) * c * h * w],
                    mask: &mut batch.masks[row * h * w..(row + 1) * h * w],
                },
            );
            let tokens = self.tokenizer.encode(&report)?;
            batch.token_ids.extend_from_slice(&tokens.ids);
            batch.attention.extend_from_slice(&tokens.attention);
            batch.report_groups.push(if tokens.truncated {
                // The model sees the cut text: reports that agree up to the cut are the same
                // to it, so they are positives of each other.
                token_group(&tokens.ids)
            } else {
                report_group(&report)
            });
            batch.reports.push(report);
        }
        Ok(batch)
    }
}

/// Batches of one epoch, in order. Dropping it stops the workers.
pub struct BatchIter {
    rx: Receiver<(usize, Result<Batch>)>,
    gate: Arc<(Mutex<Gate>, Condvar)>,
    workers: Vec<JoinHandle<()>>,
    pending: BTreeMap<usize, Result<Batch>>,
    next: usize,
    end: usize,
}

impl BatchIter {
    /// Index (within the epoch) of the batch the next call returns.
    pub fn position(&self) -> usize {
        self.next
    }
}

impl Iterator for BatchIter {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let out = loop {
            if let Some(b) = self.pending.remove(&self.next) {
                break b;
            }
            match self.rx.recv() {
                Ok((i, b)) => {
                    self.pending.insert(i, b);
                }
                Err(_) => {
                    break Err(DataError::bad(
                        "loader",
                        "worker threads stopped unexpectedly",
                    ));
                }
            }
        };
        self.next += 1;
        let (lock, cv) = &*self.gate;
        if let Ok(mut g) = lock.lock() {
            g.consumed = self.next;
        }
        cv.notify_all();
        Some(out)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

/// The message of a worker's panic while building batch `b`.
fn panicked(b: usize, panic: &(dyn std::any::Any + Send)) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!("a loader thread failed while building batch {b}: {what}")
}

impl Drop for BatchIter {
    fn drop(&mut self) {
        let (lock, cv) = &*self.gate;
        if let Ok(mut g) = lock.lock() {
            g.stop = true;
        }
        cv.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoreWriter, WriteOptions};
    use crate::{Modality, Sample, Split, StoreInfo};
    use std::path::Path;

    fn make_store(path: &Path, n: usize, channels: usize) -> Arc<Store> {
        let (h, w) = (12, 10);
        let info = StoreInfo {
            name: "t".into(),
            modality: if channels == 1 {
                Modality::Xray
            } else {
                Modality::Endoscopy
            },
            channels,
            height: h,
            width: w,
            provenance: serde_json::Value::Null,
            class_map: Default::default(),
        };
        let mut wr = StoreWriter::create(path, &info, n, &WriteOptions::default()).unwrap();
        for i in 0..n {
            wr.push(Sample {
                name: format!("{i}"),
                split: Split::Train,
                image: (0..channels * h * w)
                    .map(|k| ((k * 31 + i * 17) % 256) as u8)
                    .collect(),
                mask: (0..h * w).map(|k| (k % w < w / 2) as u8).collect(),
                report: format!("target in the left lung, case {}", i % 4),
            })
            .unwrap();
        }
        wr.finish().unwrap();
        Arc::new(Store::open(path).unwrap())
    }

    fn loader(
        stores: &[Arc<Store>],
        batch: usize,
        workers: usize,
        rank: usize,
        world: usize,
    ) -> Loader {
        let sources = stores.iter().map(|s| (0..s.len()).collect()).collect();
        let sampler = ShardedSampler::new(sources, None, 3, true, true, rank, world).unwrap();
        let reports: Vec<String> = stores.iter().flat_map(|s| s.reports().to_vec()).collect();
        let tok = Arc::new(TextTokenizer::learn(&reports, 60, 10).unwrap());
        let cfg = LoaderConfig {
            batch_size: batch,
            drop_last: true,
            workers,
            prefetch: 2,
            input: InputSpec {
                channels: 3,
                height: 8,
                width: 8,
                mean: vec![0.5; 3],
                std: vec![0.25; 3],
            },
            augment: Some(AugmentConfig::default()),
            seed: 11,
        };
        Loader::new(stores.to_vec(), sampler, tok, cfg).unwrap()
    }

    /// Batches of this size panic while being built (no other test uses it).
    pub(super) const PANICKING_BATCH: usize = 7;

    /// A worker that panics (a bug) does not leave the consumer waiting for its batch: the
    /// batch comes back as an error that says what happened, with one worker or several.
    #[test]
    fn a_panicking_worker_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let s = stores(dir.path());
        for workers in [1, 3] {
            let mut it = loader(&s, PANICKING_BATCH, workers, 0, 1).epoch(0, 0);
            let err = it.next().unwrap().unwrap_err().to_string();
            assert!(
                err.contains("batch 0") && err.contains("test panic in batch building"),
                "{err}"
            );
        }
    }

    fn stores(dir: &Path) -> Vec<Arc<Store>> {
        vec![
            make_store(&dir.join("a"), 13, 1),
            make_store(&dir.join("b"), 9, 3),
        ]
    }

    #[test]
    fn order_and_content_do_not_depend_on_threads() {
        let dir = tempfile::tempdir().unwrap();
        let s = stores(dir.path());
        let one: Vec<Batch> = loader(&s, 4, 1, 0, 1)
            .epoch(2, 0)
            .map(|b| b.unwrap())
            .collect();
        let three: Vec<Batch> = loader(&s, 4, 3, 0, 1)
            .epoch(2, 0)
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(one.len(), 22 / 4);
        assert_eq!(one, three);
        let other_epoch: Vec<Batch> = loader(&s, 4, 2, 0, 1)
            .epoch(3, 0)
            .map(|b| b.unwrap())
            .collect();
        assert_ne!(one, other_epoch);
        let b = &one[0];
        assert_eq!(
            (b.images.len(), b.masks.len(), b.token_ids.len()),
            (4 * 3 * 64, 4 * 64, 4 * 10)
        );
    }

    #[test]
    fn resume_mid_epoch_gives_the_same_batches() {
        let dir = tempfile::tempdir().unwrap();
        let s = stores(dir.path());
        let l = loader(&s, 3, 2, 0, 1);
        let all: Vec<Batch> = l.epoch(1, 0).map(|b| b.unwrap()).collect();
        let rest: Vec<Batch> = l.epoch(1, 4).map(|b| b.unwrap()).collect();
        assert_eq!(&all[4..], &rest[..]);
    }

    #[test]
    fn two_ranks_see_what_one_process_sees_with_double_batch() {
        let dir = tempfile::tempdir().unwrap();
        let s = stores(dir.path());
        let single: Vec<Batch> = loader(&s, 4, 2, 0, 1)
            .epoch(5, 0)
            .map(|b| b.unwrap())
            .collect();
        let r0: Vec<Batch> = loader(&s, 2, 2, 0, 2)
            .epoch(5, 0)
            .map(|b| b.unwrap())
            .collect();
        let r1: Vec<Batch> = loader(&s, 2, 2, 1, 2)
            .epoch(5, 0)
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(single.len(), r0.len());
        let px = 3 * 64;
        for (j, sb) in single.iter().enumerate() {
            for (row, item) in sb.items.iter().enumerate() {
                let (rb, rrow) = if row % 2 == 0 {
                    (&r0[j], row / 2)
                } else {
                    (&r1[j], row / 2)
                };
                assert_eq!(rb.items[rrow], *item);
                assert_eq!(
                    rb.images[rrow * px..(rrow + 1) * px],
                    sb.images[row * px..(row + 1) * px],
                    "identical augmentation"
                );
                assert_eq!(rb.reports[rrow], sb.reports[row]);
            }
        }
    }

    #[test]
    fn flipped_reports_and_groups_stay_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let s = stores(dir.path());
        // The loader's tokenizer (see `loader`).
        let reports: Vec<String> = s.iter().flat_map(|s| s.reports().to_vec()).collect();
        let tok = TextTokenizer::learn(&reports, 60, 10).unwrap();
        let (mut seen_flip, mut cut) = (false, false);
        for b in loader(&s, 4, 1, 0, 1).epoch(0, 0) {
            let b = b.unwrap();
            for (row, r) in b.reports.iter().enumerate() {
                let m = &b.masks[row * 64..(row + 1) * 64];
                let left_cols: f32 = (0..8).map(|y| m[y * 8] + m[y * 8 + 1]).sum();
                let right_cols: f32 = (0..8).map(|y| m[y * 8 + 6] + m[y * 8 + 7]).sum();
                // The stored mask covers the image's left half and the report says "left".
                assert_eq!(r.contains("left"), left_cols > right_cols, "{r}");
                seen_flip |= r.contains("right");
                // Whole reports by their text, cut ones by their tokens.
                let t = tok.encode(r).unwrap();
                let want = if t.truncated {
                    token_group(&t.ids)
                } else {
                    report_group(r)
                };
                assert_eq!(b.report_groups[row], want, "{r}");
                cut |= t.truncated;
            }
        }
        assert!(seen_flip);
        assert!(cut, "some reports are longer than max_len 10");
        assert_eq!(report_group("Left lung.."), report_group("left  LUNG"));
        assert_ne!(report_group("left lung"), report_group("right lung"));
    }

    /// Reports cut at `max_len` are grouped by what the model sees: two that agree up to the
    /// cut are one group (identical embeddings are no negatives of each other); whole reports
    /// keep their text's group.
    #[test]
    fn cut_reports_are_grouped_by_their_tokens() {
        let reports = [
            "opacity in the lower zone of the left lung and the right lung",
            "opacity in the lower zone of the left lung and the upper zone",
            "opacity in the lower zone",
        ];
        let all: Vec<String> = reports.iter().map(|r| r.to_string()).collect();
        let tok = TextTokenizer::learn(&all, 200, 8).unwrap();
        let t: Vec<crate::tokenize::Tokens> =
            reports.iter().map(|r| tok.encode(r).unwrap()).collect();
        assert!(t[0].truncated && t[1].truncated && !t[2].truncated);
        assert_eq!(t[0].ids, t[1].ids);
        assert_eq!(token_group(&t[0].ids), token_group(&t[1].ids));
        assert_ne!(report_group(reports[0]), report_group(reports[1]));
    }
}
