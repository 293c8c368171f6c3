//! Raw command-line flags (clap derive). No I/O and no validation beyond parsing here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// vdar: streaming archiver for VMware VM disks.
#[derive(Debug, Parser)]
#[command(name = "vdar", version, about, long_about = None)]
#[command(after_help = "Exit codes: 0 success, 1 verification found damage, 2 error.")]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show each disk's snapshot chain and the collapsed disk's data and zero totals.
    Inspect(InspectArgs),
    /// Write the collapsed disk as raw bytes.
    Cat(CatArgs),
}

/// Options shared by every command that opens a chain.
#[derive(Debug, Args, Clone)]
pub struct ChainArgs {
    /// Accept a child whose parentCID does not match its parent's CID.
    #[arg(long)]
    pub ignore_cid: bool,
    /// With a .vmx: read the chains frozen by this snapshot (a name from the .vmsd, or `latest`).
    #[arg(long, value_name = "NAME|latest")]
    pub snapshot: Option<String>,
}

/// `vdar inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A disk descriptor (.vmdk) or a VM's .vmx.
    #[arg(required = true, value_name = "DISK.vmdk|VM.vmx")]
    pub inputs: Vec<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Chain options.
    #[command(flatten)]
    pub chain: ChainArgs,
}

/// `vdar cat`.
#[derive(Debug, Args)]
pub struct CatArgs {
    /// The disk descriptor (.vmdk) of the layer to read (normally the top of the chain).
    #[arg(value_name = "DISK.vmdk")]
    pub input: PathBuf,
    /// Output file, or `-` for stdout. A regular file keeps zero runs as holes.
    #[arg(short, long, default_value = "-", value_name = "FILE|-")]
    pub output: PathBuf,
    /// Chain options.
    #[command(flatten)]
    pub chain: ChainArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_flags() {
        let c =
            Cli::try_parse_from(["vdar", "cat", "d.vmdk", "-o", "x.raw", "--ignore-cid"]).unwrap();
        match c.command {
            Command::Cat(a) => {
                assert_eq!(a.output, PathBuf::from("x.raw"));
                assert!(a.chain.ignore_cid);
            }
            _ => panic!(),
        }
        assert!(Cli::try_parse_from(["vdar", "inspect"]).is_err());
        assert!(Cli::try_parse_from(["vdar", "cat"]).is_err());
    }
}
