//! Restore onto a datastore: a VM restored locally in the ESX layout (descriptor + flat
//! extent per disk, the .vmx pointed at them) is uploaded to `[DS] NAME/` over the file
//! access, its .vmx renamed and rewritten for the new VM, and registered in the inventory.
//!
//! Nothing is overwritten without `force`, and a VM name already registered is always
//! refused: replacing a registered VM's files under it would corrupt a VM someone may run. A
//! restore that fails part way unregisters what it registered and deletes what it uploaded,
//! so it leaves the datastore as it found it (but for the folder, which may be shared).

use std::path::{Path, PathBuf};

pub use super::register::RestoredVm;
use super::register::{self, Placement};
use super::{DatastoreFiles, ServerOptions, Session};
use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::input::SourceOpener;

/// Where to put the VM.
#[derive(Clone, Debug)]
pub struct DatastoreTarget {
    /// The datastore's name.
    pub datastore: String,
    /// The new VM's name, also its folder on the datastore and its .vmx's stem.
    pub name: String,
    /// Inventory path of the VM folder (default: the datacenter's VM folder).
    pub folder: Option<String>,
    /// Inventory path of the resource pool (default: that of a host or cluster that mounts
    /// the datastore).
    pub pool: Option<String>,
    /// Replace files already in the VM's datastore folder.
    pub force: bool,
}

/// The VM as restored locally: a directory of its files, the .vmx among them.
#[derive(Clone, Debug)]
pub struct StagedVm {
    /// The directory.
    pub dir: PathBuf,
    /// The .vmx's file name in it.
    pub vmx: String,
}

/// The .vmx keys that tie a VM to its old identity or place, dropped so that the server gives
/// the new VM its own: the instance UUID (two VMs of one UUID confuse vCenter), the path the
/// BIOS UUID was generated for, and the swap file named after the old VM.
const IDENTITY_KEYS: &[&str] = &["vc.uuid", "uuid.location", "sched.swap.derivedname"];

/// Rewrites a .vmx for a VM of a new name: `displayName` set, the identity keys dropped.
pub fn vmx_for_new_vm(text: &str, name: &str) -> String {
    let escaped = name.replace('|', "|7C").replace('"', "|22");
    let display = format!("displayName = \"{escaped}\"\n");
    let mut out = String::with_capacity(text.len() + display.len());
    let mut named = false;
    for raw in text.split_inclusive('\n') {
        let key = raw
            .split_once('=')
            .map(|(k, _)| k.trim().to_ascii_lowercase());
        match key.as_deref() {
            Some("displayname") if !named => {
                out.push_str(&display);
                named = true;
            }
            Some("displayname") => {}
            Some(k) if IDENTITY_KEYS.contains(&k) => {}
            _ => {
                out.push_str(raw);
                if !raw.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
    }
    if !named {
        out.push_str(&display);
    }
    out
}

/// Uploads and registers `staged` as `target` says (see the module docs).
pub fn restore_vm(
    session: &Session,
    server: &ServerOptions,
    target: &DatastoreTarget,
    staged: &StagedVm,
    cancel: &Cancel,
) -> Result<RestoredVm> {
    let at = placement_for_new(session, target)?;
    let files = DatastoreFiles::new(
        session.soap.agent().clone(),
        session.soap.url(),
        &at.datacenter,
        &[],
        session.soap.cookie(),
        server.retry,
        server.connections,
    )?;
    let plan = upload_plan(staged, target)?;
    let remote = |name: &str| {
        PathBuf::from(format!(
            "/vmfs/volumes/{}/{}/{name}",
            at.datastore, target.name
        ))
    };
    let mut existing = Vec::new();
    for (_, name) in &plan {
        if files.exists(&remote(name))? {
            existing.push(name.as_str());
        }
    }
    if !existing.is_empty() && !target.force {
        return Err(Error::Usage(format!(
            "[{}] {}/ already holds {}: give --force to replace them",
            at.datastore,
            target.name,
            existing.join(", ")
        )));
    }
    let mut done = Undo {
        session,
        at: &at,
        uploaded: Vec::new(),
        registered: None,
    };
    let mut bytes = 0;
    for (local, name) in &plan {
        cancel.check()?;
        let ds_path = format!("[{}] {}/{name}", at.datastore, target.name);
        log::debug!("uploading {} to {ds_path}", local.display());
        bytes += files.upload(local, &remote(name))?;
        done.uploaded.push(ds_path);
    }
    cancel.check()?;
    let vmx = format!("[{}] {}/{}.vmx", at.datastore, target.name, target.name);
    let vm = register::register(session, &at, &vmx, &target.name)?;
    done.registered = Some(vm.clone());
    let restored = RestoredVm {
        name: target.name.clone(),
        moref: vm.value.clone(),
        vmx,
        files: std::mem::take(&mut done.uploaded),
        bytes_uploaded: bytes,
    };
    done.registered = None;
    Ok(restored)
}

/// Imports the staged OVA at `ova` as `target` says, through an NFC lease ([`super::nfc`]):
/// the server creates the VM from the OVF and takes the disks stream-optimized.
pub fn import_vm(
    session: &Session,
    target: &DatastoreTarget,
    ova: &Path,
    cancel: &Cancel,
) -> Result<RestoredVm> {
    let at = placement_for_new(session, target)?;
    let ova = super::ova_file::OvaFile::open(ova)?;
    super::nfc::import_ova(session, &at, &target.name, &ova, cancel)
}

/// Where `target` goes, once it is known that no VM of its name is registered.
fn placement_for_new(session: &Session, target: &DatastoreTarget) -> Result<Placement> {
    let props = session.props();
    let at = register::placement(
        &props,
        &target.datastore,
        target.folder.as_deref(),
        target.pool.as_deref(),
    )?;
    if register::vm_exists(&props, &target.name)? {
        return Err(Error::Usage(format!(
            "a VM named {:?} is already registered: restore under another --name, or remove \
             that VM in vSphere first (--force replaces files, never a registered VM)",
            target.name
        )));
    }
    Ok(at)
}

/// The files to upload, with their names on the datastore: every file of the staged
/// directory, the .vmx (rewritten in place) last under `NAME.vmx`, so that a VM is only
/// registered once all it names is there.
fn upload_plan(staged: &StagedVm, target: &DatastoreTarget) -> Result<Vec<(PathBuf, String)>> {
    let dir = &staged.dir;
    let mut plan = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, None, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, None, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != staged.vmx && entry.path().is_file() {
            plan.push((entry.path(), name));
        }
    }
    plan.sort();
    let vmx_path = dir.join(&staged.vmx);
    let text = std::fs::read_to_string(&vmx_path).map_err(|e| Error::io(&vmx_path, None, e))?;
    std::fs::write(&vmx_path, vmx_for_new_vm(&text, &target.name))
        .map_err(|e| Error::io(&vmx_path, None, e))?;
    plan.push((vmx_path, format!("{}.vmx", target.name)));
    Ok(plan)
}

/// What a failed restore takes back when dropped: the registration, then the uploads.
struct Undo<'a> {
    session: &'a Session,
    at: &'a Placement,
    uploaded: Vec<String>,
    registered: Option<super::soap::MoRef>,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if let Some(vm) = self.registered.take() {
            if let Err(e) = register::unregister(self.session, &vm) {
                log::error!("could not unregister {vm} after the failed restore: {e}");
            }
        }
        for f in self.uploaded.drain(..).rev() {
            match register::delete_file(self.session, self.at, &f) {
                Ok(()) => log::info!("removed {f} (restore failed)"),
                Err(e) => log::error!("could not remove {f} after the failed restore: {e}"),
            }
        }
    }
}

/// The `.vmx` among a staged VM's files, if there is one.
pub fn find_vmx(dir: &Path) -> Option<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.to_ascii_lowercase().ends_with(".vmx"))
        .collect();
    found.sort();
    found.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_vm_gets_its_name_and_loses_the_old_identity() {
        let vmx = ".encoding = \"UTF-8\"\ndisplayName = \"web01\"\nvc.uuid = \"50 1a\"\n\
                   uuid.bios = \"42 0b\"\nuuid.location = \"56 4d\"\n\
                   sched.swap.derivedName = \"/vmfs/volumes/x/web01/web01-1.vswp\"\n\
                   scsi0:0.fileName = \"web01.vmdk\"";
        let out = vmx_for_new_vm(vmx, "web01 \"restored\"");
        assert_eq!(
            out,
            ".encoding = \"UTF-8\"\ndisplayName = \"web01 |22restored|22\"\n\
             uuid.bios = \"42 0b\"\nscsi0:0.fileName = \"web01.vmdk\"\n"
        );
    }
}
