//! Runs that do not end on their own: SIGINT or SIGTERM in the middle of a restore or a backup
//! (exit 128 + the signal, a notice, no unfinished output left under any name), and a second
//! run overlapping the first (refused, without touching the first one's files).
//!
//! Both are held mid-stream through a FIFO the test controls, so the signal always lands while
//! work remains: a restore reading its archive from a FIFO fed in two parts, a backup writing
//! into a FIFO the test stops reading.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::util::*;

/// Through the shell's builtin: a minimal system may have no `kill` binary.
fn signal(pid: u32, sig: &str) {
    run("sh", &["-c", &format!("kill -{sig} {pid}")]);
}

#[test]
fn interrupted_restore_removes_its_outputs() {
    let d = tempdir();
    let vmdk = random_vmdk(d.path(), 8);
    let archive = d.path().join("r.vdar");
    let out = vdar(&[
        "backup",
        s(&vmdk),
        "-o",
        s(&archive),
        "--chunk-size",
        "256K",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = fs::read(&archive).unwrap();
    let fifo = d.path().join("tape");
    run("mkfifo", &[s(&fifo)]);
    let to = d.path().join("restored");
    let child = Command::new(vdar_bin())
        .args(["restore", s(&fifo), "--to", s(&to)])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (fed, go_on) = (mpsc::channel(), mpsc::channel::<()>());
    let feeder = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().write(true).open(fifo).unwrap();
            f.write_all(&bytes[..bytes.len() / 3]).unwrap();
            fed.0.send(()).unwrap();
            go_on.1.recv().unwrap();
            // The restore may be gone by now: a broken pipe here is expected.
            let _ = f.write_all(&bytes[bytes.len() / 3..]);
        })
    };
    fed.1.recv().unwrap();
    // The outputs exist (as .partial) while the restore waits for the rest.
    std::thread::sleep(Duration::from_millis(200));
    assert!(fs::read_dir(to.join("r")).unwrap().count() > 0);
    signal(child.id(), "INT");
    std::thread::sleep(Duration::from_millis(200));
    go_on.0.send(()).unwrap();
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted by signal 2"), "{err}");
    // Nothing is left, not even the directories the restore created (issue 13, item 7).
    assert!(
        !to.exists(),
        "left behind: {:?}",
        fs::read_dir(to.join("r"))
    );
}

#[test]
fn interrupted_backup_stops_between_chunks() {
    let d = tempdir();
    let vmdk = random_vmdk(d.path(), 8);
    let fifo = d.path().join("tape");
    run("mkfifo", &[s(&fifo)]);
    let child = Command::new(vdar_bin())
        .args(["backup", s(&vmdk), "-o", s(&fifo), "--chunk-size", "256K"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut f = fs::File::open(&fifo).unwrap();
    // Read a little, then stop reading: the backup blocks with most chunks still to write.
    let mut first = vec![0; 4096];
    f.read_exact(&mut first).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    signal(child.id(), "TERM");
    let mut rest = Vec::new();
    f.read_to_end(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("interrupted by signal 15"), "{err}");
    assert!(
        first.len() + rest.len() < 8 << 20,
        "stopped before the end: {} bytes",
        first.len() + rest.len()
    );
}

/// Runs vdar with `args` while another run holds `partial` (written, locked): it is refused
/// and leaves the holder's bytes, then succeeds once the holder is gone.
fn refused_while_held(partial: &Path, args: &[&str], while_held: impl FnOnce()) {
    fs::write(partial, b"theirs").unwrap();
    let theirs = fs::File::open(partial).unwrap();
    vdar::output::staged::lock_partial(&theirs, partial).unwrap();
    let out = vdar(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{}: another vdar is writing it",
            partial.display()
        )),
        "{err}"
    );
    assert_eq!(fs::read(partial).unwrap(), b"theirs");
    while_held();
    // Once it is gone, its leftover is overwritten.
    drop(theirs);
    let out = vdar(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!partial.exists());
}

#[test]
fn overlapping_runs_leave_each_others_partial_files_alone() {
    let d = tempdir();
    let vmdk = random_vmdk(d.path(), 1);
    let archive = d.path().join("a.vdar");
    // Another backup is writing the same archive name (a scheduled run that overlaps).
    refused_while_held(
        &d.path().join("a.vdar.partial"),
        &["backup", s(&vmdk), "-o", s(&archive)],
        || assert!(!archive.exists()),
    );
    // The same for a restore into a directory another restore is filling.
    let to = d.path().join("to");
    fs::create_dir_all(to.join("r")).unwrap();
    refused_while_held(
        &to.join("r/r.raw.partial"),
        &["restore", s(&archive), "--to", s(&to)],
        || (),
    );
    assert_eq!(fs::metadata(to.join("r/r.raw")).unwrap().len(), 1 << 20);
}
