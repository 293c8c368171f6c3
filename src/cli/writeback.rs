//! `vdar restore ARCHIVE --blockmap MAP --lun …`: SAN write-back of one disk into a
//! pre-created eager-zeroed flat disk (library: `crate::restore::writeback`). The LUNs are scanned
//! read-only; the library opens them for writing only once the target, its runs and the map's
//! probes have passed. Exit codes: 0 written and verified, 1 the read-back differs, 2 error.

use std::process::ExitCode;

use crate::blockio::{Backend, ReadOptions};
use crate::restore::writeback::{Verify, WriteBack, WriteBackOptions, ZeroPolicy};
use crate::restore::{restore_seekable_to, restore_stream_to, Dest, RestoreOptions};
use crate::san::{BlockMap, BlockMapOpener};
use anyhow::Context;

use super::archive_input::{archive, Archive};
use super::args::RestoreArgs;

pub fn run(args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let wb = &args.writeback;
    let map_path = wb
        .blockmap
        .as_ref()
        .context("restore needs --to DIR or --blockmap MAP.json")?;
    let map = BlockMap::load(map_path)?;
    let luns = super::san::scan(&wb.lun, wb.direct)?;
    let opener = BlockMapOpener::new(map_path, map, luns)
        .with_context(|| format!("binding {} to the LUNs", map_path.display()))?;
    let factory = WriteBack::new(
        opener,
        WriteBackOptions {
            target: wb.target.clone(),
            zeros: if wb.assume_zeroed {
                ZeroPolicy::AssumeZeroed
            } else {
                ZeroPolicy::Write
            },
            verify: if wb.no_verify {
                Verify::Skip
            } else {
                Verify::ReadBack
            },
            direct: wb.direct,
            io: ReadOptions {
                queue_depth: usize::from(wb.queue_depth),
                backend: Backend::Auto,
            },
        },
    );
    let report = factory.report();
    let (hook, meter, last) = super::progress::restore_meter();
    let opts = RestoreOptions {
        vm: args.vm.clone(),
        disk: args.disk.clone(),
        progress: Some(hook),
        cancel: super::signals::on_interrupt()?,
        ..Default::default()
    };
    let dest = Dest::Sink(Box::new(factory));
    let result = match archive(&args.archive)? {
        Archive::Stream(mut r) => restore_stream_to(&mut r, dest, &opts),
        Archive::Seekable(mut f) => {
            let r = restore_seekable_to(&mut *f.input, dest, &opts);
            f.log_fetched();
            r
        }
    };
    super::progress::finish_restore(&meter, &last);
    let wrote = report.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for n in &wrote.notices {
        log::warn!("{n}");
    }
    match result {
        Err(crate::Error::WriteBackMismatch(m)) => {
            eprintln!("vdar: VERIFY FAILED: {m}");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(super::archive_input::about_archive(e, &args.archive, false)),
        Ok(_) => {}
    }
    if args.json {
        super::json::print("writeback", &wrote)?;
    } else {
        log::info!(
            "wrote {}/{} into {} ({} bytes of data, {} of zeros written, {} of zeros \
             skipped, {} verified; {} on {})",
            wrote.vm,
            wrote.disk,
            wrote.target,
            wrote.data_bytes,
            wrote.zero_bytes_written,
            wrote.zero_bytes_skipped,
            wrote.verified_bytes,
            wrote.backend,
            wrote
                .luns
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
