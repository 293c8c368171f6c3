//! `vdar`: the command-line front end. Everything happens in the library and `cli`; this file
//! maps the outcome to an exit code (0 ok, 1 damage found by verify, 2 error).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vdar: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
