//! TensorBoard's own reader (`EventAccumulator`, via `tests/python/check_tensorboard.py`) reads
//! back every record type tmca writes: scalars, non-square RGB and gray images, text.
//! Needs `python3` with `tensorboard` (installed by `.ci/run`); TMCA_SKIP_PYTHON=1 skips it.
//!
//! The values written here are mirrored in the Python script; change both together.

use std::error::Error;
use std::path::Path;

use tmca_trainer::sink::EventWriter;

/// Pixel pattern of the RGB images (row `y`, column `x`, channel `c`).
fn rgb_pattern(y: u32, x: u32, c: u32) -> u8 {
    ((y * 7 + x * 3 + c * 50) % 256) as u8
}

/// Pixel pattern of the grey image.
fn grey_pattern(y: u32, x: u32) -> u8 {
    ((y * 11 + x * 5) % 256) as u8
}

fn write_fixture(dir: &Path) -> Result<(), Box<dyn Error>> {
    let mut w = EventWriter::create(dir)?;

    for (step, loss, dice) in [(0, 1.0, 0.1), (1, 0.5, 0.2), (2, 0.25, 0.3)] {
        w.add_scalar("fixture/loss", loss, step)?;
        w.add_scalar("fixture/dice", dice, step)?;
    }

    // Non-square RGB, interleaved (HWC): 48 rows, 80 columns.
    let (h, wd) = (48u32, 80u32);
    let hwc: Vec<u8> = (0..h)
        .flat_map(|y| (0..wd).flat_map(move |x| (0..3).map(move |c| rgb_pattern(y, x, c))))
        .collect();
    w.add_image("fixture/rgb", &hwc, h, wd, 2)?;

    // Grey 32x32, planar.
    let grey: Vec<u8> = (0..32)
        .flat_map(|y| (0..32).map(move |x| grey_pattern(y, x)))
        .collect();
    w.add_image_chw("fixture/grey", &grey, 1, 32, 32, 2)?;

    // Non-square RGB, planar (CHW): 20 rows, 36 columns.
    let (h, wd) = (20u32, 36u32);
    let chw: Vec<u8> = (0..3)
        .flat_map(|c| (0..h).flat_map(move |y| (0..wd).map(move |x| rgb_pattern(y, x, c))))
        .collect();
    w.add_image_chw("fixture/chw_rgb", &chw, 3, h, wd, 2)?;

    w.add_text("fixture/notes", "# Fixture\n\n**bold** text, ünïcödé ✓", 1)?;
    w.flush()?;
    Ok(())
}

#[test]
fn tensorboard_reads_our_event_files() {
    if std::env::var_os("TMCA_SKIP_PYTHON").is_some() {
        eprintln!("TMCA_SKIP_PYTHON set: skipping TensorBoard's reader");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/check_tensorboard.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(dir.path())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "TensorBoard's EventAccumulator rejected our events (install with `pip install tensorboard`):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A run resumed after step 5 redoes steps 6..: TensorBoard shows each step once, from the
/// resumed session (the SessionLog START `MetricSink::resumed_after` writes).
#[test]
fn tensorboard_drops_what_a_resumed_run_redoes() {
    use tmca_trainer::sink::MetricSink;
    if std::env::var_os("TMCA_SKIP_PYTHON").is_some() {
        eprintln!("TMCA_SKIP_PYTHON set: skipping TensorBoard's reader");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut first = EventWriter::create(dir.path()).unwrap();
    for step in 1..=10u64 {
        first.scalar("loss", step as f64, step);
    }
    MetricSink::flush(&mut first).unwrap();
    drop(first);
    // The resumed session's file sorts after the first (names carry the second they start).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mut second = EventWriter::create(dir.path()).unwrap();
    second.resumed_after(5);
    for step in 6..=12u64 {
        second.scalar("loss", 100.0 + step as f64, step);
    }
    MetricSink::flush(&mut second).unwrap();
    let out = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/check_resume_purge.py"))
        .arg(dir.path())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
