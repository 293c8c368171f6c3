//! Fuzz target: `vdar blockmap import` inputs through `san::t0::import`: `data` split at NUL
//! bytes into the `vmkfstools -t0` text, the `esxcli storage vmfs extent list` text, the probe
//! lines and one descriptor, imported with the LV UUID `49edf842-dcb35d37-b383-0021280083cf`
//! "on the LUNs". A map that imports must render back to `-t0` text that imports to the same
//! runs. Errors are fine; panics are bugs.
#![no_main]

use std::path::{Path, PathBuf};

use vdar::fixture::t0::assert_renders_back;
use vdar::san::probes::parse_probes;
use vdar::san::t0::{import, ImportInputs};
use vdar::san::VmfsUuid;

/// `49edf842-dcb35d37-b383-0021280083cf` in its on-disk byte order.
const LUN_LV_UUID: [u8; 16] = [
    0x42, 0xf8, 0xed, 0x49, 0x37, 0x5d, 0xb3, 0xdc, 0x83, 0xb3, 0x00, 0x21, 0x28, 0x00, 0x83, 0xcf,
];

fn inputs(data: &[u8]) -> ImportInputs {
    let mut parts = data.splitn(4, |&b| b == 0).map(String::from_utf8_lossy);
    let mut next = || parts.next().map(|p| p.into_owned());
    let t0 = next().unwrap_or_default();
    let extents = next();
    let probes = next();
    let descriptor = next();
    ImportInputs {
        t0: vec![(PathBuf::from("fuzz.t0"), t0)],
        descriptors: descriptor
            .map(|d| (PathBuf::from("fuzz.vmdk"), d))
            .into_iter()
            .collect(),
        extents: extents.map(|e| (PathBuf::from("fuzz-extents.txt"), e)),
        lun_lv_uuids: vec![VmfsUuid(LUN_LV_UUID)],
        probes: probes.map(|p| (PathBuf::from("fuzz-probes.txt"), p)),
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let inp = inputs(data);
    // The probe parser alone: a text that fails import elsewhere still reaches it.
    if let Some((_, p)) = &inp.probes {
        let _ = parse_probes(Path::new("fuzz-probes.txt"), p);
    }
    if let Ok(map) = import(&inp) {
        assert_renders_back(&map);
    }
});
