//! Shared helpers for the integration tests: unique temp dirs, running vdar and the oracles.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A unique temporary directory, removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vdar-test-")
        .tempdir()
        .expect("tempdir")
}

/// Path of the vdar binary under test.
pub fn vdar_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vdar"))
}

/// Path of the fixture generator binary.
pub fn fixture_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vdar-fixture"))
}

/// Runs `vdar` with `args` and returns its output (not asserting success).
pub fn vdar(args: &[&str]) -> Output {
    Command::new(vdar_bin())
        .args(args)
        .output()
        .expect("run vdar")
}

/// Runs a command and panics with its stderr if it fails.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Whether an external tool is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Skips the calling test (returns true) with a printed reason when `tool` is missing.
#[macro_export]
macro_rules! require {
    ($tool:expr) => {
        if !$crate::util::have($tool) {
            eprintln!("skipped: {} not installed", $tool);
            return;
        }
    };
}

/// `qemu-img convert -O raw src dst`: the collapsed-chain oracle.
pub fn qemu_raw(src: &Path, dst: &Path) {
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "raw",
            src.to_str().unwrap(),
            dst.to_str().unwrap(),
        ],
    );
}

/// `qemu-io -f vmdk -c CMD...` on `img`.
pub fn qemu_io(img: &Path, cmds: &[&str]) {
    let mut args = vec!["-f", "vmdk"];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(img.to_str().unwrap());
    run("qemu-io", &args);
}

/// The data regions of a file (SEEK_DATA/SEEK_HOLE), as `(start, end)` pairs.
pub fn data_regions(f: &std::fs::File) -> Vec<(u64, u64)> {
    use rustix::fs::{seek, SeekFrom};
    let len = f.metadata().unwrap().len();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < len {
        let start = match seek(f, SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(_) => break,
        };
        let end = seek(f, SeekFrom::Hole(start)).unwrap_or(len).min(len);
        out.push((start, end));
        pos = end;
    }
    out
}

/// Asserts two files have identical bytes, reporting the first difference. Only the union of
/// both files' data regions is read: holes in both are zeros in both.
pub fn assert_same_file(a: &Path, b: &Path) {
    use std::os::unix::fs::FileExt;
    let fa = std::fs::File::open(a).expect("open a");
    let fb = std::fs::File::open(b).expect("open b");
    let (la, lb) = (fa.metadata().unwrap().len(), fb.metadata().unwrap().len());
    assert_eq!(
        la,
        lb,
        "{} and {} differ in length",
        a.display(),
        b.display()
    );
    let mut regions = data_regions(&fa);
    regions.extend(data_regions(&fb));
    regions.sort();
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut done = 0u64;
    for (s, e) in regions {
        let mut pos = s.max(done);
        while pos < e {
            let n = ((e - pos) as usize).min(x.len());
            fa.read_exact_at(&mut x[..n], pos).unwrap();
            fb.read_exact_at(&mut y[..n], pos).unwrap();
            if let Some(i) = x[..n].iter().zip(&y[..n]).position(|(p, q)| p != q) {
                panic!(
                    "{} and {} differ at byte {:#x}",
                    a.display(),
                    b.display(),
                    pos + i as u64
                );
            }
            pos += n as u64;
        }
        done = done.max(e);
    }
}

/// A VMDK of `mib` MiB of incompressible bytes (so compressed outputs fill a disk too).
pub fn random_vmdk(dir: &Path, mib: usize) -> PathBuf {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..mib << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    let raw = dir.join("r.raw");
    std::fs::write(&raw, bytes).unwrap();
    let vmdk = dir.join("r.vmdk");
    run(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "vmdk",
            raw.to_str().unwrap(),
            vmdk.to_str().unwrap(),
        ],
    );
    vmdk
}

/// The image path of each disk in a `vdar restore --json` report, keyed by (VM, disk).
pub fn restored_images(report: &[u8]) -> std::collections::HashMap<(String, String), PathBuf> {
    let v: serde_json::Value = serde_json::from_slice(report).expect("restore --json report");
    v["disks"]
        .as_array()
        .expect("disks")
        .iter()
        .map(|d| {
            let key = (
                d["vm"].as_str().unwrap().to_string(),
                d["disk"].as_str().unwrap().to_string(),
            );
            (key, PathBuf::from(d["path"].as_str().unwrap()))
        })
        .collect()
}
