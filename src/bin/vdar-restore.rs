//! `vdar-restore`: restore, verify and list only, for disaster-recovery media. Same code and
//! exit codes as the matching `vdar` commands (0 ok, 1 damage or data lost, 2 error).

// The shared command code lives with `vdar`'s CLI; `archive_cmds` refers to `super::args`,
// which resolves to this crate root.
#[path = "../cli/archive_cmds.rs"]
mod archive_cmds;
#[allow(dead_code)]
#[path = "../cli/args.rs"]
mod args;
#[path = "../cli/generate.rs"]
mod generate;
// SAN write-back (`restore --blockmap`) belongs on recovery media too.
// The backup's progress line is unused here.
#[allow(dead_code)]
#[path = "../cli/progress.rs"]
mod progress;
#[allow(dead_code)]
#[path = "../cli/records.rs"]
mod records;
#[allow(dead_code)]
#[path = "../cli/san.rs"]
mod san;
#[path = "../cli/signals.rs"]
mod signals;
#[path = "../cli/stdout.rs"]
mod stdout;
#[path = "../cli/units.rs"]
mod units;
#[path = "../cli/writeback.rs"]
mod writeback;

use std::process::ExitCode;

// See src/main.rs: chunk-sized buffers are reused instead of faulted in again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use args::{CompletionsArgs, ListArgs, RestoreArgs, VerifyArgs};
use clap::{CommandFactory, Parser, Subcommand};

/// Restore, verify and list vdar archives.
#[derive(Debug, Parser)]
#[command(
    name = "vdar-restore",
    version,
    about = "Restore, verify and list vdar archives: the disaster-recovery subset of vdar"
)]
#[command(after_help = args::EXIT_CODES)]
struct RestoreCli {
    #[command(subcommand)]
    command: RestoreCommand,
}

#[derive(Debug, Subcommand)]
enum RestoreCommand {
    /// Restore an archive (file or `-`) into a directory, or (--blockmap) onto SAN LUNs.
    Restore(RestoreArgs),
    /// Check every checksum; exit 1 on damage.
    Verify(VerifyArgs),
    /// List VMs, disks, files and figures.
    List(ListArgs),
    /// Print a shell completion script (for packagers).
    #[command(hide = true)]
    Completions(CompletionsArgs),
    /// Print the man page (for packagers).
    #[command(hide = true)]
    Man,
}

fn main() -> ExitCode {
    let result = match RestoreCli::parse().command {
        RestoreCommand::Restore(a) => archive_cmds::restore(&a),
        RestoreCommand::Verify(a) => archive_cmds::verify(&a),
        RestoreCommand::List(a) => archive_cmds::list(&a),
        RestoreCommand::Completions(a) => generate::completions(RestoreCli::command(), &a),
        RestoreCommand::Man => generate::man(RestoreCli::command(), "vdar"),
    };
    result.unwrap_or_else(|e| {
        signals::interrupted(&e, "vdar-restore").unwrap_or_else(|| {
            eprintln!("vdar-restore: error: {e:#}");
            ExitCode::from(2)
        })
    })
}
