//! What tools/make-deb.sh packages besides the binaries: the shell completions and man pages
//! the binaries generate (hidden `completions` and `man` commands), and the example systemd
//! units in tools/systemd/, checked by `systemd-analyze verify` and run as the units would
//! run them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::*;

fn restore_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vdar-restore"))
}

/// `bin args...`, which must succeed.
fn ok(bin: &Path, args: &[&str]) -> Output {
    let out = Command::new(bin).args(args).output().expect("run");
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The commands of `bin` that run something, as `--help` lists them (so a new command is
/// picked up without touching this test): `["backup"]`, `["blockmap", "import"]`, ...
fn commands(bin: &Path, parent: &[String]) -> Vec<Vec<String>> {
    let mut args: Vec<&str> = parent.iter().map(String::as_str).collect();
    args.push("--help");
    let help = String::from_utf8(ok(bin, &args).stdout).unwrap();
    let mut out = Vec::new();
    let listed = help
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty());
    for line in listed {
        let name = line.split_whitespace().next().unwrap().to_string();
        if name == "help" {
            continue;
        }
        let mut path = parent.to_vec();
        path.push(name);
        let below = commands(bin, &path);
        if below.is_empty() {
            out.push(path);
        } else {
            out.extend(below);
        }
    }
    out
}

/// Each binary, its name, and the other one's (which its man page names under SEE ALSO).
fn binaries() -> [(PathBuf, &'static str, &'static str); 2] {
    [
        (vdar_bin(), "vdar", "vdar-restore"),
        (restore_bin(), "vdar-restore", "vdar"),
    ]
}

#[test]
fn completions_name_every_command() {
    for (bin, name, _) in binaries() {
        let cmds = commands(&bin, &[]);
        assert!(cmds.len() >= 3, "{name}: commands {cmds:?}");
        for shell in ["bash", "zsh", "fish"] {
            let script = String::from_utf8(ok(&bin, &["completions", shell]).stdout).unwrap();
            assert!(script.contains(name), "{name} {shell}: {script}");
            for word in cmds.iter().flatten() {
                assert!(script.contains(word.as_str()), "{name} {shell}: no {word}");
            }
            // Every shell's script must at least parse; bash is always there.
            let (sh, flag) = match shell {
                "bash" => ("bash", "-n"),
                "zsh" => ("zsh", "-n"),
                _ => ("fish", "--no-execute"),
            };
            if have(sh) {
                let dir = tempdir();
                let file = dir.path().join("script");
                fs::write(&file, &script).unwrap();
                run(sh, &[flag, file.to_str().unwrap()]);
            }
        }
    }
    assert!(!vdar(&["completions", "tcsh"]).status.success());
}

#[test]
fn man_page_renders_every_command() {
    require!("groff");
    for (bin, name, other) in binaries() {
        let dir = tempdir();
        let page = dir.path().join(format!("{name}.1"));
        fs::write(&page, ok(&bin, &["man"]).stdout).unwrap();
        // All of groff's warnings on, and none may fire: a warning is a page that renders
        // wrong somewhere (an unknown macro, a bad escape).
        let out = run(
            "groff",
            &["-man", "-Tascii", "-P-cbou", "-ww", page.to_str().unwrap()],
        );
        assert!(
            out.stderr.is_empty(),
            "{name}.1: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for section in ["NAME", "SYNOPSIS", "OPTIONS", "COMMANDS", "EXIT STATUS"] {
            assert!(text.contains(section), "{name}.1: no {section}: {text}");
        }
        assert!(text.contains("2 error"), "{name}.1: exit codes: {text}");
        assert!(text.contains(&format!("SEE ALSO {other}(1)")), "{text}");
        for cmd in commands(&bin, &[]) {
            let heading = format!("{name} {}", cmd.join(" "));
            assert!(text.contains(&heading), "{name}.1: no {heading}: {text}");
        }
    }
}

/// The example units under tools/systemd/.
fn units() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/systemd")
}

#[test]
fn systemd_units_verify() {
    require!("systemd-analyze");
    let mut files: Vec<String> = fs::read_dir(units())
        .unwrap()
        .map(|e| e.unwrap().path().to_str().unwrap().to_string())
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    let mut args = vec!["verify", "--man=no"];
    args.extend(files.iter().map(String::as_str));
    let out = Command::new("systemd-analyze")
        .args(&args)
        .output()
        .expect("systemd-analyze");
    // Unknown keys and unparsable values are only warnings to systemd: none is accepted here.
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shell script a unit's `key=/bin/sh -c '...'` line runs (commented out or not), with
/// systemd's `$$` and `%%` escapes undone. `${VAR}` is left for the shell, which expands it as
/// systemd would from the unit's Environment= lines.
fn unit_script(unit: &str, key: &str) -> String {
    let text = fs::read_to_string(units().join(unit)).unwrap();
    let line = text
        .lines()
        .map(|l| l.trim_start_matches('#'))
        .find_map(|l| l.strip_prefix(&format!("{key}=/bin/sh -c '")))
        .unwrap_or_else(|| panic!("{unit}: no {key}=/bin/sh -c '...'"));
    let script = line.strip_suffix('\'').expect("one quoted script");
    script.replace("$$", "$").replace("%%", "%")
}

/// Runs a unit's script as its service would, with the binaries under test on PATH.
fn run_unit(script: &str, env: &[(&str, &Path)]) -> Output {
    let bin_dir = vdar_bin().parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", script]).env("PATH", path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("sh")
}

fn archives(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn systemd_units_back_up_verify_and_prune() {
    require!("qemu-img");
    let dir = tempdir();
    let vm = random_vmdk(dir.path(), 1);
    let store = dir.path().join("backup/web01");
    let env = [("VDAR_VM", vm.as_path()), ("VDAR_DIR", store.as_path())];

    // The weekly verify before any backup: no archive is an error (exit 2).
    fs::create_dir_all(&store).unwrap();
    let out = run_unit(&unit_script("vdar-verify.service", "ExecStart"), &env);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // The nightly backup: one whole, date-named archive and its JSON summary.
    let out = run_unit(&unit_script("vdar-backup.service", "ExecStart"), &env);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("backup --json summary");
    let names = archives(&store);
    assert_eq!(names.len(), 1, "{names:?}");
    let name = &names[0];
    assert!(
        name.len() == "2026-12-02T0130.vdar".len() && name.ends_with(".vdar"),
        "{name}"
    );

    // The weekly verify: the archive is intact (0), then damaged (1).
    let out = run_unit(&unit_script("vdar-verify.service", "ExecStart"), &env);
    assert!(out.status.success(), "{out:?}");
    let archive = store.join(name);
    let mut bytes = fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&archive, bytes).unwrap();
    let out = run_unit(&unit_script("vdar-verify.service", "ExecStart"), &env);
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // The retention line, on 20 nightly archives of 2026-11-01 (a Sunday) to 11-20: the
    // last 14 days (11-07 to 11-20) stay, and of the weeks before the newest of each
    // (11-01, the newest of its ISO week; 11-08 is kept as a day already). An unfinished
    // backup's .partial file is not touched.
    fs::remove_file(&archive).unwrap();
    let nov1 = 1_793_496_600u64; // 2026-11-01T01:30:00Z
    let name = |d: u64| format!("2026-11-{d:02}T0130.vdar");
    for d in 1..=20u64 {
        let out = Command::new(vdar_bin())
            .args(["backup", "-q", vm.to_str().unwrap(), "-o"])
            .arg(store.join(name(d)))
            .env("SOURCE_DATE_EPOCH", (nov1 + (d - 1) * 86_400).to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    fs::write(store.join("2026-11-21T0130.vdar.partial"), b"").unwrap();
    let out = run_unit(&unit_script("vdar-backup.service", "ExecStartPost"), &env);
    assert!(out.status.success(), "{out:?}");
    let mut names: Vec<String> = std::iter::once(1).chain(7..=20).map(name).collect();
    names.push("2026-11-21T0130.vdar.partial".into());
    assert_eq!(archives(&store), names);
}
