//! Raw command-line flags (clap derive). No I/O and no validation beyond parsing here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The exit codes, for `--help` of `vdar` and `vdar-restore`.
pub const EXIT_CODES: &str = "Exit codes: 0 success, 1 damage found, archive incomplete or data \
                              lost, 2 error, 130/143 interrupted by SIGINT/SIGTERM.";

/// vdar: streaming archiver for VMware VM disks.
#[derive(Debug, Parser)]
#[command(name = "vdar", version, about, long_about = None)]
#[command(after_help = EXIT_CODES)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
    /// Verbosity and progress.
    #[command(flatten)]
    pub ui: UiArgs,
}

/// Global flags of both binaries: how much goes to stderr.
#[derive(Debug, Args, Clone, Copy)]
pub struct UiArgs {
    /// More detail on stderr (the I/O engine, per-disk timings); -vv for more.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors on stderr: no notices, summaries or progress; -qq: errors only.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
    /// Show progress even when stderr is not a terminal (plain lines, no escape codes).
    #[arg(long, global = true, conflicts_with = "no_progress")]
    pub progress: bool,
    /// Never show progress [default: a bar when stderr is a terminal].
    #[arg(long, global = true)]
    pub no_progress: bool,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show each disk's snapshot chain and the collapsed disk's data and zero totals.
    Inspect(InspectArgs),
    /// Write the collapsed disk as raw bytes.
    Cat(CatArgs),
    /// Back up VMs (.vmx) or disks (.vmdk) into one archive.
    Backup(Box<BackupArgs>),
    /// Restore an archive (file or `-`) into a directory, or (--blockmap) onto SAN LUNs.
    Restore(Box<RestoreArgs>),
    /// Write a synthetic full archive from a full archive and its incrementals.
    Consolidate(ConsolidateArgs),
    /// Write the catalog of an archive (what a later `backup --base` needs of it).
    Catalog(CatalogArgs),
    /// Check every checksum of an archive; exit 1 on damage.
    Verify(VerifyArgs),
    /// List an archive's VMs, disks, files and dedup/compression figures; or, given a
    /// directory or s3://BUCKET/PREFIX/, every archive and catalog there.
    List(ListArgs),
    /// Delete the archives a keep policy lets go from a directory or s3://BUCKET/PREFIX,
    /// never one a kept incremental needs as its base.
    Prune(PruneArgs),
    /// Block maps for SAN mode (formats/BLOCKMAP.md).
    #[command(subcommand)]
    Blockmap(BlockmapCommand),
    /// Print a shell completion script (for packagers; see README "Install").
    #[command(hide = true)]
    Completions(CompletionsArgs),
    /// Print the man page (for packagers; see README "Install").
    #[command(hide = true)]
    Man,
}

/// `vdar completions` (hidden; also in `vdar-restore`).
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to print the completion script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
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
    /// Host-side probe hashes, lines 'FILE OFFSET LENGTH SHA256HEX' as printed by the ESXi
    /// one-liner in formats/BLOCKMAP.md; checked by SAN reads before and after the copy.
    #[arg(long, value_name = "FILE.txt")]
    pub probes: Option<PathBuf>,
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
    /// Read the layer files (LUNs in SAN mode) around the page cache (direct: faster cold,
    /// evicts nothing; README "Performance") or through it.
    #[arg(long, value_enum, default_value_t = ReadPathArg::Direct, value_name = "PATH")]
    pub read_path: ReadPathArg,
    /// Same as --read-path direct (the default; kept for scripts that pass it).
    #[arg(long, hide = true, conflicts_with = "read_path")]
    pub direct: bool,
}

impl SanArgs {
    /// The read path the flags ask for.
    pub fn read_path(&self) -> crate::input::source::ReadPath {
        use crate::input::source::ReadPath;
        match (self.direct, self.read_path) {
            (true, _) | (false, ReadPathArg::Direct) => ReadPath::Direct,
            (false, ReadPathArg::Buffered) => ReadPath::Buffered,
        }
    }
}

/// `--read-path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReadPathArg {
    // Undocumented variants keep clap's help on one line per flag.
    Buffered,
    Direct,
}

/// `vdar backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// VMs (.vmx) and/or disk descriptors (.vmdk); loose disks form one VM. With --vsphere,
    /// name the VMs with --vm instead.
    #[arg(
        required_unless_present = "vsphere",
        conflicts_with = "vsphere",
        value_name = "VM.vmx|DISK.vmdk"
    )]
    pub inputs: Vec<PathBuf>,
    /// Output archive: a file, an object (s3://BUCKET/KEY, settings as for the AWS CLI) or `-`
    /// for stdout (a pipe: tape).
    #[arg(short, long, value_name = "FILE|-")]
    pub output: PathBuf,
    /// zstd level, 1-22 (higher: smaller and slower).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
    pub level: i32,
    /// Chunk size (power of two, 64K..16M; default 4M, measured in formats/ARCHIVE.md), e.g. 1M.
    #[arg(long, value_name = "SIZE")]
    pub chunk_size: Option<String>,
    /// Pad the output to whole blocks of this size (tape drives in fixed-block mode), a power of
    /// two from 512 to 16M, e.g. 256K.
    #[arg(long, value_name = "SIZE")]
    pub block_size: Option<String>,
    /// Worker threads for hashing and compression, at most 256 [default: one per core].
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub threads: usize,
    /// Print the final summary as JSON (to stdout, or stderr when the archive goes to stdout).
    #[arg(long)]
    pub json: bool,
    /// Replace an existing output file (or object).
    #[arg(long)]
    pub force: bool,
    /// Only this disk (repeatable): its .vmx device (e.g. scsi0:1), its descriptor's file name
    /// or its number within its VM; the rule of `restore --disk`.
    #[arg(long, value_name = "NAME|N")]
    pub disk: Vec<String>,
    /// Leave this disk out (repeatable; named as for --disk). A restored .vmx marks it absent.
    #[arg(long, value_name = "NAME|N")]
    pub exclude_disk: Vec<String>,
    /// Chain options.
    #[command(flatten)]
    pub chain: ChainArgs,
    /// SAN mode and reader options.
    #[command(flatten)]
    pub san: SanArgs,
    /// Backup by VM name from vCenter or ESXi.
    #[command(flatten)]
    pub vsphere: VsphereBackupArgs,
    /// Incremental backup.
    #[command(flatten)]
    pub incremental: IncrementalArgs,
    /// Volumes (tapes that run out).
    #[command(flatten)]
    pub volumes: VolumeArgs,
}

/// `vdar backup --base`: store only what the base's image does not hold (README "Incrementals").
#[derive(Debug, Args)]
pub struct IncrementalArgs {
    /// Make an incremental of this archive, or of the catalog a backup wrote beside it
    /// (--catalog), so that the archive itself may be on tape. Changes come from
    /// --changed-areas, else from redo logs added on top of the base's chain, else every chunk
    /// is read and only chunks the base lacks are stored.
    #[arg(long, value_name = "ARCHIVE|CATALOG")]
    pub base: Option<PathBuf>,
    /// CBT changed areas per disk since the base (formats/JSON.md "Changed areas"): only those
    /// chunks are read.
    #[arg(long, value_name = "FILE.json")]
    pub changed_areas: Option<PathBuf>,
    /// Also write the archive's catalog here (formats/CATALOG.md): a later --base can name it.
    #[arg(long, value_name = "FILE.vcat")]
    pub catalog: Option<PathBuf>,
    /// Read every chunk, whatever the change list or the redo logs say; store only what the
    /// base lacks (slower, needs no hint to be right).
    #[arg(long, requires = "base", conflicts_with = "changed_areas")]
    pub read_all: bool,
}

/// The vSphere server and how to trust it, for backup and restore (README "vSphere").
#[derive(Debug, Args, Clone)]
pub struct VsphereServerArgs {
    /// vCenter or ESXi to talk to (`vc.example`, `https://esx01:443`). Credentials come from
    /// VDAR_VSPHERE_USER/VDAR_VSPHERE_PASSWORD, --credentials or $VDAR_VSPHERE_CREDENTIALS.
    #[arg(long, value_name = "URL")]
    pub vsphere: Option<String>,
    /// A file of `user=` and `password=` lines, mode 0600.
    #[arg(long, value_name = "FILE", requires = "vsphere")]
    pub credentials: Option<PathBuf>,
    /// Trust the server's certificate by its SHA-256 thumbprint (AA:BB:... as vSphere shows it)
    /// instead of the system roots.
    #[arg(
        long,
        value_name = "SHA256",
        requires = "vsphere",
        conflicts_with = "insecure"
    )]
    pub thumbprint: Option<String>,
    /// Do not verify the server's certificate at all (prints a warning).
    #[arg(long, requires = "vsphere")]
    pub insecure: bool,
    /// HTTPS connections to the datastore file access (reads in flight).
    #[arg(long, default_value_t = 8, value_name = "N", requires = "vsphere",
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub connections: u16,
}

/// `vdar backup --vsphere`.
#[derive(Debug, Args, Clone)]
pub struct VsphereBackupArgs {
    /// The server.
    #[command(flatten)]
    pub server: VsphereServerArgs,
    /// A VM to back up, by name or inventory path (/DC/vm/folder/NAME); repeatable.
    #[arg(long = "vm", value_name = "NAME|PATH", requires = "vsphere")]
    pub vms: Vec<String>,
    /// Quiesce the guest for the snapshot: when VMware Tools run (auto), always, or never.
    #[arg(long, value_enum, default_value_t = QuiesceArg::Auto, requires = "vsphere")]
    pub quiesce: QuiesceArg,
    /// When a quiesced snapshot fails, take a crash-consistent one (reported) instead of failing.
    #[arg(long, requires = "vsphere")]
    pub allow_unquiesced: bool,
    /// Remove vdar snapshots an earlier run left behind instead of refusing the VM.
    #[arg(long, requires = "vsphere")]
    pub remove_stale_snapshots: bool,
    /// How to read the disks: over the datastore's HTTPS file access, or from the LUNs
    /// through --blockmap/--lun (small files still come over HTTPS).
    #[arg(long, value_enum, default_value_t = TransportArg::Network, requires = "vsphere")]
    pub transport: TransportArg,
}

/// `--quiesce`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QuiesceArg {
    Auto,
    Always,
    Never,
}

/// `--transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    Network,
    San,
}

/// Output format of `restore`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// DIR/VM/BASE.raw images (named after the base disk, holes kept) and the VM's files.
    Raw,
    /// ESX datastore layout: DIR/VM/BASE.vmdk (createType vmfs) + BASE-flat.vmdk (sparse
    /// file), and the .vmx pointed at them with snapshot references removed.
    Vmdk,
    /// monolithicSparse DIR/VM/BASE.vmdk (hosted products, vmkfstools -i) and the .vmx.
    Sparse,
    /// streamOptimized DIR/VM/BASE.vmdk in VMware's layout (what ESX ingests from OVF).
    Stream,
    /// DIR/VM/VM.ova: OVF descriptor, SHA256 manifest, streamOptimized disks (formats/OVF.md).
    Ova,
}

impl From<FormatArg> for crate::restore::Format {
    fn from(f: FormatArg) -> Self {
        use crate::restore::Format;
        match f {
            FormatArg::Raw => Format::Raw,
            FormatArg::Vmdk => Format::Vmdk,
            FormatArg::Sparse => Format::Sparse,
            FormatArg::Stream => Format::Stream,
            FormatArg::Ova => Format::Ova,
        }
    }
}

/// Options of the archive-reading commands (shared with `vdar-restore`).
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The archive: a file, an object (s3://BUCKET/KEY), or `-` for stdin (one pass).
    #[arg(value_name = "ARCHIVE|-")]
    pub archive: PathBuf,
    /// Read the archive in one pass even when it could seek (a file, an object).
    #[arg(long)]
    pub stream: bool,
    /// A volume set: load each next volume by running this shell command (VDAR_VOLUME,
    /// VDAR_DEVICE set) instead of asking at the terminal.
    #[arg(long, value_name = "CMD")]
    pub next_volume: Option<String>,
    /// Target directory (created if missing); nothing is written outside it. `-` writes to
    /// stdout one disk (exactly one selected) as `--format raw` (zeros included) or `stream`,
    /// or one VM as `--format ova`.
    #[arg(long, value_name = "DIR|-", required_unless_present_any = ["blockmap", "vsphere"],
          conflicts_with = "vsphere")]
    pub to: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Raw)]
    pub format: FormatArg,
    /// Only this VM.
    #[arg(long, value_name = "NAME")]
    pub vm: Option<String>,
    /// Only this disk: its name (e.g. scsi0:0), its top descriptor's file name or its number
    /// within its VM (#N in `vdar list`).
    #[arg(long, value_name = "NAME|N")]
    pub disk: Option<String>,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
    /// Restore everything intact from a damaged archive and list what could not be (exit 1).
    #[arg(long)]
    pub salvage: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// The base archives of an incremental (repeatable): every archive of its chain back to
    /// the full one, in any order. With --base-image, the catalog of the base restored there.
    #[arg(long, value_name = "ARCHIVE|CATALOG")]
    pub base: Vec<PathBuf>,
    /// The directory where the incremental's base was restored (--format raw): its images
    /// stand for the base and everything older (a chain from tape, one archive at a time,
    /// oldest first). Needs the base's catalog as --base.
    #[arg(long, value_name = "DIR")]
    pub base_image: Option<PathBuf>,
    /// Update the raw images in --to DIR, where the incremental's base was restored, instead
    /// of writing new ones: only what changed is written (the base's catalog as --base).
    /// Interrupted, the images are left partly updated, and DIR says so.
    #[arg(long, conflicts_with_all = ["base_image", "vm", "disk", "salvage"])]
    pub in_place: bool,
    /// SAN write-back.
    #[command(flatten)]
    pub writeback: WriteBackArgs,
    /// Restore onto a datastore and register the VM.
    #[command(flatten)]
    pub datastore: DatastoreRestoreArgs,
}

/// `vdar restore --vsphere URL --datastore DS`: upload one VM in the ESX layout and register
/// it (README "vSphere").
#[derive(Debug, Args)]
pub struct DatastoreRestoreArgs {
    /// The server.
    #[command(flatten)]
    pub server: VsphereServerArgs,
    /// The datastore to upload the VM to, into a folder named after it.
    #[arg(long, value_name = "DS", requires = "vsphere")]
    pub datastore: Option<String>,
    /// The restored VM's name [default: the archived VM's].
    #[arg(long, value_name = "NAME", requires = "vsphere")]
    pub name: Option<String>,
    /// Inventory path of the VM folder to register in [default: the datacenter's].
    #[arg(long, value_name = "PATH", requires = "vsphere")]
    pub folder: Option<String>,
    /// Inventory path of the resource pool [default: a host's or cluster's with the datastore].
    #[arg(long, value_name = "PATH", requires = "vsphere")]
    pub pool: Option<String>,
    /// Local directory to restore into before the upload [default: $TMPDIR]; it needs room
    /// for the VM's allocated bytes.
    #[arg(long, value_name = "DIR", requires = "vsphere")]
    pub staging: Option<PathBuf>,
    /// How the VM goes up: `files` (the .vmx and descriptor + flat extent over the datastore
    /// file access, the VM as it was, holes sent as zeros) or `nfc` (an OVF import: the
    /// server builds the VM from the OVF, the disks go stream-optimized into thin disks).
    #[arg(long, value_enum, default_value_t = UploadArg::Files, requires = "vsphere")]
    pub upload: UploadArg,
}

/// `restore --vsphere --upload`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum UploadArg {
    /// The VM's own files over the datastore file access, then RegisterVM_Task.
    Files,
    /// An OVF import through an NFC lease (ImportVApp).
    Nfc,
}

/// `vdar restore --blockmap`: SAN write-back of one disk into a pre-created eager-zeroed thick
/// flat disk, straight to its LUNs (formats/BLOCKMAP.md §6).
#[derive(Debug, Args)]
pub struct WriteBackArgs {
    /// SAN write-back: write the disk into the blocks this map gives for the target flat file
    /// (created on ESX with vmkfstools -c SIZE -d eagerzeroedthick, map from vmkfstools -t0).
    /// Exactly one disk must be selected (--vm/--disk); exit 1 if the read-back differs.
    #[arg(long, value_name = "MAP.json", requires = "lun",
          conflicts_with_all = ["to", "format", "salvage", "force"])]
    pub blockmap: Option<PathBuf>,
    /// LUN devices or image files holding the datastore's VMFS extents (globs expanded;
    /// `A,B` = two paths to one LUN). Opened for writing only after every check passed.
    #[arg(long, num_args = 1.., value_name = "PATH[,PATH]", requires = "blockmap")]
    pub lun: Vec<String>,
    /// The target file in the map (path or file name); needed when the map holds several
    /// flat files of the disk's size.
    #[arg(long, value_name = "NAME", requires = "blockmap")]
    pub target: Option<String>,
    /// Skip writing zero ranges: the target is a freshly created eager-zeroed disk. Default:
    /// zeros are written, since a reused disk may hold old data.
    #[arg(long, requires = "blockmap")]
    pub assume_zeroed: bool,
    /// Do not read the target back to compare it with the archive's digests after writing.
    #[arg(long, requires = "blockmap")]
    pub no_verify: bool,
    /// Write (and verify) with O_DIRECT where aligned.
    #[arg(long, requires = "blockmap")]
    pub direct: bool,
    /// Writes kept in flight (io_uring queue depth).
    #[arg(long, default_value_t = 16, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub queue_depth: u16,
}

/// `vdar verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The archive: a file, an object (s3://BUCKET/KEY), or `-` for stdin.
    #[arg(value_name = "ARCHIVE|-")]
    pub archive: PathBuf,
    /// Read the archive in one pass even when it could seek (a file, an object).
    #[arg(long)]
    pub stream: bool,
    /// A volume set: load each next volume by running this shell command (VDAR_VOLUME,
    /// VDAR_DEVICE set) instead of asking at the terminal.
    #[arg(long, value_name = "CMD")]
    pub next_volume: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// The base archives of an incremental (repeatable): every BaseRef is read from them and
    /// checked, so damage in a base shows, with the base named.
    #[arg(long, value_name = "ARCHIVE|CATALOG")]
    pub base: Vec<PathBuf>,
    /// Where the base was restored (as for `restore --base-image`).
    #[arg(long, value_name = "DIR")]
    pub base_image: Option<PathBuf>,
}

/// `vdar consolidate`.
#[derive(Debug, Args)]
pub struct ConsolidateArgs {
    /// The chain: the full archive and its incrementals; the newest is consolidated, the
    /// others are its bases (any order).
    #[arg(required = true, num_args = 1.., value_name = "ARCHIVE")]
    pub archives: Vec<PathBuf>,
    /// The synthetic full archive: a file, `s3://BUCKET/KEY`, or `-` for stdout.
    #[arg(short, long, value_name = "FILE|-")]
    pub output: PathBuf,
    /// Replace an existing output file (or object).
    #[arg(long)]
    pub force: bool,
    /// Also write the new archive's catalog here.
    #[arg(long, value_name = "FILE.vcat")]
    pub catalog: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `vdar catalog`.
#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// The archive (a file).
    #[arg(value_name = "ARCHIVE")]
    pub archive: PathBuf,
    /// The catalog to write.
    #[arg(short, long, value_name = "FILE.vcat")]
    pub output: PathBuf,
}

/// `vdar list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The archive: a file, an object (s3://BUCKET/KEY), or `-` for stdin. A directory or a
    /// prefix (s3://BUCKET/ or s3://BUCKET/PREFIX/) lists the archives and catalogs in it.
    #[arg(value_name = "ARCHIVE|-|DIR")]
    pub archive: PathBuf,
    /// Read the archive in one pass even when it could seek (a file, an object).
    #[arg(long)]
    pub stream: bool,
    /// A volume set: load each next volume by running this shell command (VDAR_VOLUME,
    /// VDAR_DEVICE set) instead of asking at the terminal.
    #[arg(long, value_name = "CMD")]
    pub next_volume: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Writing an archive across volumes.
#[derive(Debug, Args, Clone)]
pub struct VolumeArgs {
    /// Write a volume set: when the medium ends (a tape's end-of-medium warning, a device's
    /// last byte), ask for the next volume at the terminal and go on there.
    #[arg(long)]
    pub multi_volume: bool,
    /// End each volume at this size (header included) even before its medium ends; a multiple
    /// of --block-size. Implies --multi-volume.
    #[arg(long, value_name = "SIZE")]
    pub volume_size: Option<String>,
    /// Load the next volume by running this shell command (an autoloader: `mtx load`, a
    /// script), with VDAR_VOLUME (the number wanted) and VDAR_DEVICE set; a non-zero exit
    /// stops. Implies --multi-volume.
    #[arg(long, value_name = "CMD")]
    pub next_volume: Option<String>,
    /// Bytes buffered in front of a stream (stdout, a device, a volume set) so that a tape
    /// drive keeps streaming while compression has a slow moment; 0 for none.
    #[arg(long, value_name = "SIZE", default_value = "64M")]
    pub drive_buffer: String,
}

/// `vdar prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Where the archives are: a directory (searched below too) or s3://BUCKET/PREFIX.
    #[arg(value_name = "DIR|s3://BUCKET/PREFIX")]
    pub location: PathBuf,
    /// Keep the newest N archives.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest archive of each of the last N hours that have one (UTC).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_hourly: u32,
    /// Keep the newest archive of each of the last N days that have one (UTC).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: u32,
    /// Keep the newest archive of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: u32,
    /// Keep the newest archive of each of the last N months that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: u32,
    /// Keep the newest archive of each of the last N years that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_yearly: u32,
    /// Say what would be deleted, and delete nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Parses a size with an optional K, M, G or T suffix, `iB` optional (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    // qemu-img and dd users type K, M, G and T for powers of 1024, with or without `iB`.
    parse_size::Config::new()
        .with_binary()
        .parse_size(s.trim())
        .map_err(|e| format!("bad size {s:?}: {e} (a number with an optional K, M, G or T)"))
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
    /// The disk descriptor (.vmdk) of the layer to read (normally the top of the chain), or a
    /// VM's .vmx (its current disk, or the one --snapshot froze).
    #[arg(value_name = "DISK.vmdk|VM.vmx")]
    pub input: PathBuf,
    /// With a .vmx of several disks: the one to read (device, file name or number, as for
    /// backup --disk).
    #[arg(long, value_name = "NAME|N")]
    pub disk: Option<String>,
    /// Output file, or `-` for stdout. A regular file keeps zero runs as holes.
    #[arg(short, long, default_value = "-", value_name = "FILE|-")]
    pub output: PathBuf,
    /// Replace an existing output file (or object).
    #[arg(long)]
    pub force: bool,
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
            "backup",
            "vm.vmx",
            "-o",
            "-",
            "--level",
            "-1",
            "--chunk-size",
            "4M",
        ])
        .unwrap();
        match c.command {
            Command::Backup(a) => {
                assert_eq!(a.level, -1);
                assert_eq!(a.output, PathBuf::from("-"));
                assert_eq!(parse_size(a.chunk_size.as_deref().unwrap()), Ok(4 << 20));
            }
            _ => panic!(),
        }
        assert!(Cli::try_parse_from(["vdar", "backup", "vm.vmx"]).is_err());
        let c = Cli::try_parse_from(["vdar", "list", "a.vdar", "-vv", "--progress"]).unwrap();
        assert_eq!((c.ui.verbose, c.ui.quiet, c.ui.progress), (2, 0, true));
        let c = Cli::try_parse_from(["vdar", "-q", "verify", "a.vdar", "--no-progress"]).unwrap();
        assert_eq!((c.ui.quiet, c.ui.no_progress), (1, true));
        assert!(Cli::try_parse_from(["vdar", "list", "a", "-v", "-q"]).is_err());
        assert!(Cli::try_parse_from(["vdar", "list", "a", "--progress", "--no-progress"]).is_err());
        assert!(Cli::try_parse_from(["vdar", "restore", "a.vdar"]).is_err());
        assert!(parse_size("12Q").is_err());
        assert_eq!(parse_size("256K"), Ok(262144));
        for (text, want) in [
            ("4MiB", 4u64 << 20),
            ("4M", 4 << 20),
            ("4mb", 4 << 20),
            ("1T", 1 << 40),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
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
                assert_eq!(a.san.read_path(), crate::input::source::ReadPath::Direct);
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
        let c = Cli::try_parse_from([
            "vdar",
            "restore",
            "-",
            "--blockmap",
            "m.json",
            "--lun",
            "a",
            "b",
            "--target",
            "x-flat.vmdk",
            "--assume-zeroed",
            "--disk",
            "scsi0:0",
        ])
        .unwrap();
        match c.command {
            Command::Restore(a) => {
                assert!(a.to.is_none());
                assert_eq!(a.writeback.lun, ["a", "b"]);
                assert!(a.writeback.assume_zeroed && !a.writeback.no_verify);
                assert_eq!(a.writeback.target.as_deref(), Some("x-flat.vmdk"));
            }
            _ => panic!(),
        }
        for bad in [
            &["vdar", "restore", "a", "--blockmap", "m"][..],
            &[
                "vdar",
                "restore",
                "a",
                "--blockmap",
                "m",
                "--lun",
                "l",
                "--to",
                "d",
            ],
            &["vdar", "restore", "a", "--to", "d", "--assume-zeroed"],
            &[
                "vdar",
                "restore",
                "a",
                "--blockmap",
                "m",
                "--lun",
                "l",
                "--format",
                "ova",
            ],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
        let c = Cli::try_parse_from([
            "vdar", "blockmap", "import", "--t0", "a.txt", "--probes", "p.txt", "-o", "m.json",
        ])
        .unwrap();
        match c.command {
            Command::Blockmap(BlockmapCommand::Import(a)) => {
                assert_eq!(a.probes.as_deref(), Some(std::path::Path::new("p.txt")));
            }
            _ => panic!(),
        }
        assert!(Cli::try_parse_from([
            "vdar", "blockmap", "import", "--t0", "a.txt", "--probes", "-o", "m.json"
        ])
        .is_err());
    }
}

/// Restore, verify and list vdar archives.
#[derive(Debug, Parser)]
#[command(
    name = "vdar-restore",
    version,
    about = "Restore, verify and list vdar archives: the disaster-recovery subset of vdar"
)]
#[command(after_help = EXIT_CODES)]
pub struct RestoreCli {
    #[command(subcommand)]
    pub command: RestoreCommand,
    /// Verbosity and progress.
    #[command(flatten)]
    pub ui: UiArgs,
}

/// The commands of `vdar-restore`: the archive-reading subset of `vdar`'s.
#[derive(Debug, Subcommand)]
pub enum RestoreCommand {
    /// Restore an archive (file or `-`) into a directory, or (--blockmap) onto SAN LUNs.
    Restore(Box<RestoreArgs>),
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
