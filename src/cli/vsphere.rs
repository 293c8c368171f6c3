//! `--vsphere` on the command line: server and trust from the flags, credentials by the
//! library's rule, the backup snapshots taken and removed, and what happened reported.

use std::time::{Instant, SystemTime};

use crate::vsphere::{
    self, Credentials, PreparedVm, Quiesce, RetryPolicy, ServerOptions, Session, SnapshotOptions,
    Thumbprint, TlsTrust,
};
use anyhow::Context;

use super::args::{QuiesceArg, VsphereBackupArgs, VsphereServerArgs};

/// Connects and logs in as the flags say.
pub fn connect(a: &VsphereServerArgs) -> anyhow::Result<(Session, ServerOptions)> {
    let url = a.vsphere.clone().context("--vsphere URL is needed")?;
    let trust =
        match (&a.thumbprint, a.insecure) {
            (Some(t), _) => TlsTrust::Pinned(Thumbprint::parse(t).with_context(|| {
                format!("--thumbprint {t:?}: want 32 hex bytes, e.g. AA:BB:...")
            })?),
            (None, true) => {
                log::warn!(
                    "warning: --insecure: the certificate of {url} is not verified; anyone on the \
                 path can read the credentials and the disks"
                );
                TlsTrust::Insecure
            }
            (None, false) => TlsTrust::System,
        };
    let server = ServerOptions {
        url,
        trust,
        connections: usize::from(a.connections),
        retry: RetryPolicy::default(),
    };
    let creds = Credentials::find(a.credentials.as_deref())?;
    let session = vsphere::connect(&server, &creds)?;
    log::debug!(
        "logged in to {} ({})",
        session.soap.url(),
        session.content.api_type
    );
    Ok((session, server))
}

/// What a vSphere backup did to each VM, for `--json` and the log.
#[derive(serde::Serialize)]
pub struct VmOutcome {
    pub vm: String,
    pub moref: String,
    pub snapshot: String,
    pub quiesced: bool,
    /// The crash-consistent fallback's reason, when the quiesced snapshot failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiesce_failure: Option<String>,
    /// Stale vdar snapshots removed first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed_stale: Vec<String>,
    /// Bytes and ranged requests fetched over the datastore file access.
    pub fetched_bytes: u64,
    pub fetch_requests: u64,
}

/// Takes the backup snapshot of every VM the flags name; on an error the snapshots taken so
/// far are removed as the guards drop.
pub fn prepare<'s>(
    session: &'s Session,
    server: &ServerOptions,
    a: &VsphereBackupArgs,
) -> anyhow::Result<Vec<PreparedVm<'s>>> {
    if a.vms.is_empty() {
        anyhow::bail!("--vsphere needs --vm NAME (or an inventory path) for each VM to back up");
    }
    let opts = SnapshotOptions {
        quiesce: match a.quiesce {
            QuiesceArg::Auto => Quiesce::Auto,
            QuiesceArg::Always => Quiesce::Always,
            QuiesceArg::Never => Quiesce::Never,
        },
        allow_unquiesced: a.allow_unquiesced,
        remove_stale: a.remove_stale_snapshots,
    };
    let now = vsphere::snapshot::utc_time(SystemTime::now());
    let mut out = Vec::new();
    for want in &a.vms {
        let started = Instant::now();
        let p = vsphere::prepare(session, server, want, &opts, &now)?;
        for s in &p.report.removed_stale {
            log::warn!("VM {:?}: removed stale snapshot {s:?}", p.origin.vm);
        }
        log::debug!(
            "VM {:?} ({}): snapshot {:?} taken in {:.2}s",
            p.origin.vm,
            p.origin.moref,
            p.origin.snapshot,
            started.elapsed().as_secs_f64()
        );
        out.push(p);
    }
    Ok(out)
}

/// Removes the snapshots (every one is tried) and reports them; an error names each that is
/// still there.
pub fn finish(prepared: Vec<PreparedVm<'_>>) -> anyhow::Result<Vec<VmOutcome>> {
    let mut outcomes = Vec::new();
    let mut failed = Vec::new();
    for p in prepared {
        let (fetched_bytes, fetch_requests) = p.files.fetched();
        outcomes.push(VmOutcome {
            vm: p.origin.vm.clone(),
            moref: p.origin.moref.clone(),
            snapshot: p.origin.snapshot.clone(),
            quiesced: p.origin.quiesced,
            quiesce_failure: p.report.quiesce_failure.clone(),
            removed_stale: p.report.removed_stale.clone(),
            fetched_bytes,
            fetch_requests,
        });
        let started = Instant::now();
        match p.snapshot.remove() {
            Ok(()) => log::debug!(
                "VM {:?}: snapshot removed in {:.2}s",
                p.origin.vm,
                started.elapsed().as_secs_f64()
            ),
            Err(e) => failed.push(e.to_string()),
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("{}", failed.join("; "));
    }
    Ok(outcomes)
}
