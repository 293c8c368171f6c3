//! `vdar cat`: the collapsed disk as raw bytes, from local files or (SAN mode) from LUNs.

use std::process::ExitCode;

use crate::chain::{Chain, ChainOptions, VirtualDisk};
use crate::input::LocalOpener;

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
    if let Some(o) = &san {
        // Probes before the copy: a wrong map or a moved file stops us before any output.
        o.check_probes("before copy")?;
        opts.opener = o;
    }
    let chain = Chain::open(&args.input, &opts)?;
    for w in &chain.warnings {
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
    if let Some(o) = &san {
        // And after: the file must not have moved while we read it. Only then does the
        // output get its name.
        o.check_probes("after copy")?;
        super::san::print_notices(o.luns());
    }
    out.commit()?;
    Ok(ExitCode::SUCCESS)
}
