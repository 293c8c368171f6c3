//! Incrementals: a base backup, the disk changed (overwritten, zeroed, unmapped, extended with
//! new data), an incremental by each change source (redo logs, a CBT list, none), and every
//! way back: restore with the bases, restore from a pipe, consolidate. Each image is compared
//! with `qemu-img convert` of the changed chain.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vdar::fixture::cowd::write_cowd;
use vdar::fixture::sesparse::{write_sesparse, SeSparseOptions};
use vdar::fixture::{descriptor_text, Content, ExtentLine, Region};

use crate::cowd::{data, esx_base, fill};
use crate::util::{assert_same_file, ok, qemu_io, qemu_raw, run, s, tempdir, vdar, vdar_stdin};

/// A changed-areas file for disk `disk`: `since` → `change_id`, the given byte ranges.
fn cbt_file(path: &Path, disk: &str, since: &str, change_id: &str, areas: &[(u64, u64)]) {
    let areas: Vec<_> = areas
        .iter()
        .map(|(s, l)| serde_json::json!({"start": s, "length": l}))
        .collect();
    let doc = serde_json::json!({"disks": [{"disk": disk, "since": since,
        "change_id": change_id, "areas": areas}]});
    std::fs::write(path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("json")
}

/// The one raw image a restore report names.
fn restored(report: &std::process::Output) -> PathBuf {
    let v = json(report);
    let disks = v["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 1, "{v}");
    assert_eq!(disks[0]["lost_bytes"], 0, "{v}");
    PathBuf::from(disks[0]["path"].as_str().unwrap())
}

/// Restores `archive` with `bases` into a fresh directory under `d` and returns the image.
fn restore_with(d: &Path, tag: &str, archive: &Path, bases: &[&Path]) -> PathBuf {
    let to = d.join(format!("out-{tag}"));
    let mut args = vec!["restore", s(archive), "--to", s(&to), "--json"];
    for b in bases {
        args.extend(["--base", s(b)]);
    }
    restored(&ok(&args))
}

/// Every check of one incremental `inc` of `full` whose disk should read as `want`.
fn check_incremental(d: &Path, tag: &str, full: &Path, inc: &Path, want: &Path) {
    // Seekable restore with the base.
    assert_same_file(&restore_with(d, tag, inc, &[full]), want);
    // One pass from a pipe (the base a file).
    let to = d.join(format!("pipe-{tag}"));
    let mut child = Command::new(crate::util::vdar_bin())
        .args(["restore", "-", "--to", s(&to), "--json", "--base", s(full)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::copy(
        &mut std::fs::File::open(inc).unwrap(),
        child.stdin.as_mut().unwrap(),
    )
    .unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_file(&restored(&out), want);
    // Verify reads every BaseRef from the base.
    let v = json(&ok(&["verify", s(inc), "--base", s(full), "--json"]));
    assert_eq!(v["ok"], true, "{v}");
    // A synthetic full: no base needed to restore it, same bytes.
    let cons = d.join(format!("cons-{tag}.vdar"));
    ok(&["consolidate", s(full), s(inc), "-o", s(&cons)]);
    let l = json(&ok(&["list", s(&cons), "--json"]));
    assert!(l.get("base").is_none(), "{l}");
    assert_eq!(json(&ok(&["verify", s(&cons), "--json"]))["ok"], true);
    assert_same_file(&restore_with(d, &format!("cons-{tag}"), &cons, &[]), want);
}

/// Backs up `base_top` (full, with its catalog), then `now_top` by each change source, and
/// checks every incremental. `changed`: the byte ranges written since, as CBT would list them;
/// `patches`: whether some of them cover only part of a chunk of data (base patches).
fn check_sources(d: &Path, base_top: &Path, now_top: &Path, changed: &[(u64, u64)], patches: bool) {
    let full = d.join("full.vdar");
    let cat = d.join("full.vcat");
    let disk_then = base_top.file_name().unwrap().to_str().unwrap();
    let disk_now = now_top.file_name().unwrap().to_str().unwrap();
    cbt_file(&d.join("cbt0.json"), disk_then, "*", "52 aa/1", &[]);
    let c0 = d.join("cbt0.json");
    // Small chunks, so that a change re-stores little; the incrementals take the base's size.
    ok(&[
        "backup",
        s(base_top),
        "-o",
        s(&full),
        "--catalog",
        s(&cat),
        "--changed-areas",
        s(&c0),
        "--chunk-size",
        "64K",
    ]);
    let want = d.join("want.raw");
    qemu_raw(now_top, &want);
    cbt_file(
        &d.join("cbt1.json"),
        disk_now,
        "52 aa/1",
        "52 aa/2",
        changed,
    );
    let c1 = d.join("cbt1.json");
    // The dedup source patches only when it has the base archive's bytes, not its catalog.
    let sources: [(&str, Vec<&str>, &str); 4] = [
        ("redo", vec!["--base", s(&cat)], "redo-log"),
        (
            "cbt",
            vec!["--base", s(&full), "--changed-areas", s(&c1)],
            "cbt",
        ),
        ("dedup", vec!["--base", s(&cat), "--read-all"], "dedup"),
        (
            "dedup-archive",
            vec!["--base", s(&full), "--read-all"],
            "dedup",
        ),
    ];
    let full_len = std::fs::metadata(&full).unwrap().len();
    for (tag, extra, source) in sources {
        let inc = d.join(format!("{tag}.vdar"));
        let mut args = vec!["backup", s(now_top), "-o", s(&inc), "--json"];
        args.extend(extra);
        let b = json(&ok(&args));
        assert_eq!(b["changes"][0]["source"], source, "{tag}: {b}");
        assert!(b["changes"][0].get("fallback").is_none(), "{tag}: {b}");
        assert!(b["chunks_base"].as_u64().unwrap() > 0, "{tag}: {b}");
        let len = std::fs::metadata(&inc).unwrap().len();
        assert!(
            len < full_len,
            "{tag}: incremental {len} B >= full {full_len} B"
        );
        if source != "dedup" {
            // Only the listed chunks were read.
            let listed = b["changes"][0]["changed_bytes"].as_u64().unwrap();
            assert!(b["bytes_read"].as_u64().unwrap() <= listed, "{tag}: {b}");
        }
        let patched = b["chunks_patched"].as_u64().unwrap() > 0;
        assert_eq!(patched, patches && tag != "dedup", "{tag}: {b}");
        check_incremental(d, tag, &full, &inc, &want);
    }
}

/// A COWD or SEsparse child `name` over `parent` (descriptor file name, CID `parent_cid`).
fn delta(
    d: &Path,
    name: &str,
    parent: &str,
    parent_cid: u32,
    cid: u32,
    se: bool,
    cap: u64,
) -> PathBuf {
    let (create, kind, ext) = if se {
        ("seSparse", "SESPARSE", format!("{name}-sesparse.vmdk"))
    } else {
        ("vmfsSparse", "VMFSSPARSE", format!("{name}-delta.vmdk"))
    };
    // Each redo log has a uuid of its own, as hosted products (and vdar-fixture) write them.
    let uuid = format!("60 00 c2 9a {cid:08x}");
    let text = descriptor_text(
        create,
        cid,
        parent_cid,
        Some(parent),
        &[ExtentLine {
            access: "RW",
            sectors: cap,
            kind,
            file: Some(ext.clone()),
            offset: None,
        }],
        &[("ddb.adapterType", "lsilogic"), ("ddb.uuid", &uuid)],
    );
    let path = d.join(format!("{name}.vmdk"));
    std::fs::write(&path, text).unwrap();
    path
}

fn write_layer(d: &Path, name: &str, se: bool, cap: u64, regions: &[Region]) {
    if se {
        let ext = d.join(format!("{name}-sesparse.vmdk"));
        write_sesparse(&ext, cap, regions, &SeSparseOptions::default()).unwrap();
    } else {
        // Grains of one sector: qemu, the oracle, reads a zero grain (GTE 1) as the file's
        // sector 1 onwards, which the writer keeps zero for one sector only (tests/cowd.rs).
        write_cowd(&d.join(format!("{name}-delta.vmdk")), cap, 1, regions).unwrap();
    }
}

/// Bytes a region covers.
fn span(r: &Region) -> (u64, u64) {
    (r.offset, r.byte_len())
}

/// ESX base, a first redo log (the base backup's top), a second on it with overwrites, zero
/// grains (and for SEsparse unmapped ones) over data, and new data.
fn redo_chain(se: bool) {
    let dir = tempdir();
    let d = dir.path();
    let cap = 48 << 11; // 48 MiB in sectors
    let cid = esx_base(d, cap, &["write -P 0xa1 0 6M", "write -P 0xb2 20M 4M"]);
    write_layer(
        d,
        "s1",
        se,
        cap,
        &[data(0x31, 2048, 2048), data(0x32, 60000, 512)],
    );
    let s1 = delta(d, "s1", "base.vmdk", cid, 0x1111, se, cap);
    let zero = if se { Content::Unmapped } else { Content::Zero };
    let mut r2 = vec![
        data(0x41, 512, 64),                  // overwrite inside the base's data
        fill(2048 + 256, 512, Content::Zero), // zero grains over s1's data
        fill(40960, 2048, zero),              // hide the base's 20 MiB region
        data(0x42, 80000, 1024),              // new data where all was zero
    ];
    if se {
        r2.push(fill(4096, 64, Content::Zero));
    }
    write_layer(d, "s2", se, cap, &r2);
    let s2 = delta(d, "s2", "s1.vmdk", 0x1111, 0x2222, se, cap);
    let mut changed: Vec<_> = r2.iter().map(span).collect();
    changed.sort_unstable();
    if std::env::var_os("VDAR_KEEP").is_some() {
        eprintln!("kept {}", dir.keep().display());
        return;
    }
    check_sources(d, &s1, &s2, &changed, true);
}

#[test]
fn cowd_chain_by_each_source() {
    redo_chain(false);
}

#[test]
fn sesparse_chain_by_each_source() {
    redo_chain(true);
}

/// Hosted sparse layers made by qemu-img, written with qemu-io.
#[test]
fn hosted_sparse_chain_by_each_source() {
    let dir = tempdir();
    let d = dir.path();
    let base = d.join("disk.vmdk");
    run("qemu-img", &["create", "-q", "-f", "vmdk", s(&base), "40M"]);
    qemu_io(&base, &["write -P 0x11 0 8M", "write -P 0x22 20M 4M"]);
    let s1 = d.join("disk-000001.vmdk");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-b",
            "disk.vmdk",
            "-F",
            "vmdk",
            s(&s1),
        ],
    );
    qemu_io(&s1, &["write -P 0x33 1M 1M"]);
    let s2 = d.join("disk-000002.vmdk");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-b",
            "disk-000001.vmdk",
            "-F",
            "vmdk",
            s(&s2),
        ],
    );
    let changed = [
        (1 << 20, 64 << 10),
        (20 << 20, 4 << 20),
        (33 << 20, 3 << 20),
    ];
    qemu_io(
        &s2,
        &[
            "write -P 0x44 1M 64k",
            "write -z 20M 4M",
            "write -P 0x55 33M 3M",
        ],
    );
    check_sources(d, &s1, &s2, &changed, false);
}

/// Full, then two incrementals: the newest needs both bases, names the one missing, and
/// consolidates with both into the same image.
#[test]
fn a_chain_of_three_needs_every_base() {
    let dir = tempdir();
    let d = dir.path();
    let disk = d.join("disk.vmdk");
    run("qemu-img", &["create", "-q", "-f", "vmdk", s(&disk), "24M"]);
    qemu_io(&disk, &["write -P 0x11 0 8M"]);
    let full = d.join("full.vdar");
    ok(&["backup", s(&disk), "-o", s(&full)]);
    qemu_io(&disk, &["write -P 0x22 4M 1M"]);
    let inc1 = d.join("inc1.vdar");
    let b1 = json(&ok(&[
        "backup",
        s(&disk),
        "-o",
        s(&inc1),
        "--base",
        s(&full),
        "--json",
    ]));
    assert_eq!(b1["changes"][0]["source"], "dedup", "{b1}");
    qemu_io(&disk, &["write -P 0x33 12M 1M", "write -z 0 1M"]);
    let inc2 = d.join("inc2.vdar");
    let b2 = json(&ok(&[
        "backup",
        s(&disk),
        "-o",
        s(&inc2),
        "--base",
        s(&inc1),
        "--json",
    ]));
    assert_eq!(b2["base"]["id"], b1["id"], "{b2}");
    assert_eq!(b2["base"]["lineage"][0], b1["base"]["id"], "{b2}");
    let want = d.join("want.raw");
    qemu_raw(&disk, &want);
    assert_same_file(&restore_with(d, "both", &inc2, &[&inc1, &full]), &want);
    let missing = vdar(&[
        "restore",
        s(&inc2),
        "--to",
        s(&d.join("x")),
        "--base",
        s(&inc1),
    ]);
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{err}");
    assert!(err.contains(b1["base"]["id"].as_str().unwrap()), "{err}");
    assert!(
        !d.join("x").join("disk").exists(),
        "nothing written without every base"
    );
    let cons = d.join("cons.vdar");
    ok(&["consolidate", s(&full), s(&inc1), s(&inc2), "-o", s(&cons)]);
    assert_same_file(&restore_with(d, "cons", &cons, &[]), &want);
    // The consolidated full is a base like any other.
    qemu_io(&disk, &["write -P 0x44 16M 1M"]);
    let inc3 = d.join("inc3.vdar");
    ok(&["backup", s(&disk), "-o", s(&inc3), "--base", s(&cons)]);
    qemu_raw(&disk, &want);
    assert_same_file(&restore_with(d, "inc3", &inc3, &[&cons]), &want);
}

/// A change list that does not follow on from the base, or a disk that grew, is not trusted:
/// the disk is read whole, with the reason in the summary, and the image is still right.
#[test]
fn hints_that_do_not_fit_fall_back_to_reading_everything() {
    let dir = tempdir();
    let d = dir.path();
    let disk = d.join("disk.vmdk");
    run("qemu-img", &["create", "-q", "-f", "vmdk", s(&disk), "16M"]);
    qemu_io(&disk, &["write -P 0x11 0 4M"]);
    let c0 = d.join("c0.json");
    cbt_file(&c0, "disk.vmdk", "*", "id/1", &[]);
    let full = d.join("full.vdar");
    ok(&[
        "backup",
        s(&disk),
        "-o",
        s(&full),
        "--changed-areas",
        s(&c0),
    ]);
    qemu_io(&disk, &["write -P 0x22 8M 1M"]);
    // The list claims nothing changed, but starts from another change id.
    let c1 = d.join("c1.json");
    cbt_file(&c1, "disk.vmdk", "id/7", "id/8", &[]);
    let inc = d.join("inc.vdar");
    let b = json(&ok(&[
        "backup",
        s(&disk),
        "-o",
        s(&inc),
        "--base",
        s(&full),
        "--changed-areas",
        s(&c1),
        "--json",
    ]));
    let why = b["changes"][0]["fallback"].as_str().unwrap_or_default();
    assert!(why.contains("id/7") && why.contains("id/1"), "{b}");
    let want = d.join("want.raw");
    qemu_raw(&disk, &want);
    assert_same_file(&restore_with(d, "cbt", &inc, &[&full]), &want);
    // The disk grew: same name, another size.
    let raw = d.join("grown.raw");
    qemu_raw(&disk, &raw);
    let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
    f.set_len(20 << 20).unwrap();
    drop(f);
    std::fs::remove_file(&disk).unwrap();
    run(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "vmdk",
            s(&raw),
            s(&disk),
        ],
    );
    qemu_io(&disk, &["write -P 0x33 17M 1M"]);
    let grown = d.join("grown.vdar");
    let b = json(&ok(&[
        "backup",
        s(&disk),
        "-o",
        s(&grown),
        "--base",
        s(&full),
        "--json",
    ]));
    let why = b["changes"][0]["fallback"].as_str().unwrap_or_default();
    assert!(why.contains("capacity"), "{b}");
    qemu_raw(&disk, &want);
    assert_same_file(&restore_with(d, "grown", &grown, &[&full]), &want);
    // A list without a base is only a full backup's change id.
    let bad = vdar(&[
        "backup",
        s(&disk),
        "-o",
        s(&d.join("y.vdar")),
        "--changed-areas",
        s(&c1),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--base"));
}

/// A chunk damaged in the base after the incremental was written: verify of the incremental
/// finds it, names the base, and exits 1; without the base, verify says which archive it needs.
#[test]
fn damage_in_a_base_is_named_by_verify_of_the_incremental() {
    let dir = tempdir();
    let d = dir.path();
    let disk = d.join("disk.vmdk");
    run("qemu-img", &["create", "-q", "-f", "vmdk", s(&disk), "16M"]);
    qemu_io(&disk, &["write -P 0x11 0 4M", "write -P 0x12 8M 4M"]);
    let full = d.join("full.vdar");
    let cat = d.join("full.vcat");
    let b0 = json(&ok(&[
        "backup",
        s(&disk),
        "-o",
        s(&full),
        "--catalog",
        s(&cat),
        "--json",
    ]));
    qemu_io(&disk, &["write -P 0x22 4M 1M"]);
    let inc = d.join("inc.vdar");
    ok(&["backup", s(&disk), "-o", s(&inc), "--base", s(&cat)]);
    assert_eq!(
        json(&ok(&["verify", s(&inc), "--base", s(&full), "--json"]))["ok"],
        true
    );
    let alone = vdar(&["verify", s(&inc)]);
    assert_eq!(alone.status.code(), Some(2));
    let id = b0["id"].as_str().unwrap();
    assert!(String::from_utf8_lossy(&alone.stderr).contains(id));
    // Flip a byte inside the first chunk record's payload.
    let (at, _, _) = crate::archive::chunk_record(&std::fs::read(&full).unwrap(), 0, 0);
    let mut bytes = std::fs::read(&full).unwrap();
    bytes[at as usize + 100] ^= 0x40;
    std::fs::write(&full, bytes).unwrap();
    let out = vdar(&["verify", s(&inc), "--base", s(&full), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    let what = v["damage"][0]["what"].as_str().unwrap();
    assert!(
        what.contains(&id[..16]) && what.contains("full.vdar"),
        "{v}"
    );
    // Consolidate refuses rather than write a full archive with a hole.
    let c = vdar(&["consolidate", s(&full), s(&inc), "-o", s(&d.join("c.vdar"))]);
    assert_eq!(c.status.code(), Some(2));
    assert!(!d.join("c.vdar").exists());
}

/// The catalog's bytes, pinned (formats/CATALOG.md), and a catalog read back is the image the
/// archive describes.
#[test]
fn catalog_golden_bytes() {
    use vdar::base::catalog;
    use vdar::chunk::Digest;
    let (ar, _) = crate::archive::make_archive(1);
    let img = vdar::base::BaseImage::from_archive(&mut std::io::Cursor::new(&ar), Path::new("a"))
        .unwrap();
    let places = img.places();
    let bytes = catalog::encode(&img.id, &img.manifest, &places);
    assert_eq!(&bytes[..8], &catalog::CATALOG_MAGIC_V1);
    assert_eq!(&bytes[24..56], &img.id);
    let back = catalog::decode(&bytes, Path::new("c")).unwrap();
    assert_eq!(back.places(), places);
    assert_eq!(back.id, img.id);
    let entries = &bytes[bytes.len() - 32 - places.len() * 48..bytes.len() - 32];
    assert_eq!(&entries[16..48], &places[0].2 .0);
    assert_eq!(places[0].2, Digest(places[0].2 .0));
    assert_eq!(bytes.len(), CATALOG_GOLDEN_LEN, "catalog length");
    assert_eq!(
        blake3::hash(&bytes).to_hex().as_str(),
        CATALOG_GOLDEN_BLAKE3
    );
    // Every damaged byte is refused, naming the file.
    for at in [0, 9, 13, 20, 30, 60, bytes.len() - 40, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 1;
        let e = catalog::decode(&bad, Path::new("c.vcat"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.vcat"), "{at}: {e}");
    }
    assert!(catalog::decode(&bytes[..bytes.len() - 1], Path::new("c")).is_err());
}
const CATALOG_GOLDEN_LEN: usize = 2752;
const CATALOG_GOLDEN_BLAKE3: &str =
    "cbc022dc4a7c4f5aa81176d04d489cd5e2c07f22149079a131d5e94ccb9363b6";

/// An incremental's bytes, pinned (formats/ARCHIVE.md "Incrementals"): the golden corpus backed
/// up again against its own archive, so every chunk place is a BaseRef to the same place.
#[test]
fn incremental_golden_vector() {
    use std::sync::Arc;
    use vdar::archive::format::{RecordKind, INCOMPAT_BASE_PATCHES, INCOMPAT_BASE_REFS};
    use vdar::job::changes::{plan, PlanOptions};
    use vdar::pipeline::{backup, BackupOptions, Incremental};
    let (base, _) = crate::archive::make_archive(1);
    let img = vdar::base::BaseImage::from_archive(&mut std::io::Cursor::new(&base), Path::new("b"))
        .unwrap();
    let (mut vms, expect) = crate::archive::corpus();
    let how = PlanOptions {
        chunk_size: crate::archive::CS,
        read_all: true,
    };
    let plans = plan(&img, &mut vms, None, how).unwrap();
    let base_places = img.len();
    let o = BackupOptions {
        incremental: Some(Incremental {
            base: Arc::new(img),
            plans,
            bytes: None,
        }),
        ..crate::archive::opts(1)
    };
    let mut inc = Vec::new();
    let sum = backup(vms, &o, &mut inc, None).unwrap();
    assert_eq!(sum.totals.chunks_stored, 0, "{sum:?}");
    let mut c = std::io::Cursor::new(&inc);
    let a = vdar::archive::index::SeekableArchive::open(&mut c).unwrap();
    assert_eq!(
        a.header.incompat_features,
        0x3 | INCOMPAT_BASE_REFS | INCOMPAT_BASE_PATCHES
    );
    let refs = a
        .index
        .iter()
        .filter(|e| e.kind == RecordKind::BaseRef)
        .count();
    assert_eq!(refs, base_places);
    assert_eq!(a.manifest.base.as_ref().unwrap().lineage.len(), 0);
    // It restores to the corpus with its base, and not without.
    let dir = tempdir();
    let bpath = dir.path().join("base.vdar");
    std::fs::write(&bpath, &base).unwrap();
    let bases = vdar::base::BaseChain::open(&[bpath]).unwrap();
    let opts = vdar::restore::RestoreOptions {
        bases: Some(Arc::new(std::sync::Mutex::new(bases))),
        ..Default::default()
    };
    let out = dir.path().join("out");
    let r = vdar::restore::restore_seekable(&mut std::io::Cursor::new(&inc), &out, &opts).unwrap();
    assert!(r.is_complete(), "{r:?}");
    crate::archive::check_restored(&out, &expect);
    let e = vdar::restore::restore_seekable(
        &mut std::io::Cursor::new(&inc),
        &dir.path().join("none"),
        &Default::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains(&sum.base.unwrap().id), "{e}");
    assert_eq!(inc.len(), INC_GOLDEN_LEN, "archive length");
    assert_eq!(blake3::hash(&inc).to_hex().as_str(), INC_GOLDEN_BLAKE3);
}
const INC_GOLDEN_LEN: usize = 11743;
const INC_GOLDEN_BLAKE3: &str = "a083f3f4c193966a67224d61e49e52d2d7bfbfbcf7473b9e2ba0e260794fc0ed";

/// A chain as tape holds it: a full backup of a 24 MiB disk in 64 KiB chunks, then three
/// incrementals (overwritten, zeroed, new data), each with its catalog. Returns the archive
/// and catalog of each, and the disk as qemu-img reads it at each.
fn tape_chain(d: &Path) -> (Vec<(PathBuf, PathBuf)>, Vec<PathBuf>) {
    let disk = d.join("disk.vmdk");
    run("qemu-img", &["create", "-q", "-f", "vmdk", s(&disk), "24M"]);
    qemu_io(&disk, &["write -P 0x11 0 8M", "write -P 0x12 16M 2M"]);
    let a = |n: usize| d.join(format!("a{n}.vdar"));
    let c = |n: usize| d.join(format!("a{n}.vcat"));
    let (mut chain, mut wants) = (Vec::new(), Vec::new());
    // Each change with its CBT list. 4 KiB inside a 64 KiB chunk of data is a base patch; the
    // third change patches the chunk the first one patched (a patch over a patch).
    type Change<'a> = (&'a [&'a str], &'a [(u64, u64)]);
    let writes: [Change; 3] = [
        (&["write -P 0x21 4M 4k"], &[(4 << 20, 4096)]),
        (&["write -z 16M 2M"], &[(16 << 20, 2 << 20)]),
        (
            &["write -P 0x23 20M 1M", "write -P 0x24 4100k 4k"],
            &[((4 << 20) + 4096, 4096), (20 << 20, 1 << 20)],
        ),
    ];
    for n in 0..=writes.len() {
        let cbt = d.join(format!("cbt{n}.json"));
        if n == 0 {
            cbt_file(&cbt, "disk.vmdk", "*", "id/0", &[]);
        } else {
            let (cmds, areas) = writes[n - 1];
            qemu_io(&disk, cmds);
            cbt_file(
                &cbt,
                "disk.vmdk",
                &format!("id/{}", n - 1),
                &format!("id/{n}"),
                areas,
            );
        }
        let (out, cat, base) = (a(n), c(n), c(n.saturating_sub(1)));
        let mut args = vec!["backup", s(&disk), "-o", s(&out), "--catalog", s(&cat)];
        args.extend(["--changed-areas", s(&cbt)]);
        if n > 0 {
            args.extend(["--base", s(&base)]);
        } else {
            args.extend(["--chunk-size", "64K"]);
        }
        let b = json(&ok(&[&args[..], &["--json"]].concat()));
        if n == 1 || n == 3 {
            assert_eq!(b["chunks_patched"], 1, "{n}: {b}");
            let l = json(&ok(&["list", s(&out), "--json"]));
            assert_eq!(l["vms"][0]["disks"][0]["base_patches"], 1, "{n}: {l}");
        }
        let want = d.join(format!("want{n}.raw"));
        qemu_raw(&disk, &want);
        wants.push(want);
        chain.push((out, cat));
    }
    // The newest restores through every base, its patch rebuilt over the older patch.
    let bases: Vec<&str> = chain[..3]
        .iter()
        .flat_map(|(a, _)| ["--base", s(a)])
        .collect();
    let to = d.join("all");
    let args = [
        &["restore", s(&chain[3].0), "--to", s(&to), "--json"][..],
        &bases,
    ]
    .concat();
    assert_same_file(&restored(&ok(&args)), &wants[3]);
    let v = json(&ok(
        &[&["verify", s(&chain[3].0), "--json"][..], &bases].concat()
    ));
    assert_eq!(v["ok"], true, "{v}");
    // Given in any order, consolidate takes the newest (the one no other names as its base).
    let cons = d.join("cons.vdar");
    let c_args: Vec<&str> = [3, 0, 2, 1].iter().map(|&n| s(&chain[n].0)).collect();
    ok(&[&["consolidate"][..], &c_args, &["-o", s(&cons)]].concat());
    let two = vdar(&[
        "consolidate",
        s(&chain[0].0),
        s(&chain[2].0),
        "-o",
        s(&d.join("x")),
    ]);
    assert_eq!(two.status.code(), Some(2), "{two:?}");
    assert!(
        String::from_utf8_lossy(&two.stderr).contains("both the newest"),
        "{two:?}"
    );
    let to = d.join("cons");
    assert_same_file(
        &restored(&ok(&["restore", s(&cons), "--to", s(&to), "--json"])),
        &wants[3],
    );
    (chain, wants)
}

/// `DIR/disk.vmdk` of `size` with `write` done, and its full backup in 64 KiB chunks with the
/// change id `id/0`: the start of a CBT chain. Returns the disk and the archive.
fn cbt_full_backup(d: &Path, size: &str, write: &str) -> (PathBuf, PathBuf) {
    let disk = d.join("disk.vmdk");
    run("qemu-img", &["create", "-q", "-f", "vmdk", s(&disk), size]);
    qemu_io(&disk, &[write]);
    let c0 = d.join("c0.json");
    cbt_file(&c0, "disk.vmdk", "*", "id/0", &[]);
    let full = d.join("full.vdar");
    let args = ["backup", s(&disk), "-o", s(&full), "--chunk-size", "64K"];
    ok(&[&args[..], &["--changed-areas", s(&c0)]].concat());
    (disk, full)
}

/// A change its CBT list leaves out, next to one it names in the same chunk: the chunk is a
/// patch that does not rebuild to what was read, and verify and restore say so.
#[test]
fn a_change_the_list_leaves_out_of_a_patched_chunk_is_found() {
    let dir = tempdir();
    let d = dir.path();
    let (disk, full) = cbt_full_backup(d, "8M", "write -P 0x11 0 4M");
    let c1 = d.join("c1.json");
    qemu_io(&disk, &["write -P 0x22 1M 4k", "write -P 0x33 1056k 4k"]);
    cbt_file(&c1, "disk.vmdk", "id/0", "id/1", &[(1 << 20, 4096)]);
    let inc = d.join("inc.vdar");
    let args = [
        "backup",
        s(&disk),
        "-o",
        s(&inc),
        "--base",
        s(&full),
        "--json",
    ];
    let b = json(&ok(&[&args[..], &["--changed-areas", s(&c1)]].concat()));
    assert_eq!(b["chunks_patched"], 1, "{b}");
    let out = vdar(&["verify", s(&inc), "--base", s(&full), "--json"]);
    assert_ne!(out.status.code(), Some(0));
    let v = json(&out);
    assert_eq!(v["ok"], false, "{v}");
    assert!(v.to_string().contains("does not hash"), "{v}");
    let to = d.join("r");
    let out = vdar(&["restore", s(&inc), "--base", s(&full), "--to", s(&to)]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not hash"),
        "{out:?}"
    );
}

/// A chain on tape: each archive read once, from a pipe, oldest first, into a new directory,
/// its bases being the images the pass before wrote (named by the base's catalog).
#[test]
fn a_chain_from_tape_restores_one_archive_at_a_time() {
    let dir = tempdir();
    let d = dir.path();
    let (chain, wants) = tape_chain(d);
    let a = |n: usize| chain[n].0.clone();
    let c = |n: usize| chain[n].1.clone();
    let to = |n: usize| d.join(format!("r{n}"));
    let (r0, a0) = (to(0), a(0));
    let out = vdar_stdin(&["restore", "-", "--to", s(&r0), "--json"], &a0);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_file(&restored(&out), &wants[0]);
    for (n, want) in wants.iter().enumerate().skip(1) {
        let (prev, cat, here, input) = (to(n - 1), c(n - 1), to(n), a(n));
        let args = [
            "restore",
            "-",
            "--to",
            s(&here),
            "--json",
            "--base",
            s(&cat),
            "--base-image",
            s(&prev),
        ];
        let out = vdar_stdin(&args, &input);
        assert!(
            out.status.success(),
            "{n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_same_file(&restored(&out), want);
    }
    // An image changed since its restore is not taken for the base.
    let (x1, x2, a1, a2, c1) = (d.join("x1"), d.join("x2"), a(1), a(2), c(1));
    let img = restored(&ok(&[
        "restore",
        s(&a1),
        "--to",
        s(&x1),
        "--json",
        "--base",
        s(&a0),
    ]));
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"tampered", 0).unwrap();
    let args = [
        "restore",
        "-",
        "--to",
        s(&x2),
        "--base",
        s(&c1),
        "--base-image",
        s(&x1),
    ];
    let out = vdar_stdin(&args, &a2);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("restored in"));
    // A catalog alone holds no chunks.
    let out = vdar(&[
        "restore",
        s(&a(1)),
        "--to",
        s(&d.join("x3")),
        "--base",
        s(&c(0)),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--base-image"));
}

/// The same chain restored in place: the full archive into DIR, then each incremental onto
/// DIR's images (from a pipe, and through the index), the same files updated each time.
#[test]
fn a_chain_from_tape_restores_in_place() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempdir();
    let d = dir.path();
    let (chain, wants) = tape_chain(d);
    let r = d.join("r");
    let img = restored(&vdar_stdin(
        &["restore", "-", "--to", s(&r), "--json"],
        &chain[0].0,
    ));
    let ino = std::fs::metadata(&img).unwrap().ino();
    for n in 1..chain.len() {
        let (input, base_cat) = (&chain[n].0, &chain[n - 1].1);
        let mut args = vec!["restore", "-", "--to", s(&r), "--in-place", "--json"];
        args.extend(["--base", s(base_cat)]);
        let out = if n % 2 == 1 {
            vdar_stdin(&args, input)
        } else {
            args[1] = s(input);
            vdar(&args)
        };
        assert!(
            out.status.success(),
            "{n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(restored(&out), img, "{n}: the same image");
        assert_same_file(&img, &wants[n]);
        assert_eq!(
            std::fs::metadata(&img).unwrap().ino(),
            ino,
            "{n}: updated, not replaced"
        );
        assert!(!r.join(vdar::restore::in_place::MARKER).exists());
    }
    let last = chain.len() - 1;
    // An incremental of another base than what DIR holds is refused, DIR untouched.
    let args = ["restore", s(&chain[1].0), "--to", s(&r), "--in-place"];
    let out = vdar(&[&args[..], &["--base", s(&chain[last].1)]].concat());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds base"),
        "{out:?}"
    );
    assert_same_file(&img, &wants[last]);
    // An apply that did not finish leaves its marker: DIR is refused until restored anew.
    std::fs::write(
        r.join(vdar::restore::in_place::MARKER),
        "the incremental x\n",
    )
    .unwrap();
    let out = vdar(&[&args[..], &["--base", s(&chain[0].1)]].concat());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not finish"),
        "{out:?}"
    );
    // Only raw images of every disk are updated in place.
    let out = vdar(&[&args[..], &["--base", s(&chain[0].1), "--format", "vmdk"]].concat());
    assert_eq!(out.status.code(), Some(2));
}

/// A Ref may name Chunk records only: an incremental whose BaseRef is turned into a Ref to the
/// place of its base patch (every checksum recomputed, so only the rule is broken) is refused
/// by every reader alike.
/// A full backup of a 1 MiB disk in `d` and a CBT incremental holding one base patch (a
/// 4 KiB write at 64 KiB): (full, incremental).
fn one_patch_incremental(d: &Path) -> (PathBuf, PathBuf) {
    let (disk, full) = cbt_full_backup(d, "1M", "write -P 0x11 0 512k");
    let c1 = d.join("c1.json");
    qemu_io(&disk, &["write -P 0x22 64k 4k"]);
    cbt_file(&c1, "disk.vmdk", "id/0", "id/1", &[(64 << 10, 4096)]);
    let inc = d.join("inc.vdar");
    let args = ["backup", s(&disk), "-o", s(&inc), "--base", s(&full)];
    ok(&[&args[..], &["--changed-areas", s(&c1)]].concat());
    (full, inc)
}

#[test]
fn a_ref_to_a_base_patch_is_damage_to_every_reader() {
    use vdar::archive::format::RecordKind;
    use vdar::archive::index::SeekableArchive;
    use vdar::archive::writer::ArchiveWriter;
    let dir = tempdir();
    let d = dir.path();
    let (full, inc) = one_patch_incremental(d);
    // Rewrite it record by record, the BaseRef after the patch made a Ref to the patch.
    let bytes = std::fs::read(&inc).unwrap();
    let mut cur = std::io::Cursor::new(&bytes);
    let mut ar = SeekableArchive::open(&mut cur).unwrap();
    let (m, entries) = (ar.manifest.clone(), ar.index.clone());
    let mut out = Vec::new();
    let mut w = ArchiveWriter::new(&mut out, "bad.vdar", &m, m.level).unwrap();
    let mut patch = None;
    let mut count = 0;
    for e in &entries {
        let (h, raw) = ar.read_raw_entry(e).unwrap().unwrap();
        match h.kind {
            RecordKind::File => {
                let (_, plain) = ar.read_record(e).unwrap().unwrap();
                w.write_file(h.disk, h.offset, &plain).unwrap();
                continue;
            }
            RecordKind::BasePatch => {
                w.write_patch(h.disk, h.offset, h.raw_len, h.digest, &raw)
                    .unwrap();
                patch = Some((h.offset, h.digest));
            }
            RecordKind::BaseRef if patch.is_some() && h.offset > patch.unwrap().0 => {
                let (at, digest) = patch.take().unwrap();
                w.write_ref(h.disk, h.offset, h.raw_len, digest, h.disk, at)
                    .unwrap();
            }
            RecordKind::BaseRef => {
                let src = vdar::archive::reader::decode_ref(&raw).unwrap();
                w.write_base_ref(h.disk, h.offset, h.raw_len, h.digest, src.0, src.1)
                    .unwrap();
            }
            k => panic!("unexpected {k:?}"),
        }
        count += 1;
    }
    assert!(patch.is_none(), "the patch was followed by a BaseRef");
    w.write_disk_end(0, 1 << 20, count).unwrap();
    w.finish().unwrap();
    let bad = d.join("bad.vdar");
    std::fs::write(&bad, &out).unwrap();
    let why = "reference to a base patch";
    let seekable = vdar(&[
        "restore",
        s(&bad),
        "--base",
        s(&full),
        "--to",
        s(&d.join("a")),
    ]);
    assert_eq!(seekable.status.code(), Some(2), "{seekable:?}");
    let piped = vdar_stdin(
        &["restore", "-", "--base", s(&full), "--to", s(&d.join("b"))],
        &bad,
    );
    assert_eq!(piped.status.code(), Some(2), "{piped:?}");
    assert!(
        String::from_utf8_lossy(&piped.stderr).contains(why),
        "{piped:?}"
    );
    let v = vdar(&["verify", s(&bad), "--base", s(&full), "--json"]);
    assert_ne!(v.status.code(), Some(0), "{v:?}");
    assert!(String::from_utf8_lossy(&v.stdout).contains(why), "{v:?}");
    let c = vdar(&["consolidate", s(&full), s(&bad), "-o", s(&d.join("c.vdar"))]);
    assert_eq!(c.status.code(), Some(2), "{c:?}");
    assert!(String::from_utf8_lossy(&c.stderr).contains(why), "{c:?}");
}

/// A patch names its base chunk in its first bytes: damage there must be found in the patch
/// (its own digest) before it sends a reader to another place of the base, so that every reader
/// names the incremental, not the intact base.
#[test]
fn damage_where_a_patch_names_its_base_is_the_patch_archives() {
    use vdar::archive::format::{RecordKind, RECORD_HEADER_BYTES};
    use vdar::archive::index::SeekableArchive;
    let dir = tempdir();
    let d = dir.path();
    let (full, inc) = one_patch_incremental(d);
    let bytes = std::fs::read(&inc).unwrap();
    let at = {
        let mut cur = std::io::Cursor::new(&bytes);
        let ar = SeekableArchive::open(&mut cur).unwrap();
        let e = ar
            .index
            .iter()
            .find(|e| e.kind == RecordKind::BasePatch)
            .unwrap();
        e.record_offset as usize + RECORD_HEADER_BYTES
    };
    // Byte 20 of the payload is inside base_digest; byte 5 inside src_offset.
    for (field, off) in [("base digest", 20), ("base offset", 5)] {
        let mut bad_bytes = bytes.clone();
        bad_bytes[at + off] ^= 0x40;
        let bad = d.join("bad.vdar");
        std::fs::write(&bad, &bad_bytes).unwrap();
        let blames = |o: &std::process::Output| {
            let e = String::from_utf8_lossy(&o.stderr).to_string()
                + &String::from_utf8_lossy(&o.stdout);
            assert!(
                e.contains("base patch")
                    && !e.contains("not the one recorded")
                    && !e.contains("no chunk at"),
                "{field}: {e}"
            );
        };
        let to = |n: &str| d.join(format!("{n}-{off}"));
        let seekable = vdar(&["restore", s(&bad), "--base", s(&full), "--to", s(&to("a"))]);
        assert_eq!(seekable.status.code(), Some(2), "{seekable:?}");
        blames(&seekable);
        let piped = vdar_stdin(
            &["restore", "-", "--base", s(&full), "--to", s(&to("b"))],
            &bad,
        );
        assert_eq!(piped.status.code(), Some(2), "{piped:?}");
        blames(&piped);
        let v = vdar(&["verify", s(&bad), "--base", s(&full), "--json"]);
        assert_ne!(v.status.code(), Some(0), "{v:?}");
        blames(&v);
        let c = vdar(&["consolidate", s(&full), s(&bad), "-o", s(&to("c.vdar"))]);
        assert_eq!(c.status.code(), Some(2), "{c:?}");
        blames(&c);
    }
}

/// Loose disks are a VM named after the top descriptor, which each snapshot changes: an
/// in-place restore of the next incremental renames the VM's directory and updates its image.
#[test]
fn in_place_follows_a_vm_whose_name_changed() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempdir();
    let d = dir.path();
    let a = d.join("a.vmdk");
    run("qemu-img", &["create", "-q", "-f", "vmdk", s(&a), "4M"]);
    qemu_io(&a, &["write -P 0x11 0 2M"]);
    let (full, cat) = (d.join("full.vdar"), d.join("full.vcat"));
    let args = ["backup", s(&a), "-o", s(&full), "--catalog", s(&cat)];
    ok(&[&args[..], &["--chunk-size", "64K"]].concat());
    let b = d.join("b.vmdk");
    let create = [
        "create",
        "-q",
        "-f",
        "vmdk",
        "-b",
        "a.vmdk",
        "-F",
        "vmdk",
        s(&b),
    ];
    run("qemu-img", &create);
    qemu_io(&b, &["write -P 0x22 1M 4k"]);
    let inc = d.join("inc.vdar");
    ok(&["backup", s(&b), "-o", s(&inc), "--base", s(&cat)]);
    let r = d.join("r");
    let img = restored(&vdar_stdin(
        &["restore", "-", "--to", s(&r), "--json"],
        &full,
    ));
    assert!(img.starts_with(r.join("a")), "{}", img.display());
    let ino = std::fs::metadata(&img).unwrap().ino();
    let args = [
        "restore",
        "-",
        "--to",
        s(&r),
        "--in-place",
        "--json",
        "--base",
        s(&cat),
    ];
    let out = vdar_stdin(&args, &inc);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let now = restored(&out);
    assert!(now.starts_with(r.join("b")), "{}", now.display());
    assert!(!r.join("a").exists());
    assert_eq!(
        std::fs::metadata(&now).unwrap().ino(),
        ino,
        "updated, not replaced"
    );
    let want = d.join("want.raw");
    qemu_raw(&b, &want);
    assert_same_file(&now, &want);
}
