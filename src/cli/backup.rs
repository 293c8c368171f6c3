//! `vdar backup`: open every chain, then stream one archive to a file or stdout.
//!
//! The output (a `.partial` file renamed once complete, a device, a FIFO or a tape written in
//! place, stdout) is the library's write path, `crate::output`.

use std::cell::OnceCell;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use crate::chain::ChainOptions;
use crate::input::LocalOpener;
use crate::job;
use crate::output::{OutputSpec, StreamOut};
use crate::pipeline::{backup, BackupOptions, Progress, VmInput};
use crate::san::probes::guarded_copy;
use anyhow::Context;

use super::args::{parse_size, BackupArgs};
use super::progress::{backup_detail, Meter};
use super::stdout::output_error;
use super::units::human;

/// What `--json` prints: the library's summary plus where the archive went and how long it
/// took, for schedulers and catalogs.
#[derive(serde::Serialize)]
struct BackupReport<'a> {
    archive: String,
    seconds: f64,
    vdar_version: &'static str,
    #[serde(flatten)]
    summary: &'a crate::pipeline::BackupSummary,
    /// Disks left out by --disk/--exclude-disk (absent when none).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    excluded: &'a [job::Excluded],
    /// What --vsphere did to each VM (absent without it).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    vsphere: &'a [super::vsphere::VmOutcome],
}

pub fn run(args: &BackupArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut opts = BackupOptions {
        level: args.level,
        threads: args.threads,
        output_name: args.output.display().to_string(),
        cancel: super::signals::on_interrupt()?,
        ..Default::default()
    };
    if let Some(s) = &args.chunk_size {
        opts.chunk_size = parse_size(s).map_err(anyhow::Error::msg)?;
    }
    if let Some(s) = &args.block_size {
        opts.block_size = u32::try_from(parse_size(s).map_err(anyhow::Error::msg)?)
            .context("--block-size must be below 4 GiB")?;
    }
    opts.read = super::san::read_options(&args.san);
    if let Some(n) = crate::blockio::fallback_notice(&opts.read) {
        log::info!("notice: {n}");
    }
    log_engine(&opts.read, args.san.read_path());
    let san = super::san::opener(&args.san)?;
    let vsphere_wanted = args.vsphere.server.vsphere.is_some();
    check_transport(args, san.is_some())?;
    let local = LocalOpener::new(args.san.read_path());
    let to_stdout = args.output == Path::new("-");
    let spec = OutputSpec {
        path: &args.output,
        force: args.force,
        what: "an archive",
    };
    let name = spec.name();
    // Set before the snapshots that borrow it, and declared out here so it outlives them.
    let session = OnceCell::new();
    let ((summary, out, excluded, snapshots), notices) =
        guarded_copy(san.as_ref(), &local, |opener| {
            let chain_opts = ChainOptions {
                opener,
                ignore_cid: args.chain.ignore_cid,
            };
            let mut snapshots = Vec::new();
            let mut asked = None;
            let plan = if vsphere_wanted {
                let (s, server) = super::vsphere::connect(&args.vsphere.server)?;
                let session = session.get_or_init(|| s);
                asked = Some(session);
                snapshots = super::vsphere::prepare(session, &server, &args.vsphere)?;
                let chain = san.as_ref().map(|o| o as &dyn crate::input::SourceOpener);
                crate::vsphere::plan::open(
                    &snapshots,
                    &select_options(args),
                    chain,
                    args.chain.ignore_cid,
                )?
            } else {
                let selection = job::select(&args.inputs, &select_options(args))?;
                job::open(selection, &chain_opts)?
            };
            log_plan(&plan);
            let job::BackupPlan {
                mut vms,
                capacity: total,
                excluded,
                ..
            } = plan;
            let chunk_size_given = args.chunk_size.is_some();
            let server = |base: &crate::base::BaseImage| {
                asked.map(|s| super::vsphere::changed_since(s, &snapshots, base))
            };
            super::incremental::plan(
                &args.incremental,
                &mut vms,
                &mut opts,
                chunk_size_given,
                &server,
            )?;
            let stream = super::volumes::stream_options(
                &args.volumes,
                &args.output,
                opts.block_size as usize,
                &opts.cancel,
            )?;
            let mut out = StreamOut::open(&spec, stream)?;
            // The archive writer names the bytes it handed on; the buffers below may hold
            // more: name what really went out.
            let summary =
                run_backup(vms, &opts, out.writer(), total).map_err(|e| output_error(&name, e))?;
            // A stream cannot be taken back: it is flushed, and a failed probe still fails
            // the backup (non-zero exit). A file gets its name only after the probes passed.
            out.writer()
                .flush()
                .map_err(|e| output_error(&name, e.into()))?;
            anyhow::Ok((summary, out, excluded, snapshots))
        })?;
    super::san::log_notices(notices);
    out.commit().map_err(|e| output_error(&name, e.into()))?;
    super::incremental::write_catalog(args.incremental.catalog.as_deref(), &summary)?;
    let vsphere =
        super::vsphere::finish(snapshots).with_context(|| format!("{name} is complete, but"))?;

    let json = super::json::to_string(
        "backup",
        &BackupReport {
            archive: args.output.display().to_string(),
            seconds: started.elapsed().as_secs_f64(),
            vdar_version: env!("CARGO_PKG_VERSION"),
            summary: &summary,
            excluded: &excluded,
            vsphere: &vsphere,
        },
    )?;
    if args.json && to_stdout {
        eprintln!("{json}");
    } else if args.json {
        super::stdout::line(format_args!("{json}"))?;
    } else {
        let t = &summary.totals;
        log::info!(
            "backup complete: {} of disks, {} read, {} written; dedup {:.2}x, compression {:.2}x",
            human(t.disk_bytes),
            human(t.bytes_read),
            human(t.bytes_written),
            summary.dedup_ratio,
            summary.compression_ratio
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn run_backup(
    vms: Vec<VmInput>,
    opts: &BackupOptions,
    out: &mut dyn Write,
    total: u64,
) -> anyhow::Result<crate::pipeline::BackupSummary> {
    let meter = Meter::new();
    let last = std::sync::Mutex::new(Progress::default());
    let report = |p: &Progress| {
        meter.update(&p.current, p.disk_bytes, total, |secs| {
            backup_detail(p, secs)
        });
        p.clone_into(&mut last.lock().unwrap_or_else(|e| e.into_inner()));
    };
    let summary = backup(vms, opts, out, Some(&report));
    let p = last.into_inner().unwrap_or_else(|e| e.into_inner());
    meter.finish(|secs| backup_detail(&p, secs));
    Ok(summary?)
}

/// `--transport san` reads through the block map; a block map without it is a mistake.
fn check_transport(args: &BackupArgs, blockmap: bool) -> anyhow::Result<()> {
    use super::args::TransportArg;
    if args.vsphere.server.vsphere.is_none() {
        return Ok(());
    }
    match (args.vsphere.transport, blockmap) {
        (TransportArg::San, false) => {
            anyhow::bail!("--transport san reads the LUNs: give --blockmap MAP.json and --lun")
        }
        (TransportArg::Network, true) => anyhow::bail!(
            "--blockmap with --vsphere reads the disks from the LUNs: add --transport san"
        ),
        _ => Ok(()),
    }
}

/// `-v`: which engine reads the disks, and how.
fn log_engine(read: &crate::blockio::ReadOptions, path: crate::input::source::ReadPath) {
    if log::log_enabled!(log::Level::Debug) {
        let engine = crate::blockio::engine(read).map(|(e, _)| e.name());
        let path = match path {
            crate::input::source::ReadPath::Direct => "O_DIRECT where aligned",
            crate::input::source::ReadPath::Buffered => "buffered",
        };
        log::debug!(
            "reading with {}, queue depth {}, {path}",
            engine.unwrap_or("no engine"),
            read.queue_depth,
        );
    }
}

/// The library's selection options from the flags.
fn select_options(args: &BackupArgs) -> job::SelectOptions {
    job::SelectOptions {
        snapshot: args.chain.snapshot.clone(),
        include: args.disk.clone(),
        exclude: args.exclude_disk.clone(),
    }
}

/// Warnings and exclusions, each once, before the backup starts.
fn log_plan(plan: &job::BackupPlan) {
    for w in &plan.warnings {
        log::warn!("{w}");
    }
    for x in &plan.excluded {
        log::warn!(
            "VM {:?}: disk {} ({}) excluded, not backed up",
            x.vm,
            x.disk,
            x.path.display()
        );
    }
}
