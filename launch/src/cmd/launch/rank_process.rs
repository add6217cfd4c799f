//! A rank's process, signalled through a pidfd: its watcher task reaps it as it ends, possibly
//! before the supervisor hears of that, and a signal sent by PID in between could reach an
//! unrelated process that took the recycled PID. A pidfd keeps naming the rank after it is
//! reaped (a signal then fails with ESRCH). Kernels without pidfds (Linux < 5.3, not Linux):
//! by PID, as before.

#[cfg(target_os = "linux")]
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub(super) struct RankProcess {
    pid: u32,
    #[cfg(target_os = "linux")]
    fd: Option<OwnedFd>,
}

impl RankProcess {
    /// The child `pid`: call before it can be reaped (before its watcher waits for it).
    pub(super) fn open(pid: u32) -> Self {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: pidfd_open(pid, 0) only returns a new descriptor (or −1); it is owned here.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
            let fd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) });
            Self { pid, fd }
        }
        #[cfg(not(target_os = "linux"))]
        Self { pid }
    }

    /// Sends `sig`; false when the rank has ended and been reaped (or the signal failed).
    pub(super) fn signal(&self, sig: i32) -> bool {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            // SAFETY: pidfd_send_signal on a descriptor this struct owns, no siginfo, flags 0.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    sig,
                    std::ptr::null::<libc::siginfo_t>(),
                    0u32,
                )
            };
            return r == 0;
        }
        // SAFETY: kill(2) with a PID and a signal number has no memory effects.
        unsafe { libc::kill(self.pid as libc::pid_t, sig) == 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::RankProcess;
    use std::os::unix::process::ExitStatusExt;

    /// A running child gets the signal; once reaped, signalling it reaches nothing.
    #[test]
    fn signals_reach_the_child_until_it_is_reaped() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let p = RankProcess::open(child.id());
        assert!(p.signal(libc::SIGTERM));
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGTERM));
        assert!(!p.signal(libc::SIGTERM));
    }
}
