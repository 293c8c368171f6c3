//! The backup snapshot: taken before the disks are read, always removed afterwards.
//!
//! vdar names its snapshots `vdar-backup <UTC time>` so that it can tell them from the
//! administrator's own. A VM that already carries one (a backup that died, a server that went
//! away before the snapshot could be removed) is refused, naming the snapshot, unless the
//! caller asks for such leftovers to be removed first: a second snapshot on top of a stale one
//! would grow a redo log nobody consolidates.
//!
//! Quiescing: with [`Quiesce::Auto`] the snapshot is quiesced when VMware Tools run. If the
//! quiesced snapshot fails, the backup fails, naming the fault, unless the caller allowed a
//! crash-consistent fallback ([`SnapshotOptions::allow_unquiesced`]): then the failure is
//! reported and the snapshot taken again without quiescing, and the manifest says so.
//!
//! [`SnapshotGuard`] removes its snapshot when dropped, so every path out of a backup (success,
//! error, SIGINT/SIGTERM through the pipeline's cancel flag) removes it; only a process killed
//! outright leaves it behind, and the next run finds it by its name.

use super::props::Props;
use super::session::Session;
use super::soap::{el, returnvals, MoRef};
use super::vm::{SnapshotInfo, VmInfo};
use crate::error::{Error, Result};

/// The name prefix of vdar's snapshots.
pub const SNAPSHOT_PREFIX: &str = "vdar-backup";

/// Whether to quiesce the guest's file systems for the snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quiesce {
    /// When VMware Tools run.
    #[default]
    Auto,
    /// Always; a VM without running Tools fails.
    Always,
    /// Never (crash-consistent).
    Never,
}

/// How to take the snapshot.
#[derive(Clone, Debug, Default)]
pub struct SnapshotOptions {
    /// Quiescing.
    pub quiesce: Quiesce,
    /// On a failed quiesced snapshot, take a crash-consistent one instead (reported).
    pub allow_unquiesced: bool,
    /// Remove vdar snapshots left by an earlier run instead of refusing the VM.
    pub remove_stale: bool,
}

/// The snapshot a backup reads, removed on drop.
pub struct SnapshotGuard<'s> {
    session: &'s Session,
    /// The snapshot.
    pub info: SnapshotInfo,
    /// The VM's name, for messages.
    vm: String,
    removed: bool,
}

/// What happened while taking the snapshot, for the user and the manifest.
#[derive(Clone, Debug, Default)]
pub struct SnapshotReport {
    /// Stale vdar snapshots removed first (by name).
    pub removed_stale: Vec<String>,
    /// A quiesce failure that was retried crash-consistent.
    pub quiesce_failure: Option<String>,
}

/// vdar's own snapshots among `snaps`.
pub fn stale(snaps: &[SnapshotInfo]) -> Vec<&SnapshotInfo> {
    snaps
        .iter()
        .filter(|s| s.name.starts_with(SNAPSHOT_PREFIX))
        .collect()
}

/// Takes the backup snapshot of `vm` by the rules above.
pub fn take<'s>(
    session: &'s Session,
    vm: &VmInfo,
    opts: &SnapshotOptions,
    now: &str,
) -> Result<(SnapshotGuard<'s>, SnapshotReport)> {
    let props = session.props();
    let mut report = SnapshotReport::default();
    let leftovers = stale(&vm.snapshots);
    if !leftovers.is_empty() && !opts.remove_stale {
        return Err(Error::Usage(format!(
            "VM {:?} already has a vdar snapshot ({}), left by a backup that did not finish: \
             remove it in vSphere or run again with --remove-stale-snapshots",
            vm.name,
            names(&leftovers)
        )));
    }
    for s in leftovers {
        remove(
            session,
            &s.moref,
            &format!("stale snapshot {:?} of {:?}", s.name, vm.name),
        )?;
        report.removed_stale.push(s.name.clone());
    }
    let quiesce = match opts.quiesce {
        Quiesce::Auto => vm.tools_running,
        Quiesce::Always => true,
        Quiesce::Never => false,
    };
    let name = format!("{SNAPSHOT_PREFIX} {now}");
    let moref = match create(&props, vm, &name, quiesce) {
        Ok(m) => m,
        Err(e) if quiesce && opts.allow_unquiesced => {
            report.quiesce_failure = Some(e.to_string());
            create(&props, vm, &name, false)?
        }
        Err(e) => return Err(e),
    };
    let mut guard = SnapshotGuard {
        session,
        info: SnapshotInfo {
            moref: moref.clone(),
            name: name.clone(),
            description: String::new(),
            create_time: String::new(),
            quiesced: quiesce && report.quiesce_failure.is_none(),
        },
        vm: vm.name.clone(),
        removed: false,
    };
    // The server's own record of it: creation time and whether it really is quiesced.
    // Only the snapshot tree: a whole `vm::info` would walk up to the datacenter again.
    let now = super::vm::snapshots(&props, &vm.moref)?;
    if let Some(s) = now.iter().find(|s| s.moref == moref) {
        guard.info = s.clone();
    }
    Ok((guard, report))
}

fn create(props: &Props<'_>, vm: &VmInfo, name: &str, quiesce: bool) -> Result<MoRef> {
    let args = format!(
        "{}{}<memory>false</memory><quiesce>{quiesce}</quiesce>",
        el("name", name),
        el(
            "description",
            &format!("taken by vdar {} for a backup", env!("CARGO_PKG_VERSION"))
        ),
    );
    let soap = props.soap();
    let answer = soap.call("CreateSnapshot_Task", &vm.moref, &args, false)?;
    let doc = answer.doc()?;
    let task = returnvals(&doc)
        .into_iter()
        .find_map(MoRef::from_node)
        .ok_or_else(|| soap.error("CreateSnapshot_Task: no task returned"))?;
    let what = format!(
        "{} snapshot of VM {:?}",
        if quiesce {
            "quiesced"
        } else {
            "crash-consistent"
        },
        vm.name
    );
    props
        .wait_task(&task, &what)?
        .ok_or_else(|| soap.error(format!("{what}: the task returned no snapshot")))
}

/// Removes a snapshot, consolidating its redo logs into the VM's disks.
pub fn remove(session: &Session, snapshot: &MoRef, what: &str) -> Result<()> {
    let answer = session.soap.call(
        "RemoveSnapshot_Task",
        snapshot,
        "<removeChildren>false</removeChildren><consolidate>true</consolidate>",
        false,
    )?;
    let doc = answer.doc()?;
    let task = returnvals(&doc)
        .into_iter()
        .find_map(MoRef::from_node)
        .ok_or_else(|| session.soap.error("RemoveSnapshot_Task: no task returned"))?;
    session
        .props()
        .wait_task(&task, &format!("removing {what}"))?;
    Ok(())
}

fn names(s: &[&SnapshotInfo]) -> String {
    s.iter()
        .map(|s| format!("{:?} ({})", s.name, s.moref.value))
        .collect::<Vec<_>>()
        .join(", ")
}

impl SnapshotGuard<'_> {
    /// Removes the snapshot now; the error names it, so the user can remove it by hand.
    pub fn remove(mut self) -> Result<()> {
        self.removed = true;
        self.remove_inner()
    }

    fn remove_inner(&self) -> Result<()> {
        let what = format!("snapshot {:?} of VM {:?}", self.info.name, self.vm);
        remove(self.session, &self.info.moref, &what).map_err(|e| {
            Error::Usage(format!(
                "{what} could not be removed ({e}); it is still there: the next backup reports \
                 it (or removes it with --remove-stale-snapshots)"
            ))
        })
    }
}

impl Drop for SnapshotGuard<'_> {
    fn drop(&mut self) {
        if !self.removed {
            self.removed = true;
            if let Err(e) = self.remove_inner() {
                log::error!("{e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_vdar_snapshots_are_stale() {
        let s = |n: &str| SnapshotInfo {
            moref: MoRef::new("VirtualMachineSnapshot", n),
            name: n.to_string(),
            description: String::new(),
            create_time: String::new(),
            quiesced: false,
        };
        let all = [s("before upgrade"), s("vdar-backup 2026-12-05T01:00:00Z")];
        assert_eq!(stale(&all), vec![&all[1]]);
    }
}
