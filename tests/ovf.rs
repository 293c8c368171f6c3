//! The OVA tar of `vdar restore --format ova` against what VMware's tools and POSIX readers
//! expect (issue 14, "What vdar restores, VMware's own tools accept"): member names that are
//! safe file names, long ones in PAX headers, the VM's own name kept inside the OVF.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(args: &[&str]) -> std::process::Output {
    let out = vdar(args);
    assert!(
        out.status.success(),
        "vdar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A VM folder `dir/vm` holding `vmx` as `vm.vmx` and, for each `(file, MiB, fill)`, a
/// monolithicSparse disk of that size whose first and last MiB hold `fill`.
fn make_vm(dir: &Path, vmx: &str, disks: &[(&str, u64, u8)]) -> PathBuf {
    let vm = dir.join("vm");
    fs::create_dir_all(&vm).unwrap();
    fs::write(vm.join("vm.vmx"), vmx).unwrap();
    for (file, mib, fill) in disks {
        let p = vm.join(file);
        run(
            "qemu-img",
            &["create", "-q", "-f", "vmdk", s(&p), &format!("{mib}M")],
        );
        qemu_io(
            &p,
            &[
                &format!("write -P {fill} 0 1M"),
                &format!("write -P {fill} {}M 1M", mib - 1),
            ],
        );
    }
    vm.join("vm.vmx")
}

/// Backs up `vmx` and restores it as an OVA under `dir/out`; returns the OVA's path.
fn restore_ova(dir: &Path, vmx: &Path, stem: &str, vm_dir: &str) -> PathBuf {
    let a = dir.join("a.vdar");
    ok(&["backup", s(vmx), "-o", s(&a)]);
    let to = dir.join("out");
    ok(&["restore", s(&a), "--to", s(&to), "--format", "ova"]);
    let ova = to.join(vm_dir).join(format!("{stem}.ova"));
    assert!(ova.is_file(), "no {}", ova.display());
    ova
}

/// Issue 14 item 4: tar member names over 100 bytes were GNU `././@LongLink` entries, and a VM
/// name's `< > " &` went into file names unchanged. Names are now safe file names, long ones
/// reach POSIX readers through PAX headers, and the OVF keeps the name as the user gave it.
#[test]
fn r14_ova_names_are_safe_and_posix() {
    require!("qemu-img");
    require!("qemu-io");
    require!("python3");
    let d = tempdir();
    // 151 bytes once `|22` is decoded: `-disk1.vmdk` takes a member name past 100 bytes.
    let display = format!("web <prod> \"eu\" & co: {}", "x".repeat(128));
    let vmx = make_vm(
        d.path(),
        &format!(
            ".encoding = \"UTF-8\"\ndisplayName = \"{}\"\nguestOS = \"ubuntu-64\"\n\
             scsi0.present = \"TRUE\"\nscsi0:0.present = \"TRUE\"\n\
             scsi0:0.fileName = \"disk.vmdk\"\n",
            display.replace('"', "|22")
        ),
        &[("disk.vmdk", 4, 0x61)],
    );
    let stem = format!("web _prod_ _eu_ _ co_ {}", "x".repeat(128));
    let ova = restore_ova(d.path(), &vmx, &stem, &display);
    let want = [
        format!("{stem}.ovf"),
        format!("{stem}.mf"),
        format!("{stem}-disk1.vmdk"),
    ];

    // GNU tar, told to read POSIX: the full names, in order.
    let out = run("tar", &["--format=posix", "-tvf", s(&ova)]);
    let listing = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.split_once(&format!(" {stem}")).unwrap().1)
        .collect();
    let names: Vec<String> = names.iter().map(|n| format!("{stem}{n}")).collect();
    assert_eq!(names, want, "{listing}");
    // Python's tarfile: the same names, each from a PAX header, no GNU long-name entries.
    let out = run(
        "python3",
        &[
            "-c",
            "import sys, tarfile\n\
             with tarfile.open(sys.argv[1]) as t:\n\
             \x20   for m in t.getmembers():\n\
             \x20       assert m.isfile(), m.type\n\
             \x20       assert m.pax_headers.get('path') == m.name, m.pax_headers\n\
             \x20       print(m.name)\n\
             raw = open(sys.argv[1], 'rb').read()\n\
             at = 0\n\
             while raw[at:at + 512].strip(b'\\0'):\n\
             \x20   h = raw[at:at + 512]\n\
             \x20   assert h[257:263] == b'ustar\\0', h[257:265]\n\
             \x20   assert h[156:157] in (b'0', b'x'), h[156:157]\n\
             \x20   at += 512 + (int(h[124:136].strip(b'\\0 ') or b'0', 8) + 511) // 512 * 512\n",
            s(&ova),
        ],
    );
    let names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(names, want);

    // Inside: file names are the safe ones, the VM's name is the original one, escaped.
    let x = d.path().join("x");
    fs::create_dir_all(&x).unwrap();
    run("tar", &["-xf", s(&ova), "-C", s(&x)]);
    let ovf_path = x.join(&want[0]);
    if have("xmllint") {
        run("xmllint", &["--noout", s(&ovf_path)]);
    }
    let ovf = fs::read_to_string(&ovf_path).unwrap();
    let escaped = display
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    assert!(ovf.contains(&format!("<Name>{escaped}</Name>")), "{ovf}");
    assert!(ovf.contains(&format!("<VirtualSystem ovf:id=\"{escaped}\">")));
    assert!(ovf.contains(&format!("ovf:href=\"{}\"", want[2])));
    let mf = fs::read_to_string(x.join(&want[1])).unwrap();
    assert!(mf.starts_with(&format!("SHA256({})= ", want[0])), "{mf}");
    assert!(mf.contains(&format!("SHA256({})= ", want[2])), "{mf}");
}
