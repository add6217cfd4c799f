//! One module per command family; each returns `anyhow::Result` and leaves exit codes to
//! [`crate::exit`].

mod bench;
mod compare;
mod data;
mod ensemble;
mod export;
mod heatmap;
mod launch;
mod npy;
mod predict;
mod quality;
mod quickstart;
mod runs;
mod step;

mod train;

pub mod util;

pub use launch::LaunchError;

use crate::cli::{BenchCommand, Cli, Command};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Quickstart(a) => quickstart::run(&a),
        Command::Data(d) => data::run(d),
        Command::Train(a) => train::train(&a).map(|_| ()),
        Command::Launch(a) => launch::run(&a),
        Command::Eval(a) => train::eval(&a),
        Command::Predict(a) => predict::run(&a),
        Command::Runs(a) => runs::run(&a),
        Command::Compare(a) => compare::run(&a),
        Command::Export(a) => export::run(&a),
        Command::Config(a) if !a.all => {
            print!("{}", tmca_trainer::config::DEFAULT_CONFIG);
            Ok(())
        }
        Command::Config(a) => {
            let cfg = match &a.config {
                Some(p) => tmca_trainer::config::Config::load(p)?,
                None => tmca_trainer::config::Config::default_config()?,
            };
            print!("{}", cfg.to_toml()?);
            Ok(())
        }

        Command::Bench(BenchCommand::Data(a)) => bench::data(&a),
        Command::Bench(BenchCommand::Quality(a)) => quality::run(&a),
        Command::Bench(BenchCommand::Step(a)) => step::run(&a),
        Command::Bench(BenchCommand::StepProbe(a)) => step::probe(&a),
    }
}
