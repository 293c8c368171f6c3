//! `vdar restore --format vmdk|sparse|stream|ova`: every VMDK output reads back through
//! qemu-img as the archived disk byte for byte and passes vmdkinfo; the ESX layout (vmfs
//! descriptor, sparse flat file, rewritten .vmx), the streamOptimized tail, and the OVA
//! (member order, manifest hashes, well-formed OVF matching its disks), to files and stdout.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::sample::extract_sample;
use crate::util::*;

fn sh(script: &str) -> std::process::Output {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The sample VM's archive.
fn sample_archive(d: &Path) -> PathBuf {
    let vm = extract_sample(d);
    let a = d.join("sample.vdar");
    ok(&["backup", s(&vm.join("sample.vmx")), "-o", s(&a)]);
    a
}

/// A loose disk whose capacity is not a multiple of 64 KiB, with repeated content (dedup
/// references at 64 KiB chunks) and data in the short last grain.
fn odd_archive(d: &Path) -> PathBuf {
    let disk = d.join("odd.vmdk");
    // 10 MiB + 3 sectors.
    run(
        "qemu-img",
        &["create", "-q", "-f", "vmdk", s(&disk), "10487296"],
    );
    qemu_io(
        &disk,
        &[
            "write -P 0x61 0 256k",
            "write -P 0x61 1M 256k",
            "write -P 0x61 4M 256k",
            "write -P 0x62 5M 4k",
            "write -P 0x63 10485760 1536",
        ],
    );
    let a = d.join("odd.vdar");
    ok(&["backup", s(&disk), "-o", s(&a), "--chunk-size", "64K"]);
    a
}

/// Restores `a` as `format` into `to` (from the file, or through stdin when `pipe`).
fn restore(a: &Path, to: &Path, format: &str, pipe: bool) {
    if pipe {
        sh(&format!(
            "cat '{}' | '{}' restore - --to '{}' --format {format}",
            s(a),
            s(&vdar_bin()),
            s(to)
        ));
    } else {
        ok(&["restore", s(a), "--to", s(to), "--format", format]);
    }
}

/// The single file with `suffix` in `dir` (excluding `-flat.vmdk`).
fn one(dir: &Path, suffix: &str) -> PathBuf {
    let v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.ends_with(suffix) && !n.ends_with("-flat.vmdk")
        })
        .collect();
    assert_eq!(v.len(), 1, "{dir:?}: {v:?}");
    v[0].clone()
}

fn qemu_info(p: &Path) -> serde_json::Value {
    let out = run("qemu-img", &["info", "--output", "json", s(p)]);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every VMDK format, both archives, seekable and one-pass: qemu-img reads back the raw
/// restore; vmdkinfo accepts the file; the createType is the one asked for.
#[test]
fn every_vmdk_format_reads_back_as_the_archived_disk() {
    require!("qemu-img");
    let d = tempdir();
    let archives = [
        (sample_archive(d.path()), "sample"),
        (odd_archive(d.path()), "odd"),
    ];
    for (a, vm) in &archives {
        let raw_dir = d.path().join(format!("raw-{vm}"));
        restore(a, &raw_dir, "raw", false);
        let raw = one(&raw_dir.join(vm), ".raw");
        for (format, create_type) in [
            ("vmdk", "vmfs"),
            ("sparse", "monolithicSparse"),
            ("stream", "streamOptimized"),
        ] {
            for pipe in [false, true] {
                let to = d.path().join(format!("{vm}-{format}-{pipe}"));
                restore(a, &to, format, pipe);
                let img = one(&to.join(vm), ".vmdk");
                let info = qemu_info(&img);
                assert_eq!(info["format"], "vmdk");
                assert_eq!(
                    info["format-specific"]["data"]["create-type"], create_type,
                    "{info}"
                );
                let back = d.path().join("back.raw");
                qemu_raw(&img, &back);
                assert_same_file(&back, &raw);
                fs::remove_file(&back).unwrap();
                if have("vmdkinfo") {
                    run("vmdkinfo", &[s(&img)]);
                }
            }
        }
    }
}

fn ddb(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(&format!("{key} ")))
        .map(|l| l.split('"').nth(1).unwrap_or_default().to_string())
}

#[test]
fn vmdk_output_is_an_esx_datastore_folder() {
    let d = tempdir();
    let a = sample_archive(d.path());
    let to = d.path().join("out");
    restore(&a, &to, "vmdk", false);
    let vm = to.join("sample");
    let desc = fs::read_to_string(vm.join("sample.vmdk")).unwrap();
    assert!(desc.contains("createType=\"vmfs\""), "{desc}");
    assert!(desc.contains("parentCID=ffffffff\n"));
    assert!(
        desc.contains("RW 524288 VMFS \"sample-flat.vmdk\"\n"),
        "{desc}"
    );
    let cid = desc
        .lines()
        .find_map(|l| l.strip_prefix("CID="))
        .unwrap()
        .to_string();
    assert_ne!(cid, "ffffffff");
    // The archived top descriptor's identity and geometry, and a CID none of the chain had.
    let orig = fs::read_to_string(d.path().join("sample-vm/sample-000002.vmdk")).unwrap();
    for k in [
        "ddb.geometry.cylinders",
        "ddb.geometry.heads",
        "ddb.geometry.sectors",
        "ddb.adapterType",
        "ddb.virtualHWVersion",
        "ddb.uuid",
    ] {
        assert_eq!(ddb(&desc, k), ddb(&orig, k), "{k}");
        assert!(ddb(&desc, k).is_some(), "{k}");
    }
    for f in ["sample.vmdk", "sample-000001.vmdk", "sample-000002.vmdk"] {
        let t = fs::read_to_string(d.path().join("sample-vm").join(f)).unwrap();
        assert!(!t.contains(&format!("CID={cid}\n")), "CID reused from {f}");
    }
    // The flat extent is a sparse file: the sample holds about 6 MiB of its 256 MiB.
    let m = fs::metadata(vm.join("sample-flat.vmdk")).unwrap();
    assert_eq!(m.len(), 256 << 20);
    assert!(m.blocks() * 512 < m.len() / 8, "{} blocks", m.blocks());
    // The .vmx names the base descriptor; no snapshot file is left to confuse ESX.
    let vmx = fs::read_to_string(vm.join("sample.vmx")).unwrap();
    assert!(vmx.contains("scsi0:0.fileName = \"sample.vmdk\""), "{vmx}");
    assert!(!vmx.contains("-00000"), "{vmx}");
    assert!(vmx.contains("numvcpus = \"2\""));
    for gone in ["sample.vmsd", "sample-000001.vmdk", "sample-000002.vmdk"] {
        assert!(!vm.join(gone).exists(), "{gone}");
    }
    assert!(vm.join("sample.nvram").exists());
    // qemu opens the descriptor through the vmx's name.
    if have("qemu-img") {
        let info = qemu_info(&vm.join("sample.vmdk"));
        assert_eq!(info["virtual-size"], 256 << 20);
    }
}

#[test]
fn stream_has_vmware_tail_footer_and_eos() {
    let d = tempdir();
    let a = odd_archive(d.path());
    let to = d.path().join("out");
    restore(&a, &to, "stream", false);
    let b = fs::read(one(&to.join("odd"), ".vmdk")).unwrap();
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    assert_eq!(&b[..4], b"KDMV");
    assert_eq!(u32_at(4), 3, "version 3: ESX refuses less");
    assert_eq!(u32_at(8), 0x30001, "newline check, compressed, markers");
    assert_eq!(u64_at(12), 10487296 / 512);
    assert_eq!(u64_at(56), u64::MAX, "GD_AT_END");
    assert_eq!(b.len() % 512, 0);
    let n = b.len();
    // EOS: an all-zero sector.
    assert!(b[n - 512..].iter().all(|&x| x == 0));
    // Footer: a header copy with the real GD offset.
    let f = n - 1024;
    assert_eq!(&b[f..f + 4], b"KDMV");
    assert_eq!(u32_at(f + 4), 3);
    assert_eq!(u64_at(f + 12), u64_at(12));
    let gd = u64_at(f + 56);
    assert!(gd != u64::MAX && gd * 512 < f as u64);
    // Footer marker: val 1, size 0, type 3.
    let m = n - 1536;
    assert_eq!((u64_at(m), u32_at(m + 8), u32_at(m + 12)), (1, 0, 3));
    // GD marker right before the GD: size 0, type 2, val = GD sectors (1 table -> 1 sector).
    let g = (gd as usize - 1) * 512;
    assert_eq!((u64_at(g), u32_at(g + 8), u32_at(g + 12)), (1, 0, 2));
    // The GD's one table, preceded by its GT marker (4 sectors, type 1).
    let gt = u32_at(gd as usize * 512) as usize;
    let t = (gt - 1) * 512;
    assert_eq!((u64_at(t), u32_at(t + 8), u32_at(t + 12)), (4, 0, 1));
    // The first grain record follows the descriptor: lba 0 and a zlib stream.
    let first = u64_at(64) as usize * 512;
    assert_eq!(u64_at(first), 0);
    assert_eq!(b[first + 12], 0x78);
}

/// Parses `SHA256(name)= hex` lines.
fn mf_lines(mf: &str) -> Vec<(String, String)> {
    mf.lines()
        .map(|l| {
            let (name, hex) = l.split_once(")= ").unwrap();
            (
                name.strip_prefix("SHA256(").unwrap().to_string(),
                hex.into(),
            )
        })
        .collect()
}

/// Values of attribute `attr` in `xml`, in order.
fn attrs(xml: &str, attr: &str) -> Vec<String> {
    xml.split(&format!(" {attr}=\""))
        .skip(1)
        .map(|x| x.split('"').next().unwrap().to_string())
        .collect()
}

fn check_ova(ova: &Path, work: &Path, vm: &str, raw: &Path) -> String {
    let list = String::from_utf8(run("tar", &["-tf", s(ova)]).stdout).unwrap();
    let names: Vec<&str> = list.lines().collect();
    // The descriptor first, the manifest second (as VMware and ova-compose place them).
    assert_eq!(names.first(), Some(&format!("{vm}.ovf").as_str()), "{list}");
    assert_eq!(names.get(1), Some(&format!("{vm}.mf").as_str()), "{list}");
    let x = work.join("x");
    fs::create_dir_all(&x).unwrap();
    run("tar", &["-xf", s(ova), "-C", s(&x)]);
    let mf = fs::read_to_string(x.join(format!("{vm}.mf"))).unwrap();
    let lines = mf_lines(&mf);
    assert_eq!(lines.len(), names.len() - 1);
    for (name, hex) in &lines {
        let out = run("sha256sum", &[s(&x.join(name))]);
        let got = String::from_utf8(out.stdout).unwrap();
        assert_eq!(got.split_whitespace().next().unwrap(), hex, "{name}");
    }
    let ovf_path = x.join(format!("{vm}.ovf"));
    if have("xmllint") {
        run("xmllint", &["--noout", s(&ovf_path)]);
    }
    let ovf = fs::read_to_string(&ovf_path).unwrap();
    let hrefs = attrs(&ovf, "ovf:href");
    let sizes = attrs(&ovf, "ovf:size");
    assert_eq!(hrefs.len(), names.len() - 2);
    for (i, (h, sz)) in hrefs.iter().zip(&sizes).enumerate() {
        assert_eq!(names[i + 2], h, "disks in References order");
        let len = fs::metadata(x.join(h)).unwrap().len();
        assert_eq!(sz.parse::<u64>().unwrap(), len, "{h}");
    }
    let caps = attrs(&ovf, "ovf:capacity");
    let pops = attrs(&ovf, "ovf:populatedSize");
    let raw_len = fs::metadata(raw).unwrap().len();
    assert_eq!(caps, vec![raw_len.to_string()]);
    let pop: u64 = pops[0].parse().unwrap();
    assert!(pop > 0 && pop <= raw_len);
    assert_eq!(attrs(&ovf, "ovf:fileRef"), vec!["file1"]);
    if have("qemu-img") {
        let back = work.join("ova-back.raw");
        qemu_raw(&x.join(&hrefs[0]), &back);
        assert_same_file(&back, raw);
    }
    ovf
}

#[test]
fn ova_lists_hashes_and_describes_the_vm() {
    let d = tempdir();
    let a = sample_archive(d.path());
    let raw_dir = d.path().join("raw");
    restore(&a, &raw_dir, "raw", false);
    let raw = raw_dir.join("sample/sample.raw");
    let to = d.path().join("out");
    restore(&a, &to, "ova", false);
    let ovf = check_ova(&to.join("sample/sample.ova"), d.path(), "sample", &raw);
    let item_with = |needle: &str| {
        ovf.split("<Item>")
            .find(|i| i.contains(needle))
            .unwrap_or_else(|| panic!("no item with {needle}: {ovf}"))
            .to_string()
    };
    let cpu = item_with("<rasd:ResourceType>3<");
    assert!(cpu.contains("<rasd:VirtualQuantity>2<"), "{cpu}");
    let mem = item_with("<rasd:ResourceType>4<");
    assert!(mem.contains("<rasd:VirtualQuantity>2048<"), "{mem}");
    assert!(mem.contains("byte * 2^20"));
    let scsi = item_with("<rasd:ResourceType>6<");
    assert!(
        scsi.contains("<rasd:ResourceSubType>VirtualSCSI<"),
        "{scsi}"
    );
    let disk = item_with("<rasd:ResourceType>17<");
    assert!(disk.contains("ovf:/disk/vmdisk1"));
    assert!(disk.contains("<rasd:AddressOnParent>0<"));
    let nic = item_with("<rasd:ResourceType>10<");
    assert!(
        nic.contains("VmxNet3") && nic.contains("VM Network"),
        "{nic}"
    );
    assert!(ovf.contains("vmx-13"));
    assert!(ovf.contains("<Network ovf:name=\"VM Network\">"));
}

#[test]
fn stream_and_ova_to_stdout() {
    require!("qemu-img");
    let d = tempdir();
    let a = odd_archive(d.path());
    let raw_dir = d.path().join("raw");
    restore(&a, &raw_dir, "raw", false);
    let raw = one(&raw_dir.join("odd"), ".raw");
    let bin = vdar_bin();
    // File in, OVA out to a pipe.
    let list = sh(&format!(
        "'{}' restore '{}' --to - --format ova | tar -t",
        s(&bin),
        s(&a)
    ));
    assert_eq!(
        String::from_utf8(list.stdout).unwrap(),
        "odd.ovf\nodd.mf\nodd-disk1.vmdk\n"
    );
    let ova = d.path().join("p.ova");
    sh(&format!(
        "cat '{}' | '{}' restore - --to - --format ova > '{}'",
        s(&a),
        s(&bin),
        s(&ova)
    ));
    check_ova(&ova, d.path(), "odd", &raw);
    // Pipe in, stream out.
    let st = d.path().join("p.vmdk");
    sh(&format!(
        "cat '{}' | '{}' restore - --to - --format stream > '{}'",
        s(&a),
        s(&bin),
        s(&st)
    ));
    let back = d.path().join("back.raw");
    qemu_raw(&st, &back);
    assert_same_file(&back, &raw);
    // Raw to stdout (for `| dd of=/dev/sdX`): zeros written out, references resolved, from a
    // file and from a pipe.
    for input in ["'{a}'", "- < '{a}'"] {
        let out = d.path().join("stdout.raw");
        sh(&format!(
            "'{}' restore {} --to - > '{}'",
            s(&bin),
            input.replace("{a}", s(&a)),
            s(&out)
        ));
        assert_eq!(fs::read(&out).unwrap(), fs::read(&raw).unwrap(), "{input}");
    }
    // Formats that are several files cannot go to stdout.
    let out = vdar(&["restore", s(&a), "--to", "-", "--format", "vmdk"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stream or ova"));
}

/// An archive, written by the real writer, of VM `big` with one disk of `capacity` bytes in
/// 64 KiB chunks: each `(offset, fill)` is a chunk of that byte, everything else zeros (no
/// records). The capacity is whatever the manifest should claim, checked or not.
fn claimed_archive(path: &Path, capacity: u64, chunks: &[(u64, u8)]) {
    use vdar::archive::manifest::{DiskManifest, VmManifest};
    use vdar::archive::{ArchiveWriter, Codec, DiskMeta, Manifest};
    const CHUNK: usize = 64 << 10;
    let m = Manifest {
        format_version: 1,
        vdar_version: "0.1.0".into(),
        created: 1_700_000_000,
        chunk_size: CHUNK as u64,
        codec: "zstd".into(),
        level: 3,
        block_size: 0,
        base: None,
        vms: vec![VmManifest {
            origin: None,
            name: "big".into(),
            files: vec![],
            disks: vec![DiskManifest {
                id: 0,
                name: "scsi0:0".into(),
                meta: DiskMeta {
                    capacity,
                    ..Default::default()
                },
            }],
        }],
    };
    let mut out = Vec::new();
    let mut w = ArchiveWriter::new(&mut out, "-", &m, 3).unwrap();
    for &(offset, fill) in chunks {
        let data = vec![fill; CHUNK];
        let digest = *blake3::hash(&data).as_bytes();
        w.write_chunk(0, offset, CHUNK as u64, digest, Codec::None, &data)
            .unwrap();
    }
    w.write_disk_end(0, capacity, chunks.len() as u64).unwrap();
    w.finish().unwrap();
    fs::write(path, out).unwrap();
}

/// Every file under `dir` (none if it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Issue 13 item 3: a manifest claiming 2^56 bytes aborted `restore --format stream|ova` on a
/// failed 8 GiB allocation and left a `.partial`; one claiming 2^53 bytes and holding no chunk
/// wrote grain tables until the file system was full. Such capacities (and ones that are not
/// whole sectors) are refused before anything is written.
#[test]
fn r13_hostile_capacity_is_refused_before_writing() {
    let d = tempdir();
    for cap in [1u64 << 56, 1 << 53, (1 << 30) + 100] {
        let a = d.path().join("claims.vdar");
        claimed_archive(&a, cap, &[]);
        for format in ["stream", "ova", "sparse", "vmdk", "raw"] {
            let to = d.path().join(format!("out-{format}"));
            let out = vdar(&["restore", s(&a), "--to", s(&to), "--format", format]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cap} {format}: {err}");
            assert!(
                err.contains(&format!("capacity {cap} bytes")),
                "{cap} {format}: {err}"
            );
            assert_eq!(files_under(&to), Vec::<PathBuf>::new(), "{cap} {format}");
            assert!(
                !to.exists(),
                "{cap} {format}: the directory restore created is left"
            );
        }
    }
}

/// Issue 13 item 3: a 2 TiB disk holding one 64 KiB chunk became a 160 MiB streamOptimized
/// file, a grain table for every 32 MiB. Only tables with grains are written now (GD entry 0
/// for the others, which VMware's and qemu's readers take as all-zero grains).
#[test]
fn r13_stream_size_follows_the_data_not_the_capacity() {
    require!("qemu-img");
    require!("qemu-io");
    let d = tempdir();
    let cap = 2u64 << 40;
    let last = cap - (64 << 10);
    let a = d.path().join("sparse.vdar");
    claimed_archive(&a, cap, &[(0, 0x61), (last, 0x62)]);
    let to = d.path().join("out");
    ok(&["restore", s(&a), "--to", s(&to), "--format", "stream"]);
    let img = one(&to.join("big"), ".vmdk");
    let len = fs::metadata(&img).unwrap().len();
    assert!(len < 2 << 20, "{len} bytes for 128 KiB of data");
    assert_eq!(qemu_info(&img)["virtual-size"], cap);
    qemu_io(
        &img,
        &[
            "read -P 0x61 0 64k",
            "read -P 0 64k 64k",
            "read -P 0 32M 64k",
            "read -P 0 1T 64k",
            &format!("read -P 0 {} 64k", last - (64 << 10)),
            &format!("read -P 0x62 {last} 64k"),
        ],
    );
}

/// The grain records of a VMware-layout streamOptimized file, as `(lba, size)`: walked front
/// to back from overHead, skipping the metadata each marker announces, up to the EOS marker.
fn grain_records(b: &[u8]) -> Vec<(u64, u32)> {
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let mut at = u64_at(64) as usize * 512;
    let mut out = Vec::new();
    loop {
        let (val, size) = (u64_at(at), u32_at(at + 8));
        if size != 0 {
            out.push((val, size));
            at += (12 + size as usize).next_multiple_of(512);
        } else if u32_at(at + 12) == 0 {
            return out;
        } else {
            at += (1 + val as usize) * 512;
        }
    }
}

/// Issue 14 item 1: VMware's reader (open-vmdk's `SparsePread`) takes a grain record of at
/// most 66,036 bytes for 64 KiB grains, and deflate level 1 wrote 64 KiB of noise as 69,1xx.
/// No record may exceed the grain in stored blocks (formats/SPARSE.md §4.3): 65,552 bytes.
#[test]
fn r14_incompressible_grains_keep_the_grain_rule() {
    require!("qemu-img");
    let d = tempdir();
    let a = d.path().join("r.vdar");
    ok(&["backup", s(&random_vmdk(d.path(), 4)), "-o", s(&a)]);
    restore(&a, &d.path().join("stream"), "stream", false);
    restore(&a, &d.path().join("ova"), "ova", false);
    let stream = fs::read(one(&d.path().join("stream/r"), ".vmdk")).unwrap();
    let ova = run(
        "tar",
        &["-xOf", s(&d.path().join("ova/r/r.ova")), "r-disk1.vmdk"],
    )
    .stdout;
    for (what, b) in [("stream", stream), ("ova", ova)] {
        let records = grain_records(&b);
        assert_eq!(records.len(), 64, "{what}: every grain of 4 MiB of noise");
        for (lba, size) in records {
            assert!(
                size <= 65_552,
                "{what}: grain at sector {lba}: {size} bytes"
            );
        }
    }
}
