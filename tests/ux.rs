//! What a backup administrator meets in the first hour (issue 15): progress only when asked for
//! off a terminal, `-v`/`-q`, one JSON schema with a version and CIDs as hex strings, and
//! errors about the wrong kind of file that say what the file is instead of dumping it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::sample::extract_sample;
use crate::util::*;

/// The sample VM and an archive of it.
fn sample_archive(dir: &Path) -> (PathBuf, PathBuf) {
    let vm = extract_sample(dir);
    let a = dir.join("a.vdar");
    ok(&["backup", s(&vm.join("sample.vmx")), "-o", s(&a)]);
    (vm, a)
}

fn stderr(args: &[&str]) -> String {
    String::from_utf8_lossy(&ok(args).stderr).into_owned()
}

/// stderr here is a pipe: no progress unless `--progress`, and then plain lines with a
/// percentage and no escape codes (it printed nothing, or with a terminal `\r\x1b[K` lines).
#[test]
fn progress_off_a_terminal_only_when_forced() {
    let d = tempdir();
    let (vm, a) = sample_archive(d.path());
    let vmx = s(&vm.join("sample.vmx")).to_string();
    let b = d.path().join("b.vdar");
    let to = d.path().join("r");
    for (args, pct) in [
        (
            vec!["backup", &vmx, "-o", s(&b)],
            "100% 256.0 MiB of 256.0 MiB",
        ),
        (
            vec!["restore", s(&a), "--to", s(&to)],
            "100% 256.0 MiB of 256.0 MiB",
        ),
        (vec!["verify", s(&a)], "100% "),
    ] {
        let quiet = stderr(&args);
        assert!(!quiet.contains("progress"), "{args:?}: {quiet}");
        let mut forced = args.clone();
        forced.push("--progress");
        forced.push("--force");
        if forced[0] == "verify" {
            forced.pop();
        }
        let err = stderr(&forced);
        let line = err
            .lines()
            .find(|l| l.starts_with("vdar: progress: "))
            .unwrap_or_else(|| panic!("{forced:?}: no progress line in {err}"));
        assert!(line.contains(pct) && line.contains("ETA"), "{line}");
        assert!(!err.contains('\x1b') && !err.contains('\r'), "{err:?}");
    }
    // vdar-restore takes the same global flags.
    let out = Command::new(env!("CARGO_BIN_EXE_vdar-restore"))
        .args(["verify", s(&a), "--progress"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("vdar: progress: 100%"));
    // A job that fails before it starts shows no progress line, only its error.
    let out = vdar(&[
        "restore",
        s(&vm.join("sample.vmdk")),
        "--to",
        s(&to),
        "--progress",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("progress") && err.contains("error"), "{err}");
    let err = stderr(&["verify", s(&a), "--progress", "-q"]);
    assert!(err.is_empty(), "-q silences progress: {err}");
    assert!(vdar(&["list", s(&a), "--progress", "--no-progress"])
        .status
        .code()
        .is_some_and(|c| c == 2));
}

/// On a terminal, a bar with percentage and ETA is redrawn in place and cut to the terminal's
/// width (lines of about 100 characters wrapped and piled up on an 80-column terminal). Run
/// under `script`, which gives vdar a pseudo-terminal of 60 columns.
#[test]
fn progress_bar_fits_the_terminal() {
    require!("script");
    let d = tempdir();
    let vm = extract_sample(d.path());
    let cmd = format!(
        "stty rows 24 cols 60; {} backup {} -o {}",
        s(&vdar_bin()),
        s(&vm.join("sample.vmx")),
        s(&d.path().join("a.vdar"))
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut bars = 0;
    for seg in text.split(['\r', '\n']) {
        // Drop the escape sequences (erase line, cursor moves) to measure what is visible.
        let mut visible = String::new();
        let mut chars = seg.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                chars.by_ref().find(|c| c.is_ascii_alphabetic());
            } else {
                visible.push(c);
            }
        }
        if visible.contains("% ") && visible.contains("ETA") {
            bars += 1;
            assert!(visible.chars().count() <= 60, "{visible:?}");
        }
    }
    assert!(bars > 0, "no progress bar drawn: {text:?}");
}

/// `-q` silences notices and summaries (errors still print); `-v` adds the I/O engine and
/// per-disk timings. Neither flag existed.
#[test]
fn quiet_and_verbose() {
    let d = tempdir();
    let (vm, a) = sample_archive(d.path());
    let vmx = s(&vm.join("sample.vmx")).to_string();
    let b = s(&d.path().join("b.vdar")).to_string();
    let normal = stderr(&["backup", &vmx, "-o", &b]);
    assert!(normal.contains("vdar: backup complete: "), "{normal}");
    let quiet = stderr(&["backup", &vmx, "-o", &b, "--force", "-q"]);
    assert!(quiet.is_empty(), "{quiet}");
    let verbose = stderr(&["-v", "backup", &vmx, "-o", &b, "--force"]);
    assert!(verbose.contains("vdar: reading with "), "{verbose}");
    assert!(
        verbose.contains("vdar: sample/scsi0:0: done in "),
        "{verbose}"
    );
    let to = d.path().join("r");
    let quiet = stderr(&["restore", s(&a), "--to", s(&to), "-q"]);
    assert!(quiet.is_empty(), "{quiet}");
    let out = vdar(&["-qq", "list", s(&d.path().join("missing.vdar"))]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("vdar: error: "), "{err}");
}

fn json(args: &[&str]) -> Value {
    let out = ok(args);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    let schema = v["schema"].as_str().unwrap_or_default();
    assert!(
        schema.starts_with("vdar-") && schema.ends_with("/1"),
        "{args:?}: schema {schema:?}"
    );
    v
}

/// Every `--json` output parses and names its schema and version; a disk's CID is the same
/// 8-hex-digit string in inspect, backup and list (inspect gave strings, the others integers),
/// and backup's summary has no progress field (`current`).
#[test]
fn json_outputs_share_a_versioned_schema_and_hex_cids() {
    let d = tempdir();
    let vm = extract_sample(d.path());
    let vmx = s(&vm.join("sample.vmx")).to_string();
    let a = s(&d.path().join("a.vdar")).to_string();
    let inspect = json(&["inspect", &vmx, "--json"]);
    let backup = json(&["backup", &vmx, "-o", &a, "--json"]);
    let list = json(&["list", &a, "--json"]);
    json(&["verify", &a, "--json"]);
    let to = s(&d.path().join("r")).to_string();
    json(&["restore", &a, "--to", &to, "--json"]);
    assert_eq!(inspect["schema"], "vdar-inspect/1");
    assert!(backup.get("current").is_none(), "{backup}");
    let cids = |v: &Value| -> (String, String) {
        let cid = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("{k}: {v}"))
                .to_string()
        };
        (cid("cid"), cid("parent_cid"))
    };
    for layer in 0..3 {
        let i = cids(&inspect["disks"][0]["chain"][layer]);
        let b = cids(&backup["vms"][0]["disks"][0]["meta"]["chain"][layer]);
        let l = cids(&list["vms"][0]["disks"][0]["meta"]["chain"][layer]);
        assert_eq!(i, b);
        assert_eq!(i, l);
        assert!(
            i.0.len() == 8 && i.0.chars().all(|c| c.is_ascii_hexdigit()),
            "{i:?}"
        );
        let file = &inspect["disks"][0]["chain"][layer]["file"];
        assert_eq!(
            file,
            &list["vms"][0]["disks"][0]["meta"]["chain"][layer]["file"]
        );
    }
}

/// `inspect` of an archive or an .nvram printed the binary first line inside its error.
#[test]
fn inspect_of_a_binary_file_says_what_it_is() {
    let d = tempdir();
    let (vm, a) = sample_archive(d.path());
    for (file, want) in [
        (a, "not a VMDK descriptor (it looks like a vdar archive)"),
        (vm.join("sample.nvram"), "found binary data"),
    ] {
        let out = vdar(&["inspect", s(&file)]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8(out.stderr).expect("the error is text");
        assert!(err.contains(want), "{err}");
        assert!(err.len() < 200, "{err}");
        assert!(
            !err.contains('\u{fffd}') && !err.contains("\\u{"),
            "{err:?}"
        );
    }
    // A text file that is no descriptor is quoted, cut short.
    let txt = d.path().join("notes.vmdk");
    std::fs::write(&txt, format!("hello {}\n", "x".repeat(500))).unwrap();
    let out = vdar(&["inspect", s(&txt)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("found \"hello xxx") && err.len() < 200,
        "{err}"
    );
}

/// `restore` of a VMDK said "bad magic"; it now says what the file looks like, gives no
/// `--salvage` hint and leaves no directory, from a file and from a pipe.
#[test]
fn restore_of_a_vmdk_names_it() {
    let d = tempdir();
    let vm = extract_sample(d.path());
    for (file, looks) in [
        ("sample.vmdk", "(it looks like a VMDK descriptor)"),
        (
            "sample-000001-delta.vmdk",
            "(it looks like a VMDK vmfsSparse (COWD) redo log)",
        ),
        (
            "sample-000002-sesparse.vmdk",
            "(it looks like a VMDK SEsparse extent)",
        ),
    ] {
        let to = d.path().join("out");
        let path = vm.join(file);
        let out = vdar(&["restore", s(&path), "--to", s(&to)]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        let want = format!("{} is not a vdar archive {looks}", s(&path));
        assert!(err.contains(&want), "{err}");
        assert!(
            !err.contains("salvage") && !err.contains("bad magic"),
            "{err}"
        );
        assert!(!to.exists());
        let out = Command::new(vdar_bin())
            .args(["restore", "-", "--to", s(&to)])
            .stdin(std::fs::File::open(&path).unwrap())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("standard input is not a vdar archive {looks}")),
            "{err}"
        );
        assert!(!to.exists());
    }
}
