//! The dataset store: one Zarr v3 group per dataset, readable by zarr-python 3.
//!
//! Layout (`SCHEMA_VERSION` 2; version 1 is read too):
//!
//! | array         | shape       | type    | chunking                                  |
//! |---------------|-------------|---------|-------------------------------------------|
//! | `image`       | (N,C,H,W)   | uint8   | shards of `shard_samples`, one sample a subchunk, zstd |
//! | `mask`        | (N,H,W)     | uint8   | as `image`; values 0/1                    |
//! | `report`      | (N,)        | string  | vlen-utf8, 1024 a chunk, zstd             |
//! | `source_name` | (N,)        | string  | as `report`                               |
//! | `split`       | (N,)        | uint8   | 0 train, 1 val, 2 test                    |
//!
//! Group attributes: `tmca` = { `schema_version`, `complete`, `num_samples`, `content_sha256`
//! (the content digest, `digest.rs`; absent in stores written before it was recorded and in
//! stores other tools write), and the fields of [`StoreInfo`](crate::StoreInfo) }.
//!
//! Schema 2 over 1: every chunk file is written, also those holding only the fill value (all
//! empty masks, all training splits, which Zarr leaves out by default), so a missing file is
//! damage and opening the store says which; and the zstd frames carry their checksum, so a
//! changed byte inside a chunk fails its read instead of changing pixels.

mod digest;
mod reader;
mod writer;

pub use reader::Store;
pub use writer::{record_content_digest, replaceable, StoreWriter, WriteOptions};

/// Version of the layout this tmca writes and the newest it reads.
pub const SCHEMA_VERSION: u32 = 2;

/// The attribute key under which tmca keeps its metadata.
pub const ATTR_KEY: &str = "tmca";

/// The key of the content digest among the `tmca` attributes.
pub const CONTENT_KEY: &str = "content_sha256";

pub(crate) const ARRAYS: [&str; 5] = ["image", "mask", "report", "source_name", "split"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataError, Modality, Sample, Split, StoreInfo};

    fn info(c: usize, h: usize, w: usize) -> StoreInfo {
        StoreInfo {
            name: "t".into(),
            modality: if c == 1 {
                Modality::Xray
            } else {
                Modality::Endoscopy
            },
            channels: c,
            height: h,
            width: w,
            provenance: serde_json::json!({"test": true}),
            class_map: StoreInfo::default_class_map(Modality::Xray),
        }
    }

    fn sample(i: usize, c: usize, h: usize, w: usize) -> Sample {
        Sample {
            name: format!("s{i}.png"),
            split: Split::ALL[i % 3],
            image: (0..c * h * w)
                .map(|k| ((k * 7 + i * 13) % 251) as u8)
                .collect(),
            mask: (0..h * w)
                .map(|k| (k + i).is_multiple_of(5) as u8)
                .collect(),
            report: format!("Report {i}: ünïcode, lung.. {}", "x".repeat(i)),
        }
    }

    fn write(
        path: &std::path::Path,
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        shard: usize,
    ) -> Vec<Sample> {
        let opts = WriteOptions {
            shard_samples: shard,
            ..Default::default()
        };
        let mut wr = StoreWriter::create(path, &info(c, h, w), n, &opts).unwrap();
        let samples: Vec<_> = (0..n).map(|i| sample(i, c, h, w)).collect();
        for s in &samples {
            wr.push(s.clone()).unwrap();
        }
        wr.finish().unwrap();
        samples
    }

    #[test]
    fn round_trip_is_identical() {
        let dir = tempfile::tempdir().unwrap();
        for (c, h, w, n, shard) in [(1, 9, 13, 10, 4), (3, 16, 8, 7, 64), (1, 4, 4, 1, 1)] {
            let p = dir.path().join(format!("s{c}{h}{w}"));
            let samples = write(&p, n, c, h, w, shard);
            let s = Store::open(&p).unwrap();
            assert_eq!(s.len(), n);
            assert_eq!(s.info(), &info(c, h, w));
            for (i, want) in samples.iter().enumerate() {
                assert_eq!(&s.sample(i).unwrap(), want, "sample {i}");
            }
            assert_eq!(
                s.split_indices(Split::Train),
                (0..n).step_by(3).collect::<Vec<_>>()
            );
        }
    }

    /// The content digest recorded at writing equals the one computed from the samples; the
    /// same samples give the same digest whatever the sharding or the path, one changed
    /// report another; a store without a recorded one (another tool's) gets it computed; and
    /// `validate` names a store whose recorded digest no longer matches its samples.
    #[test]
    fn content_digest_is_recorded_computed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write(&a, 7, 3, 8, 4, 2);
        write(&b, 7, 3, 8, 4, 64);
        let (sa, sb) = (Store::open(&a).unwrap(), Store::open(&b).unwrap());
        assert!(sa.content_digest_recorded());
        let d = sa.content_digest().unwrap();
        assert_eq!(d.len(), 64);
        assert_eq!(sa.compute_content_digest().unwrap(), d);
        assert_eq!(sb.content_digest().unwrap(), d);

        let c = dir.path().join("c");
        let mut wr = StoreWriter::create(&c, &info(3, 8, 4), 7, &WriteOptions::default()).unwrap();
        for i in 0..7 {
            let mut s = sample(i, 3, 8, 4);
            if i == 5 {
                s.report.push('!');
            }
            wr.push(s).unwrap();
        }
        wr.finish().unwrap();
        assert_ne!(Store::open(&c).unwrap().content_digest().unwrap(), d);

        // Another tool's store: no recorded digest, the same computed one.
        let meta = a.join("zarr.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
        v["attributes"][ATTR_KEY]
            .as_object_mut()
            .unwrap()
            .remove(CONTENT_KEY);
        std::fs::write(&meta, v.to_string()).unwrap();
        let plain = Store::open(&a).unwrap();
        assert!(!plain.content_digest_recorded());
        assert_eq!(plain.content_digest().unwrap(), d);
        let ok = crate::validate::validate(&plain, &crate::progress::NoProgress).unwrap();
        assert!(ok.is_ok(), "{:?}", ok.problems);
        assert_eq!(ok.content.as_deref(), Some(d.as_str()));
        // Recorded afterwards (`tmca data validate --record`): the store reads as before.
        record_content_digest(&a, &d).unwrap();
        let stamped = Store::open(&a).unwrap();
        assert!(stamped.content_digest_recorded());
        assert_eq!(stamped.content_digest().unwrap(), d);
        assert_eq!(stamped.sample(3).unwrap(), sa.sample(3).unwrap());
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();

        // A recorded digest the samples no longer match.
        v["attributes"][ATTR_KEY][CONTENT_KEY] = "0".repeat(64).into();
        std::fs::write(&meta, v.to_string()).unwrap();
        let changed = Store::open(&a).unwrap();
        let found = crate::validate::validate(&changed, &crate::progress::NoProgress).unwrap();
        assert_eq!(found.problems.len(), 1, "{:?}", found.problems);
        assert!(
            found.problems[0]
                .message
                .contains("content has changed since it was written"),
            "{}",
            found.problems[0]
        );
    }

    /// Schema 2: chunks of zeros are written too (all-empty masks, all-training splits), so a
    /// missing chunk file stops the store from opening, naming the file and its samples; a
    /// changed byte inside a chunk fails that sample's read (zstd checksum). A schema-1 store
    /// with the same file missing opens, as before.
    #[test]
    fn missing_or_changed_chunks_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let (n, h, w) = (6, 8, 8);
        let mut wr = StoreWriter::create(
            &p,
            &info(1, h, w),
            n,
            &WriteOptions {
                shard_samples: 2,
                ..Default::default()
            },
        )
        .unwrap();
        for i in 0..n {
            let mut s = sample(i, 1, h, w);
            (s.mask, s.split) = (vec![0; h * w], Split::Train);
            wr.push(s).unwrap();
        }
        wr.finish().unwrap();
        for file in ["mask/c/0/0/0", "mask/c/2/0/0", "split/c/0"] {
            assert!(p.join(file).is_file(), "{file} was not written");
        }
        assert_eq!(Store::open(&p).unwrap().mask(5).unwrap(), vec![0; h * w]);

        let shard = p.join("mask/c/1/0/0");
        let bytes = std::fs::read(&shard).unwrap();
        std::fs::remove_file(&shard).unwrap();
        let err = Store::open(&p).unwrap_err().to_string();
        assert!(
            err.contains("damaged")
                && err.contains(&shard.display().to_string())
                && err.contains("samples 2–3"),
            "{err}"
        );
        let meta_path = p.join("zarr.json");
        let meta = std::fs::read_to_string(&meta_path).unwrap();
        let v1 = meta.replace("\"schema_version\": 2", "\"schema_version\": 1");
        std::fs::write(&meta_path, &v1).unwrap();
        assert_eq!(Store::open(&p).unwrap().mask(2).unwrap(), vec![0; h * w]);
        std::fs::write(&meta_path, &meta).unwrap();
        std::fs::write(&shard, &bytes).unwrap();

        // Zero a stretch inside sample 3's compressed image (the second subchunk of shard 1).
        let img = p.join("image/c/1/0/0/0");
        let mut bytes = std::fs::read(&img).unwrap();
        let len = bytes.len();
        bytes[len / 2 + 4..len / 2 + 12].fill(0);
        std::fs::write(&img, &bytes).unwrap();
        let s = Store::open(&p).unwrap();
        assert!(s.image(2).is_ok() || s.image(3).is_ok());
        let err = (2..4).find_map(|i| s.image(i).err()).unwrap().to_string();
        assert!(
            err.contains("image of sample") && err.contains("checksum"),
            "{err}"
        );
    }

    #[test]
    fn refuses_existing_output_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        write(&p, 3, 1, 4, 4, 2);
        let err = StoreWriter::create(&p, &info(1, 4, 4), 3, &WriteOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, DataError::AlreadyExists { .. }), "{err}");
        assert_eq!(Store::open(&p).unwrap().len(), 3);

        // Two writers to one new output: the one that finishes second does not replace the
        // first one's store (it was free when both started), and leaves nothing behind.
        let q = dir.path().join("q");
        let opts = WriteOptions::default();
        let mut a = StoreWriter::create(&q, &info(1, 4, 4), 2, &opts).unwrap();
        let mut b = StoreWriter::create(&q, &info(1, 4, 4), 1, &opts).unwrap();
        for i in 0..2 {
            a.push(sample(i, 1, 4, 4)).unwrap();
        }
        b.push(sample(0, 1, 4, 4)).unwrap();
        b.finish().unwrap();
        let err = a.finish().unwrap_err();
        assert!(matches!(err, DataError::AlreadyExists { .. }), "{err}");
        assert_eq!(Store::open(&q).unwrap().len(), 1);

        // A `--force` writer killed between moving the old store aside and moving the new one
        // in: the next writer puts the old one back first (and so refuses without --force).
        std::fs::rename(&q, dir.path().join("q.old-999999999")).unwrap();
        let err = StoreWriter::create(&q, &info(1, 4, 4), 2, &opts)
            .err()
            .unwrap();
        assert!(matches!(err, DataError::AlreadyExists { .. }), "{err}");
        assert_eq!(Store::open(&q).unwrap().len(), 1);
        assert!(!dir.path().join("q.old-999999999").exists());

        // Folders a writer did not make are left alone: other names, or not a store.
        for mine in [
            "q.old-backup",
            "q.old-2024-01-05",
            "q.tmp-notes",
            "q.old-999999998",
        ] {
            std::fs::create_dir_all(dir.path().join(mine)).unwrap();
            std::fs::write(dir.path().join(mine).join("notes.txt"), "mine").unwrap();
        }
        std::fs::remove_dir_all(&q).unwrap();
        StoreWriter::create(&q, &info(1, 4, 4), 1, &opts).unwrap();
        for mine in [
            "q.old-backup",
            "q.old-2024-01-05",
            "q.tmp-notes",
            "q.old-999999998",
        ] {
            assert!(dir.path().join(mine).join("notes.txt").is_file(), "{mine}");
        }
    }

    #[test]
    fn interrupted_write_leaves_nothing_and_keeps_old_store() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        write(&p, 3, 1, 4, 4, 2);
        let opts = WriteOptions {
            force: true,
            ..Default::default()
        };
        let mut wr = StoreWriter::create(&p, &info(1, 4, 4), 5, &opts).unwrap();
        wr.push(sample(0, 1, 4, 4)).unwrap();
        let mut bad = sample(1, 1, 4, 4);
        bad.mask[3] = 255;
        let err = wr.push(bad).unwrap_err();
        assert!(err.to_string().contains("s1.png"), "{err}");
        drop(wr);
        assert_eq!(Store::open(&p).unwrap().len(), 3, "old store intact");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("s")],
            "no temp dirs left"
        );
    }

    #[test]
    fn finish_with_missing_samples_fails_and_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let mut wr = StoreWriter::create(&p, &info(1, 4, 4), 3, &WriteOptions::default()).unwrap();
        wr.push(sample(0, 1, 4, 4)).unwrap();
        assert!(wr.finish().is_err());
        assert!(!p.exists());
    }

    #[test]
    fn rejects_bad_samples_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut wr = StoreWriter::create(
            &dir.path().join("s"),
            &info(1, 4, 4),
            3,
            &WriteOptions::default(),
        )
        .unwrap();
        wr.push(sample(0, 1, 4, 4)).unwrap();
        let e = wr.push(sample(0, 1, 4, 4)).unwrap_err().to_string();
        assert!(e.contains("duplicate") && e.contains("s0.png"), "{e}");
        let mut s = sample(1, 1, 4, 4);
        s.report = "  ".into();
        assert!(wr.push(s).unwrap_err().to_string().contains("empty report"));
        let mut s = sample(2, 1, 4, 4);
        s.image.pop();
        assert!(wr
            .push(s)
            .unwrap_err()
            .to_string()
            .contains("image has 15 bytes"));
    }

    #[test]
    fn open_refuses_non_stores_newer_schemas_and_incomplete_writes() {
        let dir = tempfile::tempdir().unwrap();
        let e = Store::open(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a tmca dataset store") && e.contains("no such directory"),
            "{e}"
        );
        let e = Store::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no zarr.json"), "{e}");

        let p = dir.path().join("s");
        write(&p, 2, 1, 4, 4, 2);
        let meta_path = p.join("zarr.json");
        let meta = std::fs::read_to_string(&meta_path).unwrap();
        std::fs::write(
            &meta_path,
            meta.replace("\"schema_version\": 2", "\"schema_version\": 99"),
        )
        .unwrap();
        let e = Store::open(&p).unwrap_err();
        assert!(
            matches!(e, DataError::SchemaTooNew { found: 99, .. }),
            "{e}"
        );
        // 2³² + 1 is not schema 1.
        std::fs::write(
            &meta_path,
            meta.replace("\"schema_version\": 2", "\"schema_version\": 4294967297"),
        )
        .unwrap();
        assert!(matches!(
            Store::open(&p).unwrap_err(),
            DataError::SchemaTooNew { .. }
        ));
        std::fs::write(
            &meta_path,
            meta.replace("\"complete\": true", "\"complete\": false"),
        )
        .unwrap();
        assert!(Store::open(&p)
            .unwrap_err()
            .to_string()
            .contains("not completely written"));
        std::fs::remove_dir_all(p.join("mask")).unwrap();
        std::fs::write(&meta_path, &meta).unwrap();
        assert!(Store::open(&p)
            .unwrap_err()
            .to_string()
            .contains("'mask' is missing"));
    }
}
