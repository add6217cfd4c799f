//! `tmca`: the command-line entry point. Parses arguments, installs logging, runs the command
//! and maps every error to an exit code in one place ([`exit::code_for`]).

mod alloc;
mod cli;
mod cmd;
mod exit;
mod progress;
mod signals;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let tuning = alloc::tune();
    tmca_trainer::provenance::set_build(env!("TMCA_BUILD_COMMIT"));
    let cli = cli::Cli::parse();
    if !matches!(
        cli.command,
        cli::Command::Train(_) | cli::Command::Launch(_)
    ) {
        restore_sigpipe();
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("TMCA_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if cli.verbose { "debug" } else { "info" })
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    tracing::debug!("{tuning}");
    match cmd::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            let code = exit::code_for(&err);
            // A config or command-line error is the same on every rank: rank 0 says it once
            // (instead of every rank of a launch at once, interleaved).
            let rank = tmca_worker::rank_env(|k| std::env::var(k).ok()).map_or(0, |e| e.rank);
            if code != 2 || rank == 0 {
                exit::print_error(&err);
            }
            std::process::ExitCode::from(code)
        }
    }
}

/// Commands whose output is read by other programs end quietly, as Unix tools do, when the
/// reader goes away (`tmca eval … | head`): the default SIGPIPE action instead of Rust's
/// ignored SIGPIPE, under which the next print panics. Not for training, whose sockets rely on
/// write errors.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: resets one signal's disposition to the default before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
