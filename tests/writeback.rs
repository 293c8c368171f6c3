//! SAN write-back (`vdar restore ARCHIVE --blockmap MAP --lun …`): a small VM (flat base +
//! COWD delta) is backed up, an eager-zeroed target flat disk of the same capacity is laid out
//! by the LUN rig (all runs `data`, free LV blocks filled with 0xA5 markers), and the archive is
//! written into it. Checks: the target read back through the map equals `qemu-img convert` of
//! the original chain; the same bytes reassembled from the LUN images with the rig's own
//! placement (not the code under test); LUN bytes outside the target's runs unchanged byte for
//! byte; pipe input; io_uring and pread give identical LUN images; refusals leave the LUNs
//! untouched; `--assume-zeroed` on a dirty target is caught by the read-back.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::*;

/// Disk capacity of the fixture VM.
const CAP: u64 = 12 << 20;

/// The fixture: VM folder with `src.vmdk` (flat) + `src-000001.vmdk` (COWD delta), its archive,
/// and a rig of the target VM (`target.vmdk` + zero `target-flat.vmdk`, and `other-flat.vmdk`
/// of 3 MiB with data so the map holds several files).
struct Fx {
    dir: tempfile::TempDir,
    vm: PathBuf,
    archive: PathBuf,
    rig: PathBuf,
}

impl Fx {
    fn top(&self) -> PathBuf {
        self.vm.join("src-000001.vmdk")
    }
    fn map(&self) -> PathBuf {
        self.rig.join("blockmap.json")
    }
    fn luns(&self) -> Vec<PathBuf> {
        vec![self.rig.join("lun0.img"), self.rig.join("lun1.img")]
    }
    fn glob(&self) -> String {
        format!("{}/lun*.img", self.rig.display())
    }
}

fn fx() -> Fx {
    let dir = tempdir();
    let vm = dir.path().join("vm");
    let tgt = dir.path().join("tgt");
    std::fs::create_dir_all(&vm).unwrap();
    std::fs::create_dir_all(&tgt).unwrap();
    let fix = |args: &[&str]| run(fixture_bin().to_str().unwrap(), args);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    fix(&[
        "flat",
        &s(&vm.join("src")),
        "12M",
        "D:0:2M:1",
        "D:5M:1536K:2",
        "F:9M:64K:5a",
    ]);
    fix(&[
        "delta",
        "cowd",
        &s(&vm.join("src-000001")),
        &s(&vm.join("src.vmdk")),
        "D:1M:512K:3",
        "D:8M:2M:4",
    ]);
    let archive = dir.path().join("a.vdar");
    ok(&vdar(&[
        "backup",
        &s(&vm.join("src-000001.vmdk")),
        "-o",
        &s(&archive),
        "--chunk-size",
        "1M",
    ]));
    fix(&["flat", &s(&tgt.join("target")), "12M"]);
    fix(&["flat", &s(&tgt.join("other")), "3M", "D:0:3M:9"]);
    let rig = dir.path().join("rig");
    fix(&[
        "lun-rig",
        &s(&tgt),
        &s(&rig),
        "--pe",
        "2M",
        "--block",
        "64K",
        "--eager-zeroed",
        "--fill-free",
        "0xA5",
    ]);
    Fx {
        dir,
        vm,
        archive,
        rig,
    }
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "vdar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fails_with(out: &Output, code: i32, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "unexpected exit: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
    err
}

/// `vdar restore ARCHIVE --blockmap MAP --lun LUNS… EXTRA…` with `env`.
fn writeback(
    archive: &str,
    map: &Path,
    luns: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mut c = Command::new(vdar_bin());
    c.args(["restore", archive, "--blockmap", map.to_str().unwrap()]);
    c.args(extra);
    c.args(["--lun", luns]);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run vdar")
}

/// The oracle: the original chain as raw bytes (qemu-img, or vdar cat without it).
fn oracle(f: &Fx) -> Vec<u8> {
    let raw = f.dir.path().join("oracle.raw");
    if have("qemu-img") {
        qemu_raw(&f.top(), &raw);
    } else {
        eprintln!("qemu-img not installed: oracle is vdar cat of the files");
        ok(&vdar(&[
            "cat",
            f.top().to_str().unwrap(),
            "-o",
            raw.to_str().unwrap(),
        ]));
    }
    std::fs::read(&raw).unwrap()
}

/// The rig's placement: PE size, and per PE (LUN index, device offset).
fn placement(rig: &Path) -> (u64, Vec<(usize, u64)>) {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rig.join("placement.json")).unwrap()).unwrap();
    let pes = v["pes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_u64().unwrap()))
        .collect();
    (v["peBytes"].as_u64().unwrap(), pes)
}

/// Device ranges (LUN index, device offset, length, file offset) of the mapped file whose path
/// ends with `name`, computed from the map JSON and the rig's placement only.
fn device_ranges(rig: &Path, map: &Path, name: &str) -> Vec<(usize, u64, u64, u64)> {
    let (pe, pes) = placement(rig);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(map).unwrap()).unwrap();
    let f = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with(name))
        .unwrap();
    let mut out = Vec::new();
    for r in f["runs"].as_array().unwrap() {
        assert_eq!(r["kind"], "data", "eager-zeroed target has only data runs");
        let (off, len, lv) = (
            r["off"].as_u64().unwrap(),
            r["len"].as_u64().unwrap(),
            r["lv"].as_u64().unwrap(),
        );
        let mut done = 0;
        while done < len {
            let l = lv + done;
            let (lun, dev) = pes[(l / pe) as usize];
            let n = (pe - l % pe).min(len - done);
            out.push((lun, dev + l % pe, n, off + done));
            done += n;
        }
    }
    out
}

/// The target file reassembled from the LUN images with the rig's placement.
fn reassemble(f: &Fx, luns: &[PathBuf]) -> Vec<u8> {
    let files: Vec<std::fs::File> = luns
        .iter()
        .map(|p| std::fs::File::open(p).unwrap())
        .collect();
    let mut img = vec![0u8; CAP as usize];
    for (lun, dev, len, off) in device_ranges(&f.rig, &f.map(), "target-flat.vmdk") {
        files[lun]
            .read_exact_at(&mut img[off as usize..(off + len) as usize], dev)
            .unwrap();
    }
    img
}

/// Asserts that `after` equals `before` outside the target's device ranges of LUN `lun`.
fn unchanged_outside(f: &Fx, lun: usize, before: &[u8], after: &[u8]) {
    assert_eq!(before.len(), after.len());
    let mut inside: Vec<(u64, u64)> = device_ranges(&f.rig, &f.map(), "target-flat.vmdk")
        .into_iter()
        .filter(|r| r.0 == lun)
        .map(|r| (r.1, r.1 + r.2))
        .collect();
    inside.sort();
    let mut pos = 0u64;
    for (s, e) in inside.into_iter().chain([(before.len() as u64, 0)]) {
        let (a, b) = (
            &before[pos as usize..s as usize],
            &after[pos as usize..s as usize],
        );
        if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
            panic!(
                "LUN {lun}: byte {:#x} outside the target changed",
                pos + i as u64
            );
        }
        pos = pos.max(e);
    }
}

fn read_luns(f: &Fx) -> Vec<Vec<u8>> {
    f.luns().iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn writeback_equals_chain_and_touches_only_the_target() {
    let f = fx();
    let want = oracle(&f);
    assert_eq!(want.len() as u64, CAP);
    let before = read_luns(&f);
    // Before: the target is zeros, and the free LV blocks hold the rig's markers.
    assert!(reassemble(&f, &f.luns()).iter().all(|&b| b == 0));
    assert!(before[1].contains(&0xA5));
    let out = writeback(
        f.archive.to_str().unwrap(),
        &f.map(),
        &f.glob(),
        &["--json"],
        &[],
    );
    ok(&out);
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(rep["target"]
        .as_str()
        .unwrap()
        .ends_with("target-flat.vmdk"));
    assert_eq!(rep["verified_bytes"].as_u64(), Some(CAP));
    assert_eq!(rep["zero_bytes_skipped"].as_u64(), Some(0));
    assert!(rep["zero_bytes_written"].as_u64().unwrap() > 0, "{rep}");
    assert!(rep["probes_checked"].as_u64().unwrap() >= 1, "{rep}");
    // (2) Reassembled from the LUN images independently.
    let got = reassemble(&f, &f.luns());
    assert!(got == want, "reassembled target differs from the chain");
    // (1) Read back through the block map with `vdar cat` (the map embeds target.vmdk). The
    // host's probes hashed the fresh disk, so they now fail, as they should: read with a map
    // without them.
    let out = vdar(&[
        "cat",
        "-o",
        "/dev/null",
        "--blockmap",
        f.map().to_str().unwrap(),
        "--lun",
        &f.glob(),
        "--",
        "target.vmdk",
    ]);
    fails_with(&out, 2, &["probe", "target-flat.vmdk", "before copy"]);
    let map = edit_map(&f, |m| {
        for file in m["files"].as_array_mut().unwrap() {
            file["probes"] = serde_json::json!([]);
        }
    });
    let cat = f.dir.path().join("cat.raw");
    ok(&vdar(&[
        "cat",
        "-o",
        cat.to_str().unwrap(),
        "--blockmap",
        map.to_str().unwrap(),
        "--lun",
        &f.glob(),
        "--",
        "target.vmdk",
    ]));
    assert!(std::fs::read(&cat).unwrap() == want);
    // (3) Nothing outside the target's runs changed, on either LUN.
    let after = read_luns(&f);
    for lun in 0..2 {
        unchanged_outside(&f, lun, &before[lun], &after[lun]);
    }
}

#[test]
fn writeback_from_a_pipe_and_pread_uring_agree() {
    let f = fx();
    let want = oracle(&f);
    let pristine = read_luns(&f);
    // (5) From a pipe: backup to stdout straight into the write-back, zeros assumed, O_DIRECT.
    let sh = format!(
        "{vdar} backup {top} -o - --chunk-size 1M | {vdar} restore - --blockmap {map} --lun \
         '{glob}' --assume-zeroed --direct --queue-depth 4",
        vdar = vdar_bin().display(),
        top = f.top().display(),
        map = f.map().display(),
        glob = f.glob(),
    );
    let out = Command::new("sh").args(["-c", &sh]).output().unwrap();
    ok(&out);
    assert!(reassemble(&f, &f.luns()) == want);
    // (6) io_uring vs pread on two fresh copies of the rig: identical LUN images.
    let mut images = Vec::new();
    for backend in ["uring", "pread"] {
        let d = f.dir.path().join(backend);
        std::fs::create_dir_all(&d).unwrap();
        for (k, img) in pristine.iter().enumerate() {
            std::fs::write(d.join(format!("lun{k}.img")), img).unwrap();
        }
        let glob = format!("{}/lun*.img", d.display());
        let env: &[(&str, &str)] = if backend == "pread" {
            &[("VDAR_IO_BACKEND", "pread")]
        } else {
            &[]
        };
        ok(&writeback(
            f.archive.to_str().unwrap(),
            &f.map(),
            &glob,
            &["--queue-depth", "64"],
            env,
        ));
        let luns: Vec<PathBuf> = (0..2).map(|k| d.join(format!("lun{k}.img"))).collect();
        assert!(reassemble(&f, &luns) == want, "{backend}");
        images.push(
            luns.iter()
                .map(|p| std::fs::read(p).unwrap())
                .collect::<Vec<_>>(),
        );
    }
    assert!(
        images[0] == images[1],
        "io_uring and pread LUN images differ"
    );
}

/// Edits the rig's block map with `e` and writes it to `edited.json`.
fn edit_map(f: &Fx, e: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.map()).unwrap()).unwrap();
    e(&mut m);
    let p = f.rig.join("edited.json");
    std::fs::write(&p, serde_json::to_vec(&m).unwrap()).unwrap();
    p
}

fn target_index(m: &serde_json::Value) -> usize {
    m["files"]
        .as_array()
        .unwrap()
        .iter()
        .position(|f| f["path"].as_str().unwrap().ends_with("target-flat.vmdk"))
        .unwrap()
}

#[test]
fn writeback_refusals_leave_the_luns_untouched() {
    let f = fx();
    let before = read_luns(&f);
    let a = f.archive.to_str().unwrap();
    let glob = f.glob();
    // A tbz run (lazy-zeroed thick) in the target.
    let map = edit_map(&f, |m| {
        let i = target_index(m);
        m["files"][i]["runs"][1]["kind"] = "tbz".into();
    });
    fails_with(
        &writeback(a, &map, &glob, &[], &[]),
        2,
        &[
            "target-flat.vmdk",
            "to-be-zeroed",
            "eagerzeroedthick",
            "bytes 0x",
        ],
    );
    // A hole run (thin).
    let map = edit_map(&f, |m| {
        let i = target_index(m);
        let r = &mut m["files"][i]["runs"][0];
        r["kind"] = "hole".into();
        r.as_object_mut().unwrap().remove("lv");
    });
    fails_with(
        &writeback(a, &map, &glob, &[], &[]),
        2,
        &[
            "target-flat.vmdk",
            "bytes 0x0..",
            "hole",
            "eagerzeroedthick",
        ],
    );
    // Size mismatch: the 3 MiB file asked for by name.
    fails_with(
        &writeback(a, &f.map(), &glob, &["--target", "other-flat.vmdk"], &[]),
        2,
        &["other-flat.vmdk", "3145728", "12582912"],
    );
    // Two flat files of the disk's size: the choice is the user's.
    let map = edit_map(&f, |m| {
        let i = target_index(m);
        let mut copy = m["files"][i].clone();
        copy["path"] = "[rigds] vm/copy-flat.vmdk".into();
        m["files"].as_array_mut().unwrap().push(copy);
    });
    fails_with(&writeback(a, &map, &glob, &[], &[]), 2, &["--target"]);
    // Probe mismatch: checked before any write.
    let map = edit_map(&f, |m| {
        let i = target_index(m);
        m["files"][i]["probes"][0]["sha256"] = "00".repeat(32).into();
    });
    fails_with(
        &writeback(a, &map, &glob, &[], &[]),
        2,
        &["probe", "target-flat.vmdk", "before write"],
    );
    // An archive with two disks and no --disk.
    let two = f.dir.path().join("two.vdar");
    ok(&vdar(&[
        "backup",
        f.top().to_str().unwrap(),
        f.vm.join("src.vmdk").to_str().unwrap(),
        "-o",
        two.to_str().unwrap(),
    ]));
    fails_with(
        &writeback(two.to_str().unwrap(), &f.map(), &glob, &[], &[]),
        2,
        &["2 disks selected", "--vm/--disk"],
    );
    assert!(
        read_luns(&f) == before,
        "a refused write-back changed a LUN"
    );
    // With --disk it goes through.
    ok(&writeback(
        two.to_str().unwrap(),
        &f.map(),
        &glob,
        &["--disk", "src.vmdk"],
        &[],
    ));
}

#[test]
fn assume_zeroed_on_a_dirty_target_is_caught_by_the_readback() {
    let f = fx();
    ok(&writeback(
        f.archive.to_str().unwrap(),
        &f.map(),
        &f.glob(),
        &[],
        &[],
    ));
    // A second disk whose zero ranges cover the first one's data: with --assume-zeroed the old
    // bytes stay, and the read-back says where. The host's probes hashed the fresh disk, so the
    // map for a reused disk carries none.
    let blank = f.dir.path().join("blank");
    std::fs::create_dir_all(&blank).unwrap();
    run(
        fixture_bin().to_str().unwrap(),
        &[
            "flat",
            blank.join("b").to_str().unwrap(),
            "12M",
            "D:11M:64K:5",
        ],
    );
    let b = f.dir.path().join("b.vdar");
    ok(&vdar(&[
        "backup",
        blank.join("b.vmdk").to_str().unwrap(),
        "-o",
        b.to_str().unwrap(),
    ]));
    let map = edit_map(&f, |m| {
        for file in m["files"].as_array_mut().unwrap() {
            file["probes"] = serde_json::json!([]);
        }
    });
    let out = writeback(
        b.to_str().unwrap(),
        &map,
        &f.glob(),
        &["--assume-zeroed"],
        &[],
    );
    fails_with(
        &out,
        1,
        &["VERIFY FAILED", "not zero", "lun", "device byte 0x"],
    );
    // The safe default writes the zeros.
    ok(&writeback(b.to_str().unwrap(), &map, &f.glob(), &[], &[]));
    let got = reassemble(&f, &f.luns());
    let mut want = vec![0u8; CAP as usize];
    let bf = std::fs::read(blank.join("b-flat.vmdk")).unwrap();
    want.copy_from_slice(&bf);
    assert!(got == want);
}
