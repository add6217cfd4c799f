//! What one probe prints: one JSON line, the same keys from the Rust probe and from
//! `tests/reference/bench_torch.py`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Time of one profiled part of the step (sums of per-call medians).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PartTime {
    pub part: String,
    pub calls: usize,
    pub forward_ms: f64,
    pub backward_ms: f64,
}

/// One measurement.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProbeResult {
    /// `tmca` or `pytorch`.
    pub framework: String,
    /// tmca's or torch's version.
    pub version: String,
    /// `train`, `infer` or `loader`.
    pub mode: String,
    pub size: usize,
    pub batch: usize,
    /// Compute threads.
    pub threads: usize,
    /// Where it ran (`cpu`, `cuda`) and the model preset, when not the CPU default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub preset: String,
    /// On a GPU: whether f32 products used TF32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tf32: Option<bool>,
    /// Images per second at the median step (train, infer).
    #[serde(default)]
    pub img_per_s: f64,
    /// Every timed step, ms.
    #[serde(default)]
    pub step_ms: Vec<f64>,
    /// Peak resident memory of the process, MB (10⁶ bytes).
    pub peak_rss_mb: f64,
    /// Median ms of each phase of the step: inputs, forward, backward, clip, optimizer.
    #[serde(default)]
    pub phases: BTreeMap<String, f64>,
    /// Per-part replay profile (train with profiling).
    #[serde(default)]
    pub profile: Vec<PartTime>,
    /// Loader: batches/s with the default worker threads, and ms per batch with one.
    #[serde(default)]
    pub batches_per_s: Option<f64>,
    #[serde(default)]
    pub workers: Option<usize>,
    #[serde(default)]
    pub batch_ms_one_worker: Option<f64>,
}

/// Median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

/// This process's peak resident set (VmHWM from /proc/self/status), MB; NaN if unknown.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb * 1024.0 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn peak_rss_is_known_on_linux() {
        assert!(peak_rss_mb() > 0.0);
    }
}
