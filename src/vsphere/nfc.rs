//! Restore through an NFC import lease, the way ovftool and `govc import.ova` deploy an OVA:
//! the server builds the VM from the OVF descriptor (`CreateImportSpec`, then the pool's
//! `ImportVApp`) and takes each disk as a streamOptimized VMDK posted to the lease's device
//! URL. Only grains that hold data cross the wire, compressed, and the host writes them
//! into a thin disk; the datastore file access takes a flat extent whole, holes as zeros.
//!
//! The lease is kept alive with progress reports while the disks go up (ESX drops an idle
//! lease after five minutes). Any failure aborts the lease and destroys the VM the import
//! created, so a failed restore leaves no VM behind.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::ova_file::{OvaFile, OvaMember};
use super::props::{fault_text, string};
use super::register::{Placement, RestoredVm};
use super::session::Session;
use super::soap::{child, children, el, returnvals, text, write_element, MoRef};
use crate::cancel::Cancel;
use crate::error::{Error, Result};

/// How often the lease hears of progress while a disk goes up.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How long a lease may take to become ready (a host allocates the disks first).
const MAX_LEASE_WAIT: Duration = Duration::from_secs(600);

/// What `CreateImportSpec` made of the descriptor.
struct ImportSpec {
    /// The spec as `ImportVApp` takes it (`<spec xsi:type=...>`).
    spec_xml: String,
    /// (device id, file in the OVA, create-not-post) for every file the import wants.
    files: Vec<(String, String, bool)>,
}

/// A ready lease: the VM it creates and the URL each device is uploaded to.
struct Lease {
    lease: MoRef,
    vm: Option<MoRef>,
    /// (import key, URL).
    urls: Vec<(String, String)>,
}

/// Imports the OVA `ova` as VM `name` at `at`; the name must be free (the caller checks).
pub fn import_ova(
    session: &Session,
    at: &Placement,
    name: &str,
    ova: &OvaFile,
    cancel: &Cancel,
) -> Result<RestoredVm> {
    let spec = import_spec(session, at, name, &ova.ovf)?;
    let lease = import_vapp(session, at, &spec)?;
    let mut undo = Abort {
        session,
        lease: Some(lease.lease.clone()),
        vm: lease.vm.clone(),
    };
    let (files, bytes) = upload_all(session, ova, &spec, &lease, cancel).map_err(|e| match e {
        Error::Remote { server, what } => Error::Remote {
            server,
            what: format!("importing VM {name:?}: {what}"),
        },
        e => e,
    })?;
    session
        .soap
        .call("HttpNfcLeaseComplete", &lease.lease, "", false)?;
    undo.lease = None;
    let vm = lease
        .vm
        .clone()
        .ok_or_else(|| session.soap.error("the import lease names no VM"))?;
    let vmx = session
        .props()
        .get(&vm, "config.files.vmPathName", string)?
        .unwrap_or_default();
    undo.vm = None;
    Ok(RestoredVm {
        name: name.to_string(),
        moref: vm.value,
        vmx,
        files,
        bytes_uploaded: bytes,
    })
}

fn import_spec(session: &Session, at: &Placement, name: &str, ovf: &str) -> Result<ImportSpec> {
    let soap = &session.soap;
    let manager = session
        .content
        .ovf_manager
        .as_ref()
        .ok_or_else(|| soap.error("the server has no OVF manager to import with"))?;
    let args = format!(
        "{}{}{}<cisp><locale></locale><deploymentOption></deploymentOption>{}\
         <diskProvisioning>thin</diskProvisioning></cisp>",
        el("ovfDescriptor", ovf),
        at.pool.xml("resourcePool"),
        at.datastore_ref.xml("datastore"),
        el("entityName", name)
    );
    let answer = soap.call("CreateImportSpec", manager, &args, false)?;
    let doc = answer.doc()?;
    let result = returnvals(&doc)
        .into_iter()
        .next()
        .ok_or_else(|| soap.error("CreateImportSpec: no result"))?;
    let errors: Vec<String> = children(result, "error").map(fault_text).collect();
    if !errors.is_empty() {
        return Err(soap.error(format!(
            "the server refuses the VM's OVF descriptor: {}",
            errors.join("; ")
        )));
    }
    for w in children(result, "warning") {
        log::warn!("import of {name:?}: {}", fault_text(w));
    }
    let spec = child(result, "importSpec")
        .ok_or_else(|| soap.error("CreateImportSpec: no import spec"))?;
    let mut spec_xml = String::new();
    write_element(spec, "spec", &mut spec_xml);
    let files = children(result, "fileItem")
        .map(|f| {
            (
                text(f, "deviceId").unwrap_or_default(),
                text(f, "path").unwrap_or_default(),
                text(f, "create").as_deref() == Some("true"),
            )
        })
        .collect();
    Ok(ImportSpec { spec_xml, files })
}

fn import_vapp(session: &Session, at: &Placement, spec: &ImportSpec) -> Result<Lease> {
    let soap = &session.soap;
    let args = format!("{}{}", spec.spec_xml, at.folder.xml("folder"));
    let answer = soap.call("ImportVApp", &at.pool, &args, false)?;
    let doc = answer.doc()?;
    let lease = returnvals(&doc)
        .into_iter()
        .find_map(MoRef::from_node)
        .ok_or_else(|| soap.error("ImportVApp: no lease returned"))?;
    drop(doc);
    let abort = |e: Error| {
        let _ = soap.call("HttpNfcLeaseAbort", &lease, "", false);
        e
    };
    wait_ready(session, &lease).map_err(abort)?;
    lease_info(session, lease.clone()).map_err(abort)
}

fn wait_ready(session: &Session, lease: &MoRef) -> Result<()> {
    let props = session.props();
    let started = Instant::now();
    loop {
        let state = props.get(lease, "state", string)?.unwrap_or_default();
        match state.as_str() {
            "ready" => return Ok(()),
            "error" => {
                let why = props
                    .get(lease, "error", |n| Some(fault_text(n)))?
                    .unwrap_or_else(|| "no reason given".into());
                return Err(session
                    .soap
                    .error(format!("the import lease failed: {why}")));
            }
            _ if started.elapsed() > MAX_LEASE_WAIT => {
                return Err(session.soap.error(format!(
                    "the import lease is still {state:?} after {MAX_LEASE_WAIT:?}"
                )))
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn lease_info(session: &Session, lease: MoRef) -> Result<Lease> {
    let info = session.props().get(&lease, "info", |n| {
        let vm = child(n, "entity").and_then(MoRef::from_node);
        let urls = children(n, "deviceUrl")
            .map(|d| {
                (
                    text(d, "importKey").unwrap_or_default(),
                    text(d, "url").unwrap_or_default(),
                )
            })
            .collect();
        Some((vm, urls))
    })?;
    let (vm, urls) = info.ok_or_else(|| session.soap.error("the import lease has no info"))?;
    Ok(Lease { lease, vm, urls })
}

/// Sends every file the import wants, keeping the lease alive; returns what was sent.
fn upload_all(
    session: &Session,
    ova: &OvaFile,
    spec: &ImportSpec,
    lease: &Lease,
    cancel: &Cancel,
) -> Result<(Vec<String>, u64)> {
    let mut jobs = Vec::new();
    for (device, file, create) in &spec.files {
        let member = ova.member(file).ok_or_else(|| {
            Error::io(
                &ova.path,
                None,
                std::io::Error::other(format!("the OVF names {file:?}, which the OVA lacks")),
            )
        })?;
        let url = lease
            .urls
            .iter()
            .find(|(key, _)| key == device)
            .map(|(_, url)| device_url(session.soap.url(), url))
            .ok_or_else(|| {
                let keys: Vec<&str> = lease.urls.iter().map(|(k, _)| k.as_str()).collect();
                session.soap.error(format!(
                    "the import lease has no URL for device {device} (it has: {})",
                    keys.join(", ")
                ))
            })?;
        jobs.push((member, url, *create));
    }
    let total: u64 = jobs.iter().map(|(m, _, _)| m.size).sum();
    let sent = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| keep_alive(session, &lease.lease, &sent, total, &done));
        let r = jobs.iter().try_for_each(|(m, url, create)| {
            cancel.check()?;
            upload(session, ova, m, url, *create, &sent, cancel)
        });
        done.store(true, Ordering::Relaxed);
        r
    })?;
    let names = jobs.iter().map(|(m, _, _)| m.name.clone()).collect();
    Ok((names, sent.load(Ordering::Relaxed)))
}

/// A device URL as the client must use it: a host of `*` means the server the client
/// talks to (ESX answers so when it cannot know the name it is reached by).
fn device_url(sdk_url: &str, url: &str) -> String {
    let Some(rest) = url.split_once("://").map(|(_, r)| r) else {
        return url.to_string();
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host != "*" {
        return url.to_string();
    }
    let origin_end = sdk_url
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| sdk_url[start..].find('/').map(|j| start + j))
        .unwrap_or(sdk_url.len());
    format!("{}/{path}", &sdk_url[..origin_end])
}

fn keep_alive(session: &Session, lease: &MoRef, sent: &AtomicU64, total: u64, done: &AtomicBool) {
    let mut last = Instant::now();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() < PROGRESS_EVERY {
            continue;
        }
        last = Instant::now();
        let pct = (sent.load(Ordering::Relaxed) * 100 / total.max(1)).min(99);
        let args = el("percent", &pct.to_string());
        if let Err(e) = session
            .soap
            .call("HttpNfcLeaseProgress", lease, &args, false)
        {
            log::debug!("HttpNfcLeaseProgress: {e}");
        }
    }
}

/// Sends one member: a disk is POSTed as a stream-optimized VMDK, another file PUT. Sent
/// once: a host that took part of a disk stream cannot be asked to take it again.
fn upload(
    session: &Session,
    ova: &OvaFile,
    m: &OvaMember,
    url: &str,
    create: bool,
    sent: &AtomicU64,
    cancel: &Cancel,
) -> Result<()> {
    log::debug!("uploading {} ({} bytes) to {url}", m.name, m.size);
    let mut body = Counted {
        inner: ova.reader(m)?,
        sent,
        cancel,
    };
    let agent = session.soap.agent();
    let mut req = if create {
        agent.put(url).header("Overwrite", "t")
    } else {
        agent
            .post(url)
            .header("Content-Type", "application/x-vnd.vmware-streamVmdk")
    };
    req = req.header("Content-Length", &m.size.to_string());
    if let Some(c) = session.soap.cookie() {
        req = req.header("Cookie", &c);
    }
    let failed = |why: String| {
        cancel.check().err().unwrap_or_else(|| {
            session
                .soap
                .error(format!("uploading {} to {url}: {why}", m.name))
        })
    };
    let resp = req
        .send(ureq::SendBody::from_reader(&mut body))
        .map_err(|e| failed(e.to_string()))?;
    match resp.status().as_u16() {
        200 | 201 | 204 => Ok(()),
        s => Err(failed(format!("HTTP {s}"))),
    }
}

/// An upload body that counts what it gave and stops when the restore is stopped.
struct Counted<'a, R> {
    inner: R,
    sent: &'a AtomicU64,
    cancel: &'a Cancel,
}

impl<R: std::io::Read> std::io::Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.check().is_err() {
            return Err(std::io::Error::other("the restore was stopped"));
        }
        let n = self.inner.read(buf)?;
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// What a failed import takes back when dropped: the lease, then the VM it created.
struct Abort<'a> {
    session: &'a Session,
    lease: Option<MoRef>,
    vm: Option<MoRef>,
}

impl Drop for Abort<'_> {
    fn drop(&mut self) {
        let soap = &self.session.soap;
        if let Some(lease) = self.lease.take() {
            if let Err(e) = soap.call("HttpNfcLeaseAbort", &lease, "", false) {
                log::error!("could not abort import lease {lease}: {e}");
            }
        }
        let Some(vm) = self.vm.take() else { return };
        // ESX removes the VM of an aborted import itself; a server that did not is asked.
        let props = self.session.props();
        if !matches!(props.get(&vm, "name", string), Ok(Some(_))) {
            return;
        }
        let destroyed = soap
            .call("Destroy_Task", &vm, "", false)
            .and_then(|a| {
                let doc = a.doc()?;
                returnvals(&doc)
                    .into_iter()
                    .find_map(MoRef::from_node)
                    .ok_or_else(|| soap.error("Destroy_Task: no task returned"))
            })
            .and_then(|task| props.wait_task(&task, &format!("destroying {vm}")));
        match destroyed {
            Ok(_) => log::info!("destroyed VM {vm} of the failed import"),
            Err(e) => log::error!("could not destroy VM {vm} after the failed import: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_star_host_is_the_server_talked_to() {
        let sdk = "http://127.0.0.1:8989/sdk";
        assert_eq!(
            device_url(sdk, "https://*/nfc/52a/disk-0.vmdk"),
            "http://127.0.0.1:8989/nfc/52a/disk-0.vmdk"
        );
        assert_eq!(
            device_url(sdk, "https://esx01.example/nfc/52a/disk-0.vmdk"),
            "https://esx01.example/nfc/52a/disk-0.vmdk"
        );
    }
}
