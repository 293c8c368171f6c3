//! The shell completions and man pages the binaries generate (hidden `completions` and `man`
//! commands) for packagers.

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
