//! Host-side probe hashes for `vdar blockmap import --probes` (formats/BLOCKMAP.md §2.1).
//!
//! `vmkfstools -t0` says where a file's blocks are, but nothing proves that the proxy reads the
//! bytes the host sees: the `-t0` grammar is reconstructed, and the LV-relative reading of its
//! volume ranges is a hypothesis. Probes close that gap. On the ESXi host a shell one-liner
//! (`dd | sha256sum | awk`, given verbatim in formats/BLOCKMAP.md) hashes a few 1 MiB ranges of
//! each file and prints one line per range:
//!
//! ```text
//! /vmfs/volumes/DS01/vm1/vm1-flat.vmdk 1048576 1048576 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//! ```
//!
//! [`parse_probes`] reads exactly that shape (`FILE OFFSET LENGTH SHA256HEX`) strictly: the last
//! three whitespace-separated fields are decimal offset, decimal length and 64 hex digits, and
//! everything before them is the file name (datastore names may contain spaces). Then
//! [`attach_probes`] hangs each probe on its mapped file, by the same name rule SAN mode uses to
//! open files, refusing unknown or ambiguous names and ranges outside the file. A copy checks
//! the probes against the LUNs before and after it runs ([`guarded_copy`], over
//! [`super::opener::BlockMapOpener::check_probes`]).

use std::collections::HashMap;
use std::path::Path;

use super::blockmap::{file_name_of, MappedFile, Probe, MAX_PROBE_BYTES};
use crate::error::{Error, Result};
use crate::input::SourceOpener;

/// Most probes per mapped file: each is read twice (before and after the copy), so a probe file
/// that hashes a whole disk in 1 MiB steps is a mistake, not a stronger check.
pub const MAX_PROBES_PER_FILE: usize = 1024;

/// One parsed probe line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeLine {
    /// 1-based line number in the probe file.
    pub line: usize,
    /// The file name as the host printed it.
    pub file: String,
    /// The range and its hash (lowercase hex).
    pub probe: Probe,
}

/// Splits off the last whitespace-separated field: `("a b c", "d")` from `"a b c d"`.
fn split_last(s: &str) -> Option<(&str, &str)> {
    let (head, last) = s.trim_end().rsplit_once(char::is_whitespace)?;
    Some((head.trim_end(), last))
}

/// A decimal u64, digits only: the one-liner prints plain decimal, so a sign, a `0x` prefix or
/// an exponent means the file did not come from it.
fn decimal(s: &str, what: &str) -> std::result::Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!("{what} {s:?} is not a decimal number"));
    }
    s.parse()
        .map_err(|_| format!("{what} {s} does not fit in 64 bits"))
}

/// Parses probe lines `FILE OFFSET LENGTH SHA256HEX`; `path` names the probe file in errors.
/// Blank lines and lines starting with `#` are skipped. Every other line must parse, with
/// `1 ≤ LENGTH ≤` [`MAX_PROBE_BYTES`] and `OFFSET + LENGTH` not overflowing; whether the range
/// lies inside the file is checked by [`attach_probes`], which knows the file sizes.
pub fn parse_probes(path: &Path, text: &str) -> Result<Vec<ProbeLine>> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let line = i + 1;
        let t = l.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let parsed = parse_line(t).map_err(|what| Error::Syntax {
            path: path.into(),
            line,
            what: format!("{what}: expected 'FILE OFFSET LENGTH SHA256HEX', found {t:?}"),
        })?;
        let (file, off, len, sha256) = parsed;
        out.push(ProbeLine {
            line,
            file,
            probe: Probe { off, len, sha256 },
        });
    }
    Ok(out)
}

fn parse_line(t: &str) -> std::result::Result<(String, u64, u64, String), String> {
    let (rest, hash) = split_last(t).ok_or("too few fields")?;
    let (rest, len) = split_last(rest).ok_or("too few fields")?;
    let (file, off) = split_last(rest).ok_or("too few fields")?;
    if file.is_empty() {
        return Err("no file name".into());
    }
    if hash.len() != 64 || !hash.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("sha256 {hash:?} is not 64 hex digits"));
    }
    let off = decimal(off, "offset")?;
    let len = decimal(len, "length")?;
    if len == 0 || len > MAX_PROBE_BYTES {
        return Err(format!(
            "length {len} is outside 1..={MAX_PROBE_BYTES} (probes are read twice per copy)"
        ));
    }
    if off.checked_add(len).is_none() {
        return Err(format!("offset {off} + length {len} overflows"));
    }
    Ok((file.to_string(), off, len, hash.to_ascii_lowercase()))
}

/// Attaches parsed probes to `files` (the map being built). A probe names its file by the
/// whole mapped path, or else by file name when exactly one mapped file has that name (the rule
/// of `vdar cat --blockmap`). Unknown and ambiguous names, ranges past the end of the file,
/// one range given twice and more than [`MAX_PROBES_PER_FILE`] probes on a file are errors
/// naming the line.
pub fn attach_probes(path: &Path, lines: Vec<ProbeLine>, files: &mut [MappedFile]) -> Result<()> {
    let syn = |line: usize, what: String| Error::Syntax {
        path: path.into(),
        line,
        what,
    };
    // (file index, off, len) -> first line, to name both lines of a duplicate.
    let mut seen: HashMap<(usize, u64, u64), usize> = HashMap::new();
    for pl in lines {
        let idx = match files.iter().position(|f| f.path == pl.file) {
            Some(i) => i,
            None => {
                let name = file_name_of(&pl.file);
                let hits: Vec<usize> = (0..files.len())
                    .filter(|&i| file_name_of(&files[i].path) == name)
                    .collect();
                match hits.as_slice() {
                    [i] => *i,
                    [] => {
                        let known: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
                        return Err(syn(
                            pl.line,
                            format!(
                                "{:?} is not a mapped file (mapped: {})",
                                pl.file,
                                known.join(", ")
                            ),
                        ));
                    }
                    many => {
                        let names: Vec<&str> =
                            many.iter().map(|&i| files[i].path.as_str()).collect();
                        return Err(syn(
                            pl.line,
                            format!(
                                "{:?} names {} mapped files ({}): give the full path",
                                pl.file,
                                many.len(),
                                names.join(", ")
                            ),
                        ));
                    }
                }
            }
        };
        let f = &mut files[idx];
        let p = pl.probe;
        let end = p.off + p.len; // checked in parse_line
        if end > f.size {
            return Err(syn(
                pl.line,
                format!(
                    "probe bytes {}..{end} of {} lie past the end of the {}-byte file",
                    p.off, f.path, f.size
                ),
            ));
        }
        if let Some(first) = seen.insert((idx, p.off, p.len), pl.line) {
            return Err(syn(
                pl.line,
                format!(
                    "probe of {} bytes {}..{end} is already given on line {first}",
                    f.path, p.off
                ),
            ));
        }
        if f.probes.len() >= MAX_PROBES_PER_FILE {
            return Err(syn(
                pl.line,
                format!(
                    "more than {MAX_PROBES_PER_FILE} probes for {}: probe a few ranges per file",
                    f.path
                ),
            ));
        }
        f.probes.push(p);
    }
    Ok(())
}

/// What a guarded SAN operation does with the mapped files: the stage names in a
/// [`crate::error::ProbeMismatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardedOp {
    /// Reading them (backup, cat): "before copy", "after copy".
    Copy,
    /// Writing one back (restore --blockmap): "before write".
    Write,
}

/// The probe rule of SAN mode, in one place: the probes must hold before the first byte is
/// read or written (a wrong map or a moved file stops everything before any output), and again
/// after the last, before the result is declared complete (the files must not have moved
/// meanwhile). Start one with [`ProbeGuard::begin`] before the operation, call
/// [`ProbeGuard::finish`] after it, and give the output its name only once `finish` is `Ok`.
/// A copy (backup, cat) runs through [`guarded_copy`], which does all three.
#[must_use = "the probes must be checked again with finish() once the operation is done"]
pub struct ProbeGuard<'a> {
    opener: &'a super::BlockMapOpener,
    op: GuardedOp,
    checked: usize,
}

impl<'a> ProbeGuard<'a> {
    /// Checks every probe before `op`; the error names the file, range and stage.
    pub fn begin(opener: &'a super::BlockMapOpener, op: GuardedOp) -> Result<Self> {
        let stage = match op {
            GuardedOp::Copy => "before copy",
            GuardedOp::Write => "before write",
        };
        let checked = opener.check_probes(stage)?;
        Ok(ProbeGuard {
            opener,
            op,
            checked,
        })
    }

    /// Probes checked so far (before, and after once finished).
    pub fn checked(&self) -> usize {
        self.checked
    }

    /// Checks every probe again after a copy. Returns the number of probes checked in all.
    ///
    /// After a write there is nothing to check again: the probes hashed the target as it was
    /// (a fresh eager-zeroed disk hashes zeros) and the write replaced those bytes; write-back
    /// proves its result by reading it back instead.
    pub fn finish(self) -> Result<usize> {
        match self.op {
            GuardedOp::Copy => Ok(self.checked + self.opener.check_probes("after copy")?),
            GuardedOp::Write => Ok(self.checked),
        }
    }
}

/// Runs a copy (backup, `cat`) under the probe rule, the one sequence for every front end.
///
/// With a block map (`san`), its probes are checked before `copy` starts and again after it
/// returns, and `copy` reads through `san`; without one, `copy` reads through `local` and
/// nothing is checked. `copy` does everything that reads the files (opening the chains
/// included: their descriptors come from the LUNs too) and ends with its output flushed but
/// not yet named: the caller names it (`commit`) only once this returns `Ok`, so a failed
/// probe leaves no output under its final name.
///
/// Returns `copy`'s result and the LUNs' notices gathered while it ran (skipped devices, dead
/// paths, failovers) for the front end to show; an error of `copy` or of a probe is returned
/// as it is, and the notices stay with the LUN set.
pub fn guarded_copy<T, E: From<Error>>(
    san: Option<&super::BlockMapOpener>,
    local: &dyn SourceOpener,
    copy: impl FnOnce(&dyn SourceOpener) -> std::result::Result<T, E>,
) -> std::result::Result<(T, Vec<String>), E> {
    let Some(opener) = san else {
        return Ok((copy(local)?, Vec::new()));
    };
    let guard = ProbeGuard::begin(opener, GuardedOp::Copy)?;
    let done = copy(opener)?;
    guard.finish()?;
    Ok((done, opener.luns().take_notices()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn file(path: &str, size: u64) -> MappedFile {
        MappedFile {
            path: path.into(),
            role: None,
            size,
            volume: Some("v0".into()),
            text: None,
            runs: vec![],
            probes: vec![],
        }
    }

    fn attach(text: &str, files: &mut [MappedFile]) -> std::result::Result<(), String> {
        let p = Path::new("p.txt");
        let lines = parse_probes(p, text).map_err(|e| e.to_string())?;
        attach_probes(p, lines, files).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_the_one_liner_output() {
        let text = format!(
            "# probes\n/vmfs/volumes/data store 1/vm/vm-flat.vmdk 0 1048576 {H}\n\n\
             vm-delta.vmdk 1048576 4096 {}\n",
            H.to_uppercase()
        );
        let l = parse_probes(Path::new("p"), &text).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].file, "/vmfs/volumes/data store 1/vm/vm-flat.vmdk");
        assert_eq!((l[0].line, l[0].probe.off, l[0].probe.len), (2, 0, 1 << 20));
        assert_eq!(l[1].probe.sha256, H, "hashes are stored lowercase");
        let mut files = [
            file("[data store 1] vm/vm-flat.vmdk", 2 << 20),
            file("/vmfs/volumes/x/vm/vm-delta.vmdk", (1 << 20) + 8192),
        ];
        attach(&text, &mut files).unwrap();
        assert_eq!(files[0].probes.len(), 1);
        assert_eq!(files[1].probes[0].off, 1 << 20);
    }

    /// A 256 KiB flat file laid out on the two-LUN test rig and bound: the opener, the mapped
    /// file's name and the LUN images.
    fn rig(
        dir: &Path,
    ) -> (
        super::super::BlockMapOpener,
        String,
        Vec<std::path::PathBuf>,
    ) {
        use crate::fixture::lunrig::{lay_out, RigOptions};
        use crate::san::{BlockMapOpener, LunSet, ScanOptions};
        let vm = dir.join("vm");
        std::fs::create_dir(&vm).unwrap();
        // No zero byte, and over 64 KiB: the rig maps it as data rather than embedding text.
        let data: Vec<u8> = (0..256u32 << 10).map(|i| (i % 251) as u8 | 1).collect();
        std::fs::write(vm.join("d-flat.vmdk"), data).unwrap();
        let rig = lay_out(&vm, &dir.join("rig"), &RigOptions::default()).unwrap();
        assert!(!rig.map.files[0].probes.is_empty(), "the rig takes probes");
        let name = rig.map.files[0].path.clone();
        let groups: Vec<Vec<_>> = rig.luns.iter().map(|l| vec![l.clone()]).collect();
        let luns = LunSet::scan(&groups, ScanOptions { direct: false }).unwrap();
        let opener = BlockMapOpener::new(&rig.map_path, rig.map, luns).unwrap();
        (opener, name, rig.luns)
    }

    /// Overwrites every PE of the rig's LUNs: each file has moved, as far as the probes see.
    fn move_files(luns: &[std::path::PathBuf]) {
        use crate::fixture::lunrig::{RIG_DATA_OFFSET, RIG_LUN0_PART_START};
        for (k, l) in luns.iter().enumerate() {
            let start = RIG_DATA_OFFSET + if k == 0 { RIG_LUN0_PART_START } else { 0 };
            let len = std::fs::metadata(l).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(l).unwrap();
            let junk = vec![0xee; (len - start) as usize];
            std::os::unix::fs::FileExt::write_all_at(&f, &junk, start).unwrap();
        }
    }

    #[test]
    fn guarded_copy_checks_before_and_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (opener, name, luns) = rig(dir.path());
        let local = crate::input::LocalOpener::new(crate::input::source::ReadPath::Buffered);
        let mapped = Path::new(&name);

        // Without a block map the copy reads locally, where the mapped name is no file.
        let (found, notices) = guarded_copy(None, &local, |o| o.exists(mapped)).unwrap();
        assert!(!found && notices.is_empty());
        // With one, it reads through the map, between two passing checks.
        let (found, _) = guarded_copy(Some(&opener), &local, |o| o.exists(mapped)).unwrap();
        assert!(found);

        // Files that move during the copy fail it once the copy is done.
        let mut ran = false;
        let e = guarded_copy::<_, Error>(Some(&opener), &local, |_| {
            ran = true;
            move_files(&luns);
            Ok(())
        })
        .unwrap_err()
        .to_string();
        assert!(ran && e.contains("after copy"), "{e}");
        // Files that moved before fail it before the copy starts.
        let e = guarded_copy::<(), Error>(Some(&opener), &local, |_| panic!("copy ran"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("before copy"), "{e}");
    }

    #[test]
    fn rejects_with_line_numbers() {
        let files = [file("/vmfs/volumes/ds/vm/a-flat.vmdk", 1 << 20)];
        let cases = [
            ("a-flat.vmdk 0 1048576\n".to_string(), "line 1"),
            (format!("\na-flat.vmdk -1 16 {H}\n"), "line 2"),
            (format!("a-flat.vmdk 0x10 16 {H}\n"), "decimal"),
            (format!("a-flat.vmdk 0 0 {H}\n"), "outside 1..="),
            (format!("a-flat.vmdk 0 67108865 {H}\n"), "outside 1..="),
            (format!("a-flat.vmdk 0 16 {}\n", &H[1..]), "64 hex"),
            (
                format!("a-flat.vmdk 18446744073709551615 16 {H}\n"),
                "overflows",
            ),
            (
                format!("a-flat.vmdk 99999999999999999999 16 {H}\n"),
                "64 bits",
            ),
            (format!("b-flat.vmdk 0 16 {H}\n"), "not a mapped file"),
            (format!("a-flat.vmdk 1048000 1024 {H}\n"), "past the end"),
            (
                format!("a-flat.vmdk 0 16 {H}\n/x/a-flat.vmdk 0 16 {H}\n"),
                "already given on line 1",
            ),
        ];
        for (text, needle) in cases {
            let e = attach(&text, &mut files.clone()).unwrap_err();
            assert!(
                e.contains(needle) && e.contains("p.txt: line"),
                "{text:?}: {e}"
            );
        }
        let mut two = [file("[a] x/d.vmdk", 4096), file("[b] y/d.vmdk", 4096)];
        let e = attach(&format!("d.vmdk 0 16 {H}\n"), &mut two).unwrap_err();
        assert!(e.contains("names 2 mapped files"), "{e}");
        attach(&format!("[b] y/d.vmdk 0 16 {H}\n"), &mut two).unwrap();
        assert_eq!(two[1].probes.len(), 1);
    }
}
