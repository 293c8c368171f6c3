//! SAN mode: the sample VM laid out fragmented over two LUN images (`vdar-fixture lun-rig`),
//! read back with `vdar cat --blockmap … --lun …` and compared with `vdar cat` of the files
//! themselves; then the faults: a dead path with failover, a truncated LUN, a probe mismatch,
//! a map that does not cover its file, overlapping runs, two devices claiming one extent; and
//! `blockmap import --probes` with hashes taken by the ESXi one-liner of formats/BLOCKMAP.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::sample::extract_sample;
use crate::util::*;

/// The sample VM and its LUN rig in `dir`: returns (vm folder, rig folder).
fn rig(dir: &Path) -> (PathBuf, PathBuf) {
    let vm = extract_sample(dir);
    let rig = dir.join("rig");
    run(
        fixture_bin().to_str().unwrap(),
        &["lun-rig", vm.to_str().unwrap(), rig.to_str().unwrap()],
    );
    (vm, rig)
}

fn vdar_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(vdar_bin());
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run vdar")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "vdar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fails_with(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "expected failure, got: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
    err
}

/// `vdar cat` of `top` in SAN mode into `out`.
fn san_cat(map: &Path, luns: &[&str], top: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "cat".into(),
        "--force".into(),
        "-o".into(),
        out.to_str().unwrap().into(),
        "--blockmap".into(),
        map.to_str().unwrap().into(),
        "--lun".into(),
    ];
    a.extend(luns.iter().map(|s| s.to_string()));
    a.extend(extra.iter().map(|s| s.to_string()));
    a.push("--".into());
    a.push(top.into());
    a
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn san_cat_equals_direct_cat() {
    let d = tempdir();
    let (vm, rig) = rig(d.path());
    let map: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rig.join("blockmap.json")).unwrap()).unwrap();
    // The layout really exercises what it claims to: TBZ runs (stale 0xDE bytes behind them),
    // holes, and data runs crossing a 4 MiB PE boundary.
    let runs: Vec<&serde_json::Value> = map["files"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["runs"].as_array().unwrap())
        .collect();
    assert!(runs.iter().any(|r| r["kind"] == "tbz"));
    assert!(runs.iter().any(|r| r["kind"] == "hole"));
    assert!(runs.iter().any(|r| {
        let (lv, len) = (r["lv"].as_u64().unwrap_or(0), r["len"].as_u64().unwrap());
        r["kind"] == "data" && lv / (4 << 20) != (lv + len - 1) / (4 << 20)
    }));
    let glob = format!("{}/lun*.img", rig.display());
    for top in ["sample-000002.vmdk", "sample-000001.vmdk", "sample.vmdk"] {
        let direct = d.path().join("direct.raw");
        ok(&vdar(&[
            "cat",
            vm.join(top).to_str().unwrap(),
            "-o",
            direct.to_str().unwrap(),
            "--force",
        ]));
        for (extra, env) in [
            (vec![], vec![]),
            (
                vec!["--queue-depth", "1"],
                vec![("VDAR_IO_BACKEND", "pread")],
            ),
            (vec!["--queue-depth", "64", "--direct"], vec![]),
        ] {
            let san = d.path().join("san.raw");
            let args = san_cat(&rig.join("blockmap.json"), &[&glob], top, &san, &extra);
            ok(&vdar_env(&strs(&args), &env));
            assert_same_file(&direct, &san);
        }
    }
    let out = vdar(&[
        "inspect",
        "--json",
        "--blockmap",
        rig.join("blockmap.json").to_str().unwrap(),
        "--lun",
        &glob,
        "--",
        "sample-000002.vmdk",
    ]);
    ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["disks"][0]["chain"].as_array().unwrap().len(), 3);
}

#[test]
fn blockmap_import_from_t0_text() {
    let d = tempdir();
    let (vm, rig) = rig(d.path());
    let imported = d.path().join("imported.json");
    let descs: Vec<String> = ["sample.vmdk", "sample-000001.vmdk", "sample-000002.vmdk"]
        .iter()
        .map(|n| vm.join(n).to_str().unwrap().to_string())
        .collect();
    let mut args = vec![
        "blockmap",
        "import",
        "--t0",
        rig.join("t0.txt").to_str().unwrap().to_owned().leak(),
        "--extents",
        rig.join("extents.txt").to_str().unwrap().to_owned().leak(),
        "-o",
        imported.to_str().unwrap(),
        "--descriptor",
    ];
    args.extend(descs.iter().map(String::as_str));
    ok(&vdar(&args));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&imported).unwrap()).unwrap();
    // Without --lun the LV UUID stays undecided; the reader matches lvidRaw against the LUNs.
    assert_eq!(m["volumes"][0]["lvUuid"], "");
    assert_eq!(m["volumes"][0]["label"], "rigds");
    let direct = d.path().join("direct.raw");
    ok(&vdar(&[
        "cat",
        vm.join("sample-000002.vmdk").to_str().unwrap(),
        "-o",
        direct.to_str().unwrap(),
    ]));
    let san = d.path().join("san.raw");
    let glob = format!("{}/lun*.img", rig.display());
    ok(&vdar(&strs(&san_cat(
        &imported,
        &[&glob],
        "sample-000002.vmdk",
        &san,
        &[],
    ))));
    assert_same_file(&direct, &san);
    // A line the parser does not understand fails with its line number.
    let bad = d.path().join("bad.txt");
    let mut t = std::fs::read_to_string(rig.join("t0.txt")).unwrap();
    t.insert_str(t.find('\n').unwrap() + 1, "[ 0: 512] --> [RDM -- :]\n");
    std::fs::write(&bad, t).unwrap();
    let out = vdar(&[
        "blockmap",
        "import",
        "--t0",
        bad.to_str().unwrap(),
        "-o",
        imported.to_str().unwrap(),
    ]);
    fails_with(&out, &["line 2", "RDM"]);
}

#[test]
fn dead_paths_fail_over() {
    let d = tempdir();
    let (vm, rig) = rig(d.path());
    let direct = d.path().join("direct.raw");
    ok(&vdar(&[
        "cat",
        vm.join("sample-000002.vmdk").to_str().unwrap(),
        "-o",
        direct.to_str().unwrap(),
    ]));
    // Path A to LUN 1 dies after the scan: a copy that holds the LVM metadata but whose reads
    // past 2 MiB hit the end of the file. Path B to LUN 0 is dead from the start: a directory
    // opens but every read fails with EISDIR.
    let dying = d.path().join("lun1-path-a.img");
    run(
        "cp",
        &[
            "--sparse=always",
            rig.join("lun1.img").to_str().unwrap(),
            dying.to_str().unwrap(),
        ],
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&dying)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    let dead_dir = d.path().join("lun0-path-b");
    std::fs::create_dir(&dead_dir).unwrap();
    let g0 = format!("{},{}", dead_dir.display(), rig.join("lun0.img").display());
    let g1 = format!("{},{}", dying.display(), rig.join("lun1.img").display());
    let san = d.path().join("san.raw");
    let out = vdar(&strs(&san_cat(
        &rig.join("blockmap.json"),
        &[&g0, &g1],
        "sample-000002.vmdk",
        &san,
        &[],
    )));
    ok(&out);
    assert_same_file(&direct, &san);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("LUN path {} is dead", dead_dir.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("LUN path {} is dead", dying.display()))
            && err.contains("failing over"),
        "{err}"
    );
}

/// Edits the rig's block map with `f` and writes it to a new file.
fn edit_map(rig: &Path, f: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rig.join("blockmap.json")).unwrap()).unwrap();
    f(&mut m);
    let p = rig.join("edited.json");
    std::fs::write(&p, serde_json::to_vec(&m).unwrap()).unwrap();
    p
}

fn file_index(m: &serde_json::Value, name: &str) -> usize {
    m["files"]
        .as_array()
        .unwrap()
        .iter()
        .position(|f| f["path"].as_str().unwrap().ends_with(name))
        .unwrap()
}

#[test]
fn faults_give_clear_errors() {
    let d = tempdir();
    let (_vm, rig) = rig(d.path());
    let glob = format!("{}/lun*.img", rig.display());
    let san = d.path().join("san.raw");
    let cat = |map: &Path, luns: &[&str]| {
        vdar(&strs(&san_cat(map, luns, "sample-000002.vmdk", &san, &[])))
    };

    // Probe mismatch: the host's hash does not match what the LUNs hold.
    let map = edit_map(&rig, |m| {
        let i = file_index(m, "sample-flat.vmdk");
        m["files"][i]["probes"][0]["sha256"] = "00".repeat(32).into();
    });
    fails_with(
        &cat(&map, &[&glob]),
        &["probe", "sample-flat.vmdk", "before copy", "moved"],
    );

    // A map that does not cover its file.
    let map = edit_map(&rig, |m| {
        let i = file_index(m, "sample-flat.vmdk");
        m["files"][i]["runs"].as_array_mut().unwrap().pop();
    });
    fails_with(
        &cat(&map, &[&glob]),
        &["edited.json", "sample-flat.vmdk", "not covered"],
    );

    // Overlapping runs.
    let map = edit_map(&rig, |m| {
        let i = file_index(m, "sesparse.vmdk");
        let off = m["files"][i]["runs"][0]["off"].clone();
        m["files"][i]["runs"][1]["off"] = off;
    });
    fails_with(&cat(&map, &[&glob]), &["sesparse.vmdk", "overlaps"]);

    // Two different devices claiming the same extent (a replica next to its source).
    let replica = d.path().join("replica.img");
    run(
        "cp",
        &[
            "--sparse=always",
            rig.join("lun1.img").to_str().unwrap(),
            replica.to_str().unwrap(),
        ],
    );
    fails_with(
        &cat(
            &rig.join("blockmap.json"),
            &[&glob, replica.to_str().unwrap()],
        ),
        &["claims the same VMFS extent", "replica.img"],
    );

    // A LUN missing: the volume spans two.
    fails_with(
        &cat(
            &rig.join("blockmap.json"),
            &[rig.join("lun0.img").to_str().unwrap()],
        ),
        &["pass every LUN"],
    );

    // A truncated LUN.
    std::fs::OpenOptions::new()
        .write(true)
        .open(rig.join("lun1.img"))
        .unwrap()
        .set_len(20 << 20)
        .unwrap();
    fails_with(
        &cat(&rig.join("blockmap.json"), &[&glob]),
        &["lun1.img", "truncated"],
    );
}

#[test]
fn san_backup_equals_direct_backup() {
    let d = tempdir();
    let (vm, rig) = rig(d.path());
    // The proxy holds only the VM's small files (copied from the host); every disk byte and
    // descriptor must come from the LUNs.
    let proxy = d.path().join("proxy");
    std::fs::create_dir(&proxy).unwrap();
    for e in std::fs::read_dir(&vm).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x != "vmdk") {
            std::fs::copy(&p, proxy.join(p.file_name().unwrap())).unwrap();
        }
    }
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    let direct = d.path().join("direct.vda");
    ok(&vdar_env(
        &[
            "backup",
            vm.join("sample.vmx").to_str().unwrap(),
            "-o",
            direct.to_str().unwrap(),
        ],
        &epoch,
    ));
    let glob = format!("{}/lun*.img", rig.display());
    let map = rig.join("blockmap.json");
    for (extra, env) in [
        (vec![], vec![]),
        (vec!["--direct"], vec![]),
        (
            vec!["--queue-depth", "1"],
            vec![("VDAR_IO_BACKEND", "pread")],
        ),
    ] {
        let san = d.path().join("san.vda");
        let _ = std::fs::remove_file(&san);
        let mut args = vec![
            "backup",
            "-o",
            san.to_str().unwrap(),
            "--blockmap",
            map.to_str().unwrap(),
            "--lun",
            &glob,
        ];
        args.extend(extra.iter().copied());
        let vmx = proxy.join("sample.vmx");
        args.extend(["--", vmx.to_str().unwrap()]);
        let env: Vec<(&str, &str)> = env.iter().copied().chain(epoch).collect();
        ok(&vdar_env(&args, &env));
        assert_same_file(&direct, &san);
    }
    // Through a pipe, and restored: the disk equals qemu-img's reading of the original chain.
    let out = vdar_env(
        &[
            "backup",
            "-o",
            "-",
            "--blockmap",
            map.to_str().unwrap(),
            "--lun",
            &glob,
            "--",
            "sample-000002.vmdk",
        ],
        &epoch,
    );
    ok(&out);
    let archive = d.path().join("pipe.vda");
    std::fs::write(&archive, &out.stdout).unwrap();
    let to = d.path().join("restored");
    ok(&vdar(&[
        "restore",
        archive.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]));
    let want = d.path().join("want.raw");
    qemu_raw(&vm.join("sample-000002.vmdk"), &want);
    let raws: Vec<PathBuf> = std::fs::read_dir(to.join("sample-000002"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "raw"))
        .collect();
    assert_eq!(raws.len(), 1, "{raws:?}");
    assert_same_file(&want, &raws[0]);
}

#[test]
fn san_backup_probe_mismatch_leaves_no_archive() {
    let d = tempdir();
    let (_vm, rig) = rig(d.path());
    let map = edit_map(&rig, |m| {
        let files = m["files"].as_array_mut().unwrap();
        let f = files
            .iter_mut()
            .find(|f| !f["probes"].as_array().unwrap().is_empty())
            .unwrap();
        f["probes"][0]["sha256"] = "00".repeat(32).into();
    });
    let out_path = d.path().join("a.vda");
    let out = vdar(&[
        "backup",
        "-o",
        out_path.to_str().unwrap(),
        "--blockmap",
        map.to_str().unwrap(),
        "--lun",
        &format!("{}/lun*.img", rig.display()),
        "--",
        "sample-000002.vmdk",
    ]);
    fails_with(&out, &["probe"]);
    assert!(!out_path.exists());
    assert!(!d.path().join("a.vda.partial").exists());
}

/// The probe one-liner of formats/BLOCKMAP.md §2.1, verbatim (from `for n in` to `done`).
fn probe_one_liner() -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("formats/BLOCKMAP.md"))
            .unwrap();
    let start = doc
        .find("for n in $BLOCKS; do")
        .expect("one-liner in BLOCKMAP.md");
    let end = start + doc[start..].find("done >> probes.txt").unwrap() + "done >> probes.txt".len();
    doc[start..end].to_string()
}

/// Runs the documented one-liner with the system's `dd`, `sha256sum` and `awk` (not our
/// SHA-256) in `dir`, appending to `dir/probes.txt`.
fn host_probes(dir: &Path, file: &Path, block: u64, blocks: &[u64]) {
    let list: Vec<String> = blocks.iter().map(u64::to_string).collect();
    let out = Command::new("sh")
        .arg("-c")
        .arg(probe_one_liner())
        .current_dir(dir)
        .env("F", file)
        .env("B", block.to_string())
        .env("BLOCKS", list.join(" "))
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "one-liner failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn blockmap_import_with_host_probes() {
    let d = tempdir();
    let (vm, rig) = rig(d.path());
    for tool in ["sh", "dd", "sha256sum", "awk"] {
        if !have(tool) {
            eprintln!("skipped: {tool} not installed");
            return;
        }
    }
    // Probes of every data file, from the original files, as the host would take them: the
    // first, a middle and the last whole block. The delta file is smaller than 1 MiB.
    let host = d.path().join("host");
    std::fs::create_dir(&host).unwrap();
    for (name, block) in [
        ("sample-flat.vmdk", 1u64 << 20),
        ("sample-000001-delta.vmdk", 4096),
        ("sample-000002-sesparse.vmdk", 1 << 20),
    ] {
        let f = vm.join(name);
        let whole = std::fs::metadata(&f).unwrap().len() / block;
        assert!(whole >= 3, "{name} is too small for 3 probes");
        host_probes(&host, &f, block, &[0, whole / 2, whole - 1]);
    }
    let probes = host.join("probes.txt");
    let text = std::fs::read_to_string(&probes).unwrap();
    assert_eq!(text.lines().count(), 9, "{text}");

    let imported = d.path().join("imported.json");
    let import = |probes: &Path| {
        vdar(&[
            "blockmap",
            "import",
            "--t0",
            rig.join("t0.txt").to_str().unwrap(),
            "--probes",
            probes.to_str().unwrap(),
            "-o",
            imported.to_str().unwrap(),
            "--descriptor",
            vm.join("sample.vmdk").to_str().unwrap(),
            vm.join("sample-000001.vmdk").to_str().unwrap(),
            vm.join("sample-000002.vmdk").to_str().unwrap(),
        ])
    };
    let out = import(&probes);
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("9 probes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&imported).unwrap()).unwrap();
    let flat = file_index(&m, "sample-flat.vmdk");
    assert_eq!(m["files"][flat]["probes"].as_array().unwrap().len(), 3);

    let direct = d.path().join("direct.raw");
    ok(&vdar(&[
        "cat",
        vm.join("sample-000002.vmdk").to_str().unwrap(),
        "-o",
        direct.to_str().unwrap(),
    ]));
    let glob = format!("{}/lun*.img", rig.display());
    let san = d.path().join("san.raw");
    let cat = || {
        vdar(&strs(&san_cat(
            &imported,
            &[&glob],
            "sample-000002.vmdk",
            &san,
            &[],
        )))
    };
    ok(&cat());
    assert_same_file(&direct, &san);

    // One wrong hash (the middle probe of the delta file): import cannot tell, the read must.
    let lines: Vec<&str> = text.lines().collect();
    let victim = lines[4];
    let (head, hash) = victim.rsplit_once(' ').unwrap();
    let flipped = format!(
        "{head} {}{}",
        if hash.starts_with('0') { '1' } else { '0' },
        &hash[1..]
    );
    let bad = host.join("bad-probes.txt");
    std::fs::write(&bad, text.replace(victim, &flipped)).unwrap();
    ok(&import(&bad));
    let fields: Vec<u64> = head
        .rsplitn(3, ' ')
        .take(2)
        .map(|x| x.parse().unwrap())
        .collect();
    let (len, off) = (fields[0], fields[1]);
    let range = format!("bytes {off:#x}..{:#x}", off + len);
    fails_with(
        &cat(),
        &["probe", "sample-000001-delta.vmdk", &range, "before copy"],
    );

    // A probe naming a file the map does not have is refused at import, with its line.
    std::fs::write(
        &bad,
        format!(
            "{text}/vmfs/volumes/x/vm/other-flat.vmdk 0 4096 {}\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();
    fails_with(
        &import(&bad),
        &["bad-probes.txt", "line 10", "other-flat.vmdk"],
    );
}
