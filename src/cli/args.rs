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
    /// Block maps for SAN mode (formats/BLOCKMAP.md).
    #[command(subcommand)]
    Blockmap(BlockmapCommand),
}

/// `vdar blockmap …`.
#[derive(Debug, Subcommand)]
pub enum BlockmapCommand {
    /// Build a block map from `vmkfstools -t0` output and the descriptor texts.
    Import(ImportArgs),
}

/// `vdar blockmap import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Text of `vmkfstools -t0 FILE` runs (one or more `Mapping for file` sections each).
    #[arg(long = "t0", required = true, num_args = 1.., value_name = "FILE.txt")]
    pub t0: Vec<PathBuf>,
    /// Descriptor files (.vmdk text) of the chain, embedded in the map.
    #[arg(long = "descriptor", num_args = 1.., value_name = "X.vmdk")]
    pub descriptors: Vec<PathBuf>,
    /// Output of `esxcli storage vmfs extent list` (datastore label, FS UUID, naa devices).
    #[arg(long, value_name = "FILE.txt")]
    pub extents: Option<PathBuf>,
    /// LUNs to scan, to decide which component of the LVID is the LV UUID.
    #[arg(long, num_args = 1.., value_name = "PATH[,PATH]")]
    pub lun: Vec<String>,
    /// Output file.
    #[arg(short, long, value_name = "MAP.json")]
    pub output: PathBuf,
}

/// SAN mode and reader options, shared by every command that reads a chain (flattened).
#[derive(Debug, Args, Clone)]
pub struct SanArgs {
    /// SAN mode: read the chain's files from LUNs through this block map (formats/BLOCKMAP.md).
    /// Disk names on the command line are then looked up in the map by file name.
    #[arg(long, value_name = "MAP.json", requires = "lun")]
    pub blockmap: Option<PathBuf>,
    /// LUN devices or image files to scan for the datastore's VMFS extents; globs such as
    /// '/dev/disk/by-id/*' are expanded by vdar. `A,B` declares two paths to one LUN (failover).
    #[arg(long, num_args = 1.., value_name = "PATH[,PATH]", requires = "blockmap")]
    pub lun: Vec<String>,
    /// Reads kept in flight by the reader (io_uring queue depth).
    #[arg(long, default_value_t = 16, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub queue_depth: u16,
    /// Read LUNs with O_DIRECT (aligned reads bypass the page cache).
    #[arg(long, requires = "blockmap")]
    pub direct: bool,
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
    /// SAN mode and reader options.
    #[command(flatten)]
    pub san: SanArgs,
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
    /// SAN mode and reader options.
    #[command(flatten)]
    pub san: SanArgs,
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
        let c = Cli::try_parse_from([
            "vdar",
            "cat",
            "d.vmdk",
            "--blockmap",
            "m.json",
            "--lun",
            "a",
            "b,c",
            "--queue-depth",
            "64",
            "--direct",
        ])
        .unwrap();
        match c.command {
            Command::Cat(a) => {
                assert_eq!(a.san.lun, ["a", "b,c"]);
                assert_eq!(a.san.queue_depth, 64);
                assert!(a.san.direct);
            }
            _ => panic!(),
        }
        assert!(Cli::try_parse_from(["vdar", "cat", "d", "--blockmap", "m"]).is_err());
        assert!(Cli::try_parse_from(["vdar", "cat", "d", "--queue-depth", "0"]).is_err());
        assert!(Cli::try_parse_from([
            "vdar", "blockmap", "import", "--t0", "a.txt", "-o", "m.json"
        ])
        .is_ok());
        assert!(Cli::try_parse_from(["vdar", "cat"]).is_err());
    }
}
