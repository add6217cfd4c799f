//! The one place where errors become exit codes.
//!
//! | code | meaning |
//! |------|---------|
//! | 1    | anything else (internal error) |
//! | 2    | bad command line or configuration |
//! | 3    | bad input data (a file, sample or store that is wrong) |
//! | 4    | I/O error (missing file, permission, disk full) |
//! | 5    | validation found problems |
//! | 6    | training diverged (NaN/Inf loss) |

use tmca_data::DataError;
use tmca_trainer::TrainError;
use tmca_worker::WorkerError;

/// Raised when `tmca data validate` finds problems (they are printed before).
#[derive(Debug, thiserror::Error)]
#[error("{0} problem(s) found")]
pub struct ValidationFailed(pub usize);

/// Exit code for an error chain.
pub fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.downcast_ref::<ValidationFailed>().is_some() {
            return 5;
        }
        if cause.downcast_ref::<crate::cli::UsageError>().is_some() {
            return 2;
        }
        if let Some(e) = cause.downcast_ref::<crate::cmd::LaunchError>() {
            return e.exit_code();
        }
        if let Some(e) = cause.downcast_ref::<crate::signals::Interrupted>() {
            return e.exit_code();
        }
        if let Some(e) = cause.downcast_ref::<DataError>() {
            return data_code(e);
        }
        let train =
            cause
                .downcast_ref::<TrainError>()
                .or(match cause.downcast_ref::<WorkerError>() {
                    Some(WorkerError::Train(e)) => Some(e),
                    _ => None,
                });
        if let Some(e) = train {
            match e {
                TrainError::Config { .. } | TrainError::ConfigFile { .. } => return 2,
                TrainError::Io { .. } => return 4,
                TrainError::NonFinite { .. } => return 6,
                TrainError::File { .. } | TrainError::Checkpoint { .. } => {
                    return os_failure_or(e, 3)
                }
                TrainError::OtherModel { .. } => return 3,
                TrainError::Data(d) => return data_code(d),
                _ => {}
            }
        }
        if let Some(
            WorkerError::Env { .. }
            | WorkerError::NotBuilt { .. }
            | WorkerError::NotWired { .. }
            | WorkerError::NoNccl { .. }
            | WorkerError::Device(_),
        ) = cause.downcast_ref::<WorkerError>()
        {
            return 2;
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return 4;
        }
    }
    1
}

fn data_code(e: &DataError) -> u8 {
    match e {
        DataError::Config { .. } | DataError::AlreadyExists { .. } => 2,
        DataError::Io { .. } => 4,
        DataError::Internal(_) => 1,
        // As a shell reports a process the signal ended.
        DataError::Interrupted { .. } => crate::signals::exit_code(crate::signals::received()),
        _ => os_failure_or(e, 3),
    }
}

/// 4 when the error's message carries one of the operating system's storage failures (Rust
/// prints those as "… (os error N)": EIO, ENOSPC, EROFS, EDQUOT) that reached us through a
/// library that keeps only the text (zarrs' storage errors, candle's safetensors writer), else
/// `code`: a full disk is not bad input data. A missing or unreadable input stays `code`.
fn os_failure_or(e: &dyn std::fmt::Display, code: u8) -> u8 {
    let text = e.to_string();
    let storage = [libc::EIO, libc::ENOSPC, libc::EROFS, libc::EDQUOT]
        .iter()
        .any(|n| text.contains(&format!("(os error {n})")));
    if storage {
        4
    } else {
        code
    }
}

/// Prints `error: ` and the error's text on stderr (not with eprintln!, which panics, exit
/// 101, when stderr is a closed pipe).
pub fn print_error(err: &anyhow::Error) {
    crate::cmd::util::say(true, format_args!("error: {}", error_text(err)));
}

/// The error and its causes, joined by ": " as anyhow's `{:#}` does, leaving out a cause whose
/// text the message already holds (typed errors print their I/O source themselves, which
/// would otherwise read "No such file or directory (os error 2): No such file or directory
/// (os error 2)").
fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let s = cause.to_string();
        if text.contains(&s) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&s);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::code_for;
    use tmca_data::DataError;
    use tmca_trainer::TrainError;

    #[test]
    fn a_full_disk_behind_a_library_error_is_an_io_failure() {
        let full = "No space left on device (os error 28)";
        let zarr = DataError::Zarr {
            path: "out.zarr".into(),
            message: format!("failed to store chunk: {full}"),
        };
        assert_eq!(code_for(&zarr.into()), 4);
        let ckpt = TrainError::Checkpoint {
            path: "run/checkpoints/step-1".into(),
            message: full.into(),
        };
        assert_eq!(code_for(&ckpt.into()), 4);
        let bad = DataError::Zarr {
            path: "in.zarr".into(),
            message: "image of sample 3: Restored data doesn't match checksum".into(),
        };
        assert_eq!(code_for(&bad.into()), 3);
        let file = TrainError::File {
            path: "w.safetensors".into(),
            message: "header too large".into(),
        };
        assert_eq!(code_for(&file.into()), 3);
        let missing = TrainError::Checkpoint {
            path: "/nonexistent".into(),
            message: "no readable manifest.json (No such file or directory (os error 2))".into(),
        };
        assert_eq!(code_for(&missing.into()), 3);
    }

    #[test]
    fn repeated_causes_are_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone (os error 2)");
        let e = anyhow::Error::new(io)
            .context("x.toml: gone (os error 2)")
            .context("loading");
        assert_eq!(super::error_text(&e), "loading: x.toml: gone (os error 2)");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(super::error_text(&e), "outer: inner");
    }
}
