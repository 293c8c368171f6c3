//! The disk layout a snapshot froze, as the API reports it: each virtual disk's device node
//! (`scsi0:1`, from its controller's bus and its unit), capacity, controller key, the file the
//! snapshot froze (the chain's top), the rest of its chain (`backing.parent`, where the server
//! reports it) and its CBT `changeId`; and the VM's small files (`layoutEx.file`).
//!
//! Datastore paths (`[ds1] web/web-000001.vmdk`) become the paths vdar reads
//! (`/vmfs/volumes/ds1/web/web-000001.vmdk`), the form ESX itself uses, so that parent hints,
//! relative or absolute, resolve as they would on the host.

use std::collections::HashMap;
use std::path::PathBuf;

use super::props::{Objects, Props};
use super::soap::{child, children, text, xsi_type, MoRef};
use crate::archive::manifest::DiskOrigin;
use crate::error::{Error, Result};

/// The VM's small files: configuration, NVRAM, snapshot list, extended configuration.
const SMALL_FILE_TYPES: &[&str] = &["config", "nvram", "snapshotList", "extendedConfig"];

/// Reads the disks of `snapshot` (`VirtualMachineSnapshot`).
pub fn disks(props: &Props<'_>, snapshot: &MoRef) -> Result<Vec<DiskOrigin>> {
    let mut controllers: HashMap<i32, (String, i32)> = HashMap::new();
    let mut disks = Vec::new();
    let mut bad = None;
    props.retrieve(
        "VirtualMachineSnapshot",
        &["config.hardware.device"],
        Objects::List(std::slice::from_ref(snapshot)),
        |_, _, val| {
            for dev in children(val, "VirtualDevice") {
                let kind = xsi_type(&dev).unwrap_or("");
                let key = int(dev, "key");
                if let Some(bus) = controller_bus(kind) {
                    controllers.insert(key, (bus.to_string(), int(dev, "busNumber")));
                } else if kind == "VirtualDisk" {
                    match disk(dev) {
                        Ok(d) => disks.push(d),
                        Err(e) => bad = Some(e),
                    }
                }
            }
        },
    )?;
    if let Some(e) = bad {
        return Err(props
            .soap()
            .error(format!("snapshot {}: {e}", snapshot.value)));
    }
    for d in &mut disks {
        let (bus, n) = controllers.get(&d.controller_key).ok_or_else(|| {
            props.soap().error(format!(
                "disk {} names controller {}, which the snapshot does not have",
                d.key, d.controller_key
            ))
        })?;
        d.device = format!("{bus}{n}:{}", d.device);
    }
    disks.sort_by_key(|d| device_order(&d.device));
    Ok(disks)
}

/// Sorts `scsi0:10` after `scsi0:2`.
fn device_order(d: &str) -> (String, u32, u32) {
    let bus: String = d.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    let rest = &d[bus.len()..];
    let (a, b) = rest.split_once(':').unwrap_or((rest, "0"));
    (bus, a.parse().unwrap_or(0), b.parse().unwrap_or(0))
}

/// The bus name of a controller type, if it is a disk controller.
fn controller_bus(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "VirtualLsiLogicController"
        | "VirtualLsiLogicSASController"
        | "VirtualBusLogicController"
        | "ParaVirtualSCSIController" => "scsi",
        "VirtualIDEController" => "ide",
        "VirtualAHCIController" => "sata",
        "VirtualNVMEController" => "nvme",
        _ => return None,
    })
}

fn int(n: roxmltree::Node<'_, '_>, name: &str) -> i32 {
    text(n, name).and_then(|t| t.parse().ok()).unwrap_or(-1)
}

/// One `VirtualDisk` device; `device` holds the unit number until the bus is known.
fn disk(dev: roxmltree::Node<'_, '_>) -> std::result::Result<DiskOrigin, String> {
    let key = int(dev, "key");
    let unit = int(dev, "unitNumber");
    let capacity = text(dev, "capacityInBytes")
        .and_then(|t| t.parse::<u64>().ok())
        .or_else(|| {
            text(dev, "capacityInKB")
                .and_then(|t| t.parse::<u64>().ok())
                .map(|k| k * 1024)
        })
        .ok_or_else(|| format!("disk {key} has no capacity"))?;
    let backing = child(dev, "backing").ok_or_else(|| format!("disk {key} has no backing"))?;
    let change_id = text(backing, "changeId").filter(|c| !c.is_empty());
    let mut files = Vec::new();
    let mut at = Some(backing);
    while let Some(b) = at {
        let f =
            text(b, "fileName").ok_or_else(|| format!("disk {key}: a backing without a file"))?;
        if files.contains(&f) || files.len() >= crate::chain::MAX_CHAIN_LAYERS {
            return Err(format!(
                "disk {key}: backing.parent chain loops or is too deep"
            ));
        }
        files.push(f);
        at = child(b, "parent");
    }
    Ok(DiskOrigin {
        device: unit.to_string(),
        key,
        controller_key: int(dev, "controllerKey"),
        capacity,
        files,
        change_id,
    })
}

/// The VM's small files (datastore paths), from `layoutEx.file`, the .vmx first.
pub fn small_files(props: &Props<'_>, vm: &MoRef, vmx: &str) -> Result<Vec<String>> {
    let mut out = vec![vmx.to_string()];
    props.retrieve(
        "VirtualMachine",
        &["layoutEx.file"],
        Objects::List(std::slice::from_ref(vm)),
        |_, _, val| {
            for f in children(val, "VirtualMachineFileLayoutExFileInfo") {
                let (Some(name), Some(kind)) = (text(f, "name"), text(f, "type")) else {
                    continue;
                };
                if SMALL_FILE_TYPES.contains(&kind.as_str()) && !out.contains(&name) {
                    out.push(name);
                }
            }
        },
    )?;
    Ok(out)
}

/// `[ds] folder/file` as `/vmfs/volumes/ds/folder/file`.
pub fn local_path(ds_path: &str) -> Result<PathBuf> {
    let bad = || {
        Error::Usage(format!(
            "{ds_path:?} is not a datastore path ([DATASTORE] PATH)"
        ))
    };
    let rest = ds_path.strip_prefix('[').ok_or_else(bad)?;
    let (ds, path) = rest.split_once(']').ok_or_else(bad)?;
    let path = path.trim_start();
    if ds.is_empty() || ds.contains('/') || path.split('/').any(|c| c == "..") {
        return Err(bad());
    }
    Ok(PathBuf::from(format!("/vmfs/volumes/{ds}/{path}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datastore_paths_become_vmfs_paths() {
        assert_eq!(
            local_path("[ds 1] web/web-000001.vmdk").unwrap(),
            PathBuf::from("/vmfs/volumes/ds 1/web/web-000001.vmdk")
        );
        assert!(local_path("web.vmdk").is_err());
        assert!(local_path("[ds] ../etc/passwd").is_err());
        let mut d = vec!["scsi0:10", "ide0:0", "scsi0:2", "scsi1:0"];
        d.sort_by_key(|d| device_order(d));
        assert_eq!(d, ["ide0:0", "scsi0:2", "scsi0:10", "scsi1:0"]);
    }

    #[test]
    fn disks_read_with_their_chain() {
        let xml = r#"<val xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
          <VirtualDevice xsi:type="VirtualDisk"><key>2000</key><controllerKey>1000</controllerKey>
          <unitNumber>1</unitNumber><capacityInKB>1024</capacityInKB>
          <backing xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[ds] a/a-000001.vmdk</fileName>
          <changeId>52 ab/3</changeId><parent><fileName>[ds] a/a.vmdk</fileName></parent></backing>
          </VirtualDevice></val>"#;
        let doc = roxmltree::Document::parse(xml).unwrap();
        let dev = doc.root_element().first_element_child().unwrap();
        let d = disk(dev).unwrap();
        assert_eq!(d.capacity, 1 << 20);
        assert_eq!(d.files, ["[ds] a/a-000001.vmdk", "[ds] a/a.vmdk"]);
        assert_eq!(d.change_id.as_deref(), Some("52 ab/3"));
        assert_eq!(d.device, "1");
    }
}
