//! The archive-reading commands, `restore`, `verify` and `list`, shared by `vdar` and the
//! small disaster-recovery binary `vdar-restore`.
//!
//! Exit codes: 0 success; 1 damage found (verify) or data lost (restore --salvage); 2 error.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use vdar::restore::{restore_seekable_to, restore_stream_to, Dest, RestoreOptions};

use super::args::{ListArgs, RestoreArgs, VerifyArgs};
use super::units::human;

pub(super) fn open(path: &Path) -> anyhow::Result<File> {
    File::open(path).with_context(|| format!("{}: cannot open", path.display()))
}

pub(super) fn stdin() -> BufReader<io::StdinLock<'static>> {
    BufReader::with_capacity(1 << 20, io::stdin().lock())
}

/// An archive named on the command line.
pub(super) enum Archive {
    /// `-`, or a file that cannot seek to its end (a tape drive, a FIFO, a block device whose
    /// end is not the archive's): read in one pass.
    Stream(Box<dyn Read>),
    /// A regular file: the index at its end gives random access.
    Seekable(BufReader<File>),
}

pub(super) fn archive(path: &Path) -> anyhow::Result<Archive> {
    if path == Path::new("-") {
        return Ok(Archive::Stream(Box::new(stdin())));
    }
    let f = open(path)?;
    let regular = f
        .metadata()
        .with_context(|| format!("{}: cannot stat", path.display()))?
        .is_file();
    let r = BufReader::with_capacity(1 << 20, f);
    Ok(if regular {
        Archive::Seekable(r)
    } else {
        Archive::Stream(Box::new(r))
    })
}

pub fn restore(args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let Some(to) = &args.to else {
        return super::writeback::run(args);
    };
    let opts = RestoreOptions {
        format: args.format.into(),
        vm: args.vm.clone(),
        disk: args.disk.clone(),
        force: args.force,
        salvage: args.salvage,
    };
    let dest = if to == Path::new("-") {
        // Stdout is line-buffered; an image is not lines.
        Dest::Writer(Box::new(io::BufWriter::with_capacity(
            1 << 20,
            io::stdout(),
        )))
    } else {
        std::fs::create_dir_all(to).with_context(|| format!("{}: cannot create", to.display()))?;
        Dest::Dir(to.clone())
    };
    let report = match archive(&args.archive)? {
        Archive::Stream(mut r) => restore_stream_to(&mut r, dest, &opts)?,
        Archive::Seekable(mut f) => restore_seekable_to(&mut f, dest, &opts)?,
    };
    if args.json && to == Path::new("-") {
        // Stdout carries the image.
        eprintln!("{}", serde_json::to_string_pretty(&report)?);
    } else if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for d in &report.disks {
            eprintln!("vdar: restored {}", serde_json::to_string(d)?);
        }
        for l in &report.lost {
            eprintln!("vdar: LOST {}", serde_json::to_string(l)?);
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
    let report = match archive(&args.archive)? {
        Archive::Stream(mut r) => vdar::verify::verify(&mut r)?,
        Archive::Seekable(mut f) => vdar::verify::verify(&mut f)?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.ok {
        println!(
            "{}: ok, {} records verified",
            args.archive.display(),
            report.records
        );
    } else {
        println!("{}: DAMAGED", args.archive.display());
        for d in &report.damage {
            println!("  damage: {}", serde_json::to_string(d)?);
        }
        for l in &report.lost {
            println!("  lost: {}", serde_json::to_string(l)?);
        }
        for f in &report.missing_files {
            println!("  missing file: {f}");
        }
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn list(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let l = match archive(&args.archive)? {
        Archive::Stream(mut r) => vdar::list::list_stream(&mut r)?,
        Archive::Seekable(mut f) => vdar::list::list_seekable(&mut f)?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&l)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "archive: vdar {} created {} chunk {} zstd level {}{}",
        l.vdar_version,
        l.created,
        human(l.chunk_size),
        l.level,
        if l.complete { "" } else { " (INCOMPLETE)" }
    );
    for vm in &l.vms {
        println!("vm {}", vm.name);
        for f in &vm.files {
            println!("  file {}", serde_json::to_string(f)?);
        }
        for d in &vm.disks {
            println!(
                "  disk {}: {} capacity, {} chunks ({} deduplicated), {} stored from {}",
                d.name,
                human(d.capacity),
                d.chunks,
                d.refs,
                human(d.stored_bytes),
                human(d.stored_raw_bytes)
            );
        }
    }
    println!(
        "total: {} of disks, archive {}; dedup {:.2}x, compression {:.2}x",
        human(l.disk_bytes),
        human(l.archive_bytes),
        l.dedup_ratio,
        l.compression_ratio
    );
    Ok(ExitCode::SUCCESS)
}
