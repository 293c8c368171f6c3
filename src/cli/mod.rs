//! The command lines of `vdar` and `vdar-restore` (feature `cli`): argument parsing, one file
//! per subcommand, human and JSON output. Both binaries are one call into this module, so the
//! recovery-media subset runs exactly the code of the full tool. Library errors are typed; here
//! they become anyhow chains, printed once with the exit code (0 ok, 1 damage or data lost,
//! 2 error).

mod archive_cmds;
mod archive_input;
mod args;
mod backup;
mod blockmap;
mod cat;
mod generate;
mod incremental;
mod inspect;
mod json;
mod logging;
mod progress;
mod retention;
mod san;
mod signals;
mod stdout;
mod units;
mod verify_progress;
mod volumes;
mod vsphere;
mod writeback;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use args::Cli;

/// `vdar`: parses the command line, runs the command and returns the process exit code.
pub fn vdar_main() -> ExitCode {
    let cli = Cli::parse();
    ui(cli.ui);
    exit_code("vdar", run_vdar(cli))
}

/// `vdar-restore`: the restore, verify and list subset for disaster-recovery media.
pub fn vdar_restore_main() -> ExitCode {
    let cli = args::RestoreCli::parse();
    ui(cli.ui);
    exit_code("vdar-restore", run_vdar_restore(cli))
}

/// Sets up stderr from the global flags: the log level and the progress mode.
fn ui(a: args::UiArgs) {
    logging::init(a.verbose, a.quiet);
    let forced = if a.no_progress || a.quiet > 0 {
        Some(false)
    } else {
        a.progress.then_some(true)
    };
    progress::set_mode(forced);
}

/// Prints an error once, as `PROGRAM: error: CHAIN`; an interrupt has its own exit code.
fn exit_code(program: &str, result: anyhow::Result<ExitCode>) -> ExitCode {
    // A stop can end the run while another thread still waits for an autoloader command.
    crate::archive::volume::end_running_changer();
    result.unwrap_or_else(|e| {
        signals::interrupted(&e, program).unwrap_or_else(|| {
            eprintln!("{program}: error: {e:#}");
            ExitCode::from(2)
        })
    })
}

/// `restore`: into files or stdout (`--to`), onto a datastore (`--vsphere`), or SAN
/// write-back (`--blockmap`).
fn restore(args: &args::RestoreArgs) -> anyhow::Result<ExitCode> {
    match &args.to {
        Some(to) => archive_cmds::restore(args, to),
        None if args.datastore.server.vsphere.is_some() => vsphere::restore(args),
        None => writeback::run(args),
    }
}

fn run_vdar_restore(cli: args::RestoreCli) -> anyhow::Result<ExitCode> {
    use args::RestoreCommand;
    match cli.command {
        RestoreCommand::Restore(a) => restore(&a),
        RestoreCommand::Verify(a) => archive_cmds::verify(&a),
        RestoreCommand::List(a) => archive_cmds::list(&a),
        RestoreCommand::Completions(a) => generate::completions(args::RestoreCli::command(), &a),
        RestoreCommand::Man => generate::man(args::RestoreCli::command(), "vdar"),
    }
}

fn run_vdar(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        args::Command::Inspect(a) => inspect::run(&a),
        args::Command::Cat(a) => cat::run(&a),
        args::Command::Backup(a) => backup::run(&a),
        args::Command::Restore(a) => restore(&a),
        args::Command::Consolidate(a) => incremental::consolidate(&a),
        args::Command::Catalog(a) => incremental::catalog(&a),
        args::Command::Verify(a) => archive_cmds::verify(&a),
        args::Command::List(a) => archive_cmds::list(&a),
        args::Command::Prune(a) => retention::prune(&a),
        args::Command::Blockmap(args::BlockmapCommand::Import(a)) => blockmap::import(&a),
        args::Command::Completions(a) => generate::completions(Cli::command(), &a),
        args::Command::Man => generate::man(Cli::command(), "vdar-restore"),
    }
}
