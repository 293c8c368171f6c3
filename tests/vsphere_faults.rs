//! vSphere backups when things go wrong, through a loopback proxy in front of vcsim that
//! answers the datastore file access with 503s and truncated ranged responses, fails a
//! quiesced snapshot with a SOAP fault the way ESX does when VMware Tools cannot quiesce, and
//! goes away (every connection refused) in the middle of a backup.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use crate::util::tempdir;
use crate::vsphere::{pyvmomi, show, start, vdar_as_user, vm_with_chain, Vcsim};

/// What the proxy does to the requests it forwards.
#[derive(Default, Debug)]
struct Faults {
    /// Answer this many datastore GETs with 503.
    fail_503: u32,
    /// Cut this many datastore answers halfway through their body.
    truncate: u32,
    /// Fail `CreateSnapshot_Task` with quiescing asked for.
    fail_quiesced_snapshot: bool,
    /// Fail `RegisterVM_Task`.
    fail_register: bool,
    /// Answer NFC uploads with 500.
    fail_nfc: bool,
    /// Answer `QueryChangedDiskAreas`: with a fault (`Some(true)`, as ESX does after a CBT
    /// reset) or with a page that starts elsewhere than asked (`Some(false)`).
    cbt_answer_bad: Option<bool>,
    /// Once this many datastore body bytes went through, refuse everything.
    gone_after: Option<u64>,
    /// Refusing everything.
    gone: bool,
    /// Hold each datastore answer this long.
    delay_ms: u64,
    folder_requests: u32,
    folder_bytes: u64,
    served_503: u32,
    served_truncated: u32,
    failed_snapshots: u32,
}

struct Proxy {
    url: String,
    faults: Arc<Mutex<Faults>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `sim`, one request per connection.
    fn start(sim: &Vcsim) -> Proxy {
        let upstream = sim
            .url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/sdk", listener.local_addr().unwrap());
        let faults = Arc::new(Mutex::new(Faults::default()));
        let f = faults.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (f, up) = (f.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &up, &f);
                });
            }
        });
        Proxy { url, faults }
    }

    fn set(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.faults.lock().unwrap());
    }

    fn get<T>(&self, read: impl FnOnce(&Faults) -> T) -> T {
        read(&self.faults.lock().unwrap())
    }
}

/// Reads one request (head and `Content-Length` body).
fn read_request(conn: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body)?;
    Ok((head, body))
}

/// Answers with a SOAP fault of `kind`, as ESX reports a refused call.
fn soap_fault(conn: &mut TcpStream, kind: &str, message: &str) -> std::io::Result<()> {
    let fault = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soapenv:Envelope \
         xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body>\
         <soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>{message}\
         </faultstring><detail><{kind}Fault xmlns=\"urn:vim25\" xsi:type=\"{kind}\"/>\
         </detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    );
    let answer = format!(
        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/xml; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{fault}",
        fault.len()
    );
    conn.write_all(answer.as_bytes())
}

fn serve(mut conn: TcpStream, upstream: &str, faults: &Mutex<Faults>) -> std::io::Result<()> {
    if faults.lock().unwrap().gone {
        return conn.shutdown(Shutdown::Both);
    }
    let (head, body) = read_request(&mut conn)?;
    let folder = head.starts_with("GET /folder");
    let delay = {
        let mut f = faults.lock().unwrap();
        f.folder_requests += u32::from(folder);
        if folder {
            f.delay_ms
        } else {
            0
        }
    };
    std::thread::sleep(std::time::Duration::from_millis(delay));
    {
        let mut f = faults.lock().unwrap();
        if f.gone {
            return conn.shutdown(Shutdown::Both);
        }
        if folder && f.fail_503 > 0 {
            f.fail_503 -= 1;
            f.served_503 += 1;
            return conn.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
        let body_text = String::from_utf8_lossy(&body);
        if f.fail_quiesced_snapshot
            && body_text.contains("CreateSnapshot_Task")
            && body_text.contains("<quiesce>true</quiesce>")
        {
            f.failed_snapshots += 1;
            return soap_fault(
                &mut conn,
                "ApplicationQuiesceFault",
                "An error occurred while quiescing the virtual machine.",
            );
        }
        if let Some(fault) = f
            .cbt_answer_bad
            .filter(|_| body_text.contains("<QueryChangedDiskAreas"))
        {
            if fault {
                return soap_fault(
                    &mut conn,
                    "FileFault",
                    "Error caused by file /vmfs/volumes/ds/vm/vm-ctk.vmdk",
                );
            }
            let page = "<?xml version=\"1.0\"?><soapenv:Envelope \
                xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Body>\
                <QueryChangedDiskAreasResponse xmlns=\"urn:vim25\"><returnval>\
                <startOffset>4096</startOffset><length>512</length></returnval>\
                </QueryChangedDiskAreasResponse></soapenv:Body></soapenv:Envelope>";
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{page}",
                page.len()
            );
            return conn.write_all(answer.as_bytes());
        }
        if f.fail_nfc && head.starts_with("POST /nfc/") {
            return conn.write_all(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
        if f.fail_register && body_text.contains("<RegisterVM_Task") {
            return soap_fault(
                &mut conn,
                "InvalidState",
                "The host is in maintenance mode.",
            );
        }
    }
    // One request per connection: the answer then ends where the upstream closes.
    let head = head.replacen("\r\n", "\r\nConnection: close\r\n", 1);
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(head.as_bytes())?;
    up.write_all(&body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    let body_at = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |i| i + 4);
    let mut keep = answer.len();
    if folder {
        let mut f = faults.lock().unwrap();
        // Answers still in flight when the server went are lost with it, as with concurrent
        // reads against a host that dies.
        if f.gone {
            return conn.shutdown(Shutdown::Both);
        }
        let body_len = (answer.len() - body_at) as u64;
        if f.truncate > 0 && body_len > 1 {
            f.truncate -= 1;
            f.served_truncated += 1;
            keep = body_at + (answer.len() - body_at) / 2;
        }
        f.folder_bytes += (keep - body_at) as u64;
        if f.gone_after.is_some_and(|n| f.folder_bytes >= n) {
            f.gone = true;
        }
    }
    conn.write_all(&answer[..keep])?;
    conn.shutdown(Shutdown::Both)
}

fn backup(proxy: &Proxy, archive: &std::path::Path, extra: &[&str]) -> std::process::Output {
    crate::vsphere::backup_vm0(&proxy.url, archive, extra)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn datastore_503s_and_truncated_ranges_are_retried_to_the_same_bytes() {
    let Some(sim) = start() else { return };
    let Some(py) = pyvmomi() else { return };
    let dir = tempdir();
    let (_, want) = vm_with_chain(&py, &sim, dir.path());
    let proxy = Proxy::start(&sim);
    proxy.set(|f| {
        f.fail_503 = 3;
        f.truncate = 3;
    });
    let archive = dir.path().join("a.vdar");
    let out = backup(&proxy, &archive, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(proxy.get(|f| (f.served_503, f.served_truncated)), (3, 3));

    let restored = crate::vsphere::restored_disk(&archive, &dir.path().join("r"));
    assert!(restored == want, "bytes differ");
}

#[test]
fn a_failed_quiesced_snapshot_fails_the_vm_unless_unquiesced_is_allowed() {
    let Some(sim) = start() else { return };
    let Some(py) = pyvmomi() else { return };
    let dir = tempdir();
    vm_with_chain(&py, &sim, dir.path());
    let proxy = Proxy::start(&sim);
    proxy.set(|f| f.fail_quiesced_snapshot = true);
    let archive = dir.path().join("a.vdar");

    let out = backup(&proxy, &archive, &["--quiesce", "always"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("error occurred while quiescing"),
        "{}",
        stderr(&out)
    );
    assert!(!archive.exists());
    assert_eq!(
        show(&py, &sim, "DC0_H0_VM0")["snapshots"],
        serde_json::json!([])
    );

    let out = backup(
        &proxy,
        &archive,
        &["--quiesce", "always", "--allow-unquiesced"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vm = &report["vsphere"][0];
    assert_eq!(vm["quiesced"], false, "{report}");
    assert!(
        vm["quiesce_failure"]
            .as_str()
            .is_some_and(|q| q.contains("quiescing")),
        "{report}"
    );
    assert!(
        stderr(&out).contains("crash-consistent"),
        "{}",
        stderr(&out)
    );
    assert_eq!(proxy.get(|f| f.failed_snapshots), 2);
    assert_eq!(
        show(&py, &sim, "DC0_H0_VM0")["snapshots"],
        serde_json::json!([])
    );

    // An unknown name fails before any snapshot, naming the close ones.
    let out = vdar_as_user(&[
        "backup",
        "--vsphere",
        &proxy.url,
        "--vm",
        "DC0_H0_VM7",
        "-o",
        archive.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("DC0_H0_VM0"), "{}", stderr(&out));
}

#[test]
fn a_server_gone_mid_backup_leaves_no_archive_and_the_snapshot_named() {
    let Some(sim) = start() else { return };
    let Some(py) = pyvmomi() else { return };
    let dir = tempdir();
    vm_with_chain(&py, &sim, dir.path());
    let proxy = Proxy::start(&sim);
    proxy.set(|f| f.gone_after = Some(1 << 20));
    let archive = dir.path().join("a.vdar");
    let out = backup(&proxy, &archive, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("vdar-backup ") && err.contains("still there"),
        "{err}"
    );
    let dir_list: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        !dir_list
            .iter()
            .any(|n| n.to_string_lossy().starts_with("a.vdar")),
        "an archive or .partial was left: {dir_list:?}\n{err}"
    );

    // The server is back: the next run finds the snapshot and names it.
    proxy.set(|f| {
        f.gone = false;
        f.gone_after = None;
    });
    let left = show(&py, &sim, "DC0_H0_VM0")["snapshots"].clone();
    assert_eq!(left.as_array().map(Vec::len), Some(1), "{left}");
    let out = backup(&proxy, &archive, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(left[0].as_str().unwrap())
            && stderr(&out).contains("--remove-stale-snapshots"),
        "{}",
        stderr(&out)
    );
    let out = backup(&proxy, &archive, &["--remove-stale-snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["vsphere"][0]["removed_stale"][0], left[0],
        "{report}"
    );
    assert_eq!(
        show(&py, &sim, "DC0_H0_VM0")["snapshots"],
        serde_json::json!([])
    );
}

#[test]
fn a_failed_registration_removes_what_the_restore_uploaded() {
    let Some(sim) = start() else { return };
    let Some(py) = pyvmomi() else { return };
    let dir = tempdir();
    let archive = dir.path().join("a.vdar");
    crate::vsphere::backed_up_vm(&py, &sim, dir.path(), &archive);
    crate::vsphere::vcsim_register_files(&sim, "restored03");
    let proxy = Proxy::start(&sim);
    proxy.set(|f| f.fail_register = true);
    let out = crate::vsphere::restore_onto(&proxy.url, &archive, &["--name", "restored03"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("maintenance mode"),
        "{}",
        stderr(&out)
    );
    let mut left: Vec<String> = std::fs::read_dir(sim.datastore.join("restored03"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    // Only the simulator's own files, which were there before.
    assert_eq!(left, ["restored03.nvram", "vmware.log"], "{}", stderr(&out));
    let registered = crate::vsphere::client(&py, &sim, &["exists", "restored03"]);
    assert_eq!(registered.trim(), "false");
}

#[test]
fn a_failed_nfc_upload_leaves_no_vm() {
    let Some(sim) = start() else { return };
    let Some(py) = pyvmomi() else { return };
    let dir = tempdir();
    let archive = dir.path().join("a.vdar");
    crate::vsphere::backed_up_vm(&py, &sim, dir.path(), &archive);
    let proxy = Proxy::start(&sim);
    proxy.set(|f| f.fail_nfc = true);
    let args = ["--name", "nfc03", "--upload", "nfc"];
    let out = crate::vsphere::restore_onto(&proxy.url, &archive, &args);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("HTTP 500") && stderr(&out).contains("nfc03"),
        "{}",
        stderr(&out)
    );
    let registered = crate::vsphere::client(&py, &sim, &["exists", "nfc03"]);
    assert_eq!(registered.trim(), "false", "{}", stderr(&out));
}

#[test]
fn sigint_mid_backup_removes_the_snapshot_and_leaves_no_archive() {
    let Some(sim) = start() else { return };
    let Some(py) = pyvmomi() else { return };
    let dir = tempdir();
    vm_with_chain(&py, &sim, dir.path());
    let proxy = Proxy::start(&sim);
    // Slow datastore answers keep the backup reading long enough to be interrupted.
    proxy.set(|f| f.delay_ms = 300);
    let archive = dir.path().join("a.vdar");
    let child = std::process::Command::new(crate::util::vdar_bin())
        .args([
            "backup",
            "--vsphere",
            &proxy.url,
            "--vm",
            "DC0_H0_VM0",
            "-o",
        ])
        .arg(&archive)
        .env("VDAR_VSPHERE_USER", "user")
        .env("VDAR_VSPHERE_PASSWORD", "pass")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while proxy.get(|f| f.folder_requests) < 3 {
        assert!(
            started.elapsed().as_secs() < 30,
            "the backup never read the disk"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    crate::util::run("kill", &["-INT", &child.id().to_string()]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(!archive.exists());
    assert_eq!(
        show(&py, &sim, "DC0_H0_VM0")["snapshots"],
        serde_json::json!([])
    );
}

#[test]
fn a_refused_or_bad_areas_answer_reads_the_base_whole_with_a_warning() {
    let Some(sim) = start() else { return };
    let Some(py) = pyvmomi() else { return };
    let dir = tempdir();
    let (want, _) = crate::vsphere::thin_sample_with_cbt(&py, &sim, dir.path());
    let proxy = Proxy::start(&sim);
    for fault in [true, false] {
        proxy.set(|f| f.cbt_answer_bad = Some(fault));
        let archive = dir.path().join("a.vdar");
        let out = backup(&proxy, &archive, &["--force"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let err = stderr(&out);
        let why = if fault {
            "FileFault"
        } else {
            "asked from byte 0"
        };
        assert!(
            err.contains("no areas in use") && err.contains(why) && err.contains("read whole"),
            "{err}"
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            report["vsphere"][0]["in_use_bytes"][0],
            serde_json::Value::Null
        );
        let to = dir.path().join("restored");
        let _ = std::fs::remove_dir_all(&to);
        assert!(crate::vsphere::restored_disk(&archive, &to) == want);
    }
}
