//! What a backup takes (issue 15): every file given is kept even when names clash, disks are
//! picked with `--disk`/`--exclude-disk`, the powered-on warning is said once, and `cat` reads
//! a .vmx by the same selection as backup.

use std::fs;
use std::path::{Path, PathBuf};

use crate::sample::extract_sample;
use crate::util::*;

/// A monolithicFlat disk `dir/name` of 1 MiB of noise from `seed`; returns its bytes.
fn flat_disk(dir: &Path, name: &str, seed: u64) -> Vec<u8> {
    fs::create_dir_all(dir).unwrap();
    let desc = dir.join(name);
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=monolithicFlat",
            s(&desc),
            "1M",
        ],
    );
    let bytes = noise(1 << 20, seed);
    let flat = dir.join(name.replace(".vmdk", "-flat.vmdk"));
    fs::write(flat, &bytes).unwrap();
    bytes
}

/// `vdar restore --format raw --json` of `archive` into `to`: the image of each (VM, disk).
fn restore_raw(archive: &Path, to: &Path) -> std::collections::HashMap<(String, String), PathBuf> {
    let out = ok(&["restore", s(archive), "--to", s(to), "--json"]);
    restored_images(&out.stdout)
}

fn key(vm: &str, disk: &str) -> (String, String) {
    (vm.to_string(), disk.to_string())
}

/// A VM whose two disks sit on two datastores under one file name (`ds1/web/web.vmdk`, named
/// relatively, and `ds2/web/web.vmdk`, named absolutely): the backup kept one descriptor and
/// dropped the other without a word.
#[test]
fn r15_same_descriptor_name_on_two_datastores_keeps_both() {
    let d = tempdir();
    let (ds1, ds2) = (d.path().join("ds1/web"), d.path().join("ds2/web"));
    let one = flat_disk(&ds1, "web.vmdk", 1);
    let two = flat_disk(&ds2, "web.vmdk", 2);
    let abs = fs::canonicalize(ds2.join("web.vmdk")).unwrap();
    let vmx = ds1.join("web.vmx");
    fs::write(
        &vmx,
        format!(
            "displayName = \"web\"\nscsi0.present = \"TRUE\"\n\
             scsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"web.vmdk\"\n\
             scsi0:1.present = \"TRUE\"\nscsi0:1.fileName = \"{}\"\n",
            abs.display()
        ),
    )
    .unwrap();
    let a = d.path().join("a.vdar");
    ok(&["backup", s(&vmx), "-o", s(&a)]);
    // The renamed descriptor's original path is in the manifest (uncompressed JSON up front).
    let archive = String::from_utf8_lossy(&fs::read(&a).unwrap()).into_owned();
    assert!(
        archive.contains(&format!("\"source\": \"{}\"", abs.display())),
        "no source recorded"
    );
    let to = d.path().join("out");
    let images = restore_raw(&a, &to);
    assert_eq!(fs::read(&images[&key("web", "scsi0:0")]).unwrap(), one);
    assert_eq!(fs::read(&images[&key("web", "scsi0:1")]).unwrap(), two);
    let orig = to.join("web/original");
    assert_eq!(
        fs::read(orig.join("web.vmdk")).unwrap(),
        fs::read(ds1.join("web.vmdk")).unwrap()
    );
    assert_eq!(
        fs::read(orig.join("web_1.vmdk")).unwrap(),
        fs::read(ds2.join("web.vmdk")).unwrap()
    );
    let text = fs::read_to_string(to.join("web/web.vmx")).unwrap();
    assert!(text.contains("scsi0:0.fileName = \"web.vmdk\""), "{text}");
    assert!(text.contains("scsi0:1.fileName = \"web_1.vmdk\""), "{text}");
    assert!(to.join("web/web_1.vmdk").is_file());
}

/// Loose disks from two folders with one file name were refused ("disk name ... collides").
#[test]
fn r15_loose_disks_of_one_name_are_both_backed_up() {
    let d = tempdir();
    let one = flat_disk(&d.path().join("a"), "vm-000002.vmdk", 3);
    let two = flat_disk(&d.path().join("b"), "vm-000002.vmdk", 4);
    let a = d.path().join("a.vdar");
    ok(&[
        "backup",
        s(&d.path().join("a/vm-000002.vmdk")),
        s(&d.path().join("b/vm-000002.vmdk")),
        "-o",
        s(&a),
    ]);
    let images = restore_raw(&a, &d.path().join("out"));
    assert_eq!(images.len(), 2, "{images:?}");
    assert_eq!(
        fs::read(&images[&key("vm-000002", "vm-000002.vmdk")]).unwrap(),
        one
    );
    assert_eq!(
        fs::read(&images[&key("vm-000002", "vm-000002_1.vmdk")]).unwrap(),
        two
    );
}

/// The sample VM with a second disk, scsi0:1 = data.vmdk; returns the .vmx and data's bytes.
fn two_disk_sample(dir: &Path) -> (PathBuf, Vec<u8>) {
    let vm = extract_sample(dir);
    let data = flat_disk(&vm, "data.vmdk", 5);
    let vmx = vm.join("sample.vmx");
    let mut text = fs::read_to_string(&vmx).unwrap();
    text += "scsi0:1.present = \"TRUE\"\nscsi0:1.fileName = \"data.vmdk\"\n";
    fs::write(&vmx, text).unwrap();
    (vmx, data)
}

#[test]
fn r15_backup_includes_and_excludes_disks() {
    let d = tempdir();
    let (vmx, data) = two_disk_sample(d.path());
    // By file name: only data.vmdk is taken.
    let only = d.path().join("only.vdar");
    ok(&["backup", s(&vmx), "--disk", "data.vmdk", "-o", s(&only)]);
    let images = restore_raw(&only, &d.path().join("only"));
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(fs::read(&images[&key("sample", "scsi0:1")]).unwrap(), data);
    // By device: scsi0:1 is left out, said so, and the restored .vmx marks it absent.
    let rest = d.path().join("rest.vdar");
    let out = ok(&[
        "backup",
        s(&vmx),
        "--exclude-disk",
        "scsi0:1",
        "-o",
        s(&rest),
        "--json",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scsi0:1") && err.contains("excluded"), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["excluded"][0]["disk"], "scsi0:1", "{report}");
    let to = d.path().join("rest");
    let images = restore_raw(&rest, &to);
    assert_eq!(images.len(), 1, "{images:?}");
    assert!(images.contains_key(&key("sample", "scsi0:0")));
    let text = fs::read_to_string(to.join("sample/sample.vmx")).unwrap();
    assert!(text.contains("scsi0:1.present = \"FALSE\""), "{text}");
    assert!(!text.contains("data.vmdk"), "{text}");
    // A name that is no disk is an error naming the disks there are.
    let out = vdar(&[
        "backup",
        s(&vmx),
        "--exclude-disk",
        "scsi0:7",
        "-o",
        s(&rest),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("scsi0:7") && err.contains("sample/scsi0:1"),
        "{err}"
    );
}

#[test]
fn r15_powered_on_warning_is_said_once() {
    let d = tempdir();
    let vm = extract_sample(d.path());
    fs::write(vm.join("sample-1a2b.vswp"), b"").unwrap();
    let vmx = vm.join("sample.vmx");
    let a = d.path().join("a.vdar");
    for args in [
        vec!["backup", s(&vmx), "-o", s(&a)],
        vec!["inspect", s(&vmx)],
        vec!["cat", s(&vmx), "-o", "/dev/null"],
    ] {
        let out = ok(&args);
        let all = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(all.matches("powered on").count(), 1, "{args:?}: {all}");
        assert!(all.contains("sample-1a2b.vswp"), "{all}");
    }
}

/// `cat VM.vmx` failed to parse the .vmx as a descriptor, and `--snapshot` was ignored.
#[test]
fn r15_cat_reads_a_vmx_and_its_snapshots() {
    let d = tempdir();
    let vm = extract_sample(d.path());
    let cat = |args: &[&str], name: &str| {
        let out = d.path().join(name);
        let mut all = vec!["cat", "-o", s(&out)];
        all.extend_from_slice(args);
        ok(&all);
        fs::read(out).unwrap()
    };
    let vmx = s(&vm.join("sample.vmx")).to_string();
    let desc = |n: &str| s(&vm.join(n)).to_string();
    assert_eq!(
        cat(&[&vmx], "cur.raw"),
        cat(&[&desc("sample-000002.vmdk")], "top.raw")
    );
    assert_eq!(
        cat(&["--snapshot", "before-patch", &vmx], "before.raw"),
        cat(&[&desc("sample.vmdk")], "base.raw")
    );
    assert_eq!(
        cat(&["--snapshot", "after-patch", &vmx], "after.raw"),
        cat(&[&desc("sample-000001.vmdk")], "mid.raw")
    );
}

#[test]
fn r15_cat_picks_one_disk_of_a_vmx() {
    let d = tempdir();
    let (vmx, data) = two_disk_sample(d.path());
    let out = vdar(&["cat", s(&vmx), "-o", s(&d.path().join("x.raw"))]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--disk") && err.contains("scsi0:0") && err.contains("scsi0:1"),
        "{err}"
    );
    let x = d.path().join("data.raw");
    ok(&["cat", s(&vmx), "--disk", "scsi0:1", "-o", s(&x)]);
    assert_eq!(fs::read(&x).unwrap(), data);
}
