//! `vdar backup` / `restore` / `verify` / `list` end to end: restore(backup(x)) is
//! byte-identical to `qemu-img convert -O raw x` for every layer format, through a file and
//! through a pipe; damage is detected and salvaged around; output is deterministic.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::sample::extract_sample;
use crate::util::*;

/// A second VM made of loose disks, one per hosted format: a sparse chain with a zeroed-grain
/// child, qemu's streamOptimized, VMware's streamOptimized, and a twoGbMaxExtentSparse disk.
/// The elements of two JSON arrays side by side, which must be equally long.
fn pairs<'a>(
    a: &'a serde_json::Value,
    b: &'a serde_json::Value,
) -> impl Iterator<Item = (&'a serde_json::Value, &'a serde_json::Value)> {
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    assert_eq!(a.len(), b.len(), "{a:?} against {b:?}");
    a.iter().zip(b)
}

fn hosted_disks(dir: &Path) -> Vec<PathBuf> {
    let p = |n: &str| dir.join(n);
    run(
        "qemu-img",
        &["create", "-q", "-f", "vmdk", s(&p("h-base.vmdk")), "20M"],
    );
    qemu_io(
        &p("h-base.vmdk"),
        &["write -P 0x61 0 3M", "write -P 0x62 10M 1M"],
    );
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "zeroed_grain=on",
            "-b",
            "h-base.vmdk",
            "-F",
            "vmdk",
            s(&p("h-top.vmdk")),
        ],
    );
    qemu_io(&p("h-top.vmdk"), &["write -z 0 64k", "write -P 0x63 1M 4k"]);
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            s(&p("h-top.vmdk")),
            s(&p("q-stream.vmdk")),
        ],
    );
    qemu_raw(&p("h-top.vmdk"), &p("h.raw"));
    run(
        env!("CARGO_BIN_EXE_vdar-fixture"),
        &["streamopt", s(&p("h.raw")), s(&p("v-stream.vmdk"))],
    );
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=twoGbMaxExtentSparse",
            s(&p("split.vmdk")),
            "2049M",
        ],
    );
    qemu_io(&p("split.vmdk"), &["write -P 0x64 2047M 2M"]);
    vec![
        p("h-top.vmdk"),
        p("q-stream.vmdk"),
        p("v-stream.vmdk"),
        p("split.vmdk"),
    ]
}

#[test]
fn restore_of_backup_equals_qemu_for_every_format_via_file_and_pipe() {
    require!("qemu-img");
    let d = tempdir();
    let vm = extract_sample(d.path());
    let disks = hosted_disks(d.path());
    let archive = d.path().join("a.vdar");
    let vmx = vm.join("sample.vmx");
    let mut args = vec!["backup", s(&vmx)];
    args.extend(disks.iter().map(|p| s(p)));
    args.extend(["-o", s(&archive), "--json"]);
    let out = ok(&args);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        summary["chunks_dedup"].as_u64().unwrap() > 0,
        "h-top and the stream copies share chunks"
    );

    let listing: serde_json::Value =
        serde_json::from_slice(&ok(&["list", "--json", s(&archive)]).stdout).unwrap();
    assert_eq!(listing["vms"].as_array().unwrap().len(), 2);
    // The summary catalogs the same archive: path, time, VMs with their disks and files.
    assert_eq!(summary["archive"], s(&archive));
    assert_eq!(summary["created"], listing["created"]);
    assert!(summary["seconds"].as_f64().unwrap() > 0.0);
    // The human listing reads without a JSON decoder: creation time in UTC (as date(1) prints
    // it), files by name and size, each disk with its chain's top layer.
    let text = String::from_utf8(ok(&["list", s(&archive)]).stdout).unwrap();
    let secs = summary["created"].as_u64().unwrap().to_string();
    let date = run("date", &["-u", "-d", &format!("@{secs}"), "+%F %T UTC"]).stdout;
    let date = String::from_utf8(date).unwrap();
    assert!(text.contains(&format!("created {}", date.trim())), "{text}");
    assert!(text.contains("  file sample.vmx: 735 B, blake3 "), "{text}");
    assert!(
        text.contains("disk #0 scsi0:0 (sample-000002.vmdk, 3 layers): 256.0 MiB capacity"),
        "{text}"
    );
    assert!(!text.contains('{'), "{text}");
    for (a, b) in pairs(&summary["vms"], &listing["vms"]) {
        assert_eq!(a["name"], b["name"]);
        assert_eq!(a["files"], b["files"], "names, sizes and BLAKE3");
        for (x, y) in pairs(&a["disks"], &b["disks"]) {
            assert_eq!(x["name"], y["name"]);
            assert_eq!(x["meta"], y["meta"], "capacity, descriptor, ddb, chain");
        }
    }
    ok(&["verify", s(&archive)]);

    // Restore from the file (seekable) and from a pipe (one pass).
    let from_file = d.path().join("r1");
    let file_report = ok(&["restore", s(&archive), "--to", s(&from_file), "--json"]).stdout;
    let from_pipe = d.path().join("r2");
    let sh = format!(
        "{} backup {} -o - | {} restore - --to {} --json",
        s(&vdar_bin()),
        args[1..args.len() - 3].join(" "),
        s(&vdar_bin()),
        s(&from_pipe)
    );
    let out = Command::new("sh").args(["-c", &sh]).output().unwrap();
    assert!(out.status.success());
    let images = [
        crate::util::restored_images(&file_report),
        crate::util::restored_images(&out.stdout),
    ];
    // Images are named after the chain's base disk (sample.vmdk), free of the device key's ':'.
    for (root, im) in [&from_file, &from_pipe].iter().zip(&images) {
        assert_eq!(
            im[&("sample".to_string(), "scsi0:0".to_string())],
            root.join("sample/sample.raw")
        );
        assert!(
            im.values().all(|p| !p.to_str().unwrap().contains(':')),
            "{im:?}"
        );
    }

    let oracle = d.path().join("oracle.raw");
    let mut cases: Vec<(PathBuf, String, String)> = vec![(
        vm.join("sample-000002.vmdk"),
        "sample".into(),
        "scsi0:0".into(),
    )];
    for p in &disks {
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        cases.push((p.clone(), "h-top".into(), name));
    }
    for (src, vmname, disk) in cases {
        qemu_raw(&src, &oracle);
        for im in &images {
            assert_same_file(&im[&(vmname.clone(), disk.clone())], &oracle);
        }
    }
    // The archived files are kept as they were; the .vmx beside the image points at a
    // monolithicFlat descriptor of it, which qemu-img reads as the same disk.
    assert_eq!(
        fs::read(from_file.join("sample/original/sample.vmx")).unwrap(),
        fs::read(vm.join("sample.vmx")).unwrap()
    );
    let vmx = fs::read_to_string(from_file.join("sample/sample.vmx")).unwrap();
    assert!(vmx.contains("scsi0:0.fileName = \"sample.vmdk\""), "{vmx}");
    assert!(!from_file.join("sample/sample.vmsd").exists());
    // Nothing beside the image names a redo log that was not restored.
    let top: Vec<String> = fs::read_dir(from_file.join("sample"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".vmdk"))
        .collect();
    assert_eq!(top, ["sample.vmdk"]);
    let desc = fs::read_to_string(from_file.join("sample/sample.vmdk")).unwrap();
    assert!(
        desc.contains("createType=\"monolithicFlat\"") && desc.contains("FLAT \"sample.raw\" 0"),
        "{desc}"
    );
    let flat = d.path().join("via-descriptor.raw");
    qemu_raw(&from_file.join("sample/sample.vmdk"), &flat);
    assert_same_file(&flat, &from_file.join("sample/sample.raw"));
    // The small restore tool reads the same archive.
    let out = Command::new(env!("CARGO_BIN_EXE_vdar-restore"))
        .args(["verify", s(&archive)])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = Command::new(env!("CARGO_BIN_EXE_vdar-restore"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).starts_with("Restore, verify and list"));
}

#[test]
fn deterministic_and_block_padded() {
    let d = tempdir();
    let vm = extract_sample(d.path());
    let vmx = vm.join("sample.vmx");
    let run_backup = |out: &Path, extra: &[&str]| {
        let mut args = vec!["backup", s(&vmx), "-o", s(out)];
        args.extend_from_slice(extra);
        let o = Command::new(vdar_bin())
            .args(&args)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let (a, b, c) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
    run_backup(&a, &[]);
    run_backup(&b, &["--threads", "1"]);
    assert!(
        fs::read(&a).unwrap() == fs::read(&b).unwrap(),
        "same input, different archive bytes"
    );
    // Buffered reads give the same bytes as the default O_DIRECT reads.
    let buffered = d.path().join("buffered");
    run_backup(&buffered, &["--read-path", "buffered"]);
    assert!(
        fs::read(&a).unwrap() == fs::read(&buffered).unwrap(),
        "--read-path buffered gave different archive bytes"
    );
    run_backup(&c, &["--block-size", "256K"]);
    assert_eq!(fs::metadata(&c).unwrap().len() % (256 << 10), 0);
    ok(&["verify", s(&c)]);
    ok(&["restore", s(&c), "--to", s(&d.path().join("r"))]);
    // An existing archive is not replaced without --force; restore does not overwrite.
    let out = vdar(&["backup", s(&vm.join("sample.vmx")), "-o", s(&a)]);
    assert_eq!(out.status.code(), Some(2));
    let out = vdar(&["restore", s(&c), "--to", s(&d.path().join("r"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"));
    ok(&["restore", s(&c), "--to", s(&d.path().join("r")), "--force"]);
}

#[test]
fn allocation_and_page_cache_change_no_archive_byte() {
    // A flat extent whose allocation changes while its bytes do not: preallocated (unwritten)
    // extents, then the same extents in the page cache (ext4 then reports them as data), then
    // every byte written out.
    let d = tempdir();
    let flat = d.path().join("d-flat.vmdk");
    let desc = d.path().join("d.vmdk");
    fs::write(
        &desc,
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
         createType=\"vmfs\"\n\nRW 16384 VMFS \"d-flat.vmdk\"\n",
    )
    .unwrap();
    run("fallocate", &["-l", "8M", s(&flat)]);
    let mut contents = vec![0u8; 8 << 20];
    for (i, b) in contents[..1 << 20].iter_mut().enumerate() {
        *b = (i * 7 / 5) as u8;
    }
    contents[(4 << 20) + 4096..(4 << 20) + 6000].fill(0x5a);
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&flat).unwrap();
        f.write_all_at(&contents[..1 << 20], 0).unwrap();
        f.write_all_at(&contents[4 << 20..(4 << 20) + 8192], 4 << 20)
            .unwrap();
        f.sync_all().unwrap();
    }
    let backup = |name: &str| {
        let out = d.path().join(name);
        let o = Command::new(vdar_bin())
            .args(["backup", s(&desc), "-o", s(&out), "--chunk-size", "1M"])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        fs::read(out).unwrap()
    };
    let preallocated = backup("a");
    assert!(fs::read(&flat).unwrap() == contents);
    let cached = backup("b");
    fs::write(&flat, &contents).unwrap();
    let written = backup("c");
    assert!(
        preallocated == cached,
        "page cache state changed the archive"
    );
    assert!(preallocated == written, "allocation changed the archive");
    let r = d.path().join("r");
    ok(&["restore", s(&d.path().join("c")), "--to", s(&r)]);
    let restored = files_under(&r);
    assert!(
        restored.iter().any(|(_, b)| *b == contents),
        "restored disk differs"
    );
}

#[test]
fn damage_is_named_and_salvaged_around() {
    let d = tempdir();
    let vm = extract_sample(d.path());
    let a = d.path().join("a.vdar");
    ok(&[
        "backup",
        s(&vm.join("sample.vmx")),
        "-o",
        s(&a),
        "--chunk-size",
        "64K",
    ]);
    let good = d.path().join("good");
    ok(&["restore", s(&a), "--to", s(&good)]);
    let bytes = fs::read(&a).unwrap();

    // Flip one byte in the middle of the data records.
    let mut flipped = bytes.clone();
    let at = bytes.len() / 2;
    flipped[at] ^= 0x40;
    let f = d.path().join("flipped.vdar");
    fs::write(&f, &flipped).unwrap();
    let out = vdar(&["verify", s(&f)]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("DAMAGED")
            && text.contains("  damage: archive byte 0x")
            && text.contains("  lost: vm \"sample\" disk \"scsi0:0\" bytes 0x"),
        "{text}"
    );
    let out = vdar(&["restore", s(&f), "--to", s(&d.path().join("strict"))]);
    assert_eq!(out.status.code(), Some(2));
    let salv = d.path().join("salv");
    let out = vdar(&["restore", s(&f), "--to", s(&salv), "--salvage"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("vdar: LOST vm \"sample\" disk \"scsi0:0\" bytes 0x")
            && err.contains(": checksum mismatch; reads as zeros in the image")
            && err.contains(&format!(
                "vdar: restored vm \"sample\" disk \"scsi0:0\" (256.0 MiB: 1.1 MiB from records, \
                 254.9 MiB zero, 64.0 KiB LOST) to {}",
                salv.join("sample/sample.raw").display()
            )),
        "{err}"
    );
    // Everything outside the lost range is the good data.
    let (g, r) = (
        fs::read(good.join("sample/sample.raw")).unwrap(),
        fs::read(salv.join("sample/sample.raw")).unwrap(),
    );
    assert_eq!(g.len(), r.len());
    let differing = g
        .chunks(65536)
        .zip(r.chunks(65536))
        .filter(|(x, y)| x != y)
        .count();
    assert!(differing <= 1, "{differing} chunks differ after salvage");

    // A truncated tail (tape ended early) and a piped copy of it.
    let t = d.path().join("trunc.vdar");
    fs::write(&t, &bytes[..bytes.len() * 2 / 3]).unwrap();
    assert_eq!(vdar(&["verify", s(&t)]).status.code(), Some(1));
    // Cut inside the manifest: damaged (exit 1), not "could not run" (exit 2).
    let front = d.path().join("front.vdar");
    fs::write(&front, &bytes[..300]).unwrap();
    let out = vdar(&["verify", s(&front)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("DAMAGED") && text.contains("archive ends inside the manifest"),
        "{text}"
    );
    let sh = format!("cat {} | {} verify -", s(&t), s(&vdar_bin()));
    let st = Command::new("sh").args(["-c", &sh]).status().unwrap();
    assert_eq!(st.code(), Some(1));
    let out = vdar(&[
        "restore",
        s(&t),
        "--to",
        s(&d.path().join("t")),
        "--salvage",
    ]);
    assert_eq!(out.status.code(), Some(1));

    // Without --salvage: the archive is named, the offset given once, and what to do said;
    // nothing is left under a finished name.
    let strict = d.path().join("tstrict");
    for piped in [false, true] {
        let out = if piped {
            let sh = format!(
                "{} restore - --to {} < {}",
                s(&vdar_bin()),
                s(&strict),
                s(&t)
            );
            Command::new("sh").args(["-c", &sh]).output().unwrap()
        } else {
            vdar(&["restore", s(&t), "--to", s(&strict)])
        };
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        let name = if piped { "standard input" } else { s(&t) };
        assert!(err.contains(&format!("{name}: archive byte 0x")), "{err}");
        assert_eq!(err.matches("archive byte").count(), 1, "{err}");
        assert!(err.contains("--salvage"), "{err}");
        assert!(!strict.join("sample/sample.raw").exists());
    }
    // list shows what the truncated archive holds, marked incomplete, and exits 1.
    let out = vdar(&["list", s(&t)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("(INCOMPLETE)") && text.contains("vm sample"),
        "{text}"
    );
    // A directory is named as one (it said "archive input: Is a directory"); `list` of one
    // is its inventory (tests/retention.rs).
    let out = vdar(&["verify", s(d.path())]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains(&format!("{}: is a directory", s(d.path()))),
        "{err}"
    );
    // Not an archive at all: named.
    let out = vdar(&["list", s(&vm.join("sample.vmx"))]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("sample.vmx is not a vdar archive (it looks like a VM configuration file"),
        "{err}"
    );
}

#[test]
fn report_commands_survive_a_closed_stdout() {
    let d = tempdir();
    let vm = extract_sample(d.path());
    let a = d.path().join("a.vdar");
    ok(&["backup", s(&vm.join("sample.vmx")), "-o", s(&a)]);
    for args in [
        vec!["list", s(&a)],
        vec!["list", s(&a), "--json"],
        vec!["verify", s(&a)],
        vec!["inspect", s(&vm.join("sample.vmx"))],
    ] {
        // The reader (`:`) is gone before vdar starts. The pipe is made by a shell, not by this
        // test process: a child forked by a concurrent test would hold a copy of the read end
        // until its exec, and a write in that window succeeds.
        let (code, err) = vdar_piped(
            &format!("(sleep 0.3; exec {{vdar}} {})", args.join(" ")),
            ":",
        );
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.contains("stdout: reader closed the pipe") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn writers_to_a_closed_pipe_fail_loudly() {
    let d = tempdir();
    let vm = extract_sample(d.path());
    let a = d.path().join("a.vdar");
    ok(&["backup", s(&vm.join("sample.vmx")), "-o", s(&a)]);
    // Each writes far more than a pipe holds, so the reader's exit is always seen.
    for cmd in [
        format!("backup {} -o - --level 1", s(&vm.join("sample.vmx"))),
        format!("cat {} -o -", s(&vm.join("sample-000002.vmdk"))),
        format!("restore {} --to - --format stream", s(&a)),
        format!("restore {} --to - --format ova", s(&a)),
    ] {
        let (code, err) = vdar_piped(&format!("{{vdar}} {cmd}"), "head -c 1000 >/dev/null");
        assert_eq!(code, Some(2), "{cmd}: {err}");
        assert!(
            err.contains("stdout: reader closed the pipe at byte 0x")
                && err.contains("output is incomplete"),
            "{cmd}: {err}"
        );
    }
}

/// Writes `bytes` into the FIFO at `path` from another thread (opening blocks until a reader
/// comes).
fn feed_fifo(path: &Path, bytes: Vec<u8>) -> std::thread::JoinHandle<()> {
    let path = path.to_path_buf();
    std::thread::spawn(move || fs::write(path, bytes).unwrap())
}

fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(top: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for f in fs::read_dir(dir).unwrap() {
            let p = f.unwrap().path();
            if p.is_dir() {
                walk(top, &p, out);
            } else {
                let mut bytes = fs::read(&p).unwrap();
                // A restored descriptor's CID is fresh on every restore, by design.
                if p.extension().is_some_and(|e| e == "vmdk") && bytes.len() < 4096 {
                    let text = String::from_utf8(bytes).unwrap();
                    let lines: Vec<&str> = text
                        .lines()
                        .map(|l| if l.starts_with("CID=") { "CID=" } else { l })
                        .collect();
                    bytes = lines.join("\n").into_bytes();
                }
                out.push((p.strip_prefix(top).unwrap().to_path_buf(), bytes));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn archives_go_to_and_come_from_devices_and_fifos() {
    let d = tempdir();
    let vm = extract_sample(d.path());
    let vmx = vm.join("sample.vmx");
    let backup_to = |out: &Path| {
        let o = Command::new(vdar_bin())
            .args(["backup", s(&vmx), "-o", s(out), "--block-size", "64K"])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let file = d.path().join("a.vda");
    backup_to(&file);
    let archive = fs::read(&file).unwrap();

    // A device node is written in place (no .partial renamed over it), without --force.
    backup_to(Path::new("/dev/null"));
    assert!(!Path::new("/dev/null.partial").exists());
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());

    // A FIFO (what a tape drive looks like to a reader: no seeking) receives the same bytes.
    let fifo = d.path().join("tape");
    run("mkfifo", &[s(&fifo)]);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(fifo).unwrap())
    };
    backup_to(&fifo);
    assert!(
        reader.join().unwrap() == archive,
        "archive written to a FIFO differs from the file"
    );

    // And is read back from one in a single pass: list, verify, restore.
    let feeder = feed_fifo(&fifo, archive.clone());
    let out = ok(&["list", s(&fifo)]);
    feeder.join().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("vm sample"));
    let feeder = feed_fifo(&fifo, archive.clone());
    ok(&["verify", s(&fifo)]);
    feeder.join().unwrap();
    let (r1, r2) = (d.path().join("r1"), d.path().join("r2"));
    ok(&["restore", s(&file), "--to", s(&r1)]);
    let feeder = feed_fifo(&fifo, archive);
    ok(&["restore", s(&fifo), "--to", s(&r2)]);
    feeder.join().unwrap();
    assert!(files_under(&r1) == files_under(&r2), "FIFO restore differs");

    // A directory is not an output.
    let out = vdar(&["backup", s(&vmx), "-o", s(d.path())]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a directory"));
}

/// Runs `writer | reader` in bash, `{vdar}` in `writer` standing for the vdar binary: the
/// writer's exit code and stderr.
fn vdar_piped(writer: &str, reader: &str) -> (Option<i32>, String) {
    let writer = writer.replace("{vdar}", s(&vdar_bin()));
    let sh = format!("{writer} | {reader}; exit ${{PIPESTATUS[0]}}");
    let out = Command::new("bash").args(["-c", &sh]).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 13 item 7: a failed `vdar restore --to DIR` left `DIR/<vm>/`, `DIR` and the parents
/// it created behind, empty. It removes the directories it created; ones that existed stay.
#[test]
fn r13_failed_restore_leaves_no_directories() {
    require!("qemu-img");
    let d = tempdir();
    let vmdk = random_vmdk(d.path(), 1);
    let a = d.path().join("a.vdar");
    ok(&["backup", s(&vmdk), "-o", s(&a), "--chunk-size", "64K"]);
    let mut bytes = fs::read(&a).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    fs::write(&a, &bytes).unwrap();
    let keep = d.path().join("keep");
    fs::create_dir(&keep).unwrap();
    for format in ["raw", "vmdk", "sparse", "stream", "ova"] {
        for to in [d.path().join("x/y/z"), keep.clone()] {
            let out = vdar(&["restore", s(&a), "--to", s(&to), "--format", format]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{format}: {err}");
            assert!(err.contains("damaged") || err.contains("checksum"), "{err}");
        }
        assert!(
            !d.path().join("x").exists(),
            "{format}: created directories left"
        );
        let left: Vec<_> = fs::read_dir(&keep).unwrap().collect();
        assert!(left.is_empty(), "{format}: {left:?}");
    }
}

/// A restore of some of a VM's disks writes no .vmx pointed at disks it did not write, and a
/// full restore marks disks the archive does not hold as absent: the folder never names a
/// missing file. `--to` may be a symlink to a directory.
#[test]
fn restored_vmx_names_only_restored_disks() {
    let d = tempdir();
    let vm = extract_sample(d.path());
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=monolithicFlat",
            s(&vm.join("data.vmdk")),
            "4M",
        ],
    );
    let mut vmx = fs::read_to_string(vm.join("sample.vmx")).unwrap();
    vmx += "scsi0:1.present = \"TRUE\"\nscsi0:1.fileName = \"data.vmdk\"\n";
    fs::write(vm.join("sample.vmx"), &vmx).unwrap();
    let two = d.path().join("two.vdar");
    ok(&["backup", s(&vm.join("sample.vmx")), "-o", s(&two)]);
    for format in ["raw", "vmdk", "sparse"] {
        let part = d.path().join(format!("part-{format}"));
        ok(&[
            "restore",
            s(&two),
            "--to",
            s(&part),
            "--disk",
            "1",
            "--format",
            format,
        ]);
        assert!(!part.join("sample/sample.vmx").exists(), "{format}");
        assert!(part.join("sample/data.vmdk").exists(), "{format}");
    }
    // The snapshot backup leaves scsi0:1 out (it is not in the snapshot): the restored .vmx
    // marks it absent instead of naming data.vmdk.
    let snap = d.path().join("snap.vdar");
    ok(&[
        "backup",
        s(&vm.join("sample.vmx")),
        "--snapshot",
        "latest",
        "-o",
        s(&snap),
    ]);
    let real = d.path().join("real");
    fs::create_dir(&real).unwrap();
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    ok(&["restore", s(&snap), "--to", s(&link)]);
    let text = fs::read_to_string(real.join("sample/sample.vmx")).unwrap();
    assert!(text.contains("scsi0:1.present = \"FALSE\""), "{text}");
    assert!(!text.contains("data.vmdk"), "{text}");
    assert!(
        text.contains("scsi0:0.fileName = \"sample.vmdk\""),
        "{text}"
    );
    // A file that is not an archive gets no --salvage hint.
    let out = vdar(&[
        "restore",
        s(&vm.join("sample.vmx")),
        "--to",
        s(&d.path().join("x")),
    ]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("--salvage"));
}

/// Binary output to a terminal is refused, by cat and restore as by backup (issue 15): run
/// under `script`, which gives the command a pseudo-terminal as stdout.
#[test]
fn binary_output_to_a_terminal_is_refused() {
    require!("script");
    let d = tempdir();
    let vm = extract_sample(d.path());
    let a = d.path().join("a.vdar");
    ok(&["backup", s(&vm.join("sample.vmx")), "-o", s(&a)]);
    let v = s(&vdar_bin()).to_string();
    for cmd in [
        format!("{v} cat {} -o -", s(&vm.join("sample.vmdk"))),
        format!("{v} restore {} --to -", s(&a)),
        format!("{v} backup {} -o -", s(&vm.join("sample.vmx"))),
    ] {
        let out = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {text}");
        assert!(text.contains("to a terminal"), "{cmd}: {text}");
        assert!(text.len() < 4096, "{cmd}: wrote {} bytes", text.len());
    }
}

/// `cat -o FILE` keeps an existing file unless --force (issue 15: it overwrote silently).
#[test]
fn cat_keeps_an_existing_file_without_force() {
    let d = tempdir();
    let vm = extract_sample(d.path());
    let out = d.path().join("disk.raw");
    fs::write(&out, b"keep me").unwrap();
    let r = vdar(&["cat", s(&vm.join("sample.vmdk")), "-o", s(&out)]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(fs::read(&out).unwrap(), b"keep me");
    ok(&["cat", s(&vm.join("sample.vmdk")), "-o", s(&out), "--force"]);
    assert_eq!(fs::metadata(&out).unwrap().len(), 256 << 20);
}

/// `--to` naming a file says what is wrong (issue 15: a bare "File exists"); `--threads` help
/// names one default.
#[test]
fn restore_to_a_file_and_threads_help_read_clearly() {
    let d = tempdir();
    let vm = extract_sample(d.path());
    let a = d.path().join("a.vdar");
    ok(&["backup", s(&vm.join("sample.vmx")), "-o", s(&a)]);
    let file = d.path().join("plain");
    fs::write(&file, b"x").unwrap();
    let out = vdar(&["restore", s(&a), "--to", s(&file)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("exists and is not a directory"), "{err}");
    let help = String::from_utf8_lossy(&ok(&["backup", "--help"]).stdout).into_owned();
    let line = help
        .lines()
        .find(|l| l.contains("--threads"))
        .unwrap()
        .to_string();
    assert_eq!(line.matches("default").count(), 1, "{line}");
}

/// One rule for every named output (issue 15, one write path): `cat` refused neither a block
/// device without `--force` (backup did) nor named a directory as one.
#[test]
fn cat_and_backup_share_the_output_rules() {
    let d = tempdir();
    let vm = extract_sample(d.path());
    let disk = vm.join("sample.vmdk");
    let vmx = vm.join("sample.vmx");
    // A node of an unbound loop device: had anything written to it, the write would fail with
    // ENOSPC and touch no disk.
    let node = d.path().join("blk");
    let block = Command::new("mknod")
        .args([s(&node), "b", "7", "200"])
        .status()
        .is_ok_and(|st| st.success())
        .then_some(&node);
    for input in [&disk, &vmx] {
        let cmd = if input == &disk { "cat" } else { "backup" };
        let out = vdar(&[cmd, s(input), "-o", s(d.path())]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains(&format!("{}: is a directory", s(d.path()))),
            "{cmd}: {err}"
        );
        // Refused before anything is opened for writing: safe on any device.
        let Some(dev) = &block else {
            eprintln!("skipped the block-device half: mknod is not permitted");
            continue;
        };
        let out = vdar(&[cmd, s(input), "-o", s(dev)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains("is a block device") && err.contains("--force"),
            "{cmd}: {err}"
        );
    }
}
