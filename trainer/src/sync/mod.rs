//! Gradient and metric synchronisation across data-parallel ranks, as a trait: the trainer calls
//! it, the worker implements it (a TCP ring under `tmca launch`, MPI, NCCL), [`ThreadGroup`]
//! is the in-process twin the tests use, and [`SingleProcess`] is the world of one.

use crate::Result;
use candle_core::Tensor;

mod threads;
pub use threads::ThreadGroup;

/// Collective operations the training loop needs.
pub trait GradSync {
    /// This process's rank and the number of ranks.
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// Replaces `buf` by the mean of every rank's `buf` (gradients).
    fn all_reduce_mean(&mut self, buf: &mut [f32]) -> Result<()>;
    /// The mean over ranks of the 1-D f32 tensor `t` (the flattened gradients), on `t`'s
    /// device. This default goes through a host buffer and [`GradSync::all_reduce_mean`]; a
    /// group whose collectives run on the device (NCCL) overrides it to avoid the copies.
    fn all_reduce_mean_tensor(&mut self, t: &Tensor) -> Result<Tensor> {
        let mut buf = t.to_vec1::<f32>()?;
        self.all_reduce_mean(&mut buf)?;
        Ok(Tensor::from_vec(buf, t.dims(), t.device())?)
    }
    /// Replaces `buf` by the sum of every rank's `buf` (metric sums, counts).
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<()>;
    /// Concatenates every rank's `local` in rank order (all ranks pass equal lengths).
    fn all_gather(&mut self, local: &[f32]) -> Result<Vec<f32>>;
    /// [`GradSync::all_gather`] for 64-bit ids (report groups).
    fn all_gather_u64(&mut self, local: &[u64]) -> Result<Vec<u64>>;
}

/// One process: every collective is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl GradSync for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn all_reduce_mean(&mut self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&mut self, _buf: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn all_gather(&mut self, local: &[f32]) -> Result<Vec<f32>> {
        Ok(local.to_vec())
    }
    fn all_gather_u64(&mut self, local: &[u64]) -> Result<Vec<u64>> {
        Ok(local.to_vec())
    }
}
