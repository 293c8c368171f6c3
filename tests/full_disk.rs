//! A full disk under a backup or a restore: a clear error naming the file and the byte, exit 2,
//! and nothing left behind that looks finished; with `--force`, the file being replaced
//! survives a failed replacement.
//!
//! `/dev/full` needs nothing. A small full file system comes from a tmpfs mounted in a private
//! mount namespace (`unshare`, as root or through a user namespace): the mount disappears with
//! the shell that made it. Where namespaces are not allowed (some CI containers) that part is
//! skipped with the reason printed.

use std::fs;
use std::process::Command;

use crate::util::*;

/// Runs `script` in bash in a private mount namespace; its stdout and stderr, or None (said on
/// stderr) where the namespace or the script's mount (`echo NOMOUNT`) is refused.
fn in_private_mount(script: &str) -> Option<(String, String)> {
    let out = Command::new("unshare")
        .args(["--mount", "--map-root-user", "bash", "-c", script])
        .output()
        .or_else(|_| Command::new("false").output())
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() || stdout.contains("NOMOUNT") {
        eprintln!("skipped: no private tmpfs mount here (unshare/mount refused): {stderr}");
        return None;
    }
    Some((stdout, stderr))
}

#[test]
fn writing_to_dev_full_names_the_device_and_fails() {
    let d = tempdir();
    let vmdk = random_vmdk(d.path(), 2);
    for args in [
        vec!["backup", s(&vmdk), "-o", "/dev/full"],
        vec!["backup", s(&vmdk), "-o", "/dev/full", "--block-size", "64k"],
        vec!["cat", s(&vmdk), "-o", "/dev/full"],
    ] {
        let out = vdar(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("/dev/full: write at byte 0x0: No space left on device"),
            "{args:?}: {err}"
        );
        assert_eq!(err.matches("No space left").count(), 1, "said once: {err}");
    }
}

/// A random `mib`-MiB disk in `dir`, its backup, and an empty directory to mount on.
fn disk_archive_and_mount_point(dir: &std::path::Path, mib: usize) -> [std::path::PathBuf; 3] {
    let vmdk = random_vmdk(dir, mib);
    let archive = dir.join("r.vdar");
    let out = vdar(&["backup", s(&vmdk), "-o", s(&archive)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mnt = dir.join("mnt");
    fs::create_dir(&mnt).unwrap();
    [vmdk, archive, mnt]
}

#[test]
fn full_file_system_leaves_no_finished_looking_output() {
    let d = tempdir();
    let [vmdk, archive, mnt] = disk_archive_and_mount_point(d.path(), 12);
    let v = s(&vdar_bin()).to_string();
    let (a, m) = (s(&archive).to_string(), s(&mnt).to_string());
    // One shell in a private mount namespace: a 4 MiB tmpfs, then every attempt, each
    // followed by what it left (`@` lines) and its exit code.
    let mut script = format!(
        "set -u\nmount -t tmpfs -o size=4m vdar-full {m} || {{ echo NOMOUNT; exit 0; }}\n\
         list() {{ find {m} -type f -printf '@%P %s\\n' | sort; }}\n\
         {v} backup {vmdk} -o {m}/b.vdar; echo \"rc=$?\"; list\n",
        vmdk = s(&vmdk)
    );
    for f in ["raw", "vmdk", "sparse", "stream", "ova"] {
        script += &format!("{v} restore {a} --to {m}/{f} --format {f}; echo \"rc=$?\"; list\n");
        script += &format!("rm -rf {m}/{f}\n");
    }
    // vdar cat stages its file output the same way.
    script += &format!(
        "{v} cat {vmdk} -o {m}/c.raw; echo \"rc=$?\"; list\n",
        vmdk = s(&vmdk)
    );
    // --force over an earlier (here: stand-in) restore: the old image must survive.
    script += &format!(
        "mkdir -p {m}/old/r && echo old > {m}/old/r/r.raw\n\
         {v} restore {a} --to {m}/old --force; echo \"rc=$?\"; list\n\
         cat {m}/old/r/r.raw\n"
    );
    let Some((stdout, stderr)) = in_private_mount(&script) else {
        return;
    };
    let rcs: Vec<&str> = stdout.lines().filter(|l| l.starts_with("rc=")).collect();
    assert_eq!(rcs, ["rc=2"; 8], "every attempt fails: {stdout}\n{stderr}");
    let left: Vec<&str> = stdout.lines().filter(|l| l.starts_with('@')).collect();
    assert_eq!(
        left,
        ["@old/r/r.raw 4"],
        "only the old image is left: {stdout}\n{stderr}"
    );
    assert!(stdout.ends_with("old\n"), "old image intact: {stdout}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 8, "{stderr}");
    for e in &errors {
        assert!(
            e.contains("No space left on device") && e.contains("byte 0x"),
            "names file and byte: {e}"
        );
    }
    assert!(
        errors[0].contains("/b.vdar: write at byte 0x"),
        "{}",
        errors[0]
    );
    assert!(errors[1].contains("raw/r/r.raw.partial"), "{}", errors[1]);
    assert!(errors[6].contains("/c.raw.partial"), "{}", errors[6]);
}

/// Issue 13 item 7: when the file system filled while the OVA itself was written (its disks'
/// spool files fit), the error said "OVA output: No space left on device", naming neither the
/// file nor the byte. It names the `.ova.partial` and the byte, as the other writers do, and
/// nothing is left behind.
#[test]
fn full_file_system_under_an_ova_names_the_file_and_byte() {
    let d = tempdir();
    let [_, archive, mnt] = disk_archive_and_mount_point(d.path(), 4);
    // 6 MiB: the 4 MiB disk's spool fits, the OVA holding a second copy of it does not.
    let script = format!(
        "set -u\nmount -t tmpfs -o size=6m vdar-full {m} || {{ echo NOMOUNT; exit 0; }}\n\
         {v} restore {a} --to {m}/ova --format ova; echo \"rc=$?\"\n\
         find {m} -mindepth 1 -printf '@%P\\n'\n",
        m = s(&mnt),
        v = s(&vdar_bin()),
        a = s(&archive)
    );
    let Some((stdout, stderr)) = in_private_mount(&script) else {
        return;
    };
    assert!(stdout.starts_with("rc=2\n"), "{stdout}\n{stderr}");
    let ova = format!("{}/ova/r/r.ova.partial: byte 0x", s(&mnt));
    assert!(
        stderr.contains(&ova) && stderr.contains("No space left on device"),
        "names the OVA and the byte: {stderr}"
    );
    assert_eq!(stdout, "rc=2\n", "nothing left: {stdout}");
}
