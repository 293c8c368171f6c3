//! SEsparse deltas: written by vdar's fixture writer over an ESX-style flat base, read by vdar's
//! `SeSparseExtent` and by `qemu-img convert`, the only other SEsparse reader, which must agree.

use vdar::fixture::sesparse::{write_sesparse, SeSparseOptions};
use vdar::fixture::{Content, Region};
use vdar::input::{sesparse, FileTable, LocalFile, SECTOR};

use crate::cowd::{data, delta_descriptor, esx_base, fill, merge, scattered};
use crate::util::{assert_same_file, qemu_raw, tempdir};

/// 16 MiB per grain table.
const GT_SPAN: u64 = 32768;

fn check_sesparse(cap: u64, regions: &[Region], opts: &SeSparseOptions) {
    let dir = tempdir();
    let d = dir.path();
    let cid = esx_base(
        d,
        cap,
        &[
            "write -P 0xa1 0 2M",
            "write -P 0xb2 16M 2M",
            &format!("write -P 0xc3 {} 8k", cap * SECTOR - 8192),
        ],
    );
    let extent = d.join("delta-sesparse.vmdk");
    write_sesparse(&extent, cap, regions, opts).unwrap();
    let top = delta_descriptor(
        d,
        "delta",
        "seSparse",
        "SESPARSE",
        "delta-sesparse.vmdk",
        cap,
        cid,
    );

    let mut files = FileTable::default();
    let id = files.add(std::sync::Arc::new(LocalFile::open(&extent).unwrap()));
    let mut ext = sesparse::open(&files, id).unwrap();
    assert_eq!(ext.capacity_sectors(), cap);
    let base = std::fs::read(d.join("base-flat.vmdk")).unwrap();
    let ours = d.join("ours.raw");
    let runs = merge(&mut ext, &files, &base, &ours);
    // Exact coalescing is pinned by the unit tests. Here, a bound that per-grain runs would
    // break: the writer allocates in chunks of 16 grains, so each region costs at most two runs
    // (itself and the gap after it) plus one per chunk boundary.
    let grains: u64 = regions.iter().map(|r| r.byte_len().div_ceil(4096)).sum();
    let bound = 2 * regions.len() as u64 + 2 * (grains / 16 + 1) + 1;
    assert!(
        runs as u64 <= bound,
        "{runs} runs > {bound}: grains were not coalesced"
    );

    let theirs = d.join("qemu.raw");
    qemu_raw(&top, &theirs);
    assert_same_file(&ours, &theirs);
}

fn regions(cap: u64) -> Vec<Region> {
    let mut r = vec![
        data(0x31, 0, 512),
        // Zero (type 2) and unmapped (type 1) grains over parent data.
        fill(1024, 64, Content::Zero),
        fill(1088, 64, Content::Unmapped),
        fill(GT_SPAN + 8, 4096, Content::Unmapped),
        // Data across a grain-table boundary.
        data(0x32, GT_SPAN - 32, 64),
        data(0x33, cap - 16, 16),
    ];
    r.extend(scattered(0x34, 300, 8, cap - 16));
    r
}

#[test]
fn sesparse_matches_qemu() {
    require!("qemu-img");
    // Two grain tables and a partial third.
    let cap = 2 * GT_SPAN + 4096;
    check_sesparse(cap, &regions(cap), &SeSparseOptions::default());
}

#[test]
fn sesparse_high_grain_indices_match_qemu() {
    require!("qemu-img");
    // Grain indices from 5000 up: bits 48-59 and 0-47 of the entries both carry index bits.
    let cap = 3 * GT_SPAN;
    let opts = SeSparseOptions {
        first_grain_index: 5000,
        ..Default::default()
    };
    check_sesparse(cap, &regions(cap), &opts);
}

#[test]
fn sesparse_dirty_journal_refused_like_qemu() {
    require!("qemu-img");
    let dir = tempdir();
    let d = dir.path();
    let cap = GT_SPAN;
    let cid = esx_base(d, cap, &[]);
    let extent = d.join("delta-sesparse.vmdk");
    let opts = SeSparseOptions {
        replay_journal: true,
        ..Default::default()
    };
    write_sesparse(&extent, cap, &[data(0x41, 0, 8)], &opts).unwrap();
    let top = delta_descriptor(
        d,
        "delta",
        "seSparse",
        "SESPARSE",
        "delta-sesparse.vmdk",
        cap,
        cid,
    );
    let mut files = FileTable::default();
    let id = files.add(std::sync::Arc::new(LocalFile::open(&extent).unwrap()));
    let err = sesparse::open(&files, id).unwrap_err();
    assert!(err.to_string().contains("journal"), "{err}");
    let out = std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw", top.to_str().unwrap()])
        .arg(d.join("x.raw"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "qemu-img read a dirty SEsparse file");
}
