//! One module per command family; each returns `anyhow::Result` and leaves exit codes to
//! [`crate::exit`].

mod bench;
mod data;
mod quickstart;
pub mod util;

use crate::cli::{BenchCommand, Cli, Command};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Quickstart(a) => quickstart::run(&a),
        Command::Data(d) => data::run(d),
        Command::Bench(BenchCommand::Data(a)) => bench::data(&a),
    }
}
