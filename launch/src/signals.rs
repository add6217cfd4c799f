//! SIGTERM / SIGINT / SIGUSR1 while training: the first one asks the trainer to stop after the
//! current step with a checkpoint (SLURM sends SIGTERM before its time limit's SIGKILL, and
//! SIGUSR1 a chosen time before it with `--signal=USR1@SECONDS`; `tmca launch` and mpirun
//! forward theirs); another one, 2 s or more later, ends the process at once.
//! Signals within those 2 s count as the same request: under SLURM a rank gets the job's
//! SIGTERM both directly and forwarded by its launcher.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};

/// The signals that stop training after its step with a checkpoint.
pub const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1];

/// 128 + `sig`, as a shell reports a process the signal ended; `0` (no signal of its own: a
/// stop at another rank's request) as SIGTERM's 143, so that launchers see a stop.
pub fn exit_code(sig: libc::c_int) -> u8 {
    let sig = if sig == 0 { libc::SIGTERM } else { sig };
    (128 + sig).clamp(1, 255) as u8
}

/// Whether a rank's exit `code` is one of a stop on [`STOP_SIGNALS`] (with its checkpoint).
pub fn is_stop_exit(code: i32) -> bool {
    STOP_SIGNALS
        .iter()
        .any(|&s| i32::from(exit_code(s)) == code)
}

static STOP: AtomicBool = AtomicBool::new(false);
/// Whether a first signal waits for the step to end (training); before, it ends the process.
static GRACEFUL: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// CLOCK_MONOTONIC milliseconds of the first signal.
static FIRST_MS: AtomicI64 = AtomicI64::new(0);

fn now_ms() -> i64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime is async-signal-safe and writes only `t`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec * 1000 + t.tv_nsec / 1_000_000
}

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe work: atomics, clock_gettime and _exit.
    let now = now_ms();
    if !GRACEFUL.load(Ordering::SeqCst) {
        // Still meeting the other ranks (a node may wait minutes for another): nothing to
        // save yet, so end now.
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + sig) };
    }
    // The first signal's time is set before SIGNAL says a signal came: a second signal
    // handled on another thread in between must not read 0 and take itself as late.
    let _ = FIRST_MS.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
    if SIGNAL.swap(sig, Ordering::SeqCst) != 0 {
        if now - FIRST_MS.load(Ordering::SeqCst) >= 2000 {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(128 + sig) };
        }
        return;
    }
    STOP.store(true, Ordering::SeqCst);
}

/// From now on a first signal asks the trainer to stop after its step (call once the ranks
/// have met); until then a signal ends the process at once.
pub fn graceful() {
    GRACEFUL.store(true, Ordering::SeqCst);
}

/// Installs the handler; the flag it sets is what `RunOptions::stop` takes.
pub fn install() -> &'static AtomicBool {
    for sig in STOP_SIGNALS {
        // SAFETY: `on_signal` only touches atomics and calls _exit, as a handler must.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    &STOP
}

/// The signal that stopped training (0: none).
pub fn received() -> i32 {
    SIGNAL.load(Ordering::SeqCst)
}

/// Training stopped early on a signal, with a checkpoint where it stopped: this process's
/// own signal, or (`signal` 0) another rank's, which all ranks stop at together.
#[derive(Debug)]
pub struct Interrupted {
    pub signal: i32,
    pub step: u64,
    pub checkpoint: String,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.signal {
            0 => write!(
                f,
                "stopped after step {} because another rank was stopped",
                self.step
            )?,
            s => write!(f, "stopped by signal {s} after step {}", self.step)?,
        }
        write!(
            f,
            "; checkpoint {}; continue with --resume",
            self.checkpoint
        )
    }
}

impl std::error::Error for Interrupted {}

impl Interrupted {
    /// [`exit_code`] of its signal.
    pub fn exit_code(&self) -> u8 {
        exit_code(self.signal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_at_another_ranks_request_reads_as_one() {
        let peer = Interrupted {
            signal: 0,
            step: 7,
            checkpoint: "written by rank 0".into(),
        };
        assert_eq!(peer.exit_code(), 143);
        assert!(peer.to_string().contains("another rank"), "{peer}");
        let own = Interrupted {
            signal: libc::SIGINT,
            ..peer
        };
        assert_eq!(own.exit_code(), 130);
        assert!(own
            .to_string()
            .starts_with("stopped by signal 2 after step 7"));
    }

    #[test]
    fn the_stop_exit_codes_are_those_of_the_stop_signals() {
        assert_eq!(exit_code(libc::SIGUSR1), 138);
        for code in [130, 138, 143] {
            assert!(is_stop_exit(code), "{code}");
        }
        for code in [0, 1, 3, 137] {
            assert!(!is_stop_exit(code), "{code}");
        }
    }
}
