//! Tests of the event writer: CRC vectors, protobuf encoding, files re-read by a small reader.

use std::path::{Path, PathBuf};

use super::crc::{crc32c, mask, masked_crc32c, unmask};
use super::proto::Message;
use super::record::{frame, parse_records, read_records};
use super::*;

// ---------- a tiny protobuf decoder, test-only ----------

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Varint(u64),
    F64(f64),
    F32(f32),
    Bytes(Vec<u8>),
}

fn varint(b: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = b[*pos];
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return v;
        }
        shift += 7;
    }
}

fn decode(b: &[u8]) -> Vec<(u32, Val)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let key = varint(b, &mut pos);
        let field = (key >> 3) as u32;
        let val = match key & 7 {
            0 => Val::Varint(varint(b, &mut pos)),
            1 => {
                let v = f64::from_le_bytes(b[pos..pos + 8].try_into().unwrap());
                pos += 8;
                Val::F64(v)
            }
            2 => {
                let len = varint(b, &mut pos) as usize;
                let v = b[pos..pos + len].to_vec();
                pos += len;
                Val::Bytes(v)
            }
            5 => {
                let v = f32::from_le_bytes(b[pos..pos + 4].try_into().unwrap());
                pos += 4;
                Val::F32(v)
            }
            w => panic!("unexpected wire type {w}"),
        };
        out.push((field, val));
    }
    out
}

fn get(fields: &[(u32, Val)], n: u32) -> &Val {
    let hits: Vec<_> = fields.iter().filter(|(f, _)| *f == n).collect();
    assert_eq!(hits.len(), 1, "field {n} in {fields:?}");
    &hits[0].1
}

fn sub(fields: &[(u32, Val)], n: u32) -> Vec<(u32, Val)> {
    match get(fields, n) {
        Val::Bytes(b) => decode(b),
        v => panic!("field {n} is not a message: {v:?}"),
    }
}

fn bytes(fields: &[(u32, Val)], n: u32) -> Vec<u8> {
    match get(fields, n) {
        Val::Bytes(b) => b.clone(),
        v => panic!("field {n} is not bytes: {v:?}"),
    }
}

fn only_file(dir: &Path) -> PathBuf {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

/// A decoded summary event: (wall_time, step, the single Summary.Value's fields).
fn summary_of(record: &[u8]) -> (f64, i64, Vec<(u32, Val)>) {
    let ev = decode(record);
    let Val::F64(wall) = get(&ev, 1) else {
        panic!("wall_time")
    };
    let Val::Varint(step) = get(&ev, 2) else {
        panic!("step")
    };
    let summary = sub(&ev, 5);
    let value = sub(&summary, 1);
    (*wall, *step as i64, value)
}

fn pattern(y: u32, x: u32, c: u32) -> u8 {
    ((y * 7 + x * 3 + c * 50) % 256) as u8
}

// ---------- CRC and framing ----------

#[test]
fn crc32c_test_vectors() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(b""), 0);
    // RFC 3720 (iSCSI) appendix B.4.
    assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
    let ascending: Vec<u8> = (0..32).collect();
    assert_eq!(crc32c(&ascending), 0x46DD_794E);
}

#[test]
#[allow(clippy::manual_rotate)] // the formula as TensorFlow writes it
fn mask_matches_tensorflow_formula() {
    for crc in [0u32, 1, 0xE306_9283, 0xFFFF_FFFF, 0x8000_0000] {
        let expected = ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8);
        assert_eq!(mask(crc), expected);
        assert_eq!(unmask(mask(crc)), crc);
    }
    assert_eq!(masked_crc32c(b"123456789"), mask(0xE306_9283));
}

#[test]
fn frame_layout() {
    let data = b"hello";
    let f = frame(data);
    assert_eq!(f.len(), 5 + 16);
    assert_eq!(&f[..8], &5u64.to_le_bytes());
    assert_eq!(&f[8..12], &masked_crc32c(&5u64.to_le_bytes()).to_le_bytes());
    assert_eq!(&f[12..17], data);
    assert_eq!(&f[17..], &masked_crc32c(data).to_le_bytes());
    let mut two = f.clone();
    two.extend_from_slice(&frame(b""));
    let recs = parse_records(&two, Path::new("mem")).unwrap();
    assert_eq!(recs, vec![b"hello".to_vec(), Vec::new()]);
}

#[test]
fn corrupt_records_are_reported_with_file_and_offset() {
    let mut f = frame(b"hello");
    f.extend_from_slice(&frame(b"world"));
    let mut bad = f.clone();
    bad[21 + 12] ^= 1; // a data byte of the second record
    let err = parse_records(&bad, Path::new("x/events")).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("x/events") && msg.contains("byte 21") && msg.contains("data CRC"),
        "{msg}"
    );
    let err = parse_records(&f[..f.len() - 1], Path::new("x/events")).unwrap_err();
    assert!(
        matches!(err, SinkError::Corrupt { offset: 21, .. }),
        "{err}"
    );
    let mut bad_len = f.clone();
    bad_len[0] ^= 1;
    let err = parse_records(&bad_len, Path::new("x/events")).unwrap_err();
    assert!(err.to_string().contains("length CRC"), "{err}");
}

// ---------- protobuf encoding ----------

#[test]
fn protobuf_encoding() {
    let mut m = Message::new();
    m.uint(1, 300);
    assert_eq!(m.as_bytes(), &[0x08, 0xAC, 0x02]);
    let mut m = Message::new();
    m.int(2, -1);
    assert_eq!(
        m.as_bytes(),
        &[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]
    );
    let mut m = Message::new();
    m.string(3, "hi").float(2, 1.5).double(1, 2.0);
    let mut expected = vec![0x1A, 2, b'h', b'i', 0x15];
    expected.extend_from_slice(&1.5f32.to_le_bytes());
    expected.push(0x09);
    expected.extend_from_slice(&2.0f64.to_le_bytes());
    assert_eq!(m.as_bytes(), &expected[..]);
    let mut outer = Message::new();
    outer.message(5, &Message::new());
    assert_eq!(outer.as_bytes(), &[0x2A, 0]);
    assert_eq!(
        decode(&expected),
        vec![
            (3, Val::Bytes(b"hi".to_vec())),
            (2, Val::F32(1.5)),
            (1, Val::F64(2.0)),
        ]
    );
}

// ---------- writer, re-read ----------

#[test]
fn written_file_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let (h, w) = (6u32, 10u32); // non-square
    let rgb: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).flat_map(move |x| (0..3).map(move |c| pattern(y, x, c))))
        .collect();
    let planar: Vec<u8> = (0..3)
        .flat_map(|c| (0..h).flat_map(move |y| (0..w).map(move |x| pattern(y, x, c))))
        .collect();
    let grey: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).map(move |x| pattern(y, x, 0)))
        .collect();
    let path = {
        let mut wr = EventWriter::create(dir.path()).unwrap();
        wr.add_scalar("loss/train", 0.25, 0).unwrap();
        wr.add_scalar("loss/train", -1.5, 7).unwrap();
        wr.add_scalar("big", 3.0, 1 << 40).unwrap();
        wr.add_image("img/hwc", &rgb, h, w, 3).unwrap();
        wr.add_image_chw("img/chw", &planar, 3, h, w, 3).unwrap();
        wr.add_image_chw("img/grey", &grey, 1, h, w, 4).unwrap();
        wr.add_text("notes", "**bold** — ü", 5).unwrap();
        wr.flush().unwrap();
        wr.path().to_path_buf()
    };
    assert_eq!(only_file(dir.path()), path);
    let name = path.file_name().unwrap().to_str().unwrap();
    let parts: Vec<&str> = name.split('.').collect();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    assert!(parts.last().unwrap().parse::<u64>().is_ok(), "{name}");
    assert_eq!(
        parts[parts.len() - 2],
        std::process::id().to_string(),
        "{name}"
    );

    let recs = read_records(&path).unwrap();
    assert_eq!(recs.len(), 8);

    // First record: file version.
    let first = decode(&recs[0]);
    let Val::F64(wall0) = get(&first, 1) else {
        panic!()
    };
    assert!((wall0 - before).abs() < 60.0, "{wall0} vs {before}");
    assert_eq!(bytes(&first, 3), b"brain.Event:2");
    assert!(first.iter().all(|(f, _)| *f != 2 && *f != 5));

    // Scalars.
    for (rec, tag, value, step) in [
        (&recs[1], "loss/train", 0.25f32, 0i64),
        (&recs[2], "loss/train", -1.5, 7),
        (&recs[3], "big", 3.0, 1 << 40),
    ] {
        let (wall, s, v) = summary_of(rec);
        assert!(wall >= *wall0);
        assert_eq!(s, step);
        assert_eq!(bytes(&v, 1), tag.as_bytes());
        assert_eq!(get(&v, 2), &Val::F32(value));
    }

    // Images: both layouts give the same pixels.
    for (rec, tag, colorspace, step) in [
        (&recs[4], "img/hwc", 3u64, 3i64),
        (&recs[5], "img/chw", 3, 3),
        (&recs[6], "img/grey", 1, 4),
    ] {
        let (_, s, v) = summary_of(rec);
        assert_eq!(s, step);
        assert_eq!(bytes(&v, 1), tag.as_bytes());
        let img = sub(&v, 4);
        assert_eq!(get(&img, 1), &Val::Varint(h as u64));
        assert_eq!(get(&img, 2), &Val::Varint(w as u64));
        assert_eq!(get(&img, 3), &Val::Varint(colorspace));
        let png = bytes(&img, 4);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let decoded = image::load_from_memory_with_format(&png, image::ImageFormat::Png).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (w, h), "{tag}");
        if colorspace == 3 {
            assert_eq!(decoded.to_rgb8().into_raw(), rgb, "{tag}");
        } else {
            assert_eq!(decoded.to_luma8().into_raw(), grey, "{tag}");
        }
    }

    // Text, as the text plugin expects.
    let (_, s, v) = summary_of(&recs[7]);
    assert_eq!(s, 5);
    assert_eq!(bytes(&v, 1), b"notes");
    let meta = sub(&v, 9);
    let plugin = sub(&meta, 1);
    assert_eq!(bytes(&plugin, 1), b"text");
    let tensor = sub(&v, 8);
    assert_eq!(get(&tensor, 1), &Val::Varint(7)); // DT_STRING
    assert!(sub(&tensor, 2).is_empty()); // scalar shape
    assert_eq!(bytes(&tensor, 8), "**bold** — ü".as_bytes());
}

#[test]
fn drop_flushes_buffered_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = {
        let mut wr = EventWriter::create(dir.path()).unwrap();
        for step in 0..100 {
            wr.add_scalar("x", step as f32, step).unwrap();
        }
        wr.path().to_path_buf()
    };
    assert_eq!(read_records(&path).unwrap().len(), 101);
}

#[test]
fn flush_makes_records_visible_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut wr = EventWriter::create(dir.path()).unwrap();
    assert_eq!(read_records(wr.path()).unwrap().len(), 1);
    wr.add_scalar("x", 1.0, 1).unwrap();
    wr.flush().unwrap();
    assert_eq!(read_records(wr.path()).unwrap().len(), 2);
}

#[test]
fn writers_in_the_same_second_never_share_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut writers: Vec<_> = (0..5)
        .map(|_| EventWriter::create(dir.path()).unwrap())
        .collect();
    for (i, w) in writers.iter_mut().enumerate() {
        w.add_scalar("i", i as f32, 0).unwrap();
    }
    let paths: Vec<PathBuf> = writers.iter().map(|w| w.path().to_path_buf()).collect();
    drop(writers);
    let mut unique = paths.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 5);
    for (i, p) in paths.iter().enumerate() {
        let recs = read_records(p).unwrap();
        assert_eq!(recs.len(), 2);
        let (_, _, v) = summary_of(&recs[1]);
        assert_eq!(get(&v, 2), &Val::F32(i as f32));
    }
}

#[test]
fn existing_file_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let (secs, host, pid) = (1_700_000_000, "host", 42);
    for counter in 0..3 {
        let p = dir
            .path()
            .join(filename::file_name(secs, host, pid, counter));
        std::fs::write(&p, format!("precious {counter}")).unwrap();
    }
    let mut next = 0u64;
    let (_f, path) = filename::create_unique_with(dir.path(), secs, host, pid, || {
        next += 1;
        next - 1
    })
    .unwrap();
    assert_eq!(
        path,
        dir.path().join(filename::file_name(secs, host, pid, 3))
    );
    for counter in 0..3 {
        let p = dir
            .path()
            .join(filename::file_name(secs, host, pid, counter));
        assert_eq!(
            std::fs::read_to_string(p).unwrap(),
            format!("precious {counter}")
        );
    }
    // A counter stuck on taken names gives up with a typed error instead of overwriting.
    let err = filename::create_unique_with(dir.path(), secs, host, pid, || 0).unwrap_err();
    assert!(matches!(err, SinkError::NameExhausted { .. }), "{err}");
}

#[test]
fn bad_image_buffers_are_typed_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut wr = EventWriter::create(dir.path()).unwrap();
    let path = wr.path().to_path_buf();
    let err = wr.add_image("img", &[0u8; 10], 2, 2, 0).unwrap_err();
    assert!(
        matches!(&err, SinkError::InvalidImage { path: p, tag, .. } if *p == path && tag == "img")
    );
    assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
    let err = wr.add_image_chw("img", &[0u8; 8], 2, 2, 2, 0).unwrap_err();
    assert!(err.to_string().contains("only 1 or 3"), "{err}");
    let err = wr.add_image("img", &[], 0, 5, 0).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    // Nothing was written for the rejected images.
    wr.flush().unwrap();
    assert_eq!(read_records(&path).unwrap().len(), 1);
}

#[test]
fn create_in_unwritable_place_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not_a_dir");
    std::fs::write(&file, b"").unwrap();
    let err = EventWriter::create(&file.join("sub")).unwrap_err();
    assert!(err.to_string().contains("not_a_dir"), "{err}");
}

// ---------- MetricSink ----------

fn exercise(sink: &mut dyn MetricSink) {
    sink.scalar("a", 0.5, 1);
    sink.scalar("a", 0.75, 2);
    sink.image("im", &[1, 2, 3, 4, 5, 6], 1, 2, 2);
    sink.text("t", "hello", 3);
}

#[test]
fn event_writer_as_metric_sink() {
    let dir = tempfile::tempdir().unwrap();
    let mut wr = EventWriter::create(dir.path()).unwrap();
    exercise(&mut wr);
    MetricSink::flush(&mut wr).unwrap();
    let recs = read_records(wr.path()).unwrap();
    assert_eq!(recs.len(), 5);
    let (_, step, v) = summary_of(&recs[2]);
    assert_eq!((step, get(&v, 2)), (2, &Val::F32(0.75)));
}

#[test]
fn metric_sink_errors_are_reported_at_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink: Box<dyn MetricSink> = Box::new(EventWriter::create(dir.path()).unwrap());
    sink.image("bad", &[0u8; 5], 2, 2, 0);
    sink.scalar("ok", 1.0, 0);
    let err = sink.flush().unwrap_err();
    assert!(
        matches!(err, SinkError::InvalidImage { ref tag, .. } if tag == "bad"),
        "{err}"
    );
    sink.flush().unwrap();
    drop(sink);
    let recs = read_records(&only_file(dir.path())).unwrap();
    assert_eq!(recs.len(), 2); // the version record and the good scalar
}

#[test]
fn steps_beyond_i64_saturate() {
    let dir = tempfile::tempdir().unwrap();
    let mut wr = EventWriter::create(dir.path()).unwrap();
    MetricSink::scalar(&mut wr, "x", 1.0, u64::MAX);
    MetricSink::flush(&mut wr).unwrap();
    let recs = read_records(wr.path()).unwrap();
    assert_eq!(summary_of(&recs[1]).1, i64::MAX);
}

#[test]
fn memory_and_null_sinks() {
    let mut mem = MemorySink::new();
    exercise(&mut mem);
    mem.flush().unwrap();
    assert_eq!(mem.flushes, 1);
    assert_eq!(mem.scalars("a"), vec![(1, 0.5), (2, 0.75)]);
    assert_eq!(mem.last_scalar("a"), Some(0.75));
    assert_eq!(mem.last_scalar("missing"), None);
    assert_eq!(mem.texts("t"), vec![(3, "hello")]);
    assert_eq!(mem.tags(), vec!["a", "im", "t"]);
    assert!(
        matches!(&mem.records[2], SinkRecord::Image { height: 1, width: 2, rgb, .. } if rgb.len() == 6)
    );
    let mut null = NullSink;
    exercise(&mut null);
    null.flush().unwrap();
}
