//! `vdar inspect`: per disk, the chain and the collapsed disk's data and zero totals.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::chain::{Chain, ChainOptions, VirtualDisk};
use serde::Serialize;

use super::args::InspectArgs;
use super::units::human;

/// One layer of a chain, as reported.
#[derive(Debug, Serialize)]
pub struct LayerReport {
    /// Descriptor file name, as `list --json` gives it for the stored chain.
    pub file: String,
    /// Descriptor path.
    pub path: PathBuf,
    /// createType.
    pub format: String,
    /// Extent formats, in order.
    pub extents: Vec<String>,
    /// CID as 8 hex digits.
    pub cid: String,
    /// parentCID as 8 hex digits.
    pub parent_cid: String,
    /// Grain size in bytes (largest over the extents; 512 for flat).
    pub grain_bytes: u64,
    /// Virtual size in bytes.
    pub capacity: u64,
    /// Bytes allocated in this layer.
    pub allocated_bytes: u64,
    /// Bytes this layer marks as explicit zeros.
    pub zero_bytes: u64,
}

/// One disk, as reported.
#[derive(Debug, Serialize)]
pub struct DiskReport {
    /// How the disk was named on the command line or in the .vmx.
    pub name: String,
    /// Top descriptor.
    pub path: PathBuf,
    /// Virtual size in bytes.
    pub capacity: u64,
    /// Layers from the top down.
    pub chain: Vec<LayerReport>,
    /// Collapsed disk: bytes that will be read.
    pub data_bytes: u64,
    /// Collapsed disk: bytes that read as zeros.
    pub zero_bytes: u64,
    /// Collapsed disk: number of runs.
    pub runs: u64,
    /// Warnings.
    pub warnings: Vec<String>,
}

pub fn inspect_disk(
    name: &str,
    path: &Path,
    opts: &ChainOptions<'_>,
) -> anyhow::Result<DiskReport> {
    let mut chain = Chain::open(path, opts)?;
    let mut layers = Vec::new();
    for i in 0..chain.layers.len() {
        let (allocated_bytes, zero_bytes) = chain.layer_usage(i)?;
        let l = &chain.layers[i];
        layers.push(LayerReport {
            file: l
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path: l.path.clone(),
            format: l.format(),
            extents: l.extents.iter().map(|e| e.map.kind().to_string()).collect(),
            cid: format!("{:08x}", l.descriptor.cid),
            parent_cid: format!("{:08x}", l.descriptor.parent_cid),
            grain_bytes: l
                .extents
                .iter()
                .map(|e| e.map.grain_sectors() * 512)
                .max()
                .unwrap_or(512),
            capacity: l.capacity * 512,
            allocated_bytes,
            zero_bytes,
        });
    }
    let warnings = chain.warnings.clone();
    let capacity = chain.capacity();
    // Mapping state was advanced by layer_usage; reopen for a clean collapse.
    drop(chain);
    let mut disk = Chain::open(path, opts)?.collapse();
    let (mut data, mut zero, mut runs) = (0, 0, 0);
    while let Some(r) = disk.next_run()? {
        runs += 1;
        if r.is_zero() {
            zero += r.len;
        } else {
            data += r.len;
        }
    }
    Ok(DiskReport {
        name: name.to_string(),
        path: path.to_path_buf(),
        capacity,
        chain: layers,
        data_bytes: data,
        zero_bytes: zero,
        runs,
        warnings,
    })
}

/// What `inspect --json` prints.
#[derive(Serialize)]
struct InspectReport<'a> {
    disks: &'a [DiskReport],
}

pub fn run(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let san = super::san::opener(&args.san)?;
    let mut opts = ChainOptions {
        ignore_cid: args.chain.ignore_cid,
        ..Default::default()
    };
    if let Some(o) = &san {
        opts.opener = o;
    }
    let mut reports = Vec::new();
    let select = crate::job::SelectOptions {
        snapshot: args.chain.snapshot.clone(),
        ..Default::default()
    };
    let selection = crate::job::select(&args.inputs, &select)?;
    // Said once on stderr; the text report does not repeat them per disk, while JSON carries
    // them as data in each disk's report.
    for w in &selection.warnings {
        log::warn!("{w}");
    }
    for vm in &selection.vms {
        for disk in &vm.disks {
            let mut r = inspect_disk(&disk.name, &disk.top, &opts)?;
            if args.json {
                r.warnings.extend(vm.warnings.iter().cloned());
            }
            reports.push(r);
        }
    }
    if args.json {
        super::json::print("inspect", &InspectReport { disks: &reports })?;
    } else {
        for r in &reports {
            print_disk(r)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_disk(r: &DiskReport) -> anyhow::Result<()> {
    super::stdout::line(format_args!(
        "disk {} ({}): {}",
        r.name,
        r.path.display(),
        human(r.capacity)
    ))?;
    super::stdout::line(format_args!(
        "  {:<40} {:<20} {:>8} {:>8} {:>7} {:>12}",
        "layer", "format", "CID", "parent", "grain", "allocated"
    ))?;
    for l in &r.chain {
        super::stdout::line(format_args!(
            "  {:<40} {:<20} {:>8} {:>8} {:>7} {:>12}",
            l.file,
            l.format,
            l.cid,
            l.parent_cid,
            human(l.grain_bytes),
            human(l.allocated_bytes)
        ))?;
    }
    super::stdout::line(format_args!(
        "  collapsed: {} data, {} zero, {} runs",
        human(r.data_bytes),
        human(r.zero_bytes),
        r.runs
    ))?;
    for w in &r.warnings {
        super::stdout::line(format_args!("  warning: {w}"))?;
    }
    Ok(())
}
