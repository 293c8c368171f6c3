//! The default read path (issue 15): a backup reads the layer files with O_DIRECT, so a cold
//! disk on a backup proxy does not end up in (and push everything else out of) the page cache;
//! `--read-path buffered` reads through it. Checked with util-linux's fincore, which counts the
//! file's pages resident in the page cache.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::util::*;

/// Pages of `file` in the page cache, in bytes.
fn cached_bytes(file: &Path) -> u64 {
    let out = run("fincore", &["-b", "-n", "-o", "RES", s(file)]);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("fincore RES")
}

/// Drops `file`'s pages from the page cache (dirty pages stay, hence the sync).
fn evict(file: &Path) {
    let f = std::fs::File::open(file).unwrap();
    f.sync_all().unwrap();
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
}

#[test]
fn backup_reads_around_the_page_cache_by_default() {
    require!("fincore");
    let t = tempdir();
    let base = t.path().join("disk");
    run(s(&fixture_bin()), &["flat", s(&base), "64M", "D:0:32M:7"]);
    let flat = t.path().join("disk-flat.vmdk");
    let direct_ok = std::fs::File::options()
        .read(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(&flat)
        .is_ok();
    if !direct_ok {
        eprintln!("skipped: the temp dir's file system refuses O_DIRECT");
        return;
    }
    let archive = t.path().join("a.vdar");
    let backup = |extra: &[&str]| {
        evict(&flat);
        assert_eq!(cached_bytes(&flat), 0, "eviction works here");
        let mut args = vec!["backup", "disk.vmdk", "-o", s(&archive), "--force"];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(vdar_bin())
            .args(&args)
            .current_dir(t.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        cached_bytes(&flat)
    };
    let by_default = backup(&[]);
    let buffered = backup(&["--read-path", "buffered"]);
    let direct = backup(&["--read-path", "direct"]);
    assert!(
        by_default < 1 << 20,
        "default read left {by_default} bytes cached"
    );
    assert!(direct < 1 << 20, "direct read left {direct} bytes cached");
    assert!(
        buffered >= 16 << 20,
        "buffered read cached only {buffered} bytes"
    );
}
