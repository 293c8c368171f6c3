//! Volume sets (formats/VOLUME.md): an archive larger than its media, cut at `--volume-size`
//! into files that the next-volume command moves away, and onto loop block devices that
//! really end (the kernel's ENOSPC at the device's last byte, as a tape drive's end of
//! medium); read back in one pass, volume after volume, and refused when a volume is wrong.
//! Also a stream spanned by mbuffer's own volumes (`-D`, `-A`).

use std::path::PathBuf;

use std::process::Command;
use vdar::archive::volume::VolumeHeader;

use crate::util::{assert_same_file, ok, qemu_raw, random_vmdk, run, s, tempdir, vdar, vdar_stdin};

/// Runs vdar, which must refuse with exit 2 and say `says`; returns its stderr.
fn refused(args: &[&str], says: &str) -> String {
    let out = vdar(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(says), "{args:?}: {err}");
    err
}

/// Moves the finished volume at `$VDAR_DEVICE` to `$VDAR_DEVICE.N` (N: its number).
const MOVE_AWAY: &str = r#"mv "$VDAR_DEVICE" "$VDAR_DEVICE.$((VDAR_VOLUME - 1))""#;
/// Puts volume `$VDAR_VOLUME` back at `$VDAR_DEVICE`.
const LOAD: &str = r#"cp "$VDAR_DEVICE.$VDAR_VOLUME" "$VDAR_DEVICE""#;

/// A 5 MiB disk of noise in `d` (about 5 MiB of archive: more than two 2 MiB volumes) and
/// its image as qemu-img reads it.
fn noise_disk(d: &std::path::Path) -> (PathBuf, PathBuf) {
    let disk = random_vmdk(d, 5);
    let want = d.join("want.raw");
    qemu_raw(&disk, &want);
    (disk, want)
}

fn restored(report: &std::process::Output) -> PathBuf {
    let v: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    PathBuf::from(v["disks"][0]["path"].as_str().unwrap())
}

#[test]
fn a_set_cut_at_a_size_restores_and_refuses_wrong_volumes() {
    let dir = tempdir();
    let d = dir.path();
    let (disk, want) = noise_disk(d);
    let vol = d.join("vol");
    ok(&[
        "backup",
        s(&disk),
        "-o",
        s(&vol),
        "--block-size",
        "64K",
        "--volume-size",
        "2M",
        "--next-volume",
        MOVE_AWAY,
    ]);
    // The last volume stays at the name; the full ones are exactly the size asked.
    std::fs::rename(&vol, d.join("vol.3")).unwrap();
    for n in 1..=2 {
        assert_eq!(
            std::fs::metadata(d.join(format!("vol.{n}"))).unwrap().len(),
            2 << 20
        );
    }
    assert!(!d.join("vol.4").exists());
    let last = std::fs::metadata(d.join("vol.3")).unwrap().len();
    assert!(last > 0 && last % (64 << 10) == 0, "{last}");

    let load_first = || std::fs::copy(d.join("vol.1"), &vol).unwrap();
    load_first();
    let to = d.join("r");
    let out = ok(&[
        "restore",
        s(&vol),
        "--to",
        s(&to),
        "--json",
        "--next-volume",
        LOAD,
    ]);
    assert_same_file(&restored(&out), &want);
    load_first();
    ok(&["verify", s(&vol), "--next-volume", LOAD]);

    // Refused: volume 1 offered again, volume 3 before 2, and a restore starting at 2.
    for (cmd, says) in [
        (
            r#"cp "$VDAR_DEVICE.1" "$VDAR_DEVICE""#,
            "that was volume 1 again",
        ),
        (
            r#"cp "$VDAR_DEVICE.3" "$VDAR_DEVICE""#,
            "that was volume 3, out of order",
        ),
        ("exit 3", "failed"),
    ] {
        load_first();
        let err = refused(&["verify", s(&vol), "--next-volume", cmd], says);
        assert!(err.contains("volume 2"), "{cmd}: {err}");
    }
    std::fs::copy(d.join("vol.2"), &vol).unwrap();
    let err = refused(&["list", s(&vol)], "this is volume 2");
    assert!(err.contains("starts at volume 1"), "{err}");

    // A volume of another set (the same disk backed up again) is refused by its set id.
    let other = d.join("other");
    std::fs::create_dir(&other).unwrap();
    let ovol = other.join("vol");
    ok(&[
        "backup",
        s(&disk),
        "-o",
        s(&ovol),
        "--block-size",
        "64K",
        "--volume-size",
        "2M",
        "--next-volume",
        MOVE_AWAY,
    ]);
    load_first();
    let cmd = format!("cp {} \"$VDAR_DEVICE\"", s(&other.join("vol.2")));
    let out = vdar(&["verify", s(&vol), "--next-volume", &cmd]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("of another set"), "{err}");

    // From standard input the set cannot go on: the volume wanted is named.
    load_first();
    let out = vdar_stdin(&["verify", "-"], &vol);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("continues on volume 2"), "{err}");

    // A changer that loads nothing new would have volume 2 written over volume 1: refused.
    let same = d.join("same");
    let (disk_s, same_s, tiny) = (s(&disk), s(&same), d.join("tiny"));
    let cut = |out: &str, block: &str, cmd: &str| -> String {
        let a = [
            "backup",
            disk_s,
            "-o",
            out,
            "--force",
            "--volume-size",
            "2M",
        ];
        let b = ["--block-size", block, "--next-volume", cmd];
        refused(&[&a[..], &b[..]].concat(), "")
    };
    let err = cut(same_s, "512", "true");
    assert!(err.contains("still holds volume 1"), "{err}");
    // Volumes with little room after their header are refused before anything is written.
    let err = cut(s(&tiny), "1M", MOVE_AWAY);
    assert!(err.contains("more than two headers"), "{err}");
    assert!(!tiny.exists());

    // An archive that fits one volume is a set of one, read from a pipe as well.
    let one = d.join("one");
    ok(&["backup", s(&disk), "-o", s(&one), "--next-volume", "false"]);
    let out = vdar_stdin(&["restore", "-", "--to", s(&d.join("r1")), "--json"], &one);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_file(&restored(&out), &want);
}

/// Loop devices, detached when dropped.
struct Loops(Vec<String>);

impl Drop for Loops {
    fn drop(&mut self) {
        for dev in &self.0 {
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
    }
}

/// Attaches a loop device to each file; `None` (with the reason printed) where this
/// machine cannot.
fn attach(files: &[PathBuf]) -> Option<Loops> {
    let mut loops = Loops(Vec::new());
    for f in files {
        let out = Command::new("losetup")
            .args(["-f", "--show", s(f)])
            .output();
        match out {
            Ok(o) if o.status.success() => loops
                .0
                .push(String::from_utf8_lossy(&o.stdout).trim().to_string()),
            other => {
                eprintln!("skipped: losetup cannot attach a loop device here: {other:?}");
                return None;
            }
        }
    }
    Some(loops)
}

#[test]
fn loop_devices_that_end_carry_the_set_to_the_next_volume() {
    require!("losetup");
    let dir = tempdir();
    let d = dir.path();
    let (disk, want) = noise_disk(d);
    // Three 2 MiB media: the archive (about 5 MiB) needs all three.
    let media: Vec<PathBuf> = (1..=3).map(|n| d.join(format!("medium{n}"))).collect();
    // Reused media: what an earlier backup left after the data must not be read as data.
    for (n, m) in media.iter().enumerate() {
        std::fs::write(m, crate::util::noise(2 << 20, 0x5eed + n as u64)).unwrap();
    }
    let Some(loops) = attach(&media) else { return };
    // The drive: a name the changer points at the next medium, as an autoloader swaps tapes.
    let drive = d.join("drive");
    std::os::unix::fs::symlink(&loops.0[0], &drive).unwrap();
    let list = d.join("devices");
    std::fs::write(&list, loops.0.join("\n") + "\n").unwrap();
    let swap = format!(
        r#"ln -sfn "$(sed -n "${{VDAR_VOLUME}}p" {})" "$VDAR_DEVICE""#,
        s(&list)
    );
    ok(&[
        "backup",
        s(&disk),
        "-o",
        s(&drive),
        "--force",
        "--block-size",
        "64K",
        "--next-volume",
        &swap,
    ]);
    // Each medium starts with its volume's header: the set needed all three.
    for (n, m) in media.iter().enumerate() {
        let b = std::fs::read(m).unwrap();
        let h = VolumeHeader::decode(b[..512].try_into().unwrap(), "m").unwrap();
        assert_eq!((h.number, h.volume_bytes), (n as u32 + 1, 0));
    }

    std::os::unix::fs::symlink(&loops.0[0], d.join("drive2")).unwrap();
    std::fs::remove_file(&drive).unwrap();
    std::fs::rename(d.join("drive2"), &drive).unwrap();
    let out = ok(&[
        "restore",
        s(&drive),
        "--to",
        s(&d.join("r")),
        "--json",
        "--next-volume",
        &swap,
    ]);
    assert_same_file(&restored(&out), &want);
    drop(loops);
}

/// mbuffer spans the stream itself (`-D` volume size, `-A` autoloader): the volumes it
/// wrote, put back together, are the archive.
#[test]
fn a_stream_spanned_by_mbuffer_restores_from_its_volumes() {
    require!("mbuffer");
    let dir = tempdir();
    let d = dir.path();
    let (disk, want) = noise_disk(d);
    let out = d.join("tape");
    let script = format!(
        "{} backup {} -o - --block-size 64K | mbuffer -q -s 64k -D 2M -A 'n=$(ls {}.* 2>/dev/null | wc -l); mv {} {}.$((n + 1))' -o {}",
        s(&crate::util::vdar_bin()),
        s(&disk),
        s(&out),
        s(&out),
        s(&out),
        s(&out)
    );
    run("sh", &["-c", &script]);
    let mut whole = Vec::new();
    let mut parts: Vec<PathBuf> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("tape.")
        })
        .collect();
    parts.sort();
    assert!(parts.len() >= 2, "mbuffer spanned volumes: {parts:?}");
    for p in parts.iter().chain(std::iter::once(&out)) {
        whole.extend(std::fs::read(p).unwrap());
    }
    let joined = d.join("joined.vdar");
    std::fs::write(&joined, whole).unwrap();
    let r = ok(&["restore", s(&joined), "--to", s(&d.join("r")), "--json"]);
    assert_same_file(&restored(&r), &want);
}

/// The header's bytes, pinned (formats/VOLUME.md).
#[test]
fn volume_header_golden_bytes() {
    use vdar::archive::volume::{VolumeHeader, VOLUME_MAGIC_V1};
    let h = VolumeHeader {
        header_bytes: 1024,
        number: 3,
        set: *b"0123456789abcdef",
        stream_offset: 0x1_0000_0000,
        volume_bytes: 0,
        created: 1_796_601_600,
    };
    let b = h.encode();
    assert_eq!(b.len(), 1024);
    assert_eq!(&b[..8], &VOLUME_MAGIC_V1);
    assert_eq!(&b[12..16], &1024u32.to_le_bytes());
    assert_eq!(&b[16..20], &3u32.to_le_bytes());
    assert_eq!(&b[24..40], b"0123456789abcdef");
    assert_eq!(&b[40..48], &0x1_0000_0000u64.to_le_bytes());
    assert_eq!(&b[120..128], &blake3::hash(&b[..120]).as_bytes()[..8]);
    assert!(b[20..24]
        .iter()
        .chain(&b[64..120])
        .chain(&b[128..])
        .all(|&x| x == 0));
    assert_eq!(
        blake3::hash(&b).to_hex().as_str(),
        "47a5fe79058d07507d539e9dd690411aa51401d07b2dd9d158ace10a58b3e697"
    );
}

/// A next-volume command that writes its shell's pid and that of a `sleep` it started to
/// `pids`, then waits on the sleep: an autoloader that hangs.
fn hanging_changer(pids: &std::path::Path) -> String {
    let p = pids.display();
    format!(r#"sleep 600 & echo "$$ $!" > "{p}.tmp" && mv "{p}.tmp" "{p}"; wait"#)
}

/// Whether `pid` runs (a zombie waiting for its reaper does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

/// Starts vdar with `args`, waits until its changer wrote `pids`, sends `sig`, and returns
/// vdar's output and the changer's pids.
fn stopped_while_changing(
    args: &[&str],
    pids: &std::path::Path,
    sig: &str,
) -> (std::process::Output, Vec<u32>) {
    let mut child = Command::new(crate::util::vdar_bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !pids.exists() {
        assert!(
            started.elapsed().as_secs() < 60 && child.try_wait().unwrap().is_none(),
            "the changer never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let changer: Vec<u32> = std::fs::read_to_string(pids)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    run("sh", &["-c", &format!("kill -{sig} {}", child.id())]);
    let stopped = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if stopped.elapsed().as_secs() > 20 {
            let _ = child.kill();
            panic!("vdar still waits for its changer 20 s after SIG{sig}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), changer)
}

#[test]
fn a_stop_ends_the_next_volume_command_and_what_it_started() {
    let dir = tempdir();
    let d = dir.path();
    let (disk, want) = noise_disk(d);
    let vol = d.join("vol");

    // A backup stopped while the autoloader hangs.
    let pids = d.join("backup.pids");
    let changer = hanging_changer(&pids);
    let args = ["backup", s(&disk), "-o", s(&vol), "--volume-size", "2M"];
    let args = [&args[..], &["--next-volume", &changer]].concat();
    let (out, changer_pids) = stopped_while_changing(&args, &pids, "TERM");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("interrupted by signal 15"), "{err}");
    assert_eq!(changer_pids.len(), 2);
    for pid in changer_pids {
        assert!(!running(pid), "changer process {pid} left running: {err}");
    }
    // What was written is no archive a reader takes as whole.
    assert!(!vdar(&["verify", s(&vol)]).status.success());

    // A restore stopped the same way, from a good set.
    for f in std::fs::read_dir(d).unwrap().flatten() {
        if f.file_name().to_string_lossy().starts_with("vol") {
            std::fs::remove_file(f.path()).unwrap();
        }
    }
    let backup = ["backup", s(&disk), "-o", s(&vol), "--volume-size", "2M"];
    ok(&[&backup[..], &["--next-volume", MOVE_AWAY]].concat());
    // The last volume stays at the name.
    std::fs::rename(&vol, d.join("vol.3")).unwrap();
    std::fs::copy(d.join("vol.1"), &vol).unwrap();
    let pids = d.join("restore.pids");
    let changer = hanging_changer(&pids);
    let to = d.join("r");
    let args = [
        "restore",
        s(&vol),
        "--to",
        s(&to),
        "--next-volume",
        &changer,
    ];
    let (out, changer_pids) = stopped_while_changing(&args, &pids, "INT");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    for pid in changer_pids {
        assert!(!running(pid), "changer process {pid} left running: {err}");
    }
    assert!(!to.exists(), "a stopped restore left {to:?}");
    // The set itself is good: read with a changer that loads, it restores.
    std::fs::copy(d.join("vol.1"), &vol).unwrap();
    let out = ok(&[
        "restore",
        s(&vol),
        "--to",
        s(&to),
        "--json",
        "--next-volume",
        LOAD,
    ]);
    assert_same_file(&restored(&out), &want);
}
