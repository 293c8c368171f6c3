//! VMDK files written by VMware products (../shared/data/real-vmdk: vmware-vdiskmanager and ESX
//! output, with the sha256 of qemu-img's reading of each in SHA256SUMS.qemu-img): `vdar cat`
//! reads each as qemu-img does; backed up and restored in every format, each result reads back
//! through qemu-img, and the sparse, stream and OVA ones through VMware's vmdk-convert
//! (tests/oracle_vmware.rs), with that same sha256.
//!
//! Skips, with the reason printed, when ../shared is absent; without vmdk-convert only qemu-img
//! reads the results.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::util::*;

fn sha256(p: &Path) -> String {
    let d = Sha256::digest(fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// `vdar ARGS`; the failure as text instead of a panic, so one file's trouble does not hide the
/// others'.
fn try_vdar(args: &[&str]) -> Result<Vec<u8>, String> {
    let out = vdar(args);
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "vdar {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The one disk image a `restore --json` report names.
fn restored(report: &[u8]) -> PathBuf {
    let v: serde_json::Value = serde_json::from_slice(report).expect("restore --json");
    let disks = v["disks"].as_array().expect("disks");
    assert_eq!(disks.len(), 1, "{v}");
    PathBuf::from(disks[0]["path"].as_str().unwrap())
}

/// Everything one real file must pass; each failure is one line of the returned list.
fn check(file: &Path, want: &str, tool: Option<&Path>, work: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    // The failure line when `got` is not the qemu-img reading's hash.
    let differs =
        |what: String, got: String| (got != want).then(|| format!("{what}: sha256 {got}"));
    let cat = work.join("cat.raw");
    match try_vdar(&["cat", s(file), "-o", s(&cat)]) {
        Ok(_) => bad.extend(differs("vdar cat".into(), sha256(&cat))),
        Err(e) => return vec![e],
    }
    let a = work.join("a.vdar");
    if let Err(e) = try_vdar(&["backup", s(file), "-o", s(&a)]) {
        return vec![e];
    }
    for format in ["raw", "vmdk", "sparse", "stream", "ova"] {
        let to = work.join(format);
        let report = match try_vdar(&[
            "restore",
            s(&a),
            "--to",
            s(&to),
            "--format",
            format,
            "--json",
        ]) {
            Ok(r) => r,
            Err(e) => {
                bad.push(e);
                continue;
            }
        };
        let mut img = restored(&report);
        if format == "raw" {
            bad.extend(differs("restore --format raw".into(), sha256(&img)));
            continue;
        }
        if format == "ova" {
            // The OVA's one disk, `<vm>-disk1.vmdk`.
            let vm = img.file_stem().unwrap().to_str().unwrap().to_string();
            run("tar", &["-xf", s(&img), "-C", s(&to)]);
            img = to.join(format!("{vm}-disk1.vmdk"));
        }
        let back = work.join("back.raw");
        qemu_raw(&img, &back);
        bad.extend(differs(
            format!("qemu-img of --format {format}"),
            sha256(&back),
        ));
        // vmdk-convert reads no descriptor files, so not the ESX layout of --format vmdk.
        if let (Some(tool), false) = (tool, format == "vmdk") {
            match vmdk_convert_raw(tool, &img, &back) {
                Ok(()) => bad.extend(differs(
                    format!("vmdk-convert of --format {format}"),
                    sha256(&back),
                )),
                Err(e) => bad.push(e),
            }
        }
    }
    bad
}

/// Issue 14 item 3: every top file in SHA256SUMS.qemu-img, through `cat`, backup and the five
/// restore formats, read back by qemu-img and vmdk-convert.
#[test]
fn r14_real_vmware_files_survive_backup_and_every_restore_format() {
    require!("qemu-img");
    let Some(dir) = shared("data/real-vmdk") else {
        return;
    };
    let tool = vmdk_convert();
    let sums = fs::read_to_string(dir.join("SHA256SUMS.qemu-img")).unwrap();
    let mut bad = Vec::new();
    let mut files = 0;
    for line in sums.lines().filter(|l| !l.trim().is_empty()) {
        let (want, name) = line.split_once("  ").expect("`sha256  name` lines");
        let work = tempdir();
        for b in check(&dir.join(name), want, tool, work.path()) {
            bad.push(format!("{name}: {b}"));
        }
        files += 1;
    }
    assert!(files >= 5, "{files} files in SHA256SUMS.qemu-img");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
