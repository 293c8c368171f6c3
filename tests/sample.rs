//! The bundled sample VM (tests/data/sample-vm.tar.gz): its chains collapse exactly as qemu-img
//! reads them, and .vmx / .vmsd selection picks the right top layer.

use std::path::{Path, PathBuf};

use crate::util::*;

/// Extracts the sample VM into `dir` and returns the VM folder.
pub fn extract_sample(dir: &Path) -> PathBuf {
    let tgz = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sample-vm.tar.gz");
    run(
        "tar",
        &["-xzf", tgz.to_str().unwrap(), "-C", dir.to_str().unwrap()],
    );
    dir.join("sample-vm")
}

#[test]
fn sample_chain_links_match_qemu() {
    require!("qemu-img");
    let d = tempdir();
    let vm = extract_sample(d.path());
    for top in ["sample-000002.vmdk", "sample-000001.vmdk", "sample.vmdk"] {
        let ours = d.path().join("ours.raw");
        let theirs = d.path().join("qemu.raw");
        let desc = vm.join(top);
        let out = vdar(&[
            "cat",
            desc.to_str().unwrap(),
            "-o",
            ours.to_str().unwrap(),
            "--force",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        qemu_raw(&desc, &theirs);
        assert_same_file(&ours, &theirs);
    }
}

#[test]
fn vmx_selects_current_or_snapshot_chain() {
    let d = tempdir();
    let vm = extract_sample(d.path());
    let vmx = vm.join("sample.vmx");
    let inspect = |extra: &[&str]| {
        let mut args = vec!["inspect", "--json"];
        args.extend_from_slice(extra);
        args.push(vmx.to_str().unwrap());
        let out = vdar(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let cur = inspect(&[]);
    assert_eq!(cur["disks"][0]["name"], "scsi0:0");
    assert_eq!(cur["disks"][0]["chain"].as_array().unwrap().len(), 3);
    assert_eq!(cur["disks"][0]["chain"][0]["format"], "seSparse");
    assert_eq!(cur["disks"][0]["chain"][1]["format"], "vmfsSparse");
    let latest = inspect(&["--snapshot", "latest"]);
    assert_eq!(latest["disks"][0]["chain"].as_array().unwrap().len(), 2);
    let first = inspect(&["--snapshot", "before-patch"]);
    assert_eq!(first["disks"][0]["chain"].as_array().unwrap().len(), 1);
    let out = vdar(&["inspect", "--snapshot", "nope", vmx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("before-patch"));
}

#[test]
fn powered_on_vm_warns() {
    let d = tempdir();
    let vm = extract_sample(d.path());
    std::fs::write(vm.join("sample-1a2b.vswp"), b"").unwrap();
    let out = vdar(&["inspect", vm.join("sample.vmx").to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("powered on"));
}
