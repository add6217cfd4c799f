//! Which device a rank computes on: `run.device` and the rank's place on its node.

use crate::WorkerError;
use candle_core::Device;

/// The GPUs this process sees (after `CUDA_VISIBLE_DEVICES`); an error in a build without CUDA.
pub fn gpu_count() -> Result<usize, WorkerError> {
    #[cfg(feature = "cuda")]
    {
        use candle_core::cuda_backend::cudarc::driver::CudaContext;
        CudaContext::device_count()
            .map(|n| n.max(0) as usize)
            .map_err(|e| WorkerError::Device(format!("counting GPUs: {e:?}")))
    }
    #[cfg(not(feature = "cuda"))]
    Err(WorkerError::Device(
        "this tmca was built without CUDA, so it sees no GPU; rebuild with \
         `cargo build --release -p tmca-launch --features cuda,nccl`"
            .into(),
    ))
}

/// The GPU ordinal of the rank with `local_rank` when the process sees `count` GPUs: its own
/// (`local_rank`) when it sees all of the node's, the one it sees when it sees one (a launcher
/// or `srun --gpus-per-task=1` set CUDA_VISIBLE_DEVICES per rank). Ranks that see the same
/// single GPU share it: NCCL then refuses the group ("Duplicate GPU detected"), which names
/// the problem.
pub fn ordinal(local_rank: usize, count: usize) -> Result<usize, WorkerError> {
    match count {
        0 => Err(WorkerError::Device(
            "no GPU is visible (CUDA_VISIBLE_DEVICES, or the driver)".into(),
        )),
        1 => Ok(0),
        n if local_rank < n => Ok(local_rank),
        n => Err(WorkerError::Device(format!(
            "local rank {local_rank} has no GPU of its own: this process sees {n} \
             (CUDA_VISIBLE_DEVICES); start at most {n} ranks per node, or give each rank one GPU"
        ))),
    }
}

/// The device for `pref` (`auto`, `cpu` or `cuda`) on the rank with `local_rank`: its GPU
/// ([`ordinal`]) for `cuda`, and for `auto` when this is a CUDA build that finds it.
pub fn bind_device(pref: &str, local_rank: usize) -> Result<Device, WorkerError> {
    let cuda = || {
        let ord = ordinal(local_rank, gpu_count()?)?;
        Device::new_cuda(ord).map_err(|e| WorkerError::Device(format!("cuda:{ord}: {e}")))
    };
    match pref {
        "cpu" => Ok(Device::Cpu),
        "cuda" if candle_core::utils::cuda_is_available() => cuda(),
        "cuda" => Err(WorkerError::Device(
            "run.device = \"cuda\", but this tmca was built without CUDA; rebuild with \
             `cargo build --release -p tmca-launch --features cuda` or set run.device = \"cpu\""
                .into(),
        )),
        "auto" if candle_core::utils::cuda_is_available() => cuda().or_else(|e| {
            tracing::warn!("{e}; training on the CPU");
            Ok(Device::Cpu)
        }),
        "auto" => Ok(Device::Cpu),
        other => Err(WorkerError::Device(format!(
            "run.device = {other:?}: use auto, cpu or cuda"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rank_takes_its_gpu_or_the_one_it_sees() {
        assert_eq!(ordinal(3, 8).unwrap(), 3);
        assert_eq!(ordinal(3, 1).unwrap(), 0);
        assert_eq!(ordinal(0, 1).unwrap(), 0);
        let e = ordinal(4, 2).unwrap_err().to_string();
        assert!(
            e.contains("local rank 4") && e.contains("CUDA_VISIBLE_DEVICES"),
            "{e}"
        );
        assert!(ordinal(0, 0).is_err());
    }

    #[test]
    fn cpu_and_auto_without_cuda_pick_the_cpu_and_cuda_says_how_to_get_it() {
        assert!(bind_device("cpu", 3).unwrap().is_cpu());
        if candle_core::utils::cuda_is_available() {
            return; // the rest is about builds without CUDA
        }
        assert!(bind_device("auto", 0).unwrap().is_cpu());
        let e = bind_device("cuda", 0).unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
        let e = bind_device("tpu", 0).unwrap_err().to_string();
        assert!(e.contains("\"tpu\""), "{e}");
    }
}
