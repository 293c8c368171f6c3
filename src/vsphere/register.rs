//! Where a restored VM goes in the inventory, and putting it there: the datastore by name,
//! its datacenter, the VM folder and resource pool (given as inventory paths, or the
//! datacenter's VM folder and the pool of a host or cluster that mounts the datastore),
//! `RegisterVM_Task`, and the undo steps a failed restore needs (unregister, delete files).

use super::props::{morefs, string, Objects, Props};
use super::session::Session;
use super::soap::{el, returnvals, MoRef};
use crate::error::{Error, Result};

/// What the restore did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoredVm {
    /// The registered VM's name.
    pub name: String,
    /// Its managed object id.
    pub moref: String,
    /// Its .vmx as a datastore path.
    pub vmx: String,
    /// The files uploaded, as datastore paths, in upload order.
    pub files: Vec<String>,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
}

/// Where to register a VM.
#[derive(Clone, Debug)]
pub struct Placement {
    /// The datastore's name (`dsName`).
    pub datastore: String,
    /// The datastore.
    pub datastore_ref: MoRef,
    /// Its datacenter's name (`dcPath`).
    pub datacenter: String,
    /// Its datacenter.
    pub datacenter_ref: MoRef,
    /// The VM folder.
    pub folder: MoRef,
    /// The resource pool.
    pub pool: MoRef,
}

/// Finds the datastore named `datastore` and decides the folder and pool.
pub fn placement(
    props: &Props<'_>,
    datastore: &str,
    folder: Option<&str>,
    pool: Option<&str>,
) -> Result<Placement> {
    let ds = find_datastore(props, datastore)?;
    let (dc, dc_name) = super::vm::datacenter(props, Some(ds.clone()))?;
    let folder = match folder {
        Some(path) => by_path(props, path, "Folder", "--folder")?,
        None => props
            .get(&dc, "vmFolder", MoRef::from_node)?
            .ok_or_else(|| {
                props
                    .soap()
                    .error(format!("datacenter {dc_name:?} has no VM folder"))
            })?,
    };
    let pool = match pool {
        Some(path) => by_path(props, path, "ResourcePool", "--pool")?,
        None => pool_for(props, &ds, datastore)?,
    };
    Ok(Placement {
        datastore: datastore.to_string(),
        datastore_ref: ds,
        datacenter: dc_name,
        datacenter_ref: dc,
        folder,
        pool,
    })
}

fn find_datastore(props: &Props<'_>, name: &str) -> Result<MoRef> {
    let view = props.view("Datastore")?;
    let mut all = Vec::new();
    let r = props.retrieve("Datastore", &["name"], Objects::View(&view), |m, _, v| {
        all.push((m.clone(), string(v).unwrap_or_default()));
    });
    props.destroy_view(&view);
    r?;
    all.iter()
        .find(|(_, n)| n == name)
        .map(|(m, _)| m.clone())
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|(_, n)| n.as_str()).collect();
            Error::Usage(format!(
                "no datastore named {name:?} (there are: {})",
                names.join(", ")
            ))
        })
}

fn by_path(props: &Props<'_>, path: &str, kind: &str, flag: &str) -> Result<MoRef> {
    match props.find_by_inventory_path(path.trim_start_matches('/'))? {
        Some(m) if m.kind == kind => Ok(m),
        Some(m) => Err(Error::Usage(format!(
            "{flag} {path:?} is a {}, not a {kind}",
            m.kind
        ))),
        None => Err(Error::Usage(format!(
            "{flag} {path:?}: nothing at that inventory path"
        ))),
    }
}

/// The resource pool of the first host or cluster that mounts `ds`.
fn pool_for(props: &Props<'_>, ds: &MoRef, name: &str) -> Result<MoRef> {
    let view = props.view("ComputeResource")?;
    let mut found: Vec<(MoRef, Vec<MoRef>, Option<MoRef>)> = Vec::new();
    let r = props.retrieve(
        "ComputeResource",
        &["datastore", "resourcePool"],
        Objects::View(&view),
        |m, path, v| {
            let k = match found.iter().position(|(x, _, _)| x == m) {
                Some(k) => k,
                None => {
                    found.push((m.clone(), Vec::new(), None));
                    found.len() - 1
                }
            };
            let entry = &mut found[k];
            match path {
                "datastore" => entry.1 = morefs(v),
                _ => entry.2 = MoRef::from_node(v),
            }
        },
    );
    props.destroy_view(&view);
    r?;
    found
        .into_iter()
        .find_map(|(_, dss, pool)| dss.contains(ds).then_some(pool).flatten())
        .ok_or_else(|| {
            Error::Usage(format!(
                "no host or cluster mounts datastore {name:?}: give --pool INVENTORY/PATH"
            ))
        })
}

/// Whether a VM of this name is registered anywhere.
pub fn vm_exists(props: &Props<'_>, name: &str) -> Result<bool> {
    Ok(super::vm::all_names(props)?.iter().any(|(_, n)| n == name))
}

/// Registers the .vmx at `vmx` (`[DS] DIR/NAME.vmx`) as `name`; returns the new VM.
pub fn register(session: &Session, at: &Placement, vmx: &str, name: &str) -> Result<MoRef> {
    let args = format!(
        "{}{}<asTemplate>false</asTemplate>{}",
        el("path", vmx),
        el("name", name),
        at.pool.xml("pool")
    );
    let soap = &session.soap;
    let answer = soap.call("RegisterVM_Task", &at.folder, &args, false)?;
    let doc = answer.doc()?;
    let task = returnvals(&doc)
        .into_iter()
        .find_map(MoRef::from_node)
        .ok_or_else(|| soap.error("RegisterVM_Task: no task returned"))?;
    session
        .props()
        .wait_task(&task, &format!("registering {vmx} as {name:?}"))?
        .ok_or_else(|| soap.error(format!("registering {vmx}: the task returned no VM")))
}

/// Unregisters a VM (its files stay).
pub fn unregister(session: &Session, vm: &MoRef) -> Result<()> {
    session.soap.call("UnregisterVM", vm, "", false).map(|_| ())
}

/// Deletes one datastore file (`[DS] DIR/FILE`).
pub fn delete_file(session: &Session, at: &Placement, file: &str) -> Result<()> {
    let soap = &session.soap;
    let fm = session
        .content
        .file_manager
        .as_ref()
        .ok_or_else(|| soap.error("the server has no file manager to delete files with"))?;
    let args = format!(
        "{}{}",
        el("name", file),
        at.datacenter_ref.xml("datacenter")
    );
    let answer = soap.call("DeleteDatastoreFile_Task", fm, &args, false)?;
    let doc = answer.doc()?;
    let task = returnvals(&doc)
        .into_iter()
        .find_map(MoRef::from_node)
        .ok_or_else(|| soap.error("DeleteDatastoreFile_Task: no task returned"))?;
    session
        .props()
        .wait_task(&task, &format!("deleting {file}"))?;
    Ok(())
}
