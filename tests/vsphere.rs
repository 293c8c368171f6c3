//! The vSphere client against govmomi's simulator (vcsim, built by tools/build-vcsim.sh):
//! login and its refusal, finding a VM and the close names of an unknown one, the backup
//! snapshot taken and always removed (also when the guard is dropped on an error path), a
//! stale vdar snapshot refused, and the `network` transport reading a real sparse chain
//! uploaded to the simulated datastore, byte for byte as qemu-img reads it locally.
//!
//! Without the simulator the tests skip with a reason; tools/run-tests.sh builds it and sets
//! `VDAR_REQUIRE_VCSIM=1`, so CI cannot skip them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use vdar::input::SourceOpener;
use vdar::vsphere::{self, Credentials, RetryPolicy, ServerOptions, SnapshotOptions, TlsTrust};

use crate::util::{qemu_raw, random_vmdk, tempdir};

/// A running simulator; killed on drop (it also exits when its stdin closes).
pub(crate) struct Vcsim {
    child: Child,
    pub url: String,
    pub datastore: PathBuf,
    thumbprint: String,
    // vcsim makes its datastore directories under TMPDIR and a killed vcsim cannot remove
    // them: give it a directory of its own that goes with the test.
    _tmp: tempfile::TempDir,
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn vcsim_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VDAR_VCSIM") {
        return Some(PathBuf::from(p));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let p = target.join("vcsim/vcsim");
    p.is_file().then_some(p)
}

/// Starts vcsim over plain HTTP, or says why not (a failure when the run requires it).
pub(crate) fn start() -> Option<Vcsim> {
    start_with(&[])
}

pub(crate) fn start_with(extra: &[&str]) -> Option<Vcsim> {
    let Some(bin) = vcsim_bin() else {
        assert!(
            std::env::var_os("VDAR_REQUIRE_VCSIM").is_none(),
            "VDAR_REQUIRE_VCSIM is set but no vcsim was built (tools/build-vcsim.sh)"
        );
        eprintln!("skipped: no vcsim (run tools/build-vcsim.sh)");
        return None;
    };
    let tmp = tempdir();
    let mut child = Command::new(&bin)
        .env("TMPDIR", tmp.path())
        .args(["-listen", "127.0.0.1:0"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vcsim");
    let out = BufReader::new(child.stdout.take().unwrap());
    let (mut url, mut datastore, mut thumbprint) = (String::new(), PathBuf::new(), String::new());
    for line in out.lines() {
        let line = line.expect("vcsim output");
        if let Some(u) = line.strip_prefix("VCSIM_URL=") {
            url = u.to_string();
        } else if let Some(t) = line.strip_prefix("VCSIM_THUMBPRINT=") {
            thumbprint = t.to_string();
        } else if let Some(d) = line.strip_prefix("VCSIM_DATASTORE LocalDS_0=") {
            datastore = PathBuf::from(d);
        } else if line == "VCSIM_READY" {
            break;
        }
    }
    assert!(!url.is_empty() && datastore.is_dir(), "vcsim did not start");
    Some(Vcsim {
        child,
        url,
        datastore,
        thumbprint,
        _tmp: tmp,
    })
}

fn server(sim: &Vcsim) -> ServerOptions {
    ServerOptions {
        url: sim.url.clone(),
        trust: TlsTrust::System,
        connections: 4,
        retry: RetryPolicy::default(),
    }
}

fn creds(password: &str) -> Credentials {
    Credentials {
        user: "user".into(),
        password: password.into(),
    }
}

#[test]
fn login_refuses_a_wrong_password_and_names_close_vms() {
    let Some(sim) = start() else { return };
    let e = vsphere::connect(&server(&sim), &creds("wrong"))
        .err()
        .expect("a wrong password must fail")
        .to_string();
    assert!(e.contains("login as \"user\" refused"), "{e}");
    let session = vsphere::connect(&server(&sim), &creds("pass")).unwrap();
    let props = session.props();
    let vm = vsphere::vm::find(&props, "DC0_H0_VM0").unwrap();
    assert_eq!(vm.kind, "VirtualMachine");
    let by_path = vsphere::vm::find(&props, "/DC0/vm/DC0_H0_VM0").unwrap();
    assert_eq!(by_path, vm);
    let e = vsphere::vm::find(&props, "DC0_H0_VM9")
        .unwrap_err()
        .to_string();
    assert!(e.contains("close: DC0_H0_VM0, DC0_H0_VM1"), "{e}");
    session.logout();
}

#[test]
fn the_backup_snapshot_is_always_removed_and_a_stale_one_refused() {
    let Some(sim) = start() else { return };
    let opts = server(&sim);
    let session = vsphere::connect(&opts, &creds("pass")).unwrap();
    let props = session.props();
    let vm = vsphere::vm::find(&props, "DC0_H0_VM0").unwrap();
    let snap_opts = SnapshotOptions::default();
    {
        let p = vsphere::prepare(
            &session,
            &opts,
            "DC0_H0_VM0",
            &snap_opts,
            "2026-12-05T01:00:00Z",
        )
        .unwrap();
        assert_eq!(p.origin.vm, "DC0_H0_VM0");
        assert_eq!(p.origin.moref, vm.value);
        assert!(!p.origin.disks.is_empty(), "{:?}", p.origin);
        assert!(
            p.selection.disks[0].name.contains(':'),
            "{:?}",
            p.selection.disks
        );
        let now = vsphere::vm::info(&props, &vm).unwrap();
        assert_eq!(now.snapshots.len(), 1, "{:?}", now.snapshots);
        // Dropped here without remove(): the error path of a failed backup.
    }
    assert!(vsphere::vm::info(&props, &vm).unwrap().snapshots.is_empty());

    // A snapshot left behind (the process was killed) is found by its name next time.
    let p = vsphere::prepare(&session, &opts, "DC0_H0_VM0", &snap_opts, "t1").unwrap();
    std::mem::forget(p.snapshot);
    let e = vsphere::prepare(&session, &opts, "DC0_H0_VM0", &snap_opts, "t2")
        .err()
        .expect("a stale snapshot must be refused")
        .to_string();
    assert!(
        e.contains("vdar-backup t1") && e.contains("--remove-stale-snapshots"),
        "{e}"
    );
    let again = SnapshotOptions {
        remove_stale: true,
        ..SnapshotOptions::default()
    };
    let p = vsphere::prepare(&session, &opts, "DC0_H0_VM0", &again, "t3").unwrap();
    assert_eq!(p.report.removed_stale, ["vdar-backup t1"]);
    p.snapshot.remove().unwrap();
    assert!(vsphere::vm::info(&props, &vm).unwrap().snapshots.is_empty());
}

#[test]
fn network_transport_reads_a_chain_as_qemu_img_does() {
    let Some(sim) = start() else { return };
    let dir = tempdir();
    let vmdk = random_vmdk(dir.path(), 6);
    let folder = sim.datastore.join("net");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(&vmdk, folder.join("disk.vmdk")).unwrap();
    let want = dir.path().join("want.raw");
    qemu_raw(&vmdk, &want);

    let opts = server(&sim);
    let session = vsphere::connect(&opts, &creds("pass")).unwrap();
    let files = vsphere::DatastoreFiles::new(
        session.soap.agent().clone(),
        session.soap.url(),
        "DC0",
        &[],
        session.soap.cookie(),
        RetryPolicy::default(),
        4,
    )
    .unwrap();
    let top = Path::new("/vmfs/volumes/LocalDS_0/net/disk.vmdk");
    assert!(files.exists(top).unwrap());
    assert!(!files
        .exists(Path::new("/vmfs/volumes/LocalDS_0/net/none.vmdk"))
        .unwrap());
    // A server that does not answer is an error, never an absent file.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/sdk", closed.local_addr().unwrap());
    drop(closed);
    let dead = vsphere::DatastoreFiles::new(
        session.soap.agent().clone(),
        &dead_url,
        "DC0",
        &[],
        None,
        RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        },
        1,
    )
    .unwrap();
    let e = dead.exists(top).unwrap_err().to_string();
    assert!(e.contains("net/disk.vmdk"), "{e}");
    let chain = vdar::chain::Chain::open(
        top,
        &vdar::chain::ChainOptions {
            opener: &files,
            ignore_cid: false,
        },
    )
    .unwrap();
    let mut disk = chain.collapse();
    let want_bytes = std::fs::read(&want).unwrap();
    let mut image = vec![0u8; want_bytes.len()];
    use vdar::chain::VirtualDisk;
    while let Some(run) = disk.next_run().unwrap() {
        if !run.is_zero() {
            let at = run.offset as usize;
            let buf = &mut image[at..at + run.len as usize];
            vdar::chain::read_run(disk.files(), &run, 0, buf).unwrap();
        }
    }
    assert!(image == want_bytes, "network read differs from qemu-img");
    let (bytes, _) = files.fetched();
    let allocated = std::fs::metadata(&vmdk).unwrap().len();
    assert!(
        bytes <= allocated + 4096,
        "fetched {bytes} of a {allocated}-byte file"
    );
}

#[test]
fn tls_is_verified_against_roots_or_a_pinned_thumbprint() {
    let Some(sim) = start_with(&["-tls"]) else {
        return;
    };
    assert!(sim.url.starts_with("https://"), "{}", sim.url);
    let with = |trust| ServerOptions {
        trust,
        ..server(&sim)
    };
    // A self-signed certificate is not trusted by the system roots.
    let e = vsphere::connect(&with(TlsTrust::System), &creds("pass"))
        .err()
        .expect("a self-signed certificate must be refused")
        .to_string();
    assert!(e.contains("RetrieveServiceContent"), "{e}");
    let pin = vdar::vsphere::Thumbprint::parse(&sim.thumbprint).expect("vcsim prints a thumbprint");
    vsphere::connect(&with(TlsTrust::Pinned(pin)), &creds("pass"))
        .expect("the pinned certificate is accepted")
        .logout();
    let mut other = pin;
    other.0[0] ^= 1;
    let e = vsphere::connect(&with(TlsTrust::Pinned(other)), &creds("pass"))
        .err()
        .expect("another thumbprint must be refused")
        .to_string();
    assert!(e.contains("is not the pinned"), "{e}");
    vsphere::connect(&with(TlsTrust::Insecure), &creds("pass"))
        .expect("no verification, on request")
        .logout();
}

/// The interpreter that has pyvmomi, the second client (tools/vcsim/client.py).
pub(crate) fn pyvmomi() -> Option<String> {
    let py = std::env::var("VDAR_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import pyVmomi"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("VDAR_REQUIRE_VCSIM").is_none(),
            "VDAR_REQUIRE_VCSIM is set but {py} has no pyVmomi (tools/run-tests.sh installs it)"
        );
        eprintln!("skipped: no pyVmomi for {py}");
        return None;
    }
    Some(py)
}

/// Runs tools/vcsim/client.py (pyvmomi) against the simulator; returns its stdout.
pub(crate) fn client(py: &str, sim: &Vcsim, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/vcsim/client.py");
    let out = Command::new(py)
        .arg(script)
        .arg(&sim.url)
        .args(args)
        .env("VDAR_VSPHERE_USER", "user")
        .env("VDAR_VSPHERE_PASSWORD", "pass")
        .output()
        .expect("run client.py");
    assert!(
        out.status.success(),
        "client.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The VM as pyvmomi sees it.
pub(crate) fn show(py: &str, sim: &Vcsim, vm: &str) -> serde_json::Value {
    serde_json::from_str(&client(py, sim, &["show", vm])).expect("client.py show")
}

/// A two-layer hosted chain in `[LocalDS_0] DIR/`: a monolithicSparse base of random bytes
/// and a qemu-img child with data and zero writes over it, and the `-flat` placeholder vcsim
/// wants beside the top descriptor. Returns the top's local path and its capacity.
pub(crate) fn upload_chain(sim: &Vcsim, dir: &str, scratch: &Path) -> (PathBuf, u64) {
    let folder = sim.datastore.join(dir);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(random_vmdk(scratch, 4), folder.join("base.vmdk")).unwrap();
    let top = folder.join("top.vmdk");
    crate::util::run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-b",
            "base.vmdk",
            "-F",
            "vmdk",
        ]
        .into_iter()
        .chain([top.to_str().unwrap()])
        .collect::<Vec<_>>(),
    );
    crate::util::qemu_io(&top, &["write -P 0x5a 1M 512k", "write -z 2M 256k"]);
    std::fs::write(folder.join("top-flat.vmdk"), b"").unwrap();
    (top, 4 << 20)
}

/// Points DC0_H0_VM0's disk at a fresh chain and gives it a real .vmx; returns the chain's
/// top and the expected image (qemu-img's reading of the chain).
pub(crate) fn vm_with_chain(py: &str, sim: &Vcsim, scratch: &Path) -> (PathBuf, Vec<u8>) {
    let (top, capacity) = upload_chain(sim, "chainvm", scratch);
    client(
        py,
        sim,
        &[
            "attach",
            "DC0_H0_VM0",
            "[LocalDS_0] chainvm/top.vmdk",
            &capacity.to_string(),
        ],
    );
    std::fs::write(
        sim.datastore.join("DC0_H0_VM0/DC0_H0_VM0.vmx"),
        "displayName = \"DC0_H0_VM0\"\nscsi0:0.fileName = \"/vmfs/volumes/LocalDS_0/chainvm/top.vmdk\"\n",
    )
    .unwrap();
    let want = scratch.join("want.raw");
    qemu_raw(&top, &want);
    (top, std::fs::read(want).unwrap())
}

/// `vdar ARGS` with the simulator's credentials in the environment.
pub(crate) fn vdar_as_user(args: &[&str]) -> std::process::Output {
    Command::new(crate::util::vdar_bin())
        .args(args)
        .env("VDAR_VSPHERE_USER", "user")
        .env("VDAR_VSPHERE_PASSWORD", "pass")
        .output()
        .expect("run vdar")
}

#[test]
fn backup_by_vm_name_reads_the_chain_and_removes_the_snapshot() {
    let Some(sim) = start() else { return };
    let Some(py) = pyvmomi() else { return };
    let dir = tempdir();
    let (_, want) = vm_with_chain(&py, &sim, dir.path());
    let archive = dir.path().join("vm.vdar");
    let report = succeeded(backup_vm0(&sim.url, &archive, &[]));
    let snap = report["vsphere"][0]["snapshot"].as_str().unwrap();
    assert!(snap.starts_with("vdar-backup "), "{report}");
    // The second client sees no snapshot left.
    let seen = show(&py, &sim, "DC0_H0_VM0");
    assert_eq!(seen["snapshots"], serde_json::json!([]), "{seen}");

    let to = dir.path().join("restored");
    assert!(
        restored_disk(&archive, &to) == want,
        "restored disk differs from qemu-img's reading of the chain"
    );
    let vmx = std::fs::read_to_string(to.join("DC0_H0_VM0/DC0_H0_VM0.vmx")).unwrap();
    assert!(vmx.contains("displayName"), "{vmx}");

    // The manifest records where the VM came from.
    let list = crate::util::ok(&["list", archive.to_str().unwrap(), "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let origin = &list["vms"][0]["origin"];
    assert_eq!(origin["vm"], "DC0_H0_VM0", "{list}");
    assert_eq!(origin["moref"], seen["moref"], "{list}");
    assert_eq!(origin["snapshot"], snap, "{list}");
    assert_eq!(
        origin["disks"][0]["files"][0], "[LocalDS_0] chainvm/top.vmdk",
        "{list}"
    );
}

/// Backs DC0_H0_VM0 (on a fresh chain) up into `archive`; returns the expected image.
pub(crate) fn backed_up_vm(py: &str, sim: &Vcsim, scratch: &Path, archive: &Path) -> Vec<u8> {
    let (_, want) = vm_with_chain(py, sim, scratch);
    succeeded(backup_vm0(&sim.url, archive, &[]));
    want
}

/// `vdar backup --vsphere URL --vm DC0_H0_VM0 -o ARCHIVE --json EXTRA...`.
pub(crate) fn backup_vm0(url: &str, archive: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "backup",
        "--vsphere",
        url,
        "--vm",
        "DC0_H0_VM0",
        "-o",
        archive.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    vdar_as_user(&args)
}

/// The `--json` report of a command that must have succeeded.
pub(crate) fn succeeded(out: std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a --json report")
}

/// vcsim's RegisterVM opens `NAME.nvram` and `vmware.log` beside the .vmx and fails with
/// NotFound without them (ESX creates them); a restore uploads neither, so the test puts
/// them there. They are not files vdar uploads, so they do not stand in its way.
pub(crate) fn vcsim_register_files(sim: &Vcsim, name: &str) {
    let folder = sim.datastore.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join(format!("{name}.nvram")), b"").unwrap();
    std::fs::write(folder.join("vmware.log"), b"").unwrap();
}

/// `vdar restore ARCHIVE --vsphere URL --datastore LocalDS_0 EXTRA...`.
pub(crate) fn restore_onto(url: &str, archive: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "restore",
        archive.to_str().unwrap(),
        "--vsphere",
        url,
        "--datastore",
        "LocalDS_0",
    ];
    args.extend_from_slice(extra);
    vdar_as_user(&args)
}

#[test]
fn restore_onto_a_datastore_uploads_and_registers_the_vm() {
    let Some(sim) = start() else { return };
    let Some(py) = pyvmomi() else { return };
    let dir = tempdir();
    let archive = dir.path().join("vm.vdar");
    let want = backed_up_vm(&py, &sim, dir.path(), &archive);

    vcsim_register_files(&sim, "restored01");
    let out = restore_onto(&sim.url, &archive, &["--name", "restored01", "--json"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let moref = report["vsphere"]["moref"].as_str().unwrap();
    let seen = show(&py, &sim, "restored01");
    assert_eq!(seen["moref"], moref, "{seen}");
    assert_eq!(seen["vmx"], "[LocalDS_0] restored01/restored01.vmx");

    // What is on the datastore: the .vmx made for the new VM, pointing at an ESX descriptor
    // whose flat extent qemu-img reads as the original chain.
    let folder = sim.datastore.join("restored01");
    let vmx = std::fs::read_to_string(folder.join("restored01.vmx")).unwrap();
    assert!(vmx.contains("displayName = \"restored01\""), "{vmx}");
    let disk = vmx
        .lines()
        .find_map(|l| l.strip_prefix("scsi0:0.fileName = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no scsi0:0.fileName in {vmx}"));
    let got = dir.path().join("got.raw");
    qemu_raw(&folder.join(disk), &got);
    assert!(
        std::fs::read(&got).unwrap() == want,
        "uploaded disk differs"
    );

    // A registered name is refused; so are files in the way, unless --force.
    let out = restore_onto(&sim.url, &archive, &["--name", "restored01"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already registered"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    vcsim_register_files(&sim, "restored02");
    std::fs::write(sim.datastore.join("restored02/restored02.vmx"), "x").unwrap();
    let out = restore_onto(&sim.url, &archive, &["--name", "restored02"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--force"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = restore_onto(&sim.url, &archive, &["--name", "restored02", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        show(&py, &sim, "restored02")["vmx"],
        "[LocalDS_0] restored02/restored02.vmx"
    );
}

#[test]
fn restore_by_nfc_imports_the_vm_and_streams_its_disks() {
    let kept = tempdir();
    let Some(sim) = start_with(&["-nfc-dir", kept.path().to_str().unwrap()]) else {
        return;
    };
    let Some(py) = pyvmomi() else { return };
    let dir = tempdir();
    let archive = dir.path().join("vm.vdar");
    let want = backed_up_vm(&py, &sim, dir.path(), &archive);

    let args = ["--name", "nfc01", "--upload", "nfc", "--json"];
    let report = succeeded(restore_onto(&sim.url, &archive, &args));
    let seen = show(&py, &sim, "nfc01");
    assert_eq!(seen["moref"], report["vsphere"]["moref"], "{seen}");
    assert_eq!(seen["vmx"], report["vsphere"]["vmx"], "{seen}");
    let disks = seen["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 1, "{seen}");
    // vcsim's import sets the capacity in KiB only, as older ESX versions answer.
    assert_eq!(disks[0]["capacity_kb"], want.len() as u64 / 1024, "{seen}");

    // What went over the lease: one stream-optimized VMDK, posted as one, that qemu-img
    // reads as the original chain.
    let sent: Vec<PathBuf> = walk(kept.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "vmdk"))
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let kind = std::fs::read_to_string(sent[0].with_extension("vmdk.content-type")).unwrap();
    assert_eq!(kind, "application/x-vnd.vmware-streamVmdk");
    assert_eq!(
        report["vsphere"]["bytes_uploaded"],
        std::fs::metadata(&sent[0]).unwrap().len(),
        "{report}"
    );
    let info = crate::util::run("qemu-img", &["info", sent[0].to_str().unwrap()]);
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("streamOptimized"), "{info}");
    let got = dir.path().join("got.raw");
    qemu_raw(&sent[0], &got);
    assert!(
        std::fs::read(&got).unwrap() == want,
        "imported disk differs"
    );

    let out = restore_onto(&sim.url, &archive, &args);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already registered"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file under `dir`, depth first.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn restore_registers_in_the_folder_and_pool_given() {
    let Some(sim) = start() else { return };
    let Some(py) = pyvmomi() else { return };
    let dir = tempdir();
    let archive = dir.path().join("vm.vdar");
    backed_up_vm(&py, &sim, dir.path(), &archive);
    let folder = client(&py, &sim, &["folder", "restored-vms"]);
    let pool = client(&py, &sim, &["pool", "DC0_C0", "restores"]);

    vcsim_register_files(&sim, "placed01");
    let placed = [
        "--name",
        "placed01",
        "--folder",
        "/DC0/vm/restored-vms",
        "--pool",
        "/DC0/host/DC0_C0/Resources/restores",
        "--json",
    ];
    let report = succeeded(restore_onto(&sim.url, &archive, &placed));
    let seen = show(&py, &sim, "placed01");
    assert_eq!(seen["moref"], report["vsphere"]["moref"], "{seen}");
    assert_eq!(seen["folder"], folder.trim(), "{seen}");
    assert_eq!(seen["pool"], pool.trim(), "{seen}");

    // Paths that name nothing, or the wrong kind of thing, stop the restore before any upload.
    for (flag, path, says) in [
        (
            "--folder",
            "/DC0/vm/nowhere",
            "nothing at that inventory path",
        ),
        (
            "--pool",
            "/DC0/vm/restored-vms",
            "is a Folder, not a ResourcePool",
        ),
    ] {
        let out = restore_onto(&sim.url, &archive, &["--name", "placed02", flag, path]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(says), "{err}");
        assert!(
            !sim.datastore.join("placed02").exists(),
            "uploaded before refusing"
        );
    }
}

#[test]
fn the_cli_pins_a_thumbprint_or_skips_verification_with_a_warning() {
    let Some(sim) = start_with(&["-tls"]) else {
        return;
    };
    let Some(py) = pyvmomi() else { return };
    let dir = tempdir();
    let (_, want) = vm_with_chain(&py, &sim, dir.path());
    let archive = dir.path().join("vm.vdar");

    let out = backup_vm0(&sim.url, &archive, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a self-signed certificate was trusted"
    );
    assert!(err.contains("--thumbprint"), "no way out named: {err}");
    assert!(!archive.exists());

    let mut wrong: Vec<char> = sim.thumbprint.chars().collect();
    wrong[0] = if wrong[0] == 'A' { 'B' } else { 'A' };
    let wrong: String = wrong.into_iter().collect();
    let out = backup_vm0(&sim.url, &archive, &["--thumbprint", &wrong]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "another thumbprint was trusted");
    assert!(err.contains("is not the pinned"), "{err}");

    succeeded(backup_vm0(
        &sim.url,
        &archive,
        &["--thumbprint", &sim.thumbprint, "--force"],
    ));
    assert!(restored_disk(&archive, &dir.path().join("pinned")) == want);

    let out = backup_vm0(&sim.url, &archive, &["--insecure", "--force"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("warning: --insecure"), "{err}");
    assert!(restored_disk(&archive, &dir.path().join("insecure")) == want);
    assert_eq!(
        show(&py, &sim, "DC0_H0_VM0")["snapshots"],
        serde_json::json!([])
    );
}

/// The bundled ESX sample VM (flat base, COWD delta, SEsparse top) as DC0_H0_VM0: the .vmx
/// and descriptors on the datastore, the extents too when `extents`. Returns the VM folder
/// extracted locally.
fn vm_with_sample(py: &str, sim: &Vcsim, scratch: &Path, extents: bool) -> PathBuf {
    let vm = crate::sample::extract_sample(scratch);
    let folder = sim.datastore.join("sample");
    std::fs::create_dir_all(&folder).unwrap();
    for e in std::fs::read_dir(&vm).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let extent = name.ends_with("-flat.vmdk")
            || name.ends_with("-delta.vmdk")
            || name.ends_with("-sesparse.vmdk");
        if extents || !extent {
            std::fs::copy(e.path(), folder.join(&name)).unwrap();
        }
    }
    // vcsim accepts a disk only with a `-flat` beside its descriptor.
    std::fs::write(folder.join("sample-000002-flat.vmdk"), b"").unwrap();
    std::fs::copy(
        vm.join("sample.vmx"),
        sim.datastore.join("DC0_H0_VM0/DC0_H0_VM0.vmx"),
    )
    .unwrap();
    client(
        py,
        sim,
        &[
            "attach",
            "DC0_H0_VM0",
            "[LocalDS_0] sample/sample-000002.vmdk",
            &(256u64 << 20).to_string(),
        ],
    );
    vm
}

/// Backs DC0_H0_VM0 up with `extra` flags, restores it raw and returns the image and the
/// backup's `vsphere` report entry.
fn backup_and_restore(sim: &Vcsim, dir: &Path, extra: &[&str]) -> (Vec<u8>, serde_json::Value) {
    let archive = dir.join("vm.vdar");
    let extra = [extra, &["--force"]].concat();
    let report = succeeded(backup_vm0(&sim.url, &archive, &extra));
    let to = dir.join("restored");
    let _ = std::fs::remove_dir_all(&to);
    (restored_disk(&archive, &to), report["vsphere"][0].clone())
}

/// `vdar restore ARCHIVE --to TO` (raw): the image of DC0_H0_VM0's disk scsi0:0.
pub(crate) fn restored_disk(archive: &Path, to: &Path) -> Vec<u8> {
    let out = crate::util::ok(&[
        "restore",
        archive.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
        "--json",
    ]);
    let images = crate::util::restored_images(&out.stdout);
    let image = &images[&("DC0_H0_VM0".to_string(), "scsi0:0".to_string())];
    std::fs::read(image).unwrap()
}

/// The local reading of the sample's top disk (`vdar cat`, itself checked against qemu-img
/// in tests/sample.rs and tests/sesparse.rs).
fn sample_image(vm: &Path, dir: &Path) -> Vec<u8> {
    let want = dir.join("want.raw");
    crate::util::ok(&[
        "cat",
        vm.join("sample-000002.vmdk").to_str().unwrap(),
        "-o",
        want.to_str().unwrap(),
    ]);
    std::fs::read(want).unwrap()
}

#[test]
fn an_esx_chain_reads_the_same_over_the_network() {
    let Some(sim) = start() else { return };
    let Some(py) = pyvmomi() else { return };
    let dir = tempdir();
    let vm = vm_with_sample(&py, &sim, dir.path(), true);
    let want = sample_image(&vm, dir.path());
    let (image, report) = backup_and_restore(&sim, dir.path(), &[]);
    assert!(
        image == want,
        "network transport differs from the local reading"
    );
    assert!(report["fetch_requests"].as_u64().unwrap() > 0, "{report}");
}

/// The sample VM with a thin base (its flat file sparse on the datastore, as on VMFS) and
/// change tracking on: the image the local reading gives, and the layer files' allocated bytes.
pub(crate) fn thin_sample_with_cbt(py: &str, sim: &Vcsim, scratch: &Path) -> (Vec<u8>, u64) {
    let vm = vm_with_sample(py, sim, scratch, true);
    let folder = sim.datastore.join("sample");
    let flat = folder.join("sample-flat.vmdk");
    std::fs::remove_file(&flat).unwrap();
    crate::util::run(
        "cp",
        &[
            "--sparse=always",
            vm.join("sample-flat.vmdk").to_str().unwrap(),
            flat.to_str().unwrap(),
        ],
    );
    client(py, sim, &["cbt", "DC0_H0_VM0", "on"]);
    let allocated = [
        "sample-flat.vmdk",
        "sample-000001-delta.vmdk",
        "sample-000002-sesparse.vmdk",
    ]
    .iter()
    .map(|f| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(folder.join(f)).unwrap().blocks() * 512
    })
    .sum();
    (sample_image(&vm, scratch), allocated)
}

#[test]
fn change_tracking_skips_a_thin_base_and_reads_the_same() {
    // Three areas an answer: the client must follow the pages.
    let Some(sim) = start_with(&["-cbt-page", "3"]) else {
        return;
    };
    let Some(py) = pyvmomi() else { return };
    let dir = tempdir();
    let (want, allocated) = thin_sample_with_cbt(&py, &sim, dir.path());
    let (image, report) = backup_and_restore(&sim, dir.path(), &[]);
    assert!(
        image == want,
        "CBT-masked reading differs from the local one"
    );
    let in_use = report["in_use_bytes"][0]
        .as_u64()
        .expect("areas in use reported");
    assert!(
        in_use > 0 && in_use < allocated,
        "{report} (allocated {allocated})"
    );
    // What the datastore gave is what the layers hold, not the 256 MiB flat file.
    let fetched = report["fetched_bytes"].as_u64().unwrap();
    assert!(
        fetched <= allocated + allocated / 20 + (1 << 20),
        "fetched {fetched} of {allocated} allocated: {report}"
    );

    // With change tracking off the base is fetched whole, and reads the same.
    client(&py, &sim, &["cbt", "DC0_H0_VM0", "off"]);
    let (image, report) = backup_and_restore(&sim, dir.path(), &[]);
    assert!(image == want);
    assert_eq!(
        report["in_use_bytes"][0],
        serde_json::Value::Null,
        "{report}"
    );
    assert!(
        report["fetched_bytes"].as_u64().unwrap() >= 256 << 20,
        "{report}"
    );
}

/// The change id the second client sees on DC0_H0_VM0's disk.
fn disk_change_id(py: &str, sim: &Vcsim) -> String {
    let seen = show(py, sim, "DC0_H0_VM0");
    seen["disks"][0]["change_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no change id on the disk: {seen}"))
        .to_string()
}

/// `vdar restore INC --base BASE --to TO` (raw): the image of DC0_H0_VM0's disk scsi0:0.
fn restored_incremental(inc: &Path, base: &Path, to: &Path) -> Vec<u8> {
    let out = crate::util::ok(&[
        "restore",
        inc.to_str().unwrap(),
        "--base",
        base.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
        "--json",
    ]);
    let images = crate::util::restored_images(&out.stdout);
    std::fs::read(&images[&("DC0_H0_VM0".to_string(), "scsi0:0".to_string())]).unwrap()
}

/// `vdar backup --vsphere ... --base BASE -o INC`: its report and its log.
fn incremental_vm0(sim: &Vcsim, base: &Path, inc: &Path) -> (serde_json::Value, String) {
    let out = backup_vm0(
        &sim.url,
        inc,
        &["--base", base.to_str().unwrap(), "--force"],
    );
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    (succeeded(out), log)
}

#[test]
fn an_incremental_by_vm_name_reads_what_the_server_says_changed() {
    let Some(sim) = start() else { return };
    let Some(py) = pyvmomi() else { return };
    let dir = tempdir();
    let (_, _) = vm_with_chain(&py, &sim, dir.path());
    client(&py, &sim, &["cbt", "DC0_H0_VM0", "on"]);
    let (full, catalog) = (dir.path().join("full.vdar"), dir.path().join("full.vcat"));
    let c = catalog.to_str().unwrap();
    succeeded(backup_vm0(
        &sim.url,
        &full,
        &["--chunk-size", "64K", "--catalog", c],
    ));
    let first = disk_change_id(&py, &sim);
    let list = crate::util::ok(&["list", full.to_str().unwrap(), "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(
        list["vms"][0]["origin"]["disks"][0]["change_id"],
        first.as_str()
    );

    // A night's writes: the next snapshot freezes a new layer over the chain. qemu-img fills
    // the grains the two writes touch (64 KiB each), which is what the server reports.
    let folder = sim.datastore.join("chainvm");
    let upd = folder.join("upd.vmdk");
    crate::util::run(
        "qemu-img",
        &["create", "-q", "-f", "vmdk", "-b", "top.vmdk", "-F", "vmdk"]
            .into_iter()
            .chain([upd.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    crate::util::qemu_io(&upd, &["write -P 0x77 3M 16k", "write -z 1M 4k"]);
    std::fs::write(folder.join("upd-flat.vmdk"), b"").unwrap();
    client(
        &py,
        &sim,
        &[
            "attach",
            "DC0_H0_VM0",
            "[LocalDS_0] chainvm/upd.vmdk",
            "4194304",
        ],
    );
    let want = dir.path().join("want.raw");
    qemu_raw(&upd, &want);
    let want = std::fs::read(want).unwrap();

    let inc = dir.path().join("inc.vdar");
    let (report, log) = incremental_vm0(&sim, &catalog, &inc);
    let changes = &report["changes"][0];
    assert_eq!(changes["source"], "cbt", "{report}\n{log}");
    assert_eq!(changes["changed_bytes"], 128 << 10, "{report}");
    assert!(log.contains("changed since change id"), "{log}");
    // The new state's change id is recorded, and it is the one the server gives the disk.
    let second = disk_change_id(&py, &sim);
    assert_ne!(first, second);
    let list = crate::util::ok(&["list", inc.to_str().unwrap(), "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(
        list["vms"][0]["origin"]["disks"][0]["change_id"],
        second.as_str()
    );
    assert!(
        restored_incremental(&inc, &full, &dir.path().join("restored")) == want,
        "the incremental restores differently from qemu-img's reading of the chain"
    );

    // Change tracking off: the server cannot say, the redo logs on the base's chain do.
    client(&py, &sim, &["cbt", "DC0_H0_VM0", "off"]);
    let (report, log) = incremental_vm0(&sim, &catalog, &inc);
    assert_eq!(
        report["changes"][0]["source"], "redo-log",
        "{report}\n{log}"
    );
    assert!(log.contains("change tracking is off now"), "{log}");

    // Another server (the same inventory names and ids): the base's change id is not one it
    // gave out, so every chunk is read.
    let Some(other) = start() else { return };
    let dir2 = tempdir();
    let (_, want2) = vm_with_chain(&py, &other, dir2.path());
    client(&py, &other, &["cbt", "DC0_H0_VM0", "on"]);
    let inc2 = dir2.path().join("inc.vdar");
    let (report, log) = incremental_vm0(&other, &catalog, &inc2);
    assert_ne!(report["changes"][0]["source"], "cbt", "{report}\n{log}");
    assert!(log.contains("is not known"), "{log}");
    assert!(restored_incremental(&inc2, &full, &dir2.path().join("restored")) == want2);
}

#[test]
fn the_san_transport_reads_the_chain_the_api_names_from_the_luns() {
    let Some(sim) = start() else { return };
    let Some(py) = pyvmomi() else { return };
    let dir = tempdir();
    // Only descriptors and small files on the datastore: the extents exist on the LUNs alone.
    let vm = vm_with_sample(&py, &sim, dir.path(), false);
    let rig = dir.path().join("rig");
    crate::util::run(
        crate::util::fixture_bin().to_str().unwrap(),
        &["lun-rig", vm.to_str().unwrap(), rig.to_str().unwrap()],
    );
    let want = sample_image(&vm, dir.path());
    let map = rig.join("blockmap.json");
    let luns = format!("{}/lun*.img", rig.display());
    let (image, report) = backup_and_restore(
        &sim,
        dir.path(),
        &[
            "--transport",
            "san",
            "--blockmap",
            map.to_str().unwrap(),
            "--lun",
            &luns,
        ],
    );
    assert!(
        image == want,
        "SAN transport differs from the local reading"
    );
    // Over HTTPS only the small files: the .vmx, .nvram and the like.
    let fetched = report["fetched_bytes"].as_u64().unwrap();
    assert!(
        fetched < 64 << 10,
        "fetched {fetched} bytes over HTTP: {report}"
    );

    let out = vdar_as_user(&[
        "backup",
        "--vsphere",
        &sim.url,
        "--vm",
        "DC0_H0_VM0",
        "-o",
        "-",
        "--transport",
        "san",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--blockmap"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
