//! Object storage against a real three-node Garage cluster (tests/garage.rs): backup to
//! `s3://…` and restore from it byte for byte as from the same archive in a file and as
//! qemu-img reads the inputs; the bytes a one-disk restore fetches; verify and list on an
//! object; multipart uploads with small parts, several in flight; and the faults: a node
//! killed during an upload and during a restore, two nodes gone (a clean failure, no object),
//! a missing bucket, wrong credentials, a truncated object, a proxy that cuts answers short,
//! and a backup interrupted by SIGTERM (upload aborted) or SIGKILL (no object).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use vdar::archive::format::RECORD_HEADER_BYTES;
use vdar::archive::index::SeekableArchive;
use vdar::objstore::{ObjectReader, ObjectUrl, Upload};

use crate::garage::{self, Garage};
use crate::util::{assert_same_file, fixture_bin, noise, qemu_raw, raw_to_vmdk, run, s, tempdir};

/// Archives made the same second are the same bytes (the manifest's time).
const EPOCH: (&str, &str) = ("SOURCE_DATE_EPOCH", "1765000000");
/// Parts of 1 MiB: an archive of a few tens of MiB goes up in many parts, four in flight.
const SMALL_PARTS: (&str, &str) = ("VDAR_S3_PART_SIZE", "1048576");

/// Three disks of one VM: a flat base with a COWD redo log on top (a chain), and two disks of
/// incompressible bytes, each different (no dedup between them). Returns the descriptors.
fn disks(dir: &Path, noise_mib: usize) -> Vec<PathBuf> {
    let p = |n: &str| dir.join(n);
    run(
        s(&fixture_bin()),
        &["flat", s(&p("a")), "16M", "D:0:6M:7", "D:10M:2M:8"],
    );
    run(
        s(&fixture_bin()),
        &["delta", "cowd", s(&p("a-1")), s(&p("a.vmdk")), "D:1M:1M:9"],
    );
    let mut out = vec![p("a-1.vmdk")];
    for (name, seed) in [
        ("b", 0x1234_5678_9abc_def1u64),
        ("c", 0x0fed_cba9_8765_4321),
    ] {
        let raw = p(&format!("{name}.raw"));
        std::fs::write(&raw, noise(noise_mib << 20, seed)).unwrap();
        let vmdk = p(&format!("{name}.vmdk"));
        raw_to_vmdk(&raw, &vmdk);
        std::fs::remove_file(&raw).unwrap();
        out.push(vmdk);
    }
    out
}

/// `vdar backup DISKS -o OUT` args.
fn backup_args<'a>(disks: &'a [PathBuf], out: &'a str) -> Vec<&'a str> {
    let mut a = vec!["backup"];
    a.extend(disks.iter().map(|d| s(d)));
    a.extend(["-o", out]);
    a
}

/// Restores `archive` into `to` (extra args after), returning the restored images by disk.
fn restore(g: &Garage, archive: &str, to: &Path, extra: &[&str]) -> Vec<PathBuf> {
    let mut a = vec!["restore", archive, "--to", s(to), "--json"];
    a.extend_from_slice(extra);
    let out = g.ok(&a, &[]);
    let mut imgs: Vec<(String, PathBuf)> = crate::util::restored_images(&out.stdout)
        .into_iter()
        .map(|((_, disk), p)| (disk, p))
        .collect();
    imgs.sort();
    imgs.into_iter().map(|(_, p)| p).collect()
}

/// The whole object's bytes.
fn object_bytes(g: &Garage, key: &str) -> Vec<u8> {
    let obj = ObjectUrl::parse(&g.url(key)).unwrap();
    let mut r = ObjectReader::open(g.client(), obj).unwrap();
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    v
}

fn head(g: &Garage, key: &str) -> bool {
    let obj = ObjectUrl::parse(&g.url(key)).unwrap();
    g.client().head(&obj).unwrap().is_some()
}

fn uploads(g: &Garage, key: &str) -> Vec<(String, String)> {
    g.client()
        .list_multipart_uploads(&g.bucket, key)
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k == key)
        .collect()
}

/// Whether the multipart uploads of `key` are all gone within a few seconds. Garage filters a
/// listing on each node before merging the answers, so a node that has not yet heard of an
/// abort (a write quorum is 2 of 3) can show the upload for a moment after the abort returned.
fn uploads_gone(g: &Garage, key: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !uploads(g, key).is_empty() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Waits until a multipart upload of `key` is in progress (the backup is mid-upload); false
/// when `child` ended first.
fn wait_for_upload(g: &Garage, key: &str, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if !uploads(g, key).is_empty() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no upload of {key} started within a minute");
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn backup_to_s3_restores_like_the_file_and_qemu() {
    let Some(g) = garage::start() else { return };
    let d = tempdir();
    let disks = disks(d.path(), 8);
    let local = d.path().join("a.vdar");
    g.ok(&backup_args(&disks, s(&local)), &[EPOCH]);
    let url = g.url("vm/a.vdar");
    let mut args = backup_args(&disks, &url);
    args.push("-v");
    let out = g.ok(&args, &[EPOCH, SMALL_PARTS]);
    // Many small parts, several in flight at once.
    let e = stderr(&out);
    let line = e
        .lines()
        .find(|l| l.contains(" in flight, complete"))
        .unwrap_or_else(|| panic!("{e}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let most: u32 = words[words.iter().position(|w| *w == "most").unwrap() + 1]
        .parse()
        .unwrap();
    let parts: u32 = words[words.iter().position(|w| *w == "parts,").unwrap() - 1]
        .parse()
        .unwrap();
    assert!(parts > 10 && most > 1, "{line}");
    // The same inputs give the same archive bytes, wherever they are written.
    assert!(object_bytes(&g, "vm/a.vdar") == std::fs::read(&local).unwrap());

    // An existing object is kept unless --force, as a file is.
    let again = g.run(&backup_args(&disks, &url), &[EPOCH]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("s3://vdar/vm/a.vdar: already exists"),
        "{}",
        stderr(&again)
    );
    let mut forced = backup_args(&disks, &url);
    forced.push("--force");
    g.ok(&forced, &[EPOCH]);

    let from_file = restore(&g, s(&local), &d.path().join("rf"), &[]);
    let from_s3 = restore(&g, &url, &d.path().join("rs"), &[]);
    let streamed = restore(&g, &url, &d.path().join("rt"), &["--stream"]);
    assert_eq!(from_s3.len(), 3);
    for (i, disk) in disks.iter().enumerate() {
        let want = d.path().join(format!("want{i}.raw"));
        qemu_raw(disk, &want);
        assert_same_file(&from_file[i], &want);
        assert_same_file(&from_s3[i], &want);
        assert_same_file(&streamed[i], &want);
    }

    let v = g.ok(&["verify", &url], &[]);
    assert!(String::from_utf8_lossy(&v.stdout).contains(": ok,"));
    g.ok(&["verify", "--stream", &url], &[]);
    let list_s3: serde_json::Value =
        serde_json::from_slice(&g.ok(&["list", "--json", &url], &[]).stdout).unwrap();
    let list_file: serde_json::Value =
        serde_json::from_slice(&g.ok(&["list", "--json", s(&local)], &[]).stdout).unwrap();
    assert_eq!(list_s3, list_file);
    assert_eq!(list_s3["vms"][0]["disks"].as_array().unwrap().len(), 3);
}

#[test]
fn an_incremental_chain_on_s3_restores_verifies_and_consolidates() {
    let Some(g) = garage::start() else { return };
    let d = tempdir();
    let p = |n: &str| d.path().join(n);
    run(
        s(&fixture_bin()),
        &["flat", s(&p("a")), "16M", "D:0:6M:7", "D:10M:2M:8"],
    );
    run(
        s(&fixture_bin()),
        &[
            "delta",
            "cowd",
            s(&p("a-1")),
            s(&p("a.vmdk")),
            "D:1M:4K:9",
            "D:5M:1M:3",
        ],
    );
    let (full, inc) = (g.url("chain/full.vdar"), g.url("chain/inc.vdar"));
    g.ok(
        &[
            "backup",
            s(&p("a.vmdk")),
            "-o",
            &full,
            "--chunk-size",
            "64K",
        ],
        &[],
    );
    // An incremental of the base on s3 (its headers read with ranged GETs): the redo log's
    // 4 KiB write is patched over the base's chunk.
    let out = g.ok(
        &[
            "backup",
            s(&p("a-1.vmdk")),
            "-o",
            &inc,
            "--base",
            &full,
            "--json",
        ],
        &[],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["chunks_base"].as_u64().unwrap() > 0, "{report}");
    assert!(report["chunks_patched"].as_u64().unwrap() > 0, "{report}");

    let want = p("want.raw");
    qemu_raw(&p("a-1.vmdk"), &want);
    let got = restore(&g, &inc, &p("r"), &["--base", &full]);
    assert_same_file(&got[0], &want);
    // The incremental from a pipe, its base on s3.
    let bytes = object_bytes(&g, "chain/inc.vdar");
    let piped = g
        .vdar(&[
            "restore",
            "-",
            "--base",
            &full,
            "--to",
            s(&p("rp")),
            "--json",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&bytes)?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(piped.status.success(), "{}", stderr(&piped));
    let images = crate::util::restored_images(&piped.stdout);
    assert_same_file(images.values().next().unwrap(), &want);
    let v = g.ok(&["verify", &inc, "--base", &full], &[]);
    assert!(
        String::from_utf8_lossy(&v.stdout).contains(": ok,"),
        "{v:?}"
    );
    // Without its base the incremental names what it needs.
    let lone = g.run(&["restore", &inc, "--to", s(&p("rl"))], &[]);
    assert!(!lone.status.success());
    assert!(
        stderr(&lone).contains("needs base archive"),
        "{}",
        stderr(&lone)
    );

    // Consolidated from s3, given newest first, into a local full archive.
    let syn = p("syn.vdar");
    g.ok(&["consolidate", &inc, &full, "-o", s(&syn)], &[]);
    let got = restore(&g, s(&syn), &p("rc"), &[]);
    assert_same_file(&got[0], &want);
}

#[test]
fn one_disk_restore_fetches_that_disk_index_and_manifest() {
    let Some(g) = garage::start() else { return };
    let d = tempdir();
    let disks = disks(d.path(), 12);
    let local = d.path().join("a.vdar");
    g.ok(&backup_args(&disks, s(&local)), &[EPOCH]);
    let url = g.url("a.vdar");
    g.ok(&backup_args(&disks, &url), &[EPOCH]);

    // What the restore of disk 1 needs: its records, the index, the manifest (and its copy).
    let mut f = std::fs::File::open(&local).unwrap();
    let ar = SeekableArchive::open(&mut f).unwrap();
    let records: u64 = ar
        .index
        .iter()
        .filter(|e| e.disk == 1 && e.kind != vdar::archive::format::RecordKind::File)
        .map(|e| u64::from(e.stored_len) + RECORD_HEADER_BYTES as u64)
        .sum();
    let index = ar.len - ar.footer.index_offset;
    let needed = records + index + ar.records_start;
    drop(ar);

    let out = g.ok(
        &[
            "restore",
            &url,
            "--disk",
            "1",
            "--to",
            s(&d.path().join("r")),
            "-v",
        ],
        &[],
    );
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains("fetched"))
        .unwrap_or_else(|| panic!("no fetched line: {err}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "fetched").unwrap();
    let fetched: u64 = words[at + 1].parse().unwrap();
    let archive = std::fs::metadata(&local).unwrap().len();
    eprintln!("fetched {fetched} of {archive} archive bytes; disk 1 + index + manifest = {needed}");
    assert!(
        fetched as f64 <= 1.1 * needed as f64,
        "fetched {fetched} > 1.1 x {needed}"
    );
    let want = d.path().join("want.raw");
    qemu_raw(&disks[1], &want);
    let img = std::fs::read_dir(d.path().join("r"))
        .unwrap()
        .flat_map(|vm| std::fs::read_dir(vm.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "raw"))
        .expect("a restored raw image");
    assert_same_file(&img, &want);
}

#[test]
fn uploads_in_parts_read_back_at_random_and_abort_when_dropped() {
    let Some(g) = garage::start() else { return };
    let client = g.client_with(256 << 10);
    let data = noise(3 << 20 | 12345, 42);
    let obj = ObjectUrl::parse(&g.url("parts.bin")).unwrap();
    let mut up = Upload::create(client.clone(), obj.clone(), false).unwrap();
    for piece in data.chunks(100_003) {
        up.write_all(piece).unwrap();
    }
    let summary = up.finish().unwrap();
    assert_eq!((summary.bytes, summary.parts), (data.len() as u64, 13));
    assert!(summary.most_in_flight > 1, "{summary:?}");

    let mut r = ObjectReader::open(client.clone(), obj.clone()).unwrap();
    assert_eq!(r.len(), data.len() as u64);
    for (at, len) in [
        (0, 10),
        (1 << 20, 200_000),
        (3 << 20, 12345),
        (777, 2 << 20),
    ] {
        let mut buf = vec![0u8; len];
        r.seek(SeekFrom::Start(at)).unwrap();
        r.read_exact(&mut buf).unwrap();
        assert!(buf == data[at as usize..at as usize + len], "{at}+{len}");
    }
    let (bytes, requests) = r.stats().get();
    assert!(
        requests >= 4 && bytes < 3 << 20,
        "{bytes} bytes, {requests} requests"
    );

    // Replaced while it is read: the next GET is refused (If-Match), never mixed bytes.
    client.put_object(&obj, b"another archive").unwrap();
    r.seek(SeekFrom::Start(2 << 20)).unwrap();
    let e = r.read(&mut [0u8; 16]).unwrap_err().to_string();
    assert!(
        e.contains("s3://vdar/parts.bin") && e.contains("changed"),
        "{e}"
    );

    // Smaller than one part: one PUT, no multipart upload.
    let small = ObjectUrl::parse(&g.url("small.bin")).unwrap();
    let mut up = Upload::create(client.clone(), small, false).unwrap();
    up.write_all(b"tiny").unwrap();
    assert_eq!(up.finish().unwrap().parts, 0);

    // Dropped before finish (an error in the pipeline): aborted, nothing at the key.
    let gone = ObjectUrl::parse(&g.url("dropped.bin")).unwrap();
    let mut up = Upload::create(client.clone(), gone.clone(), false).unwrap();
    up.write_all(&data).unwrap();
    assert!(!uploads(&g, "dropped.bin").is_empty());
    drop(up);
    assert!(uploads_gone(&g, "dropped.bin"));
    assert!(client.head(&gone).unwrap().is_none());
}

#[test]
fn a_node_killed_during_upload_and_restore_is_survived() {
    let Some(mut g) = garage::start() else { return };
    let d = tempdir();
    let disks = disks(d.path(), 24);
    let url = g.url("k.vdar");
    let mut child = g
        .vdar(&backup_args(&disks, &url))
        .env(SMALL_PARTS.0, SMALL_PARTS.1)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mid = wait_for_upload(&g, "k.vdar", &mut child);
    g.kill(2);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        mid,
        "the backup ended before the node could be killed mid-upload"
    );

    // Two nodes of three hold a quorum: the archive restores and verifies.
    let imgs = restore(&g, &url, &d.path().join("r"), &[]);
    for (i, disk) in disks.iter().enumerate() {
        let want = d.path().join(format!("want{i}.raw"));
        qemu_raw(disk, &want);
        assert_same_file(&imgs[i], &want);
    }
    g.ok(&["verify", &url], &[]);

    // All three again, then one killed while a restore runs: it completes.
    g.restart(2);
    let restore_while_killing = |g: &mut Garage, node: usize, to: &Path| {
        let child = g
            .vdar(&["restore", &url, "--to", s(to), "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(150));
        g.kill(node);
        child.wait_with_output().unwrap()
    };
    let out = restore_while_killing(&mut g, 1, &d.path().join("r1"));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut imgs: Vec<_> = crate::util::restored_images(&out.stdout)
        .into_iter()
        .collect();
    imgs.sort();
    for (i, (_, img)) in imgs.iter().enumerate() {
        assert_same_file(img, &d.path().join(format!("want{i}.raw")));
    }

    // The second node gone mid-restore: one node is no quorum; the restore fails, saying
    // which object and why, and leaves nothing behind (or it had finished already).
    let to = d.path().join("r2");
    let out = restore_while_killing(&mut g, 2, &to);
    if out.status.success() {
        eprintln!("the restore finished before the second node died");
    } else {
        let e = stderr(&out);
        eprintln!("restore with one node left: {e}");
        assert_eq!(out.status.code(), Some(2), "{e}");
        assert!(
            e.contains("s3://vdar/k.vdar") && e.contains("quorum"),
            "{e}"
        );
        assert!(
            !std::fs::read_dir(&to)
                .map(|mut r| r.any(|e| e.unwrap().path().is_dir()))
                .unwrap_or(false),
            "a failed restore leaves no VM directory"
        );
    }
}

#[test]
fn two_nodes_lost_during_upload_fail_cleanly_without_an_object() {
    let Some(mut g) = garage::start() else { return };
    let d = tempdir();
    let disks = disks(d.path(), 24);
    let url = g.url("q.vdar");
    let mut child = g
        .vdar(&backup_args(&disks, &url))
        .env(SMALL_PARTS.0, SMALL_PARTS.1)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for_upload(&g, "q.vdar", &mut child));
    g.kill(1);
    g.kill(2);
    let out = child.wait_with_output().unwrap();
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("s3://vdar/q.vdar") && e.contains(&g.endpoint),
        "{e}"
    );
    assert!(e.contains("gave up after"), "{e}");
    eprintln!("backup with one node left: {e}");
    // No object that looks complete, whatever became of the upload.
    let obj = ObjectUrl::parse(&url).unwrap();
    assert!(g.client().head(&obj).map(|h| h.is_none()).unwrap_or(true));
}

#[test]
fn missing_bucket_wrong_credentials_and_missing_object_are_named() {
    let Some(g) = garage::start() else { return };
    let d = tempdir();
    let disks = disks(d.path(), 1);
    let out = g.run(&backup_args(&disks, "s3://nosuchbucket/x.vdar"), &[]);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("s3://nosuchbucket/x.vdar") && e.contains("bucket does not exist"),
        "{e}"
    );
    assert!(e.contains(&g.endpoint), "{e}");

    let bad = "0".repeat(64);
    let out = g.run(
        &backup_args(&disks, &g.url("x.vdar")),
        &[("AWS_SECRET_ACCESS_KEY", &bad)],
    );
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("s3://vdar/x.vdar") && e.contains(&g.endpoint) && e.contains("HTTP 403"),
        "{e}"
    );
    assert!(e.contains("AWS_SECRET_ACCESS_KEY"), "{e}");

    let out = g.run(&["list", &g.url("none.vdar")], &[]);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("s3://vdar/none.vdar") && e.contains("no such object"),
        "{e}"
    );
}

#[test]
fn a_truncated_object_is_reported_with_its_name_and_offset() {
    let Some(g) = garage::start() else { return };
    let d = tempdir();
    let disks = disks(d.path(), 2);
    let local = d.path().join("a.vdar");
    g.ok(&backup_args(&disks, s(&local)), &[]);
    let bytes = std::fs::read(&local).unwrap();
    let cut = &bytes[..bytes.len() - 5000];
    let obj = ObjectUrl::parse(&g.url("cut.vdar")).unwrap();
    g.client().put_object(&obj, cut).unwrap();
    let out = g.run(
        &[
            "restore",
            &g.url("cut.vdar"),
            "--to",
            s(&d.path().join("r")),
        ],
        &[],
    );
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("s3://vdar/cut.vdar") && e.contains("byte 0x"),
        "{e}"
    );
    let v = g.run(&["verify", &g.url("cut.vdar")], &[]);
    assert_eq!(v.status.code(), Some(1), "{}", stderr(&v));
    assert!(String::from_utf8_lossy(&v.stdout).contains("DAMAGED"));
}

#[test]
fn answers_cut_short_are_resumed_or_reported() {
    let Some(g) = garage::start() else { return };
    let d = tempdir();
    let disks = disks(d.path(), 4);
    let url = g.url("p.vdar");
    g.ok(&backup_args(&disks, &url), &[]);
    let want = object_bytes(&g, "p.vdar");
    let upstream: std::net::SocketAddr = g.endpoint["http://".len()..].parse().unwrap();

    // Every other connection is cut after 100 KiB of answer: each read resumes where it broke.
    assert!(want.len() > 9 << 20, "{} bytes", want.len());
    let proxy = crate::s3_proxy::CuttingProxy::start(upstream, 100 << 10, 2);
    let mut client = vdar::objstore::S3Config::clone(g.client().config());
    client.endpoint = proxy.url();
    let client = std::sync::Arc::new(vdar::objstore::Client::new(client));
    let obj = ObjectUrl::parse(&url).unwrap();
    let mut r = ObjectReader::open(client.clone(), obj.clone()).unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    assert!(got == want, "resumed reads give the object's bytes");
    assert!(proxy.cuts() > 0, "the proxy cut some answers");

    // Every connection cut: the error names the object and the offset where it broke.
    let proxy = crate::s3_proxy::CuttingProxy::start(upstream, 100 << 10, 1);
    let mut cfg = vdar::objstore::S3Config::clone(g.client().config());
    cfg.endpoint = proxy.url();
    let mut c = vdar::objstore::Client::new(cfg);
    c.retry.first_delay = Duration::from_millis(10);
    let mut r = ObjectReader::open(std::sync::Arc::new(c), obj).unwrap();
    // 100 KiB a try: the 64 tries a read may take, resumed ones included, do not reach 8 MiB.
    let mut buf = vec![0u8; 8 << 20];
    r.seek(SeekFrom::Start(0)).unwrap();
    let e = r.read_exact(&mut buf).unwrap_err().to_string();
    assert!(
        e.contains("s3://vdar/p.vdar: byte 0x") && e.contains("gave up after"),
        "{e}"
    );
}

#[test]
fn an_interrupted_backup_leaves_no_object() {
    let Some(g) = garage::start() else { return };
    let d = tempdir();
    let disks = disks(d.path(), 48);
    for (sig, key) in [(15, "term.vdar"), (9, "kill.vdar")] {
        let url = g.url(key);
        let mut child = g
            .vdar(&backup_args(&disks, &url))
            .env(SMALL_PARTS.0, SMALL_PARTS.1)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        assert!(
            wait_for_upload(&g, key, &mut child),
            "the backup ended before it could be interrupted"
        );
        run("kill", &[&format!("-{sig}"), &child.id().to_string()]);
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success());
        assert!(
            !head(&g, key),
            "{key}: an interrupted backup left an object"
        );
        if sig == 9 {
            // Killed outright, vdar could not abort: the upload stays listed, never an object.
            assert_eq!(uploads(&g, key).len(), 1);
        } else {
            assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
            assert!(uploads_gone(&g, key), "SIGTERM aborts the upload");
        }
    }
}

/// `list` and `prune` on a prefix: three archives (a full, an incremental of it, a newer
/// full), two catalogs, a note and an archive outside the prefix, listed two keys a page so
/// the listing follows continuation tokens; `--keep-last 1` deletes the old chain and its
/// catalogs and nothing else.
#[test]
fn prune_and_list_work_on_a_prefix() {
    let Some(g) = garage::start() else { return };
    let d = tempdir();
    let disk = d.path().join("web.vmdk");
    run("qemu-img", &["create", "-q", "-f", "vmdk", s(&disk), "4M"]);
    crate::util::qemu_io(&disk, &["write -P 0x11 0 1M"]);
    let cat = |n: &str| d.path().join(format!("{n}.vcat"));
    let day = |n: u64| (1_796_601_600 + n * 86_400).to_string();
    let backup = |key: &str, n: u64, base: Option<&Path>| {
        let (url, c) = (g.url(&format!("web/{key}.vdar")), cat(key));
        let mut a = vec!["backup", s(&disk), "-o", &url, "--catalog", s(&c)];
        if let Some(b) = base {
            a.extend(["--base", s(b)]);
        }
        g.ok(&a, &[("SOURCE_DATE_EPOCH", &day(n))]);
        let obj = ObjectUrl::parse(&g.url(&format!("web/{key}.vcat"))).unwrap();
        g.client()
            .put_object(&obj, &std::fs::read(&c).unwrap())
            .unwrap();
    };
    backup("f0", 0, None);
    crate::util::qemu_io(&disk, &["write -P 0x22 2M 64k"]);
    backup("i1", 1, Some(&cat("f0")));
    backup("f2", 2, None);
    let put = |key: &str, bytes: &[u8]| {
        let obj = ObjectUrl::parse(&g.url(key)).unwrap();
        g.client().put_object(&obj, bytes).unwrap();
    };
    put("web/notes.txt", b"rotation: weekly\n");
    put("other/f0.vdar", &object_bytes(&g, "web/f0.vdar"));

    let page = ("VDAR_S3_LIST_KEYS", "2");
    let prefix = g.url("web/");
    let inv: serde_json::Value =
        serde_json::from_slice(&g.ok(&["list", &prefix, "--json"], &[page]).stdout).unwrap();
    assert_eq!(inv["archives"].as_array().unwrap().len(), 3, "{inv}");
    assert_eq!(inv["catalogs"].as_array().unwrap().len(), 3, "{inv}");
    assert_eq!(inv["others"], 1, "{inv}");
    assert_eq!(inv["archives"][1]["base"]["id"], inv["archives"][0]["id"]);
    assert_eq!(inv["archives"][0]["name"], g.url("web/f0.vdar"));

    let dry = g.ok(
        &["prune", &prefix, "--keep-last", "1", "--dry-run"],
        &[page],
    );
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        text.contains("would delete 2 archives and 2 catalogs"),
        "{text}"
    );
    assert!(head(&g, "web/f0.vdar"), "a dry run deletes nothing");
    g.ok(&["prune", &prefix, "--keep-last", "1"], &[page]);
    assert!(!head(&g, "web/f0.vdar"), "prune deleted the archive");
    let want = [
        "other/f0.vdar",
        "web/f2.vcat",
        "web/f2.vdar",
        "web/notes.txt",
    ];
    // Garage's listing follows a delete a moment later than its reads do.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut keys: Vec<String> = g
            .client()
            .list_objects(&garage_bucket(&g), "")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        keys.sort();
        if keys == want || Instant::now() > deadline {
            assert_eq!(keys, want);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The test bucket's name (from an object name in it).
fn garage_bucket(g: &Garage) -> String {
    ObjectUrl::parse(&g.url("x")).unwrap().bucket
}
