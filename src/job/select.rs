//! From inputs to the VMs and disks a backup takes: each `.vmx` is one VM (its current disks or
//! a snapshot's, [`crate::input::vm::select_vm`]); loose disk descriptors given together form
//! one VM named after the first. Then `--disk` / `--exclude-disk` pick disks by the rule restore
//! uses too ([`crate::input::vm::match_disks`]).

use std::path::{Path, PathBuf};

use super::names::unique_names;
use crate::error::{Error, Result};
use crate::input::vm::{is_vmx, match_disks, select_vm, DiskRef, VmDisk, VmSelection};

/// What to take from the inputs.
#[derive(Clone, Debug, Default)]
pub struct SelectOptions {
    /// With a .vmx: read the chains frozen by this snapshot (a .vmsd name, uid or `latest`).
    pub snapshot: Option<String>,
    /// Only the disks these name (none: every disk).
    pub include: Vec<String>,
    /// Never the disks these name.
    pub exclude: Vec<String>,
}

/// Applies the disk filters to VMs found elsewhere (a vSphere inventory): the same rules and
/// messages as [`select`].
pub fn select_vms(vms: Vec<VmSelection>, opts: &SelectOptions) -> Result<Selection> {
    let mut out = Selection {
        warnings: vms
            .iter()
            .flat_map(|v| v.warnings.iter().cloned())
            .collect(),
        vms,
        excluded: Vec::new(),
    };
    filter_disks(&mut out, opts)?;
    Ok(out)
}

/// A disk left out on request.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Excluded {
    /// Its VM.
    pub vm: String,
    /// Its name (`scsi0:1`, or a loose disk's file name).
    pub disk: String,
    /// The top descriptor it would have been read from.
    pub path: PathBuf,
}

/// The VMs and disks to back up.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// The VMs, in input order.
    pub vms: Vec<VmSelection>,
    /// Findings for the user, each once (VM looks powered on, disk not in the snapshot).
    pub warnings: Vec<String>,
    /// Disks left out by [`SelectOptions::exclude`] or not named by [`SelectOptions::include`].
    pub excluded: Vec<Excluded>,
}

/// Groups `inputs` into VMs and applies the disk filters. A name in `include` or `exclude`
/// that names no disk is an error listing the disks there are.
pub fn select(inputs: &[PathBuf], opts: &SelectOptions) -> Result<Selection> {
    let mut out = Selection::default();
    let mut loose = Vec::new();
    for input in inputs {
        if is_vmx(input) {
            let sel = select_vm(input, opts.snapshot.as_deref())?;
            // All of them once for the user; each VM keeps its own for per-VM reports.
            out.warnings.extend(sel.warnings.iter().cloned());
            out.vms.push(sel);
        } else if let Some(s) = &opts.snapshot {
            return Err(Error::Usage(format!(
                "--snapshot {s} needs a .vmx, not {}",
                input.display()
            )));
        } else {
            loose.push(input.clone());
        }
    }
    if !loose.is_empty() {
        out.vms.push(loose_vm(&loose));
    }
    filter_disks(&mut out, opts)?;
    Ok(out)
}

/// Loose disks as one VM. Disks are named after their descriptors, made unique the way the
/// archive's file names are (two folders may both hold `vm-000002.vmdk`).
fn loose_vm(tops: &[PathBuf]) -> VmSelection {
    let table = unique_names(tops);
    let mut disks: Vec<VmDisk> = Vec::new();
    for top in tops {
        let name = table.entry(top).name.clone();
        // The same file given twice is one disk.
        if !disks.iter().any(|d| d.name == name) {
            disks.push(VmDisk {
                name,
                top: top.clone(),
                in_use: None,
            });
        }
    }
    VmSelection {
        name: disks[0].name.trim_end_matches(".vmdk").to_string(),
        vmx: None,
        disks,
        config_files: Vec::new(),
        snapshot: None,
        warnings: Vec::new(),
    }
}

fn file_name(p: &Path) -> Option<&str> {
    p.file_name().and_then(|n| n.to_str())
}

/// Every disk of `vms` as the user can name it, in order.
fn disk_refs(vms: &[VmSelection]) -> Vec<DiskRef<'_>> {
    vms.iter()
        .flat_map(|vm| {
            vm.disks.iter().enumerate().map(|(index, d)| DiskRef {
                index,
                name: &d.name,
                file: file_name(&d.top),
            })
        })
        .collect()
}

/// For each disk, whether any of `wants` names it; every one of `wants` must name a disk.
fn named_by(vms: &[VmSelection], wants: &[String], flag: &str) -> Result<Vec<bool>> {
    let refs = disk_refs(vms);
    let mut hit = vec![false; refs.len()];
    for want in wants {
        let m = match_disks(want, &refs);
        if !m.contains(&true) {
            return Err(Error::Usage(format!(
                "{flag} {want:?}: no such disk (there are {})",
                list_disks(vms)
            )));
        }
        hit.iter_mut().zip(m).for_each(|(h, m)| *h |= m);
    }
    Ok(hit)
}

/// `vm/scsi0:0 (web.vmdk, #0), ...`, for messages.
pub(crate) fn list_disks(vms: &[VmSelection]) -> String {
    let mut all = Vec::new();
    for vm in vms {
        for (k, d) in vm.disks.iter().enumerate() {
            let file = file_name(&d.top).unwrap_or("?");
            all.push(format!("{}/{} ({file}, #{k})", vm.name, d.name));
        }
    }
    all.join(", ")
}

fn filter_disks(sel: &mut Selection, opts: &SelectOptions) -> Result<()> {
    if opts.include.is_empty() && opts.exclude.is_empty() {
        return Ok(());
    }
    let include = named_by(&sel.vms, &opts.include, "--disk")?;
    let exclude = named_by(&sel.vms, &opts.exclude, "--exclude-disk")?;
    let mut k = 0;
    for vm in &mut sel.vms {
        let disks = std::mem::take(&mut vm.disks);
        for d in disks {
            let take = (opts.include.is_empty() || include[k]) && !exclude[k];
            k += 1;
            if take {
                vm.disks.push(d);
            } else {
                sel.excluded.push(Excluded {
                    vm: vm.name.clone(),
                    disk: d.name,
                    path: d.top,
                });
            }
        }
    }
    if sel.vms.iter().all(|vm| vm.disks.is_empty()) {
        return Err(Error::Usage(
            "--disk/--exclude-disk leave no disk to back up".into(),
        ));
    }
    Ok(())
}

/// The one disk `cat` reads: `input` itself when it is a descriptor, else the disk of the
/// `.vmx` (current, or frozen by `snapshot`) that `disk` names, or its only disk. Returns the
/// top descriptor and the warnings for the user.
pub fn select_one(
    input: &Path,
    snapshot: Option<&str>,
    disk: Option<&str>,
) -> Result<(PathBuf, Vec<String>)> {
    if !is_vmx(input) {
        if let Some(flag) = snapshot.map(|_| "--snapshot").or(disk.map(|_| "--disk")) {
            return Err(Error::Usage(format!(
                "{flag} needs a .vmx, not {}",
                input.display()
            )));
        }
        return Ok((input.to_path_buf(), Vec::new()));
    }
    let opts = SelectOptions {
        snapshot: snapshot.map(str::to_string),
        include: disk.map(str::to_string).into_iter().collect(),
        exclude: Vec::new(),
    };
    let mut sel = select(&[input.to_path_buf()], &opts)?;
    let vm = sel.vms.remove(0);
    match vm.disks.as_slice() {
        [one] => Ok((one.top.clone(), sel.warnings)),
        _ => Err(Error::Usage(format!(
            "{}: the VM has {} disks; pick one with --disk: {}",
            input.display(),
            vm.disks.len(),
            list_disks(std::slice::from_ref(&vm))
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_match_by_device_file_then_number() {
        let d = |index, name, file| DiskRef {
            index,
            name,
            file: Some(file),
        };
        let disks = [d(0, "scsi0:0", "web.vmdk"), d(1, "scsi0:1", "1")];
        assert_eq!(match_disks("SCSI0:1", &disks), [false, true]);
        assert_eq!(match_disks("web.vmdk", &disks), [true, false]);
        // A name wins over a number: disk #1 is not taken for "1" when a file is named so.
        assert_eq!(match_disks("1", &disks), [false, true]);
        assert_eq!(match_disks("0", &disks), [true, false]);
        assert_eq!(match_disks("nope", &disks), [false, false]);
    }
}
