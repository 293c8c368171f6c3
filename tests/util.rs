//! Shared helpers for the integration tests: unique temp dirs, running vdar and the oracles.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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

/// `n` xorshift bytes from `seed`: deflate and zstd cannot shrink them.
pub fn noise(n: usize, mut x: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// `qemu-img convert` of a raw image to a monolithicSparse VMDK: a disk no vdar code wrote.
pub fn raw_to_vmdk(raw: &Path, vmdk: &Path) {
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
}

/// A VMDK of `mib` MiB of incompressible bytes (so compressed outputs fill a disk too).
pub fn random_vmdk(dir: &Path, mib: usize) -> PathBuf {
    let raw = dir.join("r.raw");
    std::fs::write(&raw, noise(mib << 20, 0x9e37_79b9_7f4a_7c15)).unwrap();
    let vmdk = dir.join("r.vmdk");
    raw_to_vmdk(&raw, &vmdk);
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

/// `rel` inside `../shared` next to the repository (read-only tools and data shared between
/// projects), or `None`, after printing why, when it is not there.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipped: {} not found", p.display());
        None
    }
}

/// open-vmdk's `vmdk-convert`, VMware's own VMDK reader, built once per test run from
/// `../shared/tools/open-vmdk` next to the repository. `None`, after printing why, when that copy,
/// make or gcc is missing or the build fails (it needs zlib's headers, zlib1g-dev).
pub fn vmdk_convert() -> Option<&'static Path> {
    static TOOL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match TOOL.get_or_init(build_vmdk_convert) {
        Ok(p) => Some(p),
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// Builds `vmdk-convert` from a copy of open-vmdk's `vmdk/` folder (shared/ is read-only) in a
/// fresh directory under the target dir, then moves the binary into place with a rename, so a
/// concurrent run never sees a half-written one.
fn build_vmdk_convert() -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/open-vmdk/vmdk");
    if !src.join("Makefile").is_file() {
        return Err(format!("{} not found", src.join("Makefile").display()));
    }
    for tool in ["make", "gcc"] {
        if !have(tool) {
            return Err(format!(
                "{tool} not installed (needed to build vmdk-convert)"
            ));
        }
    }
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let work = tempfile::Builder::new()
        .prefix("open-vmdk-")
        .tempdir_in(target)
        .map_err(|e| format!("temp dir in {}: {e}", target.display()))?;
    let copy = work.path().join("vmdk");
    std::fs::create_dir(&copy).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(&src).map_err(|e| format!("{}: {e}", src.display()))? {
        let from = entry.map_err(|e| e.to_string())?.path();
        if from.is_file() {
            std::fs::copy(&from, copy.join(from.file_name().unwrap()))
                .map_err(|e| format!("copy {}: {e}", from.display()))?;
        }
    }
    let build = work.path().join("build");
    let out = Command::new("make")
        .arg("-C")
        .arg(&copy)
        .arg(format!("OUTPUTDIR={}", build.display()))
        .output()
        .map_err(|e| format!("make: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        return Err(format!(
            "vmdk-convert did not build (zlib1g-dev missing?): {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    let tool = target.join("vmdk-convert");
    std::fs::rename(build.join("vmdk-convert"), &tool).map_err(|e| e.to_string())?;
    Ok(tool)
}

/// Runs `cmd` and kills it after `limit`. `None` if it had to be killed.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child.wait_with_output().expect("output"))
}

/// `vmdk-convert SRC DST`: VMware's reading of `src` as a raw image at `dst` (whose name must
/// not end in `.vmdk`, which would make it write a stream). Fails when it exits non-zero or runs
/// past a minute: it loops forever on a disk whose partial last grain is allocated (its
/// `SparseNextData` returns the same empty run again), its own streams included.
pub fn vmdk_convert_raw(tool: &Path, src: &Path, dst: &Path) -> Result<(), String> {
    assert_ne!(dst.extension().and_then(|e| e.to_str()), Some("vmdk"));
    let mut cmd = Command::new(tool);
    cmd.arg(src).arg(dst);
    let Some(out) = run_with_timeout(&mut cmd, Duration::from_secs(60)) else {
        return Err(format!("vmdk-convert {} ran past a minute", src.display()));
    };
    if !out.status.success() {
        return Err(format!(
            "vmdk-convert {} failed ({}): {}",
            src.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// A path as the `&str` command arguments take.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `vdar` with `args` and panics with its stderr unless it succeeds.
pub fn ok(args: &[&str]) -> Output {
    let out = vdar(args);
    assert!(
        out.status.success(),
        "vdar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `vdar args` with `input` on stdin; returns the output.
pub fn vdar_stdin(args: &[&str], input: &Path) -> std::process::Output {
    let mut child = Command::new(crate::util::vdar_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut f = std::fs::File::open(input).unwrap();
    // The child may stop reading early (an error): a broken pipe here is its answer.
    let _ = std::io::copy(&mut f, &mut stdin);
    drop(stdin);
    child.wait_with_output().unwrap()
}
