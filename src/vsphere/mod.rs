//! vSphere: back up a VM by its name, the way VMware Consolidated Backup's vcbMounter and the
//! Bareos VMware plugin do: log in (vCenter or a standalone ESXi, SOAP API), find the VM, take
//! a snapshot, read the frozen disk layout from the API, read the chain's files, and always
//! remove the snapshot.
//!
//! Modules, bottom up: [`tls`] (trust: system roots, a pinned thumbprint, or none on request),
//! [`http`] (connection pool, retry rule), [`soap`] (calls, faults), [`session`] (credentials,
//! login), [`props`] (property collector, views, tasks), [`vm`] (finding a VM, its snapshots),
//! [`snapshot`] (the backup snapshot and its guard), [`layout`] (the frozen disks and small
//! files), [`datastore`] (the `network` transport), and here [`prepare`], which turns a VM name
//! into a [`crate::input::vm::VmSelection`] for [`crate::job::open`], with an origin record
//! for the manifest (formats/ARCHIVE.md, "Origin").
//!
//! Transports: `network` reads every file over the datastore file access; `san` reads the disk
//! chain through a block map and the LUNs ([`crate::san`]), and only the small files over
//! HTTPS. Either way the chain's files are those the API names and their descriptors link.

pub mod cbt;
pub mod datastore;
pub mod http;
pub mod layout;
pub mod nfc;
pub mod ova_file;
pub mod plan;
pub mod props;
pub mod register;
pub mod restore;
pub mod session;
pub mod snapshot;
pub mod soap;
pub mod tls;
pub mod vm;

use crate::archive::manifest::VmOrigin;
use crate::base::image::BaseImage;
use crate::error::Result;
use crate::input::in_use::DiskAreas;
use crate::input::vm::{VmDisk, VmSelection};
use crate::input::SourceOpener;
use crate::job::changes::{Area, ChangedAreas, ChangedDisk};

pub use datastore::DatastoreFiles;
pub use http::RetryPolicy;
pub use session::{Credentials, Session};
pub use snapshot::{Quiesce, SnapshotGuard, SnapshotOptions, SnapshotReport};
pub use tls::{Thumbprint, TlsTrust};

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The server: `https://vcenter.example`, `esx01:443`, or a full `.../sdk` URL.
    pub url: String,
    /// Certificate trust.
    pub trust: TlsTrust,
    /// Connections for the file access (reads in flight).
    pub connections: usize,
    /// Retries on transient failures.
    pub retry: RetryPolicy,
}

impl ServerOptions {
    /// The API endpoint: `https://` added when no scheme is given, `/sdk` when no path is.
    pub fn sdk_url(&self) -> String {
        let u = self.url.trim_end_matches('/');
        let u = if u.contains("://") {
            u.to_string()
        } else {
            format!("https://{u}")
        };
        let path_start = u.find("://").map(|i| i + 3).unwrap_or(0);
        if u[path_start..].contains('/') {
            u
        } else {
            format!("{u}/sdk")
        }
    }
}

/// Connects and logs in.
pub fn connect(server: &ServerOptions, creds: &Credentials) -> Result<Session> {
    let soap = soap::Soap::new(
        &server.sdk_url(),
        server.trust,
        server.connections,
        server.retry,
    );
    Session::login(soap, creds)
}

/// One VM, snapshotted and ready to back up.
pub struct PreparedVm<'s> {
    /// What to read, for [`crate::job::open`].
    pub selection: VmSelection,
    /// Its files over HTTPS (the `network` transport, and the small files in both).
    pub files: DatastoreFiles,
    /// The origin record for the manifest.
    pub origin: VmOrigin,
    /// The snapshot; dropping it removes it.
    pub snapshot: SnapshotGuard<'s>,
    /// What happened taking it.
    pub report: SnapshotReport,
    /// Per disk, the bytes the server reported in use (`None`: change tracking off, or the
    /// query failed, and a flat base is read whole).
    pub in_use_bytes: Vec<Option<u64>>,
}

/// Finds `want`, takes its snapshot and reads the frozen layout. `now` is the time to name
/// the snapshot by (RFC 3339, UTC).
pub fn prepare<'s>(
    session: &'s Session,
    server: &ServerOptions,
    want: &str,
    opts: &SnapshotOptions,
    now: &str,
) -> Result<PreparedVm<'s>> {
    let props = session.props();
    let moref = vm::find(&props, want)?;
    let info = vm::info(&props, &moref)?;
    let datastores = vm::datastores(&props, &moref)?;
    let files = DatastoreFiles::new(
        session.soap.agent().clone(),
        session.soap.url(),
        &info.datacenter,
        &datastores,
        session.soap.cookie(),
        server.retry,
        server.connections,
    )?;
    let (snapshot, report) = snapshot::take(session, &info, opts, now)?;
    let disks = layout::disks(&props, &snapshot.info.moref)?;
    let small = layout::small_files(&props, &moref, &info.vmx_path)?;
    let mut selection = VmSelection {
        name: info.name.clone(),
        vmx: Some(layout::local_path(&info.vmx_path)?),
        disks: Vec::new(),
        config_files: Vec::new(),
        snapshot: Some(snapshot.info.name.clone()),
        warnings: Vec::new(),
    };
    for (k, f) in small.iter().enumerate() {
        let p = layout::local_path(f)?;
        // The .vmx (first) must be there; a file the layout lists but the datastore lacks
        // (a log rotated away, a simulator's stale entry) holds nothing to lose.
        if k == 0 || files.exists(&p)? {
            selection.config_files.push(p);
        } else {
            selection.warnings.push(format!(
                "VM {:?}: {f} is in the VM's file layout but not on the datastore; not archived",
                info.name
            ));
        }
    }
    let mut in_use_bytes = Vec::new();
    for d in &disks {
        let in_use = info
            .change_tracking
            .then(|| cbt::in_use(&session.soap, &moref, &snapshot.info.moref, d))
            .and_then(|r| {
                r.map_err(|e| {
                    selection.warnings.push(format!(
                        "VM {:?} disk {}: no areas in use ({e}); a flat base is read whole",
                        info.name, d.device
                    ))
                })
                .ok()
            });
        in_use_bytes.push(in_use.as_ref().map(DiskAreas::bytes));
        selection.disks.push(VmDisk {
            name: d.device.clone(),
            top: layout::local_path(&d.files[0])?,
            in_use: in_use.map(std::sync::Arc::new),
        });
    }
    if let Some(q) = &report.quiesce_failure {
        selection.warnings.push(format!(
            "VM {:?}: quiesced snapshot failed ({q}); backed up crash-consistent",
            info.name
        ));
    }
    let origin = VmOrigin {
        server: session.soap.url().to_string(),
        server_type: session.content.api_type.clone(),
        vm: info.name.clone(),
        moref: moref.value.clone(),
        instance_uuid: info.instance_uuid.clone(),
        snapshot: snapshot.info.name.clone(),
        snapshot_time: snapshot.info.create_time.clone(),
        quiesced: snapshot.info.quiesced,
        disks,
    };
    Ok(PreparedVm {
        selection,
        files,
        origin,
        snapshot,
        report,
        in_use_bytes,
    })
}

/// What changed on each disk of `vms` since the state `base` recorded for it, asked of the
/// server (`QueryChangedDiskAreas` with that change id): the list `--changed-areas` takes. A
/// disk the server cannot answer for (change tracking off, no change id in the base, an id the
/// server no longer knows, as after a change tracking reset) is left out, with the reason
/// among the warnings; the incremental then takes the next best source for it.
pub fn changed_since(
    session: &Session,
    vms: &[PreparedVm<'_>],
    base: &BaseImage,
) -> (ChangedAreas, Vec<String>) {
    let mut list = ChangedAreas { disks: Vec::new() };
    let mut warnings = Vec::new();
    for p in vms {
        let o = &p.origin;
        let vm = soap::MoRef {
            kind: "VirtualMachine".into(),
            value: o.moref.clone(),
        };
        // A change id is only known to the disk that gave it out: a base of another VM of the
        // same name (another server, a VM recreated) has no changes since to ask for.
        let then = base.manifest.vms.iter().find(|v| v.name == o.vm);
        if let Some(t) = then.and_then(|v| v.origin.as_ref()) {
            if t.instance_uuid != o.instance_uuid {
                warnings.push(format!(
                    "VM {:?}: the base was taken of another VM (instance UUID {}, now {})",
                    o.vm, t.instance_uuid, o.instance_uuid
                ));
                continue;
            }
        }
        for d in &o.disks {
            let named = |why: &str| format!("VM {:?} disk {}: {why}", o.vm, d.device);
            let Some(since) = crate::job::changes::recorded_change_id(base, &o.vm, &d.device)
            else {
                warnings.push(named("the base recorded no CBT change id"));
                continue;
            };
            let Some(now) = &d.change_id else {
                warnings.push(named("change tracking is off now"));
                continue;
            };
            match cbt::changed(&session.soap, &vm, &p.snapshot.info.moref, d, &since) {
                Ok(areas) => list.disks.push(ChangedDisk {
                    vm: Some(o.vm.clone()),
                    disk: d.device.clone(),
                    since,
                    change_id: now.clone(),
                    areas: areas
                        .into_iter()
                        .map(|(start, length)| Area { start, length })
                        .collect(),
                }),
                Err(e) => warnings.push(named(&format!("no changed areas since {since:?} ({e})"))),
            }
        }
    }
    (list, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_become_sdk_urls() {
        let s = |u: &str| ServerOptions {
            url: u.into(),
            trust: TlsTrust::System,
            connections: 1,
            retry: RetryPolicy::default(),
        };
        assert_eq!(s("vc.example").sdk_url(), "https://vc.example/sdk");
        assert_eq!(s("https://esx:8443/").sdk_url(), "https://esx:8443/sdk");
        assert_eq!(
            s("http://127.0.0.1:9/sdk").sdk_url(),
            "http://127.0.0.1:9/sdk"
        );
    }
}
