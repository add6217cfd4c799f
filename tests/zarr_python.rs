//! zarr-python 3 reads a store tmca wrote, writes it back its own way, and tmca reads that.
//! Needs `python3` with `zarr>=3` (installed by `.ci/run`); set TMCA_SKIP_PYTHON=1 to skip.

use std::path::Path;
use std::process::Command;
use tmca_data::store::{Store, StoreWriter, WriteOptions};
use tmca_data::{Modality, Sample, Split, StoreInfo};

fn python_available() -> bool {
    if std::env::var_os("TMCA_SKIP_PYTHON").is_some() {
        eprintln!("TMCA_SKIP_PYTHON set: skipping the zarr-python check");
        return false;
    }
    true
}

fn write_store(path: &Path, channels: usize) -> Vec<Sample> {
    let (h, w, n) = (20, 28, 9);
    let info = StoreInfo {
        name: "interop".into(),
        modality: if channels == 1 {
            Modality::Ct
        } else {
            Modality::Histopathology
        },
        channels,
        height: h,
        width: w,
        provenance: serde_json::json!({"test": "zarr_python"}),
        class_map: StoreInfo::default_class_map(Modality::Ct),
    };
    let samples: Vec<Sample> = (0..n)
        .map(|i| Sample {
            name: format!("case_{i}.png"),
            split: Split::ALL[i % 3],
            image: (0..channels * h * w)
                .map(|k| ((k * 3 + i * 29) % 256) as u8)
                .collect(),
            mask: (0..h * w).map(|k| ((k / w + i) % 4 == 0) as u8).collect(),
            report: format!("Ünïcode report {i}: one infected areas, lower left lung.."),
        })
        .collect();
    let opts = WriteOptions {
        shard_samples: 4,
        ..Default::default()
    };
    let mut wr = StoreWriter::create(path, &info, n, &opts).unwrap();
    for s in &samples {
        wr.push(s.clone()).unwrap();
    }
    wr.finish().unwrap();
    samples
}

#[test]
fn zarr_python_reads_tmca_and_tmca_reads_zarr_python() {
    if !python_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/zarr_interop.py");
    for channels in [1, 3] {
        let src = dir.path().join(format!("tmca-{channels}"));
        let dst = dir.path().join(format!("py-{channels}"));
        let samples = write_store(&src, channels);
        let out = Command::new("python3")
            .arg(&script)
            .arg(&src)
            .arg(&dst)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "zarr-python check failed (install with `pip install 'zarr>=3'`):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let back = Store::open(&dst).unwrap();
        assert_eq!(back.info(), Store::open(&src).unwrap().info());
        assert_eq!(back.len(), samples.len());
        for (i, s) in samples.iter().enumerate() {
            assert_eq!(&back.sample(i).unwrap(), s, "sample {i}");
        }
        // The same data, so the same content digest, computed from zarr-python's chunks.
        let d = Store::open(&src).unwrap().content_digest().unwrap();
        assert_eq!(back.compute_content_digest().unwrap(), d);
    }
}
