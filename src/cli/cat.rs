//! `vdar cat`: the collapsed disk as raw bytes.

use std::process::ExitCode;

use vdar::chain::{Chain, ChainOptions};

use super::args::CatArgs;
use super::output::{copy_disk, RawSink};

pub fn run(args: &CatArgs) -> anyhow::Result<ExitCode> {
    let opts = ChainOptions {
        ignore_cid: args.chain.ignore_cid,
        ..Default::default()
    };
    let chain = Chain::open(&args.input, &opts)?;
    for w in &chain.warnings {
        eprintln!("vdar: warning: {w}");
    }
    let sink = RawSink::create(&args.output)?;
    let mut disk = chain.collapse();
    copy_disk(&mut disk, sink)?;
    Ok(ExitCode::SUCCESS)
}
