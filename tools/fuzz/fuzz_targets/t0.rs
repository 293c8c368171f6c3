//! Fuzz target: `vdar blockmap import` inputs through `san::t0::import`: `data` split at NUL
//! bytes into the `vmkfstools -t0` text, the `esxcli storage vmfs extent list` text, the probe
//! lines and one descriptor, imported with the LV UUID `49edf842-dcb35d37-b383-0021280083cf`
//! "on the LUNs". A map that imports must render back to `-t0` text that imports to the same
//! runs. Errors are fine; panics are bugs.
#![no_main]

use std::path::{Path, PathBuf};

use vdar::san::blockmap::{BlockMap, MappedFile, RunKind};
use vdar::san::probes::parse_probes;
use vdar::san::t0::{import, render_t0, ImportInputs};
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

/// Every imported file with a VMFS run renders to `-t0` text that imports to the same runs.
/// (Files without one borrow a volume at import; alone they cannot be re-imported.)
fn assert_renders_back(map: &BlockMap) {
    let has_vmfs = |f: &&MappedFile| f.runs.iter().any(|r| r.kind != RunKind::Hole);
    for f in map
        .files
        .iter()
        .filter(|f| f.text.is_none())
        .filter(has_vmfs)
    {
        let lvid = map
            .volumes
            .iter()
            .find(|v| Some(&v.id) == f.volume.as_ref())
            .and_then(|v| v.lvid_raw.clone())
            .expect("imported files name an imported volume");
        let text = render_t0(f, &lvid);
        let again = import(&ImportInputs {
            t0: vec![(PathBuf::from("fuzz-render.t0"), text.clone())],
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("rendered -t0 text does not import: {e}\n{text}"));
        assert_eq!(
            again.files[0].runs, f.runs,
            "render/import round trip\n{text}"
        );
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
