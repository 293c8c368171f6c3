//! `vdar cat`: the collapsed disk as raw bytes, from local files or (SAN mode) from LUNs. A
//! `.vmx` names the disk through the library's selection ([`crate::job::select_one`]).

use std::process::ExitCode;

use crate::chain::{Chain, ChainOptions, VirtualDisk};
use crate::input::LocalOpener;
use crate::san::probes::guarded_copy;

use super::args::CatArgs;
use crate::output::{copy_disk, ImageOut, OutputSpec};

use super::stdout::output_error;

pub fn run(args: &CatArgs) -> anyhow::Result<ExitCode> {
    let san = super::san::opener(&args.san)?;
    let local = LocalOpener::new(args.san.read_path());
    let (out, notices) = guarded_copy(san.as_ref(), &local, |opener| {
        let opts = ChainOptions {
            opener,
            ignore_cid: args.chain.ignore_cid,
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
        anyhow::Ok(out)
    })?;
    // The output gets its name only once the files are known not to have moved.
    super::san::log_notices(notices);
    out.commit()?;
    Ok(ExitCode::SUCCESS)
}
