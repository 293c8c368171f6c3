//! `vdar backup`: open every chain, then stream one archive to a file or stdout.
//!
//! The output (a `.partial` file renamed once complete, a device, a FIFO or a tape written in
//! place, stdout) is the library's write path, `crate::output`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use crate::chain::{Chain, ChainOptions};
use crate::input::{LocalOpener, SourceOpener};
use crate::output::{OutputSpec, StreamOut};
use crate::pipeline::{
    backup, BackupOptions, DiskInput, DiskMeta, LayerInfo, Progress, VmFile, VmInput,
};
use anyhow::Context;

use super::args::{parse_size, BackupArgs};
use super::progress::{backup_detail, Meter};
use super::stdout::output_error;
use super::units::human;

/// Largest VM configuration file stored (.vmx, .nvram, ...): they are kilobytes; anything
/// bigger is not a config file.
const MAX_CONFIG_FILE_BYTES: u64 = 64 << 20;

/// What `--json` prints: the library's summary plus where the archive went and how long it
/// took, for schedulers and catalogs.
#[derive(serde::Serialize)]
struct BackupReport<'a> {
    archive: String,
    seconds: f64,
    vdar_version: &'static str,
    #[serde(flatten)]
    summary: &'a crate::pipeline::BackupSummary,
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
    let local = LocalOpener::new(args.san.read_path());
    let mut chain_opts = ChainOptions {
        opener: &local,
        ignore_cid: args.chain.ignore_cid,
    };
    if let Some(o) = &san {
        // Probes before the copy: a wrong map or a moved file stops us before any output.
        o.check_probes("before copy")?;
        chain_opts.opener = o;
    }
    let (vms, total) = open_vms(&args.inputs, args.chain.snapshot.as_deref(), &chain_opts)?;
    let finish_san = || -> anyhow::Result<()> {
        if let Some(o) = &san {
            // And after, before the archive is declared complete: the files must not have
            // moved while we read them.
            o.check_probes("after copy")?;
            super::san::print_notices(o.luns());
        }
        Ok(())
    };

    let to_stdout = args.output == Path::new("-");
    let spec = OutputSpec {
        path: &args.output,
        force: args.force,
        what: "an archive",
    };
    let name = spec.name();
    let mut out = StreamOut::open(&spec, opts.block_size as usize)?;
    // The archive writer names the bytes it handed on; the buffers below may hold more: name
    // what really went out.
    let summary =
        run_backup(vms, &opts, out.writer(), total).map_err(|e| output_error(&name, e))?;
    // A stream cannot be taken back: it is flushed, and a failed probe still fails the backup
    // (non-zero exit). A file gets its name only after the probes passed.
    out.writer()
        .flush()
        .map_err(|e| output_error(&name, e.into()))?;
    finish_san()?;
    out.commit().map_err(|e| output_error(&name, e.into()))?;

    let json = super::json::to_string(
        "backup",
        &BackupReport {
            archive: args.output.display().to_string(),
            seconds: started.elapsed().as_secs_f64(),
            vdar_version: env!("CARGO_PKG_VERSION"),
            summary: &summary,
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

/// Opens all inputs: VMs with their config files and disk descriptors, and every chain.
/// Returns the VMs and the total virtual size (for the ETA).
fn open_vms(
    inputs: &[PathBuf],
    snapshot: Option<&str>,
    opts: &ChainOptions<'_>,
) -> anyhow::Result<(Vec<VmInput>, u64)> {
    let mut vms = Vec::new();
    let mut total = 0;
    for sel in super::select_inputs(inputs, snapshot)? {
        let mut files: Vec<VmFile> = Vec::new();
        // Config files (.vmx, .nvram, ...) are local copies; descriptors come through the
        // opener, so in SAN mode they are read from the LUNs like the disks.
        let add = |p: &Path, files: &mut Vec<VmFile>, opener: Option<&dyn SourceOpener>| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .context("file without a name")?;
            if files.iter().any(|f| f.name == name) {
                return Ok(());
            }
            let bytes = read_small_file(p, opener)?;
            files.push(VmFile { name, bytes });
            anyhow::Ok(())
        };
        for p in &sel.config_files {
            add(p, &mut files, None)?;
        }
        let mut disks = Vec::new();
        for d in &sel.disks {
            let chain = Chain::open(&d.top, opts)?;
            for w in &chain.warnings {
                log::warn!("{w}");
            }
            // Keep every text descriptor of the chain: restore to ESX needs the ddb values, and
            // an administrator wants the originals. Monolithic sparse files are not small files.
            for l in &chain.layers {
                let is_text = l
                    .extents
                    .iter()
                    .all(|e| e.path.as_deref() != Some(l.path.as_path()));
                if is_text {
                    add(&l.path, &mut files, Some(opts.opener))?;
                }
            }
            let meta = disk_meta(&chain);
            total += chain.capacity();
            disks.push(DiskInput {
                name: d.name.clone(),
                meta,
                disk: Box::new(chain.collapse()),
            });
        }
        vms.push(VmInput {
            name: sel.name.clone(),
            files,
            disks,
        });
    }
    Ok((vms, total))
}

/// Reads a configuration file or descriptor whole, refusing anything too large to be one.
fn read_small_file(p: &Path, opener: Option<&dyn SourceOpener>) -> anyhow::Result<Vec<u8>> {
    let too_large = |len: u64| {
        anyhow::anyhow!(
            "{}: {len} bytes is too large for a VM configuration file",
            p.display()
        )
    };
    match opener {
        None => {
            let len = fs::metadata(p)
                .with_context(|| p.display().to_string())?
                .len();
            if len > MAX_CONFIG_FILE_BYTES {
                return Err(too_large(len));
            }
            fs::read(p).with_context(|| p.display().to_string())
        }
        Some(o) => {
            let src = o.open(p)?;
            if src.len() > MAX_CONFIG_FILE_BYTES {
                return Err(too_large(src.len()));
            }
            let mut bytes = vec![0u8; src.len() as usize];
            src.read_exact_at(&mut bytes, 0)?;
            Ok(bytes)
        }
    }
}

fn disk_meta(chain: &Chain) -> DiskMeta {
    let top = &chain.layers[0];
    DiskMeta {
        capacity: chain.capacity(),
        descriptor: top.descriptor.text.clone(),
        create_type: top.descriptor.create_type.clone(),
        // The base carries the disk's identity (uuid, geometry, adapter); deltas repeat some of
        // it. Keep the top layer's list, falling back to the base's keys it lacks.
        ddb: merged_ddb(chain),
        chain: chain
            .layers
            .iter()
            .map(|l| LayerInfo {
                file: l
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                format: l.format(),
                cid: l.descriptor.cid,
                parent_cid: l.descriptor.parent_cid,
            })
            .collect(),
    }
}

fn merged_ddb(chain: &Chain) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = chain.layers[0].descriptor.ddb.clone();
    for l in &chain.layers[1..] {
        for (k, v) in &l.descriptor.ddb {
            if !out.iter().any(|(o, _)| o.eq_ignore_ascii_case(k)) {
                out.push((k.clone(), v.clone()));
            }
        }
    }
    out
}
