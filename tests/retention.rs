//! Retention on a local directory: `list DIR` inventories archives and catalogs, `prune`
//! keeps what the policy names plus every base a kept incremental needs, deletes the rest
//! with their catalogs (newest first), and stops at an archive it cannot read. The same on
//! an object-store prefix is in tests/s3.rs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::{assert_same_file, qemu_io, qemu_raw, run, s, tempdir, vdar};

const DAY: u64 = 86_400;
/// 2026-12-07 00:00:00 UTC.
const T0: u64 = 1_796_601_600;

/// `vdar backup DISK -o OUT` made at `T0 + day` days (01:00), on `base`, writing `cat`.
fn backup(disk: &Path, out: &Path, day: u64, base: Option<&Path>, cat: Option<&Path>) {
    let mut c = Command::new(crate::util::vdar_bin());
    c.args(["backup", s(disk), "-o", s(out), "-q"]);
    c.env("SOURCE_DATE_EPOCH", (T0 + day * DAY + 3600).to_string());
    if let Some(b) = base {
        c.args(["--base", s(b)]);
    }
    if let Some(k) = cat {
        c.args(["--catalog", s(k)]);
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

fn names(v: &serde_json::Value, field: &str) -> Vec<String> {
    v[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| file_name(d["archive"]["name"].as_str().unwrap()))
        .collect()
}

fn file_name(p: &str) -> String {
    Path::new(p)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// What is left in `dir`, by file name, sorted.
fn left(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A store of two VMs: `web` with two chains (f0 ← i1 ← i2, f3 ← i4, catalogs beside all
/// but f3) and `db` with two fulls (d0, d4); a README, a catalog of an archive kept
/// elsewhere, and an archive being written (`.partial`). Returns the store and the image
/// of web as qemu-img reads it at i4.
fn store(d: &Path) -> (PathBuf, PathBuf) {
    let b = d.join("backups");
    std::fs::create_dir(&b).unwrap();
    let web = d.join("web.vmdk");
    let db = d.join("db.vmdk");
    for disk in [&web, &db] {
        run("qemu-img", &["create", "-q", "-f", "vmdk", s(disk), "4M"]);
        qemu_io(disk, &["write -P 0x11 0 1M"]);
    }
    let a = |n: &str| b.join(format!("{n}.vdar"));
    let c = |n: &str| b.join(format!("{n}.vcat"));
    backup(&web, &a("f0"), 0, None, Some(&c("f0")));
    qemu_io(&web, &["write -P 0x21 1M 64k"]);
    backup(&web, &a("i1"), 1, Some(&c("f0")), Some(&c("i1")));
    qemu_io(&web, &["write -P 0x22 2M 64k"]);
    backup(&web, &a("i2"), 2, Some(&c("i1")), Some(&c("i2")));
    qemu_io(&web, &["write -z 0 64k"]);
    backup(&web, &a("f3"), 3, None, None);
    qemu_io(&web, &["write -P 0x24 3M 64k"]);
    backup(&web, &a("i4"), 4, Some(&a("f3")), Some(&c("i4")));
    backup(&db, &a("d0"), 0, None, None);
    backup(&db, &a("d4"), 4, None, None);
    let elsewhere = d.join("tape.vdar");
    backup(&db, &elsewhere, 5, None, Some(&b.join("on-tape.vcat")));
    std::fs::write(b.join("README"), "nightly backups\n").unwrap();
    std::fs::copy(a("d4"), b.join("d5.vdar.partial")).unwrap();
    let want = d.join("want4.raw");
    qemu_raw(&web, &want);
    (b, want)
}

#[test]
fn prune_keeps_the_policy_and_every_base_a_kept_archive_needs() {
    let dir = tempdir();
    let (b, want) = store(dir.path());
    let inv = json(&crate::util::ok(&["list", s(&b), "--json"]));
    assert_eq!(inv["schema"], "vdar-inventory/1");
    let archives: Vec<String> = inv["archives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| file_name(a["name"].as_str().unwrap()))
        .collect();
    // Oldest first; the .partial is not an archive yet.
    assert_eq!(
        archives,
        ["d0", "f0", "i1", "i2", "f3", "d4", "i4"].map(|n| format!("{n}.vdar"))
    );
    assert_eq!(inv["catalogs"].as_array().unwrap().len(), 5, "{inv}");
    assert_eq!(inv["others"], 1);
    let i4 = &inv["archives"][6];
    assert_eq!(i4["base"]["id"], inv["archives"][4]["id"], "{inv}");
    assert_eq!(file_name(i4["catalogs"][0].as_str().unwrap()), "i4.vcat");
    let human = String::from_utf8(crate::util::ok(&["list", s(&b)]).stdout).unwrap();
    assert!(
        human.contains("7 archives, 5 catalogs, 0 later volumes, 1 other files"),
        "{human}"
    );
    assert!(human.contains("(archive not here)"), "{human}");

    // Keeping the newest three of web keeps i2, and so the chain under it.
    let before = left(&b);
    let dry = json(&crate::util::ok(&[
        "prune",
        s(&b),
        "--keep-last",
        "3",
        "-n",
        "--json",
    ]));
    assert_eq!(dry["dry_run"], true);
    assert!(dry["remove"].as_array().unwrap().is_empty(), "{dry}");
    let reasons = |v: &serde_json::Value, n: &str| -> Vec<String> {
        let k = v["keep"].as_array().unwrap();
        let d = k
            .iter()
            .find(|d| file_name(d["archive"]["name"].as_str().unwrap()) == n);
        let r = d.unwrap_or_else(|| panic!("{n} not kept: {v}"))["reasons"]
            .as_array()
            .unwrap();
        r.iter().map(|x| x.as_str().unwrap().to_string()).collect()
    };
    assert_eq!(reasons(&dry, "i2.vdar"), ["last"]);
    let f0 = reasons(&dry, "f0.vdar");
    // i2 names the whole chain under it; i1, kept for i2, names f0 again.
    assert!(
        f0.len() == 2 && f0.iter().all(|r| r.starts_with("base of ")),
        "{f0:?}"
    );
    assert!(
        f0[0].ends_with("i2.vdar") && f0[1].ends_with("i1.vdar"),
        "{f0:?}"
    );
    assert_eq!(left(&b), before);

    // One a day for the newest day of each VM: i4 (and its base f3), d4.
    let p = json(&crate::util::ok(&[
        "prune",
        s(&b),
        "--keep-daily",
        "1",
        "--json",
    ]));
    assert_eq!(names(&p, "keep"), ["f3.vdar", "d4.vdar", "i4.vdar"]);
    let gone = names(&p, "remove");
    assert_eq!(gone.len(), 4, "{p}");
    let at = |n: &str| gone.iter().position(|g| g == n).unwrap();
    assert!(
        at("i2.vdar") < at("i1.vdar") && at("i1.vdar") < at("f0.vdar"),
        "{gone:?}"
    );
    let cats: Vec<String> = p["deleted"]["catalogs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| file_name(c.as_str().unwrap()))
        .collect();
    assert_eq!(cats, ["i2.vcat", "i1.vcat", "f0.vcat"]);
    assert_eq!(
        left(&b),
        [
            "README",
            "d4.vdar",
            "d5.vdar.partial",
            "f3.vdar",
            "i4.vdar",
            "i4.vcat",
            "on-tape.vcat"
        ]
        .map(String::from)
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    // What is left still restores.
    let to = dir.path().join("r");
    let r = json(&crate::util::ok(&[
        "restore",
        s(&b.join("i4.vdar")),
        "--base",
        s(&b.join("f3.vdar")),
        "--to",
        s(&to),
        "--json",
    ]));
    let img = PathBuf::from(r["disks"][0]["path"].as_str().unwrap());
    assert_same_file(&img, &want);
}

#[test]
fn prune_stops_at_damage_keeps_incomplete_archives_and_needs_a_rule() {
    let dir = tempdir();
    let (b, _) = store(dir.path());
    let i4 = std::fs::read(b.join("i4.vdar")).unwrap();
    // Cut inside its manifest: which bases it needs cannot be told.
    std::fs::write(b.join("cut.vdar"), &i4[..200]).unwrap();
    let before = left(&b);
    let l = vdar(&["list", s(&b)]);
    let out = String::from_utf8_lossy(&l.stdout);
    assert_eq!(l.status.code(), Some(1), "{out}");
    assert!(
        out.contains("DAMAGED archive") && out.contains("cut.vdar"),
        "{out}"
    );
    let p = vdar(&["prune", s(&b), "--keep-last", "1"]);
    let err = String::from_utf8_lossy(&p.stderr);
    assert_eq!(p.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cut.vdar") && err.contains("nothing in"),
        "{err}"
    );
    assert_eq!(left(&b), before);

    // Cut before its footer (a copy still being made): kept, and so is its base.
    std::fs::write(b.join("cut.vdar"), &i4[..i4.len() - 100]).unwrap();
    let p = json(&crate::util::ok(&[
        "prune",
        s(&b),
        "--keep-last",
        "1",
        "--json",
    ]));
    let keep = names(&p, "keep");
    assert!(
        keep.contains(&"cut.vdar".into()) && keep.contains(&"f3.vdar".into()),
        "{p}"
    );
    let cut = p["keep"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| file_name(d["archive"]["name"].as_str().unwrap()) == "cut.vdar");
    assert_eq!(cut.unwrap()["reasons"][0], "incomplete", "{p}");
    assert!(b.join("cut.vdar").exists() && !b.join("f0.vdar").exists());

    let none = vdar(&["prune", s(&b)]);
    let err = String::from_utf8_lossy(&none.stderr);
    assert_eq!(none.status.code(), Some(2), "{err}");
    assert!(err.contains("no keep rule"), "{err}");
}

/// A copy of an archive under another name goes without its catalog while the original
/// stays; a volume set (here an incremental across three files) is listed by its first
/// volume, keeps its base, and its later volumes are never touched.
#[test]
fn copies_keep_their_catalog_and_volume_sets_keep_their_bases() {
    let dir = tempdir();
    let d = dir.path();
    let b = d.join("b");
    std::fs::create_dir(&b).unwrap();
    let disk = d.join("d.vmdk");
    run("qemu-img", &["create", "-q", "-f", "vmdk", s(&disk), "4M"]);
    crate::util::qemu_io(&disk, &["write -P 0x11 0 3M"]);
    backup(&disk, &b.join("f.vdar"), 0, None, Some(&b.join("f.vcat")));
    backup(&disk, &b.join("g.vdar"), 1, None, None);
    std::fs::copy(b.join("g.vdar"), b.join("g-copy.vdar")).unwrap();
    // 3 MiB that do not compress, so the incremental spans volumes.
    let noise = d.join("noise");
    std::fs::write(&noise, crate::util::noise(3 << 20, 0x1234)).unwrap();
    crate::util::qemu_io(&disk, &[&format!("write -s {} 0 3M", s(&noise))]);
    // The incremental of f, on 1 MiB volumes (the full ones moved away as vol.1, vol.2 …).
    let mut c = Command::new(crate::util::vdar_bin());
    c.args(["backup", s(&disk), "-q", "--volume-size", "1M", "-o"]);
    c.arg(b.join("vol"));
    c.args(["--base", s(&b.join("f.vcat")), "--next-volume"]);
    c.arg(r#"mv "$VDAR_DEVICE" "$VDAR_DEVICE.$((VDAR_VOLUME - 1))""#);
    c.env("SOURCE_DATE_EPOCH", (T0 + 2 * DAY).to_string());
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let volumes = 1 + std::fs::read_dir(&b)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("vol.")
        })
        .count();
    assert!(volumes >= 3, "{volumes} volumes");
    std::fs::rename(b.join("vol"), b.join(format!("vol.{volumes}"))).unwrap();
    std::fs::copy(b.join("f.vcat"), b.join("g.vcat")).unwrap();

    let inv = json(&crate::util::ok(&["list", s(&b), "--json"]));
    let set = inv["archives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["volume_set"].is_string());
    let set = set.unwrap_or_else(|| panic!("no volume set listed: {inv}"));
    assert_eq!(file_name(set["name"].as_str().unwrap()), "vol.1");
    assert_eq!(set["base"]["id"], inv["archives"][0]["id"], "{inv}");
    assert_eq!(
        inv["volumes"].as_array().unwrap().len(),
        volumes - 1,
        "{inv}"
    );

    // Newest per day: the set (day 2), g and its copy (day 1, the newest name of the two),
    // and f, the set's base. The other copy of g goes, and no catalog with it.
    let p = json(&crate::util::ok(&[
        "prune",
        s(&b),
        "--keep-daily",
        "2",
        "--json",
    ]));
    let reasons = |n: &str| -> String {
        let k = p["keep"].as_array().unwrap();
        let d = k
            .iter()
            .find(|d| file_name(d["archive"]["name"].as_str().unwrap()) == n);
        d.unwrap_or_else(|| panic!("{n} not kept: {p}"))["reasons"].to_string()
    };
    assert!(reasons("vol.1").contains("volume set"), "{p}");
    assert!(reasons("f.vdar").contains("base of"), "{p}");
    assert_eq!(names(&p, "remove").len(), 1, "{p}");
    assert!(
        p["deleted"]["catalogs"].as_array().unwrap().is_empty(),
        "{p}"
    );
    let left = left(&b);
    for n in ["f.vdar", "f.vcat", "g.vcat"] {
        assert!(left.contains(&n.to_string()), "{n} deleted: {left:?}");
    }
    for n in 1..=volumes {
        assert!(
            left.contains(&format!("vol.{n}")),
            "volume {n} deleted: {left:?}"
        );
    }
    assert_eq!(left.len(), 4 + volumes, "{left:?}");
}
