//! From snapshotted VMs to a [`BackupPlan`]: the disk filters applied across all of them, each
//! VM's chains opened through its transport and its small files through the datastore file
//! access, its origin record attached, and what the API claims about each disk checked
//! against what the descriptors say.

use std::path::Path;

use super::PreparedVm;
use crate::archive::manifest::DiskOrigin;
use crate::chain::ChainOptions;
use crate::error::{Error, Result};
use crate::input::SourceOpener;
use crate::job::{self, BackupPlan, SelectOptions, Selection};
use crate::pipeline::DiskInput;

/// Opens the VMs of `prepared` for one archive. `chain` reads the disk chains (the `san`
/// transport's block map); `None` reads them over each VM's datastore file access.
pub fn open(
    prepared: &[PreparedVm<'_>],
    select: &SelectOptions,
    chain: Option<&dyn SourceOpener>,
    ignore_cid: bool,
) -> Result<BackupPlan> {
    let all = job::select_vms(
        prepared.iter().map(|p| p.selection.clone()).collect(),
        select,
    )?;
    let mut plan = BackupPlan {
        vms: Vec::new(),
        capacity: 0,
        warnings: all.warnings,
        excluded: all.excluded,
    };
    for (p, sel) in prepared.iter().zip(all.vms) {
        let one = Selection {
            vms: vec![sel],
            warnings: Vec::new(),
            excluded: Vec::new(),
        };
        let opts = ChainOptions {
            opener: chain.unwrap_or(&p.files),
            ignore_cid,
        };
        let mut vm_plan = job::open_with(one, &opts, Some(&p.files))?;
        for vm in &mut vm_plan.vms {
            for d in &vm.disks {
                if let Some(o) = p.origin.disks.iter().find(|o| o.device == d.name) {
                    check_disk(&p.origin.vm, o, d)?;
                }
            }
            vm.origin = Some(p.origin.clone());
        }
        plan.append(vm_plan);
    }
    Ok(plan)
}

/// The API's capacity and (when it lists one) backing chain against the descriptors'.
fn check_disk(vm: &str, api: &DiskOrigin, disk: &DiskInput) -> Result<()> {
    let capacity = disk.meta.capacity;
    if api.capacity != 0 && api.capacity != capacity {
        return Err(mismatch(
            vm,
            api,
            format!(
                "the API says {} bytes, the descriptor chain {capacity}",
                api.capacity
            ),
        ));
    }
    if api.files.len() > 1 {
        let api_names: Vec<&str> = api.files.iter().map(|f| base_name(f)).collect();
        let ours: Vec<&str> = disk
            .meta
            .chain
            .iter()
            .map(|l| l.source.as_deref().map(base_name).unwrap_or(&l.file))
            .collect();
        if api_names != ours {
            return Err(mismatch(
                vm,
                api,
                format!(
                    "the API names the chain {}, the descriptors link {}",
                    api_names.join(" > "),
                    ours.join(" > ")
                ),
            ));
        }
    }
    Ok(())
}

fn mismatch(vm: &str, api: &DiskOrigin, what: String) -> Error {
    Error::Usage(format!(
        "VM {vm:?}, disk {} ({}): {what}; not backed up",
        api.device,
        api.files.first().map(String::as_str).unwrap_or("?")
    ))
}

/// `disk.vmdk` of `[ds] vm/disk.vmdk` or `/vmfs/volumes/ds/vm/disk.vmdk`.
fn base_name(p: &str) -> &str {
    Path::new(p)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(p)
}
