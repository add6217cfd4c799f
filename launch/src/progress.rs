//! A terminal progress bar behind the data layer's [`Progress`] trait.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tmca_data::Progress;

/// Draws one bar per phase on stderr (hidden when stderr is not a terminal); with a stop flag
/// (the signal handler's), long writes it reports on end early when the flag is set.
#[derive(Default)]
pub struct Bar {
    bar: Mutex<Option<ProgressBar>>,
    stop: Option<&'static AtomicBool>,
}

impl Bar {
    /// A bar whose operations stop when `stop` is set.
    pub fn stopping_on(stop: &'static AtomicBool) -> Self {
        Self {
            bar: Mutex::default(),
            stop: Some(stop),
        }
    }
}

impl Progress for Bar {
    fn cancelled(&self) -> bool {
        self.stop.is_some_and(|s| s.load(Ordering::Relaxed))
    }

    fn start(&self, what: &str, total: u64) {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style =
            ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what.to_string());
        if let Ok(mut b) = self.bar.lock() {
            *b = Some(bar);
        }
    }

    fn inc(&self, n: u64) {
        if let Ok(b) = self.bar.lock() {
            if let Some(bar) = b.as_ref() {
                bar.inc(n);
            }
        }
    }

    fn message(&self, msg: &str) {
        if let Ok(b) = self.bar.lock() {
            if let Some(bar) = b.as_ref() {
                bar.set_message(msg.to_string());
            }
        }
    }

    fn finish(&self) {
        if let Ok(mut b) = self.bar.lock() {
            if let Some(bar) = b.take() {
                bar.finish_and_clear();
            }
        }
    }
}
