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

/// The device for `pref` (`auto`, `cpu` or `cuda`) on the rank with `local_rank`: GPU
/// `cuda:<local_rank>` for `cuda`, and for `auto` when this is a CUDA build that finds it.
pub fn bind_device(pref: &str, local_rank: usize) -> Result<Device, WorkerError> {
    let cuda = || {
        Device::new_cuda(local_rank)
            .map_err(|e| WorkerError::Device(format!("cuda:{local_rank}: {e}")))
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
