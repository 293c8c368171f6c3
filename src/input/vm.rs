//! From a VM's `.vmx` (and `.vmsd`) to the disks to read and the small files to keep.
//!
//! Without a snapshot the `.vmx` names each disk's current top layer; if the VM is running that
//! layer is still being written, so the user is warned. With `--snapshot`, each disk's chain
//! starts at the descriptor the snapshot froze (the `.vmsd` entry for the same device node),
//! which is immutable while the VM runs: that is what a backup of a running VM must read.

use std::path::{Path, PathBuf};

use super::vmsd;
use super::vmx::{resolve_disk_path, vm_looks_powered_on, VmxFile};
use crate::error::{Error, Result};

/// One disk of a VM, named by its device node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmDisk {
    /// `scsi0:0`, `sata0:1`, ... or, for a disk given directly, its file name.
    pub name: String,
    /// The top descriptor of the chain to read.
    pub top: PathBuf,
    /// The disk's areas in use, when its server reported them: the base's flat extents are
    /// then read only there ([`crate::input::in_use`]).
    pub in_use: Option<std::sync::Arc<super::in_use::DiskAreas>>,
}

/// What to read for one VM.
#[derive(Clone, Debug)]
pub struct VmSelection {
    /// The VM's name: `displayName`, else the .vmx file stem.
    pub name: String,
    /// The .vmx, when the VM was given by it.
    pub vmx: Option<PathBuf>,
    /// Disks in bus/controller/unit order.
    pub disks: Vec<VmDisk>,
    /// Configuration files to archive beside the disks (.vmx, .vmxf, .nvram, .vmsd).
    pub config_files: Vec<PathBuf>,
    /// The snapshot selected, by display name.
    pub snapshot: Option<String>,
    /// Findings for the user (VM looks powered on, disk not in the snapshot).
    pub warnings: Vec<String>,
}

/// How a user can name one disk: by its name (the .vmx device, `scsi0:1`, or a loose disk's
/// file name), by the file name of its top descriptor, or by its number within its VM.
#[derive(Clone, Copy, Debug)]
pub struct DiskRef<'a> {
    /// Number within its VM, from 0 (`#N` in `vdar list`).
    pub index: usize,
    /// The disk's name.
    pub name: &'a str,
    /// The top descriptor's file name, when known.
    pub file: Option<&'a str>,
}

/// Which of `disks` `want` names: those whose name or file name equals it (ignoring ASCII
/// case, as VMware does for device names), else, when it is a number and names nothing, those
/// with that number within their VM. Backup's `--disk`/`--exclude-disk` and restore's `--disk`
/// share this rule.
pub fn match_disks(want: &str, disks: &[DiskRef<'_>]) -> Vec<bool> {
    let by_name: Vec<bool> = disks
        .iter()
        .map(|d| {
            d.name.eq_ignore_ascii_case(want)
                || d.file.is_some_and(|f| f.eq_ignore_ascii_case(want))
        })
        .collect();
    match want.parse::<usize>() {
        Ok(n) if !by_name.contains(&true) => disks.iter().map(|d| d.index == n).collect(),
        _ => by_name,
    }
}

/// Whether `path` looks like a .vmx (by extension, case-insensitive).
pub fn is_vmx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("vmx"))
}

/// Reads `vmx` and selects the disks of `snapshot` (a .vmsd name, uid or `latest`), or the
/// current disks when `snapshot` is None.
pub fn select_vm(vmx: &Path, snapshot: Option<&str>) -> Result<VmSelection> {
    let file = VmxFile::read(vmx)?;
    let stem = vmx
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vm".into());
    let name = file
        .display_name()
        .map(str::to_string)
        .unwrap_or(stem.clone());
    let dir = vmx.parent().unwrap_or_else(|| Path::new("."));
    let mut warnings = Vec::new();
    let mut config_files = vec![vmx.to_path_buf()];
    for (key, default) in [
        ("extendedConfigFile", format!("{stem}.vmxf")),
        ("nvram", format!("{stem}.nvram")),
    ] {
        let p = resolve_disk_path(vmx, file.get(key).unwrap_or(&default));
        if p.is_file() && !config_files.contains(&p) {
            config_files.push(p);
        }
    }
    let vmsd_path = dir.join(format!("{stem}.vmsd"));
    if vmsd_path.is_file() {
        config_files.push(vmsd_path.clone());
    }

    let current = file.disk_paths()?;
    let mut disks = Vec::new();
    let mut snapshot_name = None;
    match snapshot {
        None => {
            if let Some(why) = vm_looks_powered_on(vmx) {
                warnings.push(format!(
                    "{}: the VM looks powered on ({why}): its newest redo logs may still be \
                     changing; back up a snapshot (--snapshot) to read a frozen state",
                    vmx.display()
                ));
            }
            for (d, top) in current {
                disks.push(VmDisk {
                    name: d.device,
                    top,
                    in_use: None,
                });
            }
        }
        Some(sel) => {
            if !vmsd_path.is_file() {
                return Err(Error::Usage(format!(
                    "--snapshot {sel}: {} does not exist, so the VM has no snapshots",
                    vmsd_path.display()
                )));
            }
            let vmsd = vmsd::read(&vmsd_path)?;
            let snap = vmsd.select(sel)?;
            snapshot_name = Some(snap.display_name.clone());
            for (d, _) in current {
                match snap
                    .disks
                    .iter()
                    .find(|(node, _)| node.eq_ignore_ascii_case(&d.device))
                {
                    Some((_, file_name)) => disks.push(VmDisk {
                        name: d.device,
                        top: resolve_disk_path(vmx, file_name),
                        in_use: None,
                    }),
                    None => warnings.push(format!(
                        "{}: disk {} is not part of snapshot {:?}; skipped",
                        vmsd_path.display(),
                        d.device,
                        snap.display_name
                    )),
                }
            }
        }
    }
    if disks.is_empty() {
        return Err(Error::Usage(format!(
            "{}: the VM has no disks",
            vmx.display()
        )));
    }
    Ok(VmSelection {
        name,
        vmx: Some(vmx.to_path_buf()),
        disks,
        config_files,
        snapshot: snapshot_name,
        warnings,
    })
}
