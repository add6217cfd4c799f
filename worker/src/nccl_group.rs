//! The NCCL process group (feature `nccl`): GPU ranks, one GPU each, on the stream candle
//! computes on. The gradients are averaged where they are: the trainer hands over one flat
//! tensor on the GPU and NCCL reduces it in place, ordered with candle's kernels on the same
//! stream (no host copy). The small collectives (loss values, gathered embeddings, metric sums)
//! take host buffers: a copy to the GPU, the collective, a copy back. NCCL moves the data
//! between GPUs (NVLink, PCIe or the network), and every rank gets the same result. Rank 0
//! makes the NCCL unique id; it reaches the others through `tmca launch`'s store or an MPI
//! broadcast.

use crate::WorkerError;
use candle_core::cuda_backend::cudarc::driver::CudaStream;
use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
use candle_core::cuda_backend::CudaStorage;
use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Tensor};
use std::any::Any;
use std::sync::Arc;
use tmca_trainer::sync::GradSync;
use tmca_trainer::TrainError;

/// The bytes of a NCCL unique id.
pub type IdBytes = [u8; 128];

/// A fresh NCCL unique id (made on rank 0).
pub fn new_id() -> Result<IdBytes, WorkerError> {
    let id = Id::new().map_err(|e| WorkerError::Nccl(format!("ncclGetUniqueId: {e:?}")))?;
    Ok(id.internal().map(|c| c as u8))
}

/// One GPU rank's communicator.
pub struct NcclGroup {
    comm: Comm,
    stream: Arc<CudaStream>,
    rank: usize,
    world: usize,
    /// What the id exchange needs alive as long as the group (MPI, when it carried the id).
    _keep: Option<Box<dyn Any>>,
}

fn fail(what: &str, e: impl std::fmt::Debug) -> TrainError {
    TrainError::Collective(format!("NCCL {what}: {e:?}"))
}

impl NcclGroup {
    /// Joins the communicator of `world` ranks identified by `id` on `device` (a GPU).
    pub fn new(
        device: &candle_core::Device,
        rank: usize,
        world: usize,
        id: IdBytes,
        keep: Option<Box<dyn Any>>,
    ) -> Result<Self, WorkerError> {
        let candle_core::Device::Cuda(dev) = device else {
            return Err(WorkerError::Nccl(
                "the NCCL group needs a GPU device".into(),
            ));
        };
        let stream = dev.cuda_stream();
        let comm = Comm::from_rank(stream.clone(), rank, world, Id::uninit(id.map(|b| b as _)))
            .map_err(|e| {
                WorkerError::Nccl(format!("ncclCommInitRank (rank {rank} of {world}): {e:?}"))
            })?;
        Ok(Self {
            comm,
            stream,
            rank,
            world,
            _keep: keep,
        })
    }

    fn reduce<T>(&mut self, buf: &mut [T], op: ReduceOp) -> Result<(), TrainError>
    where
        T: candle_core::cuda_backend::cudarc::driver::DeviceRepr
            + candle_core::cuda_backend::cudarc::nccl::safe::NcclType,
    {
        if buf.is_empty() {
            return Ok(());
        }
        let mut d = self.stream.clone_htod(buf).map_err(|e| fail("upload", e))?;
        self.comm
            .all_reduce_in_place(&mut d, &op)
            .map_err(|e| fail("all-reduce", e))?;
        self.stream
            .memcpy_dtoh(&d, buf)
            .map_err(|e| fail("download", e))?;
        self.stream
            .synchronize()
            .map_err(|e| fail("synchronize", e))
    }

    fn gather<T>(&mut self, local: &[T]) -> Result<Vec<T>, TrainError>
    where
        T: candle_core::cuda_backend::cudarc::driver::DeviceRepr
            + candle_core::cuda_backend::cudarc::driver::ValidAsZeroBits
            + candle_core::cuda_backend::cudarc::nccl::safe::NcclType
            + Default
            + Clone,
    {
        if local.is_empty() {
            return Ok(vec![]);
        }
        let send = self
            .stream
            .clone_htod(local)
            .map_err(|e| fail("upload", e))?;
        let mut recv = self
            .stream
            .alloc_zeros::<T>(local.len() * self.world)
            .map_err(|e| fail("alloc", e))?;
        self.comm
            .all_gather(&send, &mut recv)
            .map_err(|e| fail("all-gather", e))?;
        let out = self
            .stream
            .clone_dtoh(&recv)
            .map_err(|e| fail("download", e))?;
        self.stream
            .synchronize()
            .map_err(|e| fail("synchronize", e))?;
        Ok(out)
    }
}

/// NCCL's mean over ranks of a whole contiguous f32 GPU tensor, in place, on candle's stream.
struct AllReduceAvg<'a> {
    comm: &'a Comm,
}

impl InplaceOp1 for AllReduceAvg<'_> {
    fn name(&self) -> &'static str {
        "nccl_all_reduce_avg"
    }

    fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout) -> candle_core::Result<()> {
        candle_core::bail!("the NCCL all-reduce needs a GPU tensor")
    }

    fn cuda_fwd(&self, s: &mut CudaStorage, l: &Layout) -> candle_core::Result<()> {
        let slice = s.as_cuda_slice_mut::<f32>()?;
        if !l.is_contiguous() || l.start_offset() != 0 || l.shape().elem_count() != slice.len() {
            candle_core::bail!("the NCCL all-reduce needs a whole contiguous tensor");
        }
        self.comm
            .all_reduce_in_place(slice, &ReduceOp::Avg)
            .map_err(|e| candle_core::Error::Msg(format!("NCCL all-reduce: {e:?}")))?;
        Ok(())
    }
}

impl GradSync for NcclGroup {
    fn all_reduce_mean_tensor(&mut self, t: &Tensor) -> tmca_trainer::Result<Tensor> {
        if !t.device().is_cuda() {
            let mut buf = t.to_vec1::<f32>()?;
            self.reduce(&mut buf, ReduceOp::Avg)?;
            return Ok(Tensor::from_vec(buf, t.dims(), t.device())?);
        }
        // A fresh buffer (a device-to-device copy): the reduction overwrites it.
        let out = t.to_dtype(DType::F32)?.copy()?;
        out.inplace_op1(&AllReduceAvg { comm: &self.comm })?;
        // Waited for here, inside the watched collective (crate::watchdog): a peer that never
        // joins it would otherwise hold this rank at its next read of a value, unwatched.
        self.stream
            .synchronize()
            .map_err(|e| fail("synchronize", e))?;
        Ok(out)
    }

    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn all_reduce_mean(&mut self, buf: &mut [f32]) -> tmca_trainer::Result<()> {
        self.reduce(buf, ReduceOp::Avg)
    }
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> tmca_trainer::Result<()> {
        self.reduce(buf, ReduceOp::Sum)
    }
    fn all_gather(&mut self, local: &[f32]) -> tmca_trainer::Result<Vec<f32>> {
        self.gather(local)
    }
    fn all_gather_u64(&mut self, local: &[u64]) -> tmca_trainer::Result<Vec<u64>> {
        self.gather(local)
    }
}
