//! Finding a VM and reading what a backup needs to know about it.
//!
//! A VM is named by its name (`web01`) or its inventory path (`DC0/vm/prod/web01`, a leading
//! `/` allowed; anything with a `/` is a path). A name must be unique on the server: two VMs
//! of one name in different folders are refused, listing their paths. An unknown name lists
//! the closest names there are.

use super::props::{morefs, string, Objects, Props};
use super::soap::{child, children, text, MoRef};
use crate::error::{Error, Result};

/// Names within an edit distance of a third of the asked-for name's length (at least 2), or
/// containing it, count as close.
const MIN_CLOSE_DISTANCE: usize = 2;
/// Close names listed at most.
const MAX_CLOSE: usize = 5;

/// What is known of a VM before the snapshot.
#[derive(Clone, Debug)]
pub struct VmInfo {
    /// The managed object.
    pub moref: MoRef,
    /// `name`.
    pub name: String,
    /// `config.instanceUuid`.
    pub instance_uuid: String,
    /// `config.files.vmPathName`: `[ds] folder/vm.vmx`.
    pub vmx_path: String,
    /// `runtime.powerState`: `poweredOn`, `poweredOff`, `suspended`.
    pub power_state: String,
    /// `guest.toolsRunningStatus`: whether VMware Tools run (quiescing needs them).
    pub tools_running: bool,
    /// `config.changeTrackingEnabled`.
    pub change_tracking: bool,
    /// Every snapshot, flattened from `snapshot.rootSnapshotList`.
    pub snapshots: Vec<SnapshotInfo>,
    /// The datacenter the VM is in (its name, the file access's `dcPath`).
    pub datacenter: String,
}

/// One snapshot of a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The managed object.
    pub moref: MoRef,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// `createTime` (xsd:dateTime, as the server wrote it).
    pub create_time: String,
    /// Whether it was taken quiesced.
    pub quiesced: bool,
}

/// Finds the VM `want` names (see the module docs).
pub fn find(props: &Props<'_>, want: &str) -> Result<MoRef> {
    if want.contains('/') {
        let path = want.trim_start_matches('/');
        return match props.find_by_inventory_path(path)? {
            Some(m) if m.kind == "VirtualMachine" => Ok(m),
            Some(m) => Err(Error::Usage(format!(
                "{want:?} is a {}, not a virtual machine",
                m.kind
            ))),
            None => Err(Error::Usage(format!(
                "no VM at inventory path {want:?} (paths look like DATACENTER/vm/FOLDER/NAME)"
            ))),
        };
    }
    let all = all_names(props)?;
    let hits: Vec<&(MoRef, String)> = all.iter().filter(|(_, n)| n == want).collect();
    match hits.as_slice() {
        [(m, _)] => Ok(m.clone()),
        [] => Err(Error::Usage(unknown_vm(want, &all))),
        many => Err(Error::Usage(format!(
            "{} VMs are named {want:?} ({}): name one by its inventory path",
            many.len(),
            many.iter()
                .map(|(m, _)| m.value.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Every VM's name.
pub(crate) fn all_names(props: &Props<'_>) -> Result<Vec<(MoRef, String)>> {
    let view = props.view("VirtualMachine")?;
    let mut out = Vec::new();
    let r = props.retrieve(
        "VirtualMachine",
        &["name"],
        Objects::View(&view),
        |m, _, v| {
            if let Some(n) = string(v) {
                out.push((m.clone(), n));
            }
        },
    );
    props.destroy_view(&view);
    r?;
    Ok(out)
}

/// "no VM named X; close: a, b" (or the count of VMs when none is close).
fn unknown_vm(want: &str, all: &[(MoRef, String)]) -> String {
    let lower = want.to_lowercase();
    let within = MIN_CLOSE_DISTANCE.max(lower.chars().count() / 3);
    let mut close: Vec<(usize, &str)> = all
        .iter()
        .map(|(_, n)| (distance(&lower, &n.to_lowercase()), n.as_str()))
        .filter(|(d, n)| *d <= within || n.to_lowercase().contains(&lower))
        .collect();
    close.sort();
    close.dedup_by(|a, b| a.1 == b.1);
    if close.is_empty() {
        format!("no VM named {want:?} (the server has {} VMs)", all.len())
    } else {
        format!(
            "no VM named {want:?}; close: {}",
            close
                .iter()
                .take(MAX_CLOSE)
                .map(|(_, n)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// Levenshtein distance between two strings, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Reads what a backup needs of `vm`.
pub fn info(props: &Props<'_>, vm: &MoRef) -> Result<VmInfo> {
    let mut v = VmInfo {
        moref: vm.clone(),
        name: String::new(),
        instance_uuid: String::new(),
        vmx_path: String::new(),
        power_state: String::new(),
        tools_running: false,
        change_tracking: false,
        snapshots: Vec::new(),
        datacenter: String::new(),
    };
    let mut parent = None;
    props.retrieve(
        "VirtualMachine",
        &[
            "name",
            "config.instanceUuid",
            "config.files.vmPathName",
            "runtime.powerState",
            "guest.toolsRunningStatus",
            "config.changeTrackingEnabled",
            "snapshot",
            "parent",
        ],
        Objects::List(std::slice::from_ref(vm)),
        |_, path, val| {
            let s = || string(val).unwrap_or_default();
            match path {
                "name" => v.name = s(),
                "config.instanceUuid" => v.instance_uuid = s(),
                "config.files.vmPathName" => v.vmx_path = s(),
                "runtime.powerState" => v.power_state = s(),
                "guest.toolsRunningStatus" => v.tools_running = s() == "guestToolsRunning",
                "config.changeTrackingEnabled" => v.change_tracking = s() == "true",
                "snapshot" => v.snapshots = snapshot_list(val),
                "parent" => parent = MoRef::from_node(val),
                _ => {}
            }
        },
    )?;
    if v.vmx_path.is_empty() {
        return Err(vm_error(vm, "has no configuration file path"));
    }
    v.datacenter = datacenter_of(props, parent)?;
    Ok(v)
}

fn vm_error(vm: &MoRef, what: &str) -> Error {
    Error::Usage(format!("VM {}: {what}", vm.value))
}

/// Every snapshot of `val` (a `VirtualMachineSnapshotInfo`), flattened.
fn snapshot_list(val: roxmltree::Node<'_, '_>) -> Vec<SnapshotInfo> {
    let mut out = Vec::new();
    for root in children(val, "rootSnapshotList") {
        flatten_snapshots(root, &mut out);
    }
    out
}

/// The snapshots of `vm` now (its `snapshot` property alone).
pub fn snapshots(props: &Props<'_>, vm: &MoRef) -> Result<Vec<SnapshotInfo>> {
    Ok(props
        .get(vm, "snapshot", |v| Some(snapshot_list(v)))?
        .unwrap_or_default())
}

/// Adds `tree` (a `VirtualMachineSnapshotTree`) and its children to `out`.
fn flatten_snapshots(tree: roxmltree::Node<'_, '_>, out: &mut Vec<SnapshotInfo>) {
    if let Some(moref) = child(tree, "snapshot").and_then(MoRef::from_node) {
        out.push(SnapshotInfo {
            moref,
            name: text(tree, "name").unwrap_or_default(),
            description: text(tree, "description").unwrap_or_default(),
            create_time: text(tree, "createTime").unwrap_or_default(),
            quiesced: text(tree, "quiesced").as_deref() == Some("true"),
        });
    }
    for c in children(tree, "childSnapshotList") {
        flatten_snapshots(c, out);
    }
}

/// Walks up from `start` to the datacenter and returns its name (a VM's folders sit in one).
fn datacenter_of(props: &Props<'_>, start: Option<MoRef>) -> Result<String> {
    datacenter(props, start).map(|(_, name)| name)
}

/// Walks up from `start` (a VM, a datastore, a folder) to its datacenter: object and name.
pub fn datacenter(props: &Props<'_>, start: Option<MoRef>) -> Result<(MoRef, String)> {
    let mut at = start;
    // Inventories are shallow; the bound only stops a server that answers with a loop.
    for _ in 0..64 {
        let Some(obj) = at else { break };
        if obj.kind == "Datacenter" {
            let name = props.get(&obj, "name", string)?.unwrap_or_default();
            return Ok((obj, name));
        }
        at = props.get(&obj, "parent", MoRef::from_node)?;
    }
    Err(Error::Usage(
        "the object is in no datacenter (its folders lead nowhere)".into(),
    ))
}

/// Every datastore's name and URL (`ds:///vmfs/volumes/<uuid>/`), for mapping the absolute
/// `/vmfs/volumes/<uuid>/...` paths that parent hints may hold.
pub fn datastores(props: &Props<'_>, vm: &MoRef) -> Result<Vec<(String, String)>> {
    let Some(list) = props.get(vm, "datastore", |v| Some(morefs(v)))? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut names = std::collections::HashMap::new();
    let mut urls = std::collections::HashMap::new();
    props.retrieve(
        "Datastore",
        &["summary.name", "summary.url"],
        Objects::List(&list),
        |m, path, v| {
            let s = string(v).unwrap_or_default();
            match path {
                "summary.name" => names.insert(m.clone(), s),
                _ => urls.insert(m.clone(), s),
            };
        },
    )?;
    for m in &list {
        if let Some(n) = names.get(m) {
            out.push((n.clone(), urls.get(m).cloned().unwrap_or_default()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_list_close_ones() {
        let all: Vec<(MoRef, String)> = ["web01", "web02", "db01", "mail"]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    MoRef::new("VirtualMachine", &format!("vm-{i}")),
                    n.to_string(),
                )
            })
            .collect();
        assert_eq!(
            unknown_vm("web1", &all),
            "no VM named \"web1\"; close: web01, web02"
        );
        assert_eq!(
            unknown_vm("WEB", &all),
            "no VM named \"WEB\"; close: web01, web02"
        );
        assert_eq!(
            unknown_vm("exchange-2019", &all),
            "no VM named \"exchange-2019\" (the server has 4 VMs)"
        );
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
