//! What produced a checkpoint or a result besides its config: the build, the compute threads
//! (the kernels' summation order, and so one seed's trajectory, follows them), the device and
//! the ranks. Written into checkpoint manifests and evaluation records.

use serde::{Deserialize, Serialize};

/// The build's commit, set once by the binary ([`set_build`]); `unknown` until then.
static BUILD: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Records the git commit this process was built from (the binary's build script knows it;
/// this library does not, so that a commit rebuilds only the binary).
pub fn set_build(commit: &str) {
    let _ = BUILD.set(commit.to_string());
}

/// The build and the machine side of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub tmca_version: String,
    /// The git commit tmca was built from (`-dirty`: with uncommitted changes; `unknown`
    /// outside a git checkout).
    pub commit: String,
    /// Compute threads per rank (`RAYON_NUM_THREADS`, else the cores).
    pub threads: usize,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Data-parallel ranks.
    pub ranks: usize,
}

impl Provenance {
    /// This process's, for a run of `ranks` ranks on `device`.
    pub fn now(device: &candle_core::Device, ranks: usize) -> Self {
        Self {
            tmca_version: env!("CARGO_PKG_VERSION").into(),
            commit: BUILD.get().map_or("unknown", String::as_str).into(),
            threads: rayon::current_num_threads(),
            device: match device.location() {
                candle_core::DeviceLocation::Cpu => "cpu".into(),
                candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
                candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
            },
            ranks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_threads_and_device_it_runs_with() {
        let p = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap()
            .install(|| Provenance::now(&candle_core::Device::Cpu, 2));
        assert_eq!((p.threads, p.device.as_str(), p.ranks), (3, "cpu", 2));
        assert!(!p.commit.is_empty() && !p.tmca_version.is_empty());
        let back: Provenance = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
