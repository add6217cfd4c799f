//! Process-wide allocator settings, made once at start-up (the binary's business, like logging).
//!
//! candle allocates every tensor afresh and frees it when the graph is dropped, so a training
//! step allocates and frees hundreds of MiB in buffers of 0.1–30 MiB. With glibc's defaults the
//! larger ones are `mmap`ed and the top of the heap is returned to the kernel after each step,
//! so every step page-faults the same memory back in (and, across threads, pays TLB
//! shootdowns). Keeping buffers up to 32 MiB on the heap and not trimming it made the default
//! training step ~20% faster on the 2-core CI machine at the same peak RSS (BENCHMARKS.md).

/// The mmap threshold: glibc's maximum (buffers above it are mapped and unmapped as before).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Free memory kept at the top of the heap before glibc returns it to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 1 << 30;

/// What [`tune`] did, for the log.
pub enum Tuning {
    /// Thresholds set (mmap, trim) in bytes.
    Set(i64, i64),
    /// `GLIBC_TUNABLES` already sets the allocator: left as the user configured it.
    UserTunables,
    /// glibc refused a setting (the allocator keeps its defaults for it).
    Refused(&'static str),
    /// Not glibc: nothing to do.
    #[cfg_attr(all(target_os = "linux", target_env = "gnu"), allow(dead_code))]
    Unsupported,
}

/// Sets glibc's malloc thresholds unless `GLIBC_TUNABLES` (the user's own setting) has any.
pub fn tune() -> Tuning {
    let user = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."));
    if user {
        return Tuning::UserTunables;
    }
    set()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set() -> Tuning {
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread
    // exists (first thing in main) and with values glibc documents as valid.
    if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) } != 1 {
        return Tuning::Refused("M_MMAP_THRESHOLD");
    }
    // SAFETY: as above.
    if unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) } != 1 {
        return Tuning::Refused("M_TRIM_THRESHOLD");
    }
    Tuning::Set(MMAP_THRESHOLD.into(), TRIM_THRESHOLD.into())
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set() -> Tuning {
    Tuning::Unsupported
}

impl std::fmt::Display for Tuning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tuning::Set(m, t) => write!(
                f,
                "malloc: buffers up to {} MiB on the heap, trimmed past {} MiB free",
                m >> 20,
                t >> 20
            ),
            Tuning::UserTunables => write!(f, "malloc: left to GLIBC_TUNABLES"),
            Tuning::Refused(p) => write!(f, "malloc: glibc refused {p}; its default stays"),
            Tuning::Unsupported => write!(f, "malloc: not glibc, defaults kept"),
        }
    }
}
