//! Writes a small TensorBoard event directory for `tests/python/check_tensorboard.py`, which
//! reads it back with TensorBoard's own `EventAccumulator`.
//!
//! ```text
//! cargo run --release -p tmca-trainer --example tb_fixture -- /tmp/tb
//! python3 tests/python/check_tensorboard.py /tmp/tb
//! ```
//!
//! The values written here are mirrored in the Python script; change both together.

use std::error::Error;
use std::path::PathBuf;

use tmca_trainer::sink::EventWriter;

/// Pixel pattern of the RGB images (row `y`, column `x`, channel `c`).
fn rgb_pattern(y: u32, x: u32, c: u32) -> u8 {
    ((y * 7 + x * 3 + c * 50) % 256) as u8
}

/// Pixel pattern of the grey image.
fn grey_pattern(y: u32, x: u32) -> u8 {
    ((y * 11 + x * 5) % 256) as u8
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: tb_fixture <event directory>")?;
    let mut w = EventWriter::create(&dir)?;

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
    println!("{}", w.path().display());
    Ok(())
}
