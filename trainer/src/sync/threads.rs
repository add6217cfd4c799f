//! Ranks as threads of one process: a [`GradSync`] whose collectives meet in shared memory.
//!
//! It runs the data-parallel semantics of the MPI and NCCL groups (same collectives, same
//! rank-order results) without a launcher, so tests can check that R ranks with batch b reach
//! what one process reaches with batch R·b. A rank that drops its handle (its thread returned
//! or panicked) makes every collective of the others fail instead of waiting for ever.

use super::GradSync;
use crate::{Result, TrainError};
use std::any::Any;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

type Round = Arc<Vec<Box<dyn Any + Send + Sync>>>;

struct State {
    /// Completed rounds; a rank waits for this to move past the round it joined.
    round: u64,
    /// This round's contributions, by rank.
    slots: Vec<Option<Box<dyn Any + Send + Sync>>>,
    arrived: usize,
    /// The last completed round's contributions.
    published: Round,
    /// The first rank that left the group.
    left: Option<usize>,
}

struct Shared {
    state: Mutex<State>,
    turn: Condvar,
}

/// One rank's handle on a group of threads.
pub struct ThreadGroup {
    rank: usize,
    world: usize,
    shared: Arc<Shared>,
}

impl ThreadGroup {
    /// A group of `world` ranks: one handle per rank, in rank order, to move into its thread.
    pub fn new(world: usize) -> Vec<ThreadGroup> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                round: 0,
                slots: (0..world).map(|_| None).collect(),
                arrived: 0,
                published: Arc::new(Vec::new()),
                left: None,
            }),
            turn: Condvar::new(),
        });
        (0..world)
            .map(|rank| ThreadGroup {
                rank,
                world,
                shared: shared.clone(),
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking rank poisons nothing we rely on: `left` tells the others.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every rank's `local`, in rank order.
    fn exchange<T: Clone + Send + Sync + 'static>(&self, local: &[T]) -> Result<Vec<Vec<T>>> {
        let mut st = self.lock();
        let joined = st.round;
        if let Some(r) = st.left {
            return Err(left(r));
        }
        st.slots[self.rank] = Some(Box::new(local.to_vec()));
        st.arrived += 1;
        if st.arrived == self.world {
            let all = st.slots.iter_mut().filter_map(Option::take).collect();
            st.published = Arc::new(all);
            st.arrived = 0;
            st.round += 1;
            self.shared.turn.notify_all();
        }
        while st.round == joined {
            if let Some(r) = st.left {
                return Err(left(r));
            }
            st = self
                .shared
                .turn
                .wait(st)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        let round = st.published.clone();
        drop(st);
        round
            .iter()
            .map(|b| {
                b.downcast_ref::<Vec<T>>().cloned().ok_or_else(|| {
                    TrainError::Collective("ranks called different collectives".into())
                })
            })
            .collect()
    }
}

fn left(rank: usize) -> TrainError {
    TrainError::Collective(format!("rank {rank} left the group"))
}

impl Drop for ThreadGroup {
    fn drop(&mut self) {
        let mut st = self.lock();
        st.left.get_or_insert(self.rank);
        self.shared.turn.notify_all();
    }
}

/// Element-wise sum of equal-length parts, in rank order.
fn sum<T: Copy + std::ops::AddAssign>(parts: Vec<Vec<T>>, out: &mut [T]) -> Result<()> {
    for (r, p) in parts.iter().enumerate() {
        if p.len() != out.len() {
            return Err(TrainError::Collective(format!(
                "rank {r} reduced {} values, this rank {}",
                p.len(),
                out.len()
            )));
        }
    }
    let mut parts = parts.into_iter();
    if let Some(first) = parts.next() {
        out.copy_from_slice(&first);
    }
    for p in parts {
        out.iter_mut().zip(&p).for_each(|(o, v)| *o += *v);
    }
    Ok(())
}

impl GradSync for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn all_reduce_mean(&mut self, buf: &mut [f32]) -> Result<()> {
        sum(self.exchange(buf)?, buf)?;
        let n = self.world as f32;
        buf.iter_mut().for_each(|v| *v /= n);
        Ok(())
    }
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<()> {
        sum(self.exchange(buf)?, buf)
    }
    fn all_gather(&mut self, local: &[f32]) -> Result<Vec<f32>> {
        Ok(self.exchange(local)?.concat())
    }
    fn all_gather_u64(&mut self, local: &[u64]) -> Result<Vec<u64>> {
        Ok(self.exchange(local)?.concat())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_ranks<R: Send + 'static>(
        world: usize,
        f: impl Fn(ThreadGroup) -> R + Send + Sync + 'static,
    ) -> Vec<R> {
        let f = Arc::new(f);
        let handles: Vec<_> = ThreadGroup::new(world)
            .into_iter()
            .map(|g| {
                let f = f.clone();
                std::thread::spawn(move || f(g))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn collectives_combine_every_rank_in_rank_order() {
        let out = on_ranks(3, |mut g| {
            let r = g.rank() as f32;
            let mut mean = vec![r, 10.0 * r];
            g.all_reduce_mean(&mut mean).unwrap();
            let mut sum = vec![g.rank() as f64 + 0.5];
            g.all_reduce_sum_f64(&mut sum).unwrap();
            // Several rounds in a row: no rank may read a later round's values.
            let gathered: Vec<Vec<f32>> = (0..5)
                .map(|k| g.all_gather(&[r + 100.0 * k as f32]).unwrap())
                .collect();
            let ids = g.all_gather_u64(&[g.rank() as u64, u64::MAX]).unwrap();
            let t = candle_core::Tensor::new(&[r, -r, 2.0], &candle_core::Device::Cpu).unwrap();
            let t = g
                .all_reduce_mean_tensor(&t)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (mean, sum, gathered, ids, t)
        });
        for (mean, sum, gathered, ids, t) in out {
            assert_eq!(mean, vec![1.0, 10.0]);
            assert_eq!(t, vec![1.0, -1.0, 2.0]);
            assert_eq!(sum, vec![4.5]);
            for (k, v) in gathered.iter().enumerate() {
                let base = 100.0 * k as f32;
                assert_eq!(v, &vec![base, base + 1.0, base + 2.0]);
            }
            assert_eq!(ids, vec![0, u64::MAX, 1, u64::MAX, 2, u64::MAX]);
        }
    }

    #[test]
    fn a_rank_that_leaves_fails_the_others_instead_of_hanging() {
        let out = on_ranks(3, |mut g| {
            if g.rank() == 1 {
                return Ok(());
            }
            let mut v = [1.0f32];
            g.all_reduce_mean(&mut v)
        });
        assert!(out[1].is_ok());
        for r in [0, 2] {
            let e = out[r].as_ref().unwrap_err().to_string();
            assert!(e.contains("rank 1 left"), "{e}");
        }
    }

    #[test]
    fn mismatched_lengths_are_named() {
        let out = on_ranks(2, |mut g| {
            let mut v = vec![0.0f64; 1 + g.rank()];
            g.all_reduce_sum_f64(&mut v)
        });
        let e = out[0].as_ref().unwrap_err().to_string();
        assert!(e.contains("rank 1 reduced 2 values, this rank 1"), "{e}");
    }
}
