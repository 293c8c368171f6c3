//! Chain resolution and collapse through `vdar cat` / `vdar inspect`, against qemu-img, plus the
//! bad-input cases: every one exits 2 with the file (and line or byte offset) named.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::*;

/// An ESX-style base: `NAME.vmdk` (createType vmfs) + `NAME-flat.vmdk`, via qemu-img
/// monolithicFlat and a descriptor edit (qemu-img cannot create "vmfs").
pub fn vmfs_base(dir: &Path, name: &str, size: &str, writes: &[&str]) -> PathBuf {
    let desc = dir.join(format!("{name}.vmdk"));
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=monolithicFlat,adapter_type=lsilogic",
            desc.to_str().unwrap(),
            size,
        ],
    );
    if !writes.is_empty() {
        qemu_io(&desc, writes);
    }
    let text = fs::read(&desc).unwrap();
    let text = String::from_utf8_lossy(text.split(|&b| b == 0).next().unwrap()).into_owned();
    let text = text
        .replace("createType=\"monolithicFlat\"", "createType=\"vmfs\"")
        .replace(
            &format!("FLAT \"{name}-flat.vmdk\" 0"),
            &format!("VMFS \"{name}-flat.vmdk\""),
        );
    fs::write(&desc, text).unwrap();
    desc
}

fn cat_matches_qemu(desc: &Path, dir: &Path) {
    let ours = dir.join("ours.raw");
    let theirs = dir.join("qemu.raw");
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
    qemu_raw(desc, &theirs);
    assert_same_file(&ours, &theirs);
}

fn fails_with(args: &[&str], needles: &[&str]) {
    let out = vdar(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "expected exit 2, stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr {err:?} lacks {n:?}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn vmfs_flat_base_matches_qemu_and_keeps_holes() {
    require!("qemu-img");
    let d = tempdir();
    let desc = vmfs_base(
        d.path(),
        "vm",
        "64M",
        &["write -P 0xa0 0 1M", "write -P 0xb1 40M 3M"],
    );
    cat_matches_qemu(&desc, d.path());
    // Zero runs stay holes in a regular output file.
    let used = fs::metadata(d.path().join("ours.raw")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(
        used.blocks() * 512 < 8 << 20,
        "output not sparse: {} blocks",
        used.blocks()
    );
}

#[test]
fn two_gb_max_extent_flat_across_the_split() {
    require!("qemu-img");
    let d = tempdir();
    let desc = d.path().join("t.vmdk");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=twoGbMaxExtentFlat",
            desc.to_str().unwrap(),
            "2052M",
        ],
    );
    qemu_io(&desc, &["write -P 0x11 2047M 2M", "write -P 0x22 2049M 3M"]);
    cat_matches_qemu(&desc, d.path());
}

#[test]
fn cat_to_stdout_writes_zeros() {
    require!("qemu-img");
    let d = tempdir();
    let desc = vmfs_base(d.path(), "vm", "3M", &["write -P 0x5a 1M 512"]);
    let out = vdar(&["cat", desc.to_str().unwrap()]);
    assert!(out.status.success());
    let mut want = vec![0u8; 3 << 20];
    want[1 << 20..(1 << 20) + 512].fill(0x5a);
    assert!(out.stdout == want, "stdout differs");
}

/// ZERO and RDONLY extents: qemu silently drops these lines, so the expectation is built by hand.
#[test]
fn zero_and_rdonly_extents_by_hand() {
    let d = tempdir();
    fs::write(d.path().join("a.bin"), vec![0x41u8; 4096]).unwrap();
    let mut b = vec![0u8; 8192];
    b[1024..].fill(0x42);
    fs::write(d.path().join("b.bin"), &b).unwrap();
    let desc = d.path().join("c.vmdk");
    fs::write(
        &desc,
        "version=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"custom\"\n\
         RW 8 FLAT \"a.bin\" 0\nRW 4 ZERO\nRDONLY 6 FLAT \"b.bin\" 2\n",
    )
    .unwrap();
    let out = vdar(&["cat", desc.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut want = vec![0x41u8; 4096];
    want.extend(vec![0u8; 2048]);
    want.extend(vec![0x42u8; 3072]);
    assert!(out.stdout == want);
}

#[test]
fn inspect_json_reports_chain_and_totals() {
    require!("qemu-img");
    let d = tempdir();
    let desc = vmfs_base(d.path(), "vm", "16M", &["write -P 0x77 4M 2M"]);
    let out = vdar(&["inspect", "--json", desc.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let disk = &v["disks"][0];
    assert_eq!(disk["capacity"], 16 << 20);
    // qemu-img allocates the first block of a new flat file (alignment probe), so a few KiB of
    // real zeros there count as data.
    let data = disk["data_bytes"].as_u64().unwrap();
    assert!(
        (2 << 20..(2 << 20) + 65536).contains(&data),
        "data_bytes {data}"
    );
    assert_eq!(disk["zero_bytes"].as_u64().unwrap(), (16 << 20) - data);
    assert_eq!(disk["chain"][0]["format"], "vmfs");
    assert_eq!(disk["chain"][0]["parent_cid"], "ffffffff");
}

#[test]
fn bad_inputs_exit_2_naming_file_and_place() {
    let d = tempdir();
    let p = |n: &str| d.path().join(n);
    let s = |n: &str| p(n).to_str().unwrap().to_string();

    fails_with(&["cat", &s("missing.vmdk")], &["missing.vmdk"]);

    fs::write(p("syntax.vmdk"), "version=1\nCID=zz\ncreateType=\"vmfs\"\n").unwrap();
    fails_with(&["cat", &s("syntax.vmdk")], &["syntax.vmdk", "line 2"]);

    fs::write(
        p("noext.vmdk"),
        "version=1\ncreateType=\"vmfs\"\nRW 8 VMFS \"gone-flat.vmdk\"\n",
    )
    .unwrap();
    fails_with(&["cat", &s("noext.vmdk")], &["gone-flat.vmdk"]);

    fs::write(p("short-flat.vmdk"), vec![0u8; 1024]).unwrap();
    fs::write(
        p("short.vmdk"),
        "version=1\ncreateType=\"vmfs\"\nRW 8 VMFS \"short-flat.vmdk\"\n",
    )
    .unwrap();
    fails_with(
        &["cat", &s("short.vmdk")],
        &["short-flat.vmdk", "truncated"],
    );

    fs::write(
        p("noacc.vmdk"),
        "version=1\ncreateType=\"custom\"\nNOACCESS 8 FLAT \"short-flat.vmdk\" 0\n",
    )
    .unwrap();
    fails_with(&["cat", &s("noacc.vmdk")], &["noacc.vmdk", "NOACCESS"]);

    fs::write(p("bin.vmdk"), vec![0xffu8; 4096]).unwrap();
    fails_with(&["cat", &s("bin.vmdk")], &["bin.vmdk", "line 1"]);
}

#[test]
fn chain_errors_cid_mismatch_loop_missing_parent() {
    let d = tempdir();
    let p = |n: &str| d.path().join(n);
    let s = |n: &str| p(n).to_str().unwrap().to_string();
    fs::write(p("base-flat.vmdk"), vec![0x61u8; 4096]).unwrap();
    fs::write(p("base.vmdk"), "version=1\nCID=aaaaaaaa\nparentCID=ffffffff\ncreateType=\"vmfs\"\nRW 8 VMFS \"base-flat.vmdk\"\n").unwrap();
    // The "child" is flat too (not a real snapshot layout, but chain checks don't care).
    fs::write(p("kid-flat.vmdk"), vec![0x62u8; 4096]).unwrap();
    let kid = |pcid: &str, hint: &str| {
        format!("version=1\nCID=bbbbbbbb\nparentCID={pcid}\ncreateType=\"vmfs\"\nparentFileNameHint=\"{hint}\"\nRW 8 VMFS \"kid-flat.vmdk\"\n")
    };
    fs::write(p("kid.vmdk"), kid("12345678", "base.vmdk")).unwrap();
    fails_with(
        &["cat", &s("kid.vmdk")],
        &[
            "kid.vmdk",
            "base.vmdk",
            "12345678",
            "aaaaaaaa",
            "--ignore-cid",
        ],
    );
    let out = vdar(&["cat", "--ignore-cid", &s("kid.vmdk")]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));

    fs::write(
        p("kid.vmdk"),
        kid("aaaaaaaa", "/vmfs/volumes/ds1/vm/nothere.vmdk"),
    )
    .unwrap();
    fails_with(
        &["cat", &s("kid.vmdk")],
        &["kid.vmdk", "nothere.vmdk", "not found"],
    );

    // An absolute ESX hint falls back to the base name beside the child.
    fs::write(
        p("kid.vmdk"),
        kid("aaaaaaaa", "/vmfs/volumes/ds1/vm/base.vmdk"),
    )
    .unwrap();
    assert!(vdar(&["cat", &s("kid.vmdk")]).status.success());

    fs::write(p("loop.vmdk"), "version=1\nCID=aaaaaaaa\nparentCID=aaaaaaaa\ncreateType=\"vmfs\"\nparentFileNameHint=\"loop.vmdk\"\nRW 8 VMFS \"base-flat.vmdk\"\n").unwrap();
    fails_with(&["cat", &s("loop.vmdk")], &["loop"]);

    fs::write(p("big.vmdk"), "version=1\nCID=cccccccc\nparentCID=aaaaaaaa\ncreateType=\"vmfs\"\nparentFileNameHint=\"base.vmdk\"\nRW 4 VMFS \"kid-flat.vmdk\"\n").unwrap();
    fails_with(&["cat", &s("big.vmdk")], &["big.vmdk", "differs"]);
}

fn qimg(args: &[&str]) {
    run("qemu-img", args);
}

/// Hosted chain: monolithicSparse base (odd capacity) → sparse child → zeroed-grain child with
/// an explicit zero grain and a partial-grain copy-on-write write → a fourth layer.
#[test]
fn hosted_sparse_chain_of_four_matches_qemu() {
    require!("qemu-img");
    let d = tempdir();
    let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    qimg(&["create", "-q", "-f", "vmdk", &p("base.vmdk"), "33554944"]); // 32 MiB + 1 sector
    qemu_io(
        Path::new(&p("base.vmdk")),
        &[
            "write -P 0xab 0 1M",
            "write -P 0xcd 4M 64k",
            "write -P 0xef 32M 512",
        ],
    );
    qimg(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-b",
        "base.vmdk",
        "-F",
        "vmdk",
        &p("c1.vmdk"),
    ]);
    qemu_io(
        Path::new(&p("c1.vmdk")),
        &["write -P 0x11 512k 64k", "write -P 0x22 8M 64k"],
    );
    qimg(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "zeroed_grain=on",
        "-b",
        "c1.vmdk",
        "-F",
        "vmdk",
        &p("c2.vmdk"),
    ]);
    qemu_io(
        Path::new(&p("c2.vmdk")),
        &["write -z 0 128k", "write -P 0x33 4M 4k"],
    );
    qimg(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-b",
        "c2.vmdk",
        "-F",
        "vmdk",
        &p("c3.vmdk"),
    ]);
    qemu_io(
        Path::new(&p("c3.vmdk")),
        &["write -P 0x44 64k 1k", "write -P 0x55 31M 1M"],
    );
    cat_matches_qemu(Path::new(&p("c3.vmdk")), d.path());
    // Every intermediate link too.
    for top in ["c2.vmdk", "c1.vmdk", "base.vmdk"] {
        cat_matches_qemu(Path::new(&p(top)), d.path());
    }
    let out = vdar(&["inspect", "--json", &p("c3.vmdk")]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["disks"][0]["chain"].as_array().unwrap().len(), 4);
    assert_eq!(v["disks"][0]["chain"][1]["zero_bytes"], 128 << 10);
}

/// A sparse child over an ESX-style flat base, and both streamOptimized layouts as bases.
#[test]
fn sparse_child_over_flat_and_stream_bases() {
    require!("qemu-img");
    let d = tempdir();
    let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    let base = vmfs_base(d.path(), "vm", "8M", &["write -P 0xa0 0 8M"]);
    assert_eq!(base, d.path().join("vm.vmdk"));
    qimg(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-b",
        "vm.vmdk",
        "-F",
        "vmdk",
        &p("child.vmdk"),
    ]);
    qemu_io(Path::new(&p("child.vmdk")), &["write -P 0x0b 1M 100k"]);
    cat_matches_qemu(Path::new(&p("child.vmdk")), d.path());

    qimg(&[
        "convert",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        &p("child.vmdk"),
        &p("so.vmdk"),
    ]);
    cat_matches_qemu(Path::new(&p("so.vmdk")), d.path());
    qimg(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-b",
        "so.vmdk",
        "-F",
        "vmdk",
        &p("so-child.vmdk"),
    ]);
    qemu_io(Path::new(&p("so-child.vmdk")), &["write -P 0x0c 3M 4k"]);
    cat_matches_qemu(Path::new(&p("so-child.vmdk")), d.path());
}

#[test]
fn corrupt_sparse_table_entry_is_named() {
    require!("qemu-img");
    let d = tempdir();
    let p = d.path().join("s.vmdk");
    qimg(&["create", "-q", "-f", "vmdk", p.to_str().unwrap(), "4M"]);
    qemu_io(&p, &["write -P 0x61 0 64k"]);
    // qemu's layout: GD at sector 26, its first GT at sector 27; point GTE 0 far past the end.
    let mut b = fs::read(&p).unwrap();
    let gt0 = u32::from_le_bytes(b[26 * 512..26 * 512 + 4].try_into().unwrap()) as usize * 512;
    b[gt0..gt0 + 4].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    fs::write(&p, &b).unwrap();
    fails_with(
        &["cat", p.to_str().unwrap()],
        &["s.vmdk", &format!("{gt0:#x}")],
    );
}
