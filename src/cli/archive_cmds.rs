//! The archive-reading commands, `restore`, `verify` and `list`, shared by `vdar` and the
//! small disaster-recovery binary `vdar-restore`.
//!
//! Exit codes: 0 success; 1 damage found (verify), an incomplete archive (list) or data lost
//! (restore --salvage); 2 error.
//!
//! A regular file is read through its index; anything else in one pass, a tape drive (a
//! character device) in whole 16 MiB requests (`records`).

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::output::{FailedWrite, Located};
use crate::restore::{restore_seekable_to, restore_stream_to, Dest, RestoreOptions};
use anyhow::Context;

use super::archive_input::{about_archive, archive_with, Archive};
use super::args::{ListArgs, RestoreArgs, VerifyArgs};
use super::stdout::output_error;
use super::units::{human, utc};

/// Creates `dir` and its missing parents (`--to` may name a path that does not exist yet).
/// Returns the directories it created, innermost first.
fn create_dirs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && std::fs::symlink_metadata(d).is_err())
        .map(Path::to_path_buf)
        .collect();
    if std::fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
        anyhow::bail!(
            "{}: exists and is not a directory (--to names the directory to restore into)",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    Ok(missing)
}

/// Removes the directories a failed restore created, innermost first, those left empty only:
/// a failed restore leaves nothing behind, and never removes what was there before.
fn remove_empty_dirs(dirs: &[PathBuf]) {
    for d in dirs {
        // Best effort: the restore's own error is the one to report.
        let _ = std::fs::remove_dir(d);
    }
}

/// `restore --to DIR|-` (`super::restore` sends `--blockmap` to the SAN write-back).
pub fn restore(args: &RestoreArgs, to: &Path) -> anyhow::Result<ExitCode> {
    // In place, DIR holds the base's images: it is the base image too.
    let image_dir = if args.in_place {
        Some(to)
    } else {
        args.base_image.as_deref()
    };
    let (hook, meter, last) = super::progress::restore_meter();
    let opts = RestoreOptions {
        format: args.format.into(),
        vm: args.vm.clone(),
        disk: args.disk.clone(),
        force: args.force,
        salvage: args.salvage,
        progress: Some(hook),
        cancel: super::signals::on_interrupt()?,
        bases: super::incremental::bases(&args.base, image_dir)?,
        in_place: args
            .in_place
            .then(|| super::incremental::in_place(&args.base, to))
            .transpose()?,
    };
    let input = archive_with(
        &args.archive,
        args.stream,
        args.next_volume.as_deref(),
        Some(&opts.cancel),
    )?;
    let mut created = Vec::new();
    if to == Path::new("-") {
        crate::output::refuse_terminal("a restored image")?;
    }
    let dest = if to == Path::new("-") {
        // Stdout is line-buffered; an image is not lines.
        let w = Located::new(io::stdout());
        Dest::Writer(Box::new(io::BufWriter::with_capacity(1 << 20, w)))
    } else {
        created = create_dirs(to)?;
        Dest::Dir(to.to_path_buf())
    };
    let report = match input {
        Archive::Stream(mut r) => restore_stream_to(&mut r, dest, &opts),
        Archive::Seekable(mut f) => {
            let r = restore_seekable_to(&mut *f.input, dest, &opts);
            f.log_fetched();
            r
        }
    };
    if report.is_err() {
        // The library removed what it created inside `to`; these are ours.
        remove_empty_dirs(&created);
    }
    super::progress::finish_restore(&meter, &last);
    let report = report.map_err(|e| {
        // A write to stdout that failed says where; anything else is about the archive.
        let writing =
            matches!(&e, crate::Error::Io { cause, .. } if FailedWrite::find(cause).is_some());
        if writing {
            output_error("stdout", e.into())
        } else {
            about_archive(e, &args.archive, !args.salvage)
        }
    })?;
    if args.json && to == Path::new("-") {
        // Stdout carries the image.
        eprintln!("{}", super::json::to_string("restore", &report)?);
    } else if args.json {
        super::json::print("restore", &report)?;
    } else {
        for d in &report.disks {
            let to = d
                .path
                .as_ref()
                .map(|p| format!(" to {}", p.display()))
                .unwrap_or_default();
            let lost = if d.lost_bytes > 0 {
                format!(", {} LOST", human(d.lost_bytes))
            } else {
                String::new()
            };
            log::info!(
                "restored vm {:?} disk {:?} ({}: {} from records, {} zero{lost}){to}",
                d.vm,
                d.disk,
                human(d.capacity),
                human(d.restored_bytes),
                human(d.zero_bytes),
            );
        }
        for l in &report.lost {
            eprintln!("vdar: LOST {l}: {}; reads as zeros in the image", l.why);
        }
        for f in &report.missing_files {
            eprintln!("vdar: LOST file {f}: not restored");
        }
    }
    Ok(if report.is_complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    // Verify reads every record in order whatever the input.
    let bases = super::incremental::bases(&args.base, args.base_image.as_deref())?;
    let report = super::verify_progress::verify(
        archive_with(
            &args.archive,
            args.stream,
            args.next_volume.as_deref(),
            None,
        )?,
        bases,
    )
    .map_err(|e| about_archive(e, &args.archive, false))?;
    if args.json {
        super::json::print("verify", &report)?;
    } else if report.ok {
        super::stdout::line(format_args!(
            "{}: ok, {} records verified",
            args.archive.display(),
            report.records
        ))?;
    } else {
        super::stdout::line(format_args!("{}: DAMAGED", args.archive.display()))?;
        for d in &report.damage {
            super::stdout::line(format_args!("  damage: {d}"))?;
        }
        for l in &report.lost {
            super::stdout::line(format_args!("  lost: {l}: {}", l.why))?;
        }
        for f in &report.missing_files {
            super::stdout::line(format_args!("  missing file: {f}"))?;
        }
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn list(args: &ListArgs) -> anyhow::Result<ExitCode> {
    if super::retention::is_location(&args.archive) {
        return super::retention::list(&args.archive, args.json);
    }
    let l = match archive_with(
        &args.archive,
        args.stream,
        args.next_volume.as_deref(),
        None,
    )? {
        Archive::Stream(mut r) => crate::list::list_stream(&mut r),
        Archive::Seekable(mut f) => {
            let l = crate::list::list_file(&mut *f.input);
            f.log_fetched();
            l
        }
    }
    .map_err(|e| about_archive(e, &args.archive, false))?;
    // An incomplete archive is listed as far as it goes, and is not a success.
    let code = if l.complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if args.json {
        super::json::print("list", &l)?;
        return Ok(code);
    }
    super::stdout::line(format_args!(
        "archive: vdar {}, created {}, chunk {}, zstd level {}{}",
        l.vdar_version,
        utc(l.created),
        human(l.chunk_size),
        l.level,
        if l.complete { "" } else { " (INCOMPLETE)" }
    ))?;
    if let Some(b) = &l.base {
        super::stdout::line(format_args!(
            "incremental of {} (created {}), a chain of {} archives",
            b.id,
            utc(b.created),
            b.lineage.len() + 2
        ))?;
    }
    for vm in &l.vms {
        super::stdout::line(format_args!("vm {}", vm.name))?;
        if let Some(o) = &vm.origin {
            super::stdout::line(format_args!(
                "  from {} ({}), VM {:?} {}, snapshot {:?} at {}, {}",
                o.server,
                o.server_type,
                o.vm,
                o.moref,
                o.snapshot,
                o.snapshot_time,
                if o.quiesced {
                    "quiesced"
                } else {
                    "crash-consistent"
                }
            ))?;
        }
        for f in &vm.files {
            // The full BLAKE3 is in --json; a prefix is enough to compare by eye.
            super::stdout::line(format_args!(
                "  file {}: {}, blake3 {}",
                f.name,
                human(f.size),
                f.blake3.get(..16).unwrap_or(&f.blake3)
            ))?;
        }
        for (k, d) in vm.disks.iter().enumerate() {
            let chain = match (d.meta.chain.first(), d.meta.chain.len()) {
                (None, _) => String::new(),
                (Some(top), 1) => format!(" ({})", top.file),
                (Some(top), n) => format!(" ({}, {n} layers)", top.file),
            };
            let from_base = if l.base.is_some() {
                format!(
                    ", {} from the base ({} chunks), {} chunks patched over it ({} stored)",
                    human(d.base_bytes),
                    d.base_refs,
                    d.base_patches,
                    human(d.patch_stored_bytes)
                )
            } else {
                String::new()
            };
            super::stdout::line(format_args!(
                "  disk #{k} {}{chain}: {} capacity, {} chunks ({} deduplicated), {} stored from {}{from_base}",
                d.name,
                human(d.capacity),
                d.chunks,
                d.refs,
                human(d.stored_bytes),
                human(d.stored_raw_bytes)
            ))?;
        }
    }
    for lost in &l.lost {
        super::stdout::line(format_args!("LOST {lost}: {}", lost.why))?;
    }
    super::stdout::line(format_args!(
        "total: {} of disks, archive {}; dedup {:.2}x, compression {:.2}x",
        human(l.disk_bytes),
        human(l.archive_bytes),
        l.dedup_ratio,
        l.compression_ratio
    ))?;
    Ok(code)
}
