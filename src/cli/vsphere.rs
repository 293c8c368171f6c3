//! `--vsphere` on the command line: server and trust from the flags, credentials by the
//! library's rule, the backup snapshots taken and removed, and what happened reported.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use crate::restore::{restore_seekable_to, restore_stream_to, Dest, RestoreOptions};
use crate::vsphere::restore::{DatastoreTarget, StagedVm};

use crate::vsphere::{
    self, Credentials, PreparedVm, Quiesce, RetryPolicy, ServerOptions, Session, SnapshotOptions,
    Thumbprint, TlsTrust,
};
use anyhow::Context;

use super::args::{
    FormatArg, QuiesceArg, RestoreArgs, UploadArg, VsphereBackupArgs, VsphereServerArgs,
};

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
    /// Per disk, the bytes in use as the server reported them (`null`: not reported, and a
    /// flat base was read whole).
    pub in_use_bytes: Vec<Option<u64>>,
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
    let now = crate::clock::rfc3339(SystemTime::now());
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

/// The changed-areas list of an incremental, asked of the server for every disk of
/// `prepared` since the state `base` recorded; each disk left out is logged with the reason.
pub fn changed_since(
    session: &Session,
    prepared: &[PreparedVm<'_>],
    base: &crate::base::BaseImage,
) -> crate::job::changes::ChangedAreas {
    let (list, warnings) = vsphere::changed_since(session, prepared, base);
    for w in warnings {
        log::warn!("{w}; not from CBT");
    }
    for d in &list.disks {
        let bytes: u64 = d.areas.iter().map(|a| a.length).sum();
        log::info!(
            "VM {:?} disk {}: {} changed since change id {:?} ({} areas)",
            d.vm.as_deref().unwrap_or_default(),
            d.disk,
            super::units::human(bytes),
            d.since,
            d.areas.len()
        );
    }
    list
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
            in_use_bytes: p.in_use_bytes.clone(),
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

/// `restore --vsphere URL --datastore DS`: restore one VM locally in the ESX layout, upload
/// it and register it. Exit 1 when --salvage uploaded a VM with lost ranges.
pub fn restore(args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let a = &args.datastore;
    let datastore = a
        .datastore
        .clone()
        .context("--vsphere needs --datastore DS to restore onto")?;
    if !matches!(args.format, FormatArg::Raw | FormatArg::Vmdk) {
        anyhow::bail!(
            "--vsphere restores in the ESX layout (descriptor + flat); --format cannot change it"
        );
    }
    // Log in first: a wrong password should not wait for a restore to finish.
    let (session, server) = connect(&a.server)?;
    let cancel = super::signals::on_interrupt()?;
    let staging = Staging::create(a.staging.as_deref())?;
    let (hook, meter, last) = super::progress::restore_meter();
    let nfc = a.upload == UploadArg::Nfc;
    let opts = RestoreOptions {
        format: if nfc {
            crate::restore::Format::Ova
        } else {
            crate::restore::Format::Vmdk
        },
        vm: args.vm.clone(),
        disk: args.disk.clone(),
        force: false,
        salvage: args.salvage,
        progress: Some(hook),
        cancel: cancel.clone(),
        bases: super::incremental::bases(&args.base, args.base_image.as_deref())?,
        in_place: None,
    };
    let dest = Dest::Dir(staging.0.clone());
    let report = match super::archive_input::archive(&args.archive)? {
        super::archive_input::Archive::Stream(mut r) => restore_stream_to(&mut r, dest, &opts),
        super::archive_input::Archive::Seekable(mut f) => {
            let r = restore_seekable_to(&mut *f.input, dest, &opts);
            f.log_fetched();
            r
        }
    };
    super::progress::finish_restore(&meter, &last);
    let report =
        report.map_err(|e| super::archive_input::about_archive(e, &args.archive, !args.salvage))?;
    let vm = staged_vm(&staging.0)?;
    let target = DatastoreTarget {
        datastore,
        name: a.name.clone().unwrap_or_else(|| vm.clone()),
        folder: a.folder.clone(),
        pool: a.pool.clone(),
        force: args.force,
    };
    let dir = staging.0.join(&vm);
    let restored = if nfc {
        let ova = staged_ova(&dir)?;
        vsphere::restore::import_vm(&session, &target, &ova, &cancel)?
    } else {
        let vmx = vsphere::restore::find_vmx(&dir).with_context(|| {
            format!(
                "VM {vm:?} has no .vmx in the archive (a backup of loose disks): restore it \
                 with --to and create the VM around the disks, or give --upload nfc"
            )
        })?;
        let staged = StagedVm { dir, vmx };
        vsphere::restore::restore_vm(&session, &server, &target, &staged, &cancel)?
    };
    session.logout();
    if args.json {
        super::json::print(
            "restore",
            &serde_json::json!({ "vsphere": restored, "disks": report.disks, "lost": report.lost }),
        )?;
    } else {
        log::info!(
            "registered VM {:?} as {} from {} ({} uploaded)",
            restored.name,
            restored.moref,
            restored.vmx,
            super::units::human(restored.bytes_uploaded)
        );
    }
    Ok(if report.is_complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The one VM directory a restore into `staging` made.
fn staged_vm(staging: &Path) -> anyhow::Result<String> {
    let mut vms: Vec<String> = std::fs::read_dir(staging)
        .with_context(|| format!("{}: cannot list", staging.display()))?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    vms.sort();
    match vms.as_slice() {
        [one] => Ok(one.clone()),
        [] => anyhow::bail!("the archive restored no VM"),
        many => anyhow::bail!(
            "the archive holds {} VMs ({}): pick one with --vm",
            many.len(),
            many.join(", ")
        ),
    }
}

/// The OVA a restore in OVA format staged in `dir`.
fn staged_ova(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "ova"))
        .with_context(|| format!("{}: the restore staged no OVA", dir.display()))
}

/// A private directory for the local restore, removed with everything in it on drop.
struct Staging(PathBuf);

impl Staging {
    fn create(parent: Option<&Path>) -> anyhow::Result<Staging> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let dir = parent.join(format!("vdar-restore-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("{}: cannot create the staging directory", dir.display()))?;
        Ok(Staging(dir))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            log::warn!(
                "{}: could not remove the staging directory: {e}",
                self.0.display()
            );
        }
    }
}
