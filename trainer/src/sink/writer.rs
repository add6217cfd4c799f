//! [`EventWriter`]: appends TensorBoard summaries to one event file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::{Result, SinkError};
use super::event::{self, Colorspace};
use super::filename::create_unique;
use super::png::{chw_to_hwc, encode_png, PixelError};
use super::record::write_record;

/// Writes a TensorBoard event file (`events.out.tfevents.*`) in a log directory.
///
/// Records go through a buffer: they reach the disk on [`EventWriter::flush`] (which also
/// fsyncs) and when the writer is dropped. Call `flush()` at the end of training (and
/// whenever else you want the data safe): a process that exits without dropping the writer
/// (`std::process::exit`, a panic with `panic = "abort"`) keeps everything up to the last
/// `flush()`.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
    /// First error of a [`super::MetricSink`] call (which cannot return it), reported by the
    /// next `MetricSink::flush`.
    pub(super) deferred: Option<SinkError>,
}

/// Seconds since the Unix epoch, as TensorBoard's `wall_time`.
fn now() -> (f64, u64) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs_f64(), d.as_secs())
}

impl EventWriter {
    /// Creates a new event file in `dir` (created if missing) and writes its first record,
    /// `Event { wall_time, file_version: "brain.Event:2" }`.
    ///
    /// The name is unique per process, writer and second; an existing file is never
    /// overwritten.
    pub fn create(dir: &Path) -> Result<Self> {
        let (wall, secs) = now();
        let (file, path) = create_unique(dir, secs)?;
        let mut w = Self {
            path,
            out: BufWriter::new(file),
            deferred: None,
        };
        w.write(&event::file_version_event(wall))?;
        w.flush()?;
        Ok(w)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, record: &[u8]) -> Result<()> {
        write_record(&mut self.out, record).map_err(|source| SinkError::Io {
            path: self.path.clone(),
            op: "write",
            source,
        })
    }

    fn write_value(&mut self, step: i64, value: &super::proto::Message) -> Result<()> {
        let (wall, _) = now();
        self.write(&event::summary_event(wall, step, value))
    }

    fn pixel_error(&self, tag: &str, e: PixelError) -> SinkError {
        match e {
            PixelError::Shape(reason) => SinkError::InvalidImage {
                path: self.path.clone(),
                tag: tag.to_string(),
                reason,
            },
            PixelError::Encode(source) => SinkError::Png {
                path: self.path.clone(),
                tag: tag.to_string(),
                source,
            },
        }
    }

    /// Appends a scalar (`simple_value`, shown by the Scalars dashboard).
    /// Marks a session that (re)starts at `step`: TensorBoard then drops the records earlier
    /// files hold from `step` on (those of the steps a resumed run redoes).
    pub fn add_session_start(&mut self, step: i64) -> Result<()> {
        let (wall, _) = now();
        self.write(&event::session_start_event(wall, step))
    }

    pub fn add_scalar(&mut self, tag: &str, value: f32, step: i64) -> Result<()> {
        self.write_value(step, &event::scalar_value(tag, value))
    }

    /// Appends an RGB image: `rgb` holds `height * width * 3` bytes, interleaved (HWC),
    /// row-major. Stored as PNG.
    pub fn add_image(
        &mut self,
        tag: &str,
        rgb: &[u8],
        height: u32,
        width: u32,
        step: i64,
    ) -> Result<()> {
        self.add_pixels(tag, rgb, height, width, Colorspace::Rgb, step)
    }

    /// Appends a planar (CHW) image with `channels` 1 (grey) or 3 (RGB): `planar` holds
    /// `channels` planes of `height * width` bytes each, row-major.
    pub fn add_image_chw(
        &mut self,
        tag: &str,
        planar: &[u8],
        channels: usize,
        height: u32,
        width: u32,
        step: i64,
    ) -> Result<()> {
        let hwc =
            chw_to_hwc(planar, channels, height, width).map_err(|e| self.pixel_error(tag, e))?;
        let cs = if channels == 1 {
            Colorspace::Grey
        } else {
            Colorspace::Rgb
        };
        self.add_pixels(tag, &hwc, height, width, cs, step)
    }

    fn add_pixels(
        &mut self,
        tag: &str,
        hwc: &[u8],
        height: u32,
        width: u32,
        cs: Colorspace,
        step: i64,
    ) -> Result<()> {
        let png = encode_png(hwc, height, width, cs).map_err(|e| self.pixel_error(tag, e))?;
        self.write_value(step, &event::image_value(tag, height, width, cs, &png))
    }

    /// Appends Markdown text for TensorBoard's Text dashboard.
    pub fn add_text(&mut self, tag: &str, markdown: &str, step: i64) -> Result<()> {
        self.write_value(step, &event::text_value(tag, markdown))
    }

    /// Appends the run's hyperparameters for the HParams dashboard (step 0, the current time as
    /// the session's start).
    pub fn add_hparams(
        &mut self,
        values: &std::collections::BTreeMap<String, super::hparams::HParam>,
        group: &str,
    ) -> Result<()> {
        let v = super::hparams::hparams_value(values, group, now().0);
        self.write_value(0, &v)
    }

    /// Writes buffered records through to the file and fsyncs it.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|source| SinkError::Io {
            path: self.path.clone(),
            op: "flush",
            source,
        })?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(|source| SinkError::Io {
                path: self.path.clone(),
                op: "fsync",
                source,
            })
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!("{e}");
        }
    }
}
