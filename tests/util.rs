//! Shared helpers for the integration tests: unique temp dirs, running vdar and the oracles.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A unique temporary directory, removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("vdar-test-").tempdir().expect("tempdir")
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
    Command::new(vdar_bin()).args(args).output().expect("run vdar")
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
        &["convert", "-O", "raw", src.to_str().unwrap(), dst.to_str().unwrap()],
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

/// Asserts two files have identical bytes, reporting the first difference.
pub fn assert_same_file(a: &Path, b: &Path) {
    let x = std::fs::read(a).expect("read a");
    let y = std::fs::read(b).expect("read b");
    assert_eq!(x.len(), y.len(), "{} and {} differ in length", a.display(), b.display());
    if let Some(i) = x.iter().zip(&y).position(|(p, q)| p != q) {
        panic!("{} and {} differ at byte {i:#x}", a.display(), b.display());
    }
}
