//! `vdar cat`: the collapsed disk as raw bytes, from local files or (SAN mode) from LUNs. A
//! `.vmx` names the disk through the library's selection ([`crate::job::select_one`]).

use std::process::ExitCode;

use crate::chain::{Chain, ChainOptions, VirtualDisk};
use crate::input::LocalOpener;
use crate::san::probes::{GuardedOp, ProbeGuard};

use super::args::CatArgs;
use crate::output::{copy_disk, ImageOut, OutputSpec};

use super::stdout::output_error;

pub fn run(args: &CatArgs) -> anyhow::Result<ExitCode> {
    let san = super::san::opener(&args.san)?;
    let local = LocalOpener::new(args.san.read_path());
    let mut opts = ChainOptions {
        opener: &local,
        ignore_cid: args.chain.ignore_cid,
    };
    let guard = match &san {
        Some(o) => {
            opts.opener = o;
            Some(ProbeGuard::begin(o, GuardedOp::Copy)?)
        }
        None => None,
    };
    let (top, warnings) = crate::job::select_one(
        &args.input,
        args.chain.snapshot.as_deref(),
        args.disk.as_deref(),
    )?;
    let chain = Chain::open(&top, &opts)?;
    for w in warnings.iter().chain(&chain.warnings) {
        log::warn!("{w}");
    }
    let mut disk = chain.collapse();
    let spec = OutputSpec {
        path: &args.output,
        force: args.force,
        what: "a disk image",
    };
    let mut out = ImageOut::create(&spec, disk.capacity())?;
    let read = super::san::read_options(&args.san);
    if let Some(n) = crate::blockio::fallback_notice(&read) {
        log::info!("notice: {n}");
    }
    copy_disk(&mut disk, &mut out, &read).map_err(|e| output_error(&spec.name(), e.into()))?;
    if let (Some(o), Some(g)) = (&san, guard) {
        // The output gets its name only once the files are known not to have moved.
        g.finish()?;
        super::san::print_notices(o.luns());
    }
    out.commit()?;
    Ok(ExitCode::SUCCESS)
}
