//! `vdar blockmap import`: a block map from `vmkfstools -t0` text, descriptors and host-side
//! probe hashes.

use std::process::ExitCode;

use crate::san::t0::{import as import_map, ImportInputs};
use anyhow::Context;

use super::args::ImportArgs;

fn read(p: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))
}

pub fn import(a: &ImportArgs) -> anyhow::Result<ExitCode> {
    let mut inp = ImportInputs::default();
    for p in &a.t0 {
        inp.t0.push((p.clone(), read(p)?));
    }
    for p in &a.descriptors {
        inp.descriptors.push((p.clone(), read(p)?));
    }
    if let Some(p) = &a.extents {
        inp.extents = Some((p.clone(), read(p)?));
    }
    if let Some(p) = &a.probes {
        inp.probes = Some((p.clone(), read(p)?));
    }
    if !a.lun.is_empty() {
        inp.lun_lv_uuids = super::san::scan(&a.lun, false)?.lv_uuids();
    }
    let map = import_map(&inp)?;
    std::fs::write(&a.output, map.to_json())
        .with_context(|| format!("{}: cannot write", a.output.display()))?;
    log::info!(
        "{} files, {} volumes, {} probes -> {}",
        map.files.len(),
        map.volumes.len(),
        map.files.iter().map(|f| f.probes.len()).sum::<usize>(),
        a.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
