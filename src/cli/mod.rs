//! The `vdar` command line: argument parsing, one file per subcommand, human and JSON output.
//! Library errors are typed; here they become anyhow chains printed once by `main`.

mod archive_cmds;
pub mod args;
mod backup;
mod blockmap;
mod cat;
mod direct_out;
mod generate;
mod inspect;
mod output;
mod progress;
mod records;
mod san;
mod signals;
mod stdout;
mod units;
mod writeback;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

pub use args::Cli;

/// Groups command-line inputs into VMs: each .vmx is one VM; bare disk descriptors given
/// together form one VM named after the first.
pub fn select_inputs(
    inputs: &[std::path::PathBuf],
    snapshot: Option<&str>,
) -> anyhow::Result<Vec<vdar::input::vm::VmSelection>> {
    use vdar::input::vm::{is_vmx, select_vm, VmDisk, VmSelection};
    let mut out = Vec::new();
    let mut loose = Vec::new();
    for input in inputs {
        if is_vmx(input) {
            let sel = select_vm(input, snapshot)?;
            for w in &sel.warnings {
                eprintln!("vdar: warning: {w}");
            }
            out.push(sel);
        } else {
            if snapshot.is_some() {
                anyhow::bail!("--snapshot needs a .vmx, not {}", input.display());
            }
            let name = input
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            loose.push(VmDisk {
                name,
                top: input.clone(),
            });
        }
    }
    if let Some(first) = loose.first() {
        let name = first.name.trim_end_matches(".vmdk").to_string();
        out.push(VmSelection {
            name,
            vmx: None,
            disks: loose,
            config_files: Vec::new(),
            snapshot: None,
            warnings: Vec::new(),
        });
    }
    Ok(out)
}

/// The exit for an interrupted backup or restore (see `signals`), if `e` is one.
pub fn interrupted(e: &anyhow::Error) -> Option<ExitCode> {
    signals::interrupted(e, "vdar")
}

/// Parses the command line and runs the command.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        args::Command::Inspect(a) => inspect::run(&a),
        args::Command::Cat(a) => cat::run(&a),
        args::Command::Backup(a) => backup::run(&a),
        args::Command::Restore(a) => archive_cmds::restore(&a),
        args::Command::Verify(a) => archive_cmds::verify(&a),
        args::Command::List(a) => archive_cmds::list(&a),
        args::Command::Blockmap(args::BlockmapCommand::Import(a)) => blockmap::import(&a),
        args::Command::Completions(a) => generate::completions(Cli::command(), &a),
        args::Command::Man => generate::man(Cli::command(), "vdar-restore"),
    }
}
