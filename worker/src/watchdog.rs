//! A watchdog over the collectives of the MPI and NCCL groups. Their collectives cannot time
//! out (an MPI all-reduce or a NCCL kernel waits for a hung, stopped or lost peer forever), so
//! without it one such rank held every rank of the job until the job's time limit. The
//! watchdog's thread watches each collective of this rank; one that waits longer than the
//! timeout ends this rank with its message ([`Watched`]), and the launcher then ends the job:
//! `mpirun` ends the other ranks when one exits with an error, `tmca launch` stops or restarts
//! them, and the other ranks of an `srun` step reach their own timeout in their next
//! collective. Only this rank's time inside a collective counts — but that includes waiting
//! there for rank 0 while it alone writes a checkpoint or generates data, which the default
//! timeout (30 minutes) leaves room for — and time the process spends stopped (a suspended
//! job) does not. The TCP group of `tmca launch` times out through its sockets instead (its
//! error names the rank it waited for).

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tmca_trainer::sync::GradSync;
use tmca_trainer::Result;

/// A collective that waited longer than the timeout.
#[derive(Debug, Clone, PartialEq)]
pub struct Expired {
    /// Which collective (e.g. "the gradients' all-reduce").
    pub what: &'static str,
    /// How long it had waited when the watchdog fired (at least the timeout).
    pub waited: Duration,
    pub rank: usize,
    pub world: usize,
}

impl fmt::Display for Expired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rank {} of {}: {} waited {} s for the other ranks (one of them hung, lost its node \
             or network, or was still busy alone: rank 0 writing a checkpoint or generating \
             data); ending this rank so that the job ends instead of waiting until its time \
             limit. `--resume` continues from the newest checkpoint; TMCA_COLLECTIVE_TIMEOUT \
             sets how long a collective may wait",
            self.rank,
            self.world,
            self.what,
            self.waited.as_secs()
        )
    }
}

/// What the watchdog's thread and the watched rank share.
#[derive(Default)]
struct State {
    /// The collective in progress and its number (each collective gets the next).
    armed: Option<(&'static str, u64)>,
    collectives: u64,
    closing: bool,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Times this rank's collectives on a thread of its own.
pub struct Watchdog {
    shared: Shared,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts the watchdog of rank `rank` of `world`: `on_expiry` runs (once, on the
    /// watchdog's thread, while the collective still waits) when a collective has waited
    /// `timeout`.
    pub fn start(
        timeout: Duration,
        rank: usize,
        world: usize,
        on_expiry: impl FnOnce(Expired) + Send + 'static,
    ) -> Self {
        let shared: Shared = Arc::default();
        let theirs = shared.clone();
        // The waiting time is counted in ticks of the watchdog's thread, each at most two
        // ticks long: time the process spends stopped (SIGSTOP, a SLURM job suspended, Ctrl-Z)
        // or unscheduled does not count, as it does not for the TCP ring's sockets.
        let tick = (timeout / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let thread = std::thread::Builder::new()
            .name("tmca-watchdog".into())
            .spawn(move || {
                let (state, wake) = &*theirs;
                let mut s = lock(state);
                let (mut watching, mut waited, mut last) = (None, Duration::ZERO, Instant::now());
                loop {
                    if s.closing {
                        return;
                    }
                    let Some((what, number)) = s.armed else {
                        watching = None;
                        s = wake.wait(s).unwrap_or_else(PoisonError::into_inner);
                        continue;
                    };
                    let now = Instant::now();
                    if watching != Some(number) {
                        (watching, waited) = (Some(number), Duration::ZERO);
                    } else {
                        waited += (now - last).min(2 * tick);
                    }
                    last = now;
                    if waited >= timeout {
                        drop(s);
                        on_expiry(Expired {
                            what,
                            waited,
                            rank,
                            world,
                        });
                        return;
                    }
                    s = wake
                        .wait_timeout(s, tick.min(timeout - waited))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            })
            .ok();
        if thread.is_none() {
            tracing::warn!("could not start the collectives' watchdog thread: a hung rank will hold the job until its time limit");
        }
        Self { shared, thread }
    }

    /// Runs the collective `f`, named `what` should it wait too long.
    pub fn watch<T>(&self, what: &'static str, f: impl FnOnce() -> T) -> T {
        let (state, wake) = &*self.shared;
        {
            let mut s = lock(state);
            s.collectives += 1;
            s.armed = Some((what, s.collectives));
        }
        wake.notify_one();
        let out = f();
        lock(state).armed = None;
        out
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (state, wake) = &*self.shared;
        lock(state).closing = true;
        wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A process group whose every collective is watched.
pub struct Watched {
    inner: Box<dyn GradSync>,
    dog: Watchdog,
}

impl Watched {
    pub fn new(inner: Box<dyn GradSync>, dog: Watchdog) -> Self {
        Self { inner, dog }
    }
}

const GRADIENTS: &str = "the gradients' all-reduce";

impl GradSync for Watched {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn world(&self) -> usize {
        self.inner.world()
    }
    fn all_reduce_mean(&mut self, buf: &mut [f32]) -> Result<()> {
        let g = &mut self.inner;
        self.dog.watch(GRADIENTS, || g.all_reduce_mean(buf))
    }
    fn all_reduce_mean_tensor(&mut self, t: &candle_core::Tensor) -> Result<candle_core::Tensor> {
        let g = &mut self.inner;
        self.dog.watch(GRADIENTS, || g.all_reduce_mean_tensor(t))
    }
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<()> {
        let g = &mut self.inner;
        self.dog.watch("an all-reduce of losses or metrics", || {
            g.all_reduce_sum_f64(buf)
        })
    }
    fn all_gather(&mut self, local: &[f32]) -> Result<Vec<f32>> {
        let g = &mut self.inner;
        self.dog
            .watch("the all-gather of the contrastive embeddings", || {
                g.all_gather(local)
            })
    }
    fn all_gather_u64(&mut self, local: &[u64]) -> Result<Vec<u64>> {
        let g = &mut self.inner;
        self.dog.watch("the all-gather of the report ids", || {
            g.all_gather_u64(local)
        })
    }
}

/// Ends this process at once with exit `code`: the main thread is inside a collective that
/// will not return, so neither unwinding nor `exit`'s handlers (MPI's among them) can run
/// safely. Checkpoints are written whole or not at all, so none is lost.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` takes no pointers and never returns.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use tmca_trainer::sync::SingleProcess;

    fn dog(timeout_ms: u64) -> (Watchdog, mpsc::Receiver<Expired>) {
        let (tx, rx) = mpsc::channel();
        let d = Watchdog::start(Duration::from_millis(timeout_ms), 1, 4, move |e| {
            tx.send(e).unwrap()
        });
        (d, rx)
    }

    #[test]
    fn a_collective_that_waits_too_long_fires_once_while_it_still_waits() {
        let (d, rx) = dog(100);
        let got = d.watch("the test's collective", || {
            // The watchdog speaks while the collective has not returned.
            rx.recv_timeout(Duration::from_secs(10)).unwrap()
        });
        assert_eq!(
            (got.what, got.rank, got.world),
            ("the test's collective", 1, 4)
        );
        assert!(got.waited >= Duration::from_millis(100), "{got:?}");
        let msg = got.to_string();
        assert!(
            msg.contains("rank 1 of 4") && msg.contains("TMCA_COLLECTIVE_TIMEOUT"),
            "{msg}"
        );
        // Once: the thread ended after firing.
        d.watch("again", || std::thread::sleep(Duration::from_millis(250)));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn time_between_collectives_does_not_count() {
        let (d, rx) = dog(1_000);
        for _ in 0..2 {
            d.watch("quick", || std::thread::sleep(Duration::from_millis(20)));
            // Idle (an evaluation, a checkpoint) for longer than the timeout.
            std::thread::sleep(Duration::from_millis(1_200));
        }
        drop(d);
        assert!(rx.try_recv().is_err(), "fired between collectives");
    }

    /// Time in which the watchdog's thread cannot run (here: the state held from outside,
    /// as when the process is stopped) does not count towards the timeout.
    #[test]
    fn time_the_watchdog_cannot_run_does_not_count() {
        let (d, rx) = dog(300);
        d.watch("suspended", || {
            std::thread::sleep(Duration::from_millis(50));
            let held = lock(&d.shared.0);
            std::thread::sleep(Duration::from_millis(1_000));
            drop(held);
            std::thread::sleep(Duration::from_millis(100));
        });
        drop(d);
        assert!(rx.try_recv().is_err(), "a suspension counted as waiting");
    }

    #[test]
    fn a_watched_group_passes_every_collective_through() {
        let (d, rx) = dog(5_000);
        let mut g = Watched::new(Box::new(SingleProcess), d);
        let mut v = [1.0, 2.0];
        g.all_reduce_sum_f64(&mut v).unwrap();
        assert_eq!(v, [1.0, 2.0]);
        assert_eq!(g.all_gather(&[3.0]).unwrap(), vec![3.0]);
        assert_eq!(g.all_gather_u64(&[7]).unwrap(), vec![7]);
        assert_eq!((g.rank(), g.world()), (0, 1));
        drop(g);
        assert!(rx.try_recv().is_err());
    }
}
