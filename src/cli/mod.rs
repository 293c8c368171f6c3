//! The `vdar` command line: argument parsing, one file per subcommand, human and JSON output.
//! Library errors are typed; here they become anyhow chains printed once by `main`.

pub mod args;
mod cat;
mod inspect;
mod output;

use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;

/// Parses the command line and runs the command.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        args::Command::Inspect(a) => inspect::run(&a),
        args::Command::Cat(a) => cat::run(&a),
    }
}
