//! `vdar blockmap import`: a block map from the text of `vmkfstools -t0` runs, the descriptor
//! texts and (optionally) `esxcli storage vmfs extent list`.
//!
//! The `-t0` line layout is reconstructed, not documented (formats/BLOCKMAP.md §4 gives the
//! grammar accepted and the evidence), so this parser is tolerant in *form* (spacing, decimal or
//! `0x` numbers, `[A:B]` as offset:length or offset:end, volume ranges with exclusive or
//! inclusive ends) and strict in *content*: every non-blank line must be understood, one
//! interpretation must fit every line of a file, the runs must tile the file exactly, and the
//! result passes [`BlockMap::check`]. Probe hashes (taken on the host, attached from
//! `--probes` by [`super::probes`]) remain the check that the chosen interpretation reads the
//! right bytes.

use std::path::{Path, PathBuf};

use super::blockmap::{
    BlockMap, MapRun, MappedFile, RunKind, Volume, VolumeExtent, BLOCKMAP_SCHEMA_V1,
};
use super::lvm::VmfsUuid;
use crate::error::{Error, Result};

/// One parsed `-t0` line, numbers as written.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RawLine {
    line: usize,
    a: u64,
    b: u64,
    kind: RunKind,
    lvid: Option<String>,
    range: Option<(u64, u64)>,
}

/// One `Mapping for file` section.
#[derive(Clone, Debug)]
struct Section {
    path: String,
    size: u64,
    line: usize,
    lines: Vec<RawLine>,
}

fn num(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `( s --> e )`, with or without the parentheses' spacing.
fn range(s: &str) -> Option<(u64, u64)> {
    let s = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (x, y) = s.split_once("-->")?;
    Some((num(x)?, num(y)?))
}

fn parse_line(text: &str, line: usize) -> std::result::Result<RawLine, String> {
    let t = text.trim();
    let rest = t.strip_prefix('[').ok_or("expected '[' at the start")?;
    let (ab, rest) = rest
        .split_once(']')
        .ok_or("expected ']' after the file range")?;
    let (a, b) = ab
        .split_once(':')
        .ok_or("expected 'offset: length' in [..]")?;
    let (a, b) = (
        num(a).ok_or_else(|| format!("bad number {a:?}"))?,
        num(b).ok_or_else(|| format!("bad number {b:?}"))?,
    );
    let rest = rest
        .trim()
        .strip_prefix("-->")
        .ok_or("expected '-->'")?
        .trim();
    let inner = rest
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or("expected '[...]' after '-->'")?
        .trim();
    let (typ, rest) = inner
        .split_once(char::is_whitespace)
        .ok_or("expected a type")?;
    let rest = rest.trim_start();
    // Two *characters*, not two bytes: a multi-byte character there must be a syntax error,
    // not a panic on a split inside it (found while adding the t0 fuzz target).
    let cut = rest.char_indices().nth(2).map_or(rest.len(), |(i, _)| i);
    let (flags, rest) = rest.split_at(cut);
    let fl: Vec<char> = flags.chars().collect();
    if fl.len() != 2 || !matches!(fl[0], 'Z' | '-') || fl[1] != '-' {
        return Err(format!(
            "flags {flags:?} not understood (known: \"--\", \"Z-\")"
        ));
    }
    let rest = rest.trim();
    match typ {
        "VMFS" => {
            let rest = rest
                .strip_prefix("LVID:")
                .ok_or("expected 'LVID:' after VMFS")?;
            let (lvid, r) = rest
                .split_once(":(")
                .ok_or("expected ':(' after the LVID")?;
            let range = range(&format!("({r}")).ok_or("expected '( start --> end )'")?;
            Ok(RawLine {
                line,
                a,
                b,
                kind: if fl[0] == 'Z' {
                    RunKind::Tbz
                } else {
                    RunKind::Data
                },
                lvid: Some(lvid.trim().to_string()),
                range: Some(range),
            })
        }
        "NOMP" => {
            if fl[0] == 'Z' {
                return Err("NOMP with the Z flag is not understood".into());
            }
            let r = rest
                .strip_prefix(':')
                .ok_or("expected ':' after NOMP --")?
                .trim();
            let range = if r.is_empty() {
                None
            } else {
                Some(range(r).ok_or("expected '( x --> y )'")?)
            };
            Ok(RawLine {
                line,
                a,
                b,
                kind: RunKind::Hole,
                lvid: None,
                range,
            })
        }
        other => Err(format!(
            "block type {other:?} not understood (known: VMFS, NOMP)"
        )),
    }
}

fn parse_header(t: &str) -> Option<(String, u64)> {
    let rest = t.trim().strip_prefix("Mapping for file ")?;
    let rest = rest.strip_suffix(':').unwrap_or(rest).trim_end();
    let rest = rest.strip_suffix(')')?;
    let (path, size) = rest.rsplit_once(" (")?;
    let size = size.trim().strip_suffix("bytes in size")?;
    Some((path.trim().to_string(), num(size)?))
}

fn sections(path: &Path, text: &str) -> Result<Vec<Section>> {
    let syn = |line: usize, what: String| Error::Syntax {
        path: path.into(),
        line,
        what,
    };
    let mut out: Vec<Section> = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let line = i + 1;
        if l.trim().is_empty() {
            continue;
        }
        if let Some((p, size)) = parse_header(l) {
            out.push(Section {
                path: p,
                size,
                line,
                lines: Vec::new(),
            });
            continue;
        }
        let sec = out.last_mut().ok_or_else(|| {
            syn(
                line,
                format!("expected 'Mapping for file PATH (N bytes in size):', found {l:?}"),
            )
        })?;
        let raw = parse_line(l, line).map_err(|w| syn(line, format!("{w}: {:?}", l.trim())))?;
        sec.lines.push(raw);
    }
    if out.is_empty() {
        return Err(syn(0, "no 'Mapping for file' section".into()));
    }
    Ok(out)
}

/// Turns a section into runs, choosing the one interpretation that fits every line.
fn runs_of(path: &Path, s: &Section) -> Result<Vec<(MapRun, Option<String>)>> {
    let err = |line: usize, what: String| Error::Syntax {
        path: path.into(),
        line,
        what: format!("{}: {what}", s.path),
    };
    let fits = |as_len: bool| -> bool {
        let mut pos = 0u64;
        for l in &s.lines {
            let Some(end) = (if as_len {
                l.a.checked_add(l.b)
            } else {
                Some(l.b)
            }) else {
                return false;
            };
            if l.a != pos || end <= l.a {
                return false;
            }
            pos = end;
        }
        pos == s.size
    };
    let as_len = match (fits(true), fits(false)) {
        (true, _) => true,
        (false, true) => false,
        (false, false) => {
            return Err(err(
                s.line,
                format!(
                    "the runs do not tile the {}-byte file (neither as [offset: length] nor \
                     as [offset: end]): gap, overlap or missing tail",
                    s.size
                ),
            ))
        }
    };
    let lens: Vec<u64> = s
        .lines
        .iter()
        .map(|l| if as_len { l.b } else { l.b - l.a })
        .collect();
    let vol_fits = |incl: u64| {
        s.lines
            .iter()
            .zip(&lens)
            .all(|(l, &n)| match (l.kind, l.range) {
                (RunKind::Hole, _) | (_, None) => true,
                (_, Some((a, b))) => b.checked_sub(a).and_then(|d| d.checked_add(incl)) == Some(n),
            })
    };
    let incl = match (vol_fits(0), vol_fits(1)) {
        (true, _) => 0,
        (false, true) => 1,
        (false, false) => {
            let bad = s
                .lines
                .iter()
                .zip(&lens)
                .find(|(l, &n)| {
                    l.kind != RunKind::Hole
                        && l.range.is_some_and(|(a, b)| {
                            b.checked_sub(a) != Some(n) && b.checked_sub(a) != n.checked_sub(1)
                        })
                })
                .map(|(l, _)| l.line)
                .unwrap_or(s.line);
            return Err(err(
                bad,
                "volume range length disagrees with the file range length".into(),
            ));
        }
    };
    let _ = incl;
    Ok(s.lines
        .iter()
        .zip(&lens)
        .map(|(l, &len)| {
            (
                MapRun {
                    off: l.a,
                    len,
                    kind: l.kind,
                    lv: match l.kind {
                        RunKind::Hole => None,
                        _ => l.range.map(|r| r.0),
                    },
                },
                l.lvid.clone(),
            )
        })
        .collect())
}

/// Merges adjacent runs of one kind whose LV offsets continue.
fn coalesce(runs: Vec<MapRun>) -> Vec<MapRun> {
    let mut out: Vec<MapRun> = Vec::with_capacity(runs.len());
    for r in runs {
        if let Some(p) = out.last_mut() {
            let lv_joins = match (p.kind, p.lv, r.lv) {
                (RunKind::Hole, _, _) => true,
                (RunKind::Tbz, None, None) => true,
                // Checked: LV offsets are untrusted and BlockMap::check runs after merging.
                (_, Some(a), Some(b)) => a.checked_add(p.len) == Some(b),
                _ => false,
            };
            if p.kind == r.kind && lv_joins {
                p.len += r.len;
                continue;
            }
        }
        out.push(r);
    }
    out
}

/// Inputs of an import.
#[derive(Debug, Default)]
pub struct ImportInputs {
    /// `(name, text)` of each `vmkfstools -t0` output (one or more sections each).
    pub t0: Vec<(PathBuf, String)>,
    /// `(local path, text)` of each descriptor to embed.
    pub descriptors: Vec<(PathBuf, String)>,
    /// `(name, text)` of `esxcli storage vmfs extent list`.
    pub extents: Option<(PathBuf, String)>,
    /// LV UUIDs found on the LUNs, to decide which LVID component is the LV UUID.
    pub lun_lv_uuids: Vec<VmfsUuid>,
    /// `(name, text)` of host-side probe lines `FILE OFFSET LENGTH SHA256HEX`
    /// (formats/BLOCKMAP.md §2.1).
    pub probes: Option<(PathBuf, String)>,
}

/// Builds and checks a block map from `-t0` texts and descriptors.
pub fn import(inp: &ImportInputs) -> Result<BlockMap> {
    let mut volumes: Vec<Volume> = Vec::new();
    let mut files: Vec<MappedFile> = Vec::new();
    for (name, text) in &inp.t0 {
        for s in sections(name, text)? {
            let runs = runs_of(name, &s)?;
            let mut lvids: Vec<&str> = runs.iter().filter_map(|r| r.1.as_deref()).collect();
            lvids.sort();
            lvids.dedup();
            let volume = match lvids.as_slice() {
                [] => None,
                [one] => Some(volume_for(&mut volumes, one, &inp.lun_lv_uuids)),
                many => {
                    return Err(Error::BlockMap {
                        path: name.clone(),
                        what: format!(
                            "{}: runs on {} different volumes ({}); a file lives on one datastore",
                            s.path,
                            many.len(),
                            many.join(", ")
                        ),
                    })
                }
            };
            // A fully unallocated file still needs a volume for the map's invariants.
            let volume = volume.or_else(|| volumes.first().map(|v| v.id.clone()));
            let Some(volume) = volume else {
                return Err(Error::BlockMap {
                    path: name.clone(),
                    what: format!("{}: no VMFS run names the volume", s.path),
                });
            };
            files.push(MappedFile {
                path: s.path.clone(),
                role: Some(role_of(&s.path).into()),
                size: s.size,
                volume: Some(volume),
                text: None,
                runs: coalesce(runs.into_iter().map(|r| r.0).collect()),
                probes: Vec::new(),
            });
        }
    }
    for (local, text) in &inp.descriptors {
        let desc = crate::input::descriptor::Descriptor::parse(local, text.as_bytes())?;
        let base = local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Put the descriptor beside the data file it names, so both share the VM folder.
        let dir = desc
            .extents
            .iter()
            .filter_map(|e| e.file.as_deref())
            .find_map(|n| {
                files
                    .iter()
                    .find(|f| super::blockmap::file_name_of(&f.path) == n)
            })
            .and_then(|f| f.path.rfind('/').map(|i| f.path[..=i].to_string()))
            .unwrap_or_default();
        files.push(MappedFile {
            path: format!("{dir}{base}"),
            role: Some("descriptor".into()),
            size: text.len() as u64,
            volume: None,
            text: Some(text.clone()),
            runs: Vec::new(),
            probes: Vec::new(),
        });
    }
    if let Some((name, text)) = &inp.extents {
        attach_extents(name, text, &mut volumes)?;
    }
    if let Some((name, text)) = &inp.probes {
        let lines = super::probes::parse_probes(name, text)?;
        super::probes::attach_probes(name, lines, &mut files)?;
    }
    let map = BlockMap {
        schema: BLOCKMAP_SCHEMA_V1.into(),
        generated: Some(serde_json::json!({
            "source": "vmkfstools -t0",
            "by": concat!("vdar blockmap import ", env!("CARGO_PKG_VERSION")),
        })),
        volumes,
        files,
    };
    let first = inp.t0.first().map(|t| t.0.clone()).unwrap_or_default();
    map.check(&first)?;
    Ok(map)
}

fn role_of(path: &str) -> &'static str {
    if path.ends_with("-flat.vmdk") {
        "flat"
    } else if path.ends_with("-delta.vmdk") {
        "vmfsSparse"
    } else if path.ends_with("-sesparse.vmdk") {
        "seSparse"
    } else {
        "data"
    }
}

/// The volume for LVID token `lvid`, created on first use.
fn volume_for(volumes: &mut Vec<Volume>, lvid: &str, lun_uuids: &[VmfsUuid]) -> String {
    if let Some(v) = volumes.iter().find(|v| v.lvid_raw.as_deref() == Some(lvid)) {
        return v.id.clone();
    }
    let comps: Vec<VmfsUuid> = lvid.split('/').filter_map(|c| c.parse().ok()).collect();
    // With LUNs at hand, the component that names an LV there is the LV UUID; without, leave
    // lvUuid empty and let the reader decide at open time (formats/BLOCKMAP.md §2).
    let hits: Vec<&VmfsUuid> = comps.iter().filter(|u| lun_uuids.contains(u)).collect();
    let lv_uuid = match hits.as_slice() {
        [u] => u.to_string(),
        _ => String::new(),
    };
    let id = format!("v{}", volumes.len());
    volumes.push(Volume {
        id: id.clone(),
        label: None,
        fs_uuid: None,
        lv_uuid,
        lvid_raw: Some(lvid.to_string()),
        vmfs_major: None,
        extents: Vec::new(),
    });
    id
}

/// Attaches `esxcli storage vmfs extent list` rows (Volume Name, VMFS UUID, Extent Number,
/// Device Name, Partition) to the only volume of the map.
fn attach_extents(path: &Path, text: &str, volumes: &mut [Volume]) -> Result<()> {
    let syn = |line: usize, what: String| Error::Syntax {
        path: path.into(),
        line,
        what,
    };
    let mut rows = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.is_empty() || t.starts_with("Volume Name") || t.starts_with('-') {
            continue;
        }
        let tok: Vec<&str> = t.split_whitespace().collect();
        if tok.len() < 5 {
            return Err(syn(i + 1, format!("expected 5 columns, found {t:?}")));
        }
        let n = tok.len();
        let fs_uuid = tok[n - 4];
        fs_uuid
            .parse::<VmfsUuid>()
            .map_err(|e| syn(i + 1, format!("VMFS UUID column: {e}")))?;
        let ordinal = tok[n - 3]
            .parse::<u32>()
            .map_err(|e| syn(i + 1, format!("extent number {:?}: {e}", tok[n - 3])))?;
        let partition = tok[n - 1]
            .parse::<u32>()
            .map_err(|e| syn(i + 1, format!("partition {:?}: {e}", tok[n - 1])))?;
        rows.push((
            tok[..n - 4].join(" "),
            fs_uuid.to_string(),
            VolumeExtent {
                ordinal,
                naa: Some(tok[n - 2].to_string()),
                partition: Some(partition),
                pv_uuid: None,
            },
        ));
    }
    let mut fs: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    fs.sort();
    fs.dedup();
    match (volumes, fs.as_slice()) {
        ([v], [one]) => {
            v.fs_uuid = Some(one.to_string());
            v.label = rows.first().map(|r| r.0.clone());
            v.extents = rows.into_iter().map(|r| r.2).collect();
            Ok(())
        }
        (vols, _) => Err(syn(
            0,
            format!(
                "cannot attach extents of {} datastores to {} volumes: give the extent list of \
                 the one datastore holding the files",
                fs.len(),
                vols.len()
            ),
        )),
    }
}

/// Writes `-t0`-style text for `f` (used by the LUN rig); `lvid` is the `LVID:` token.
pub fn render_t0(f: &MappedFile, lvid: &str) -> String {
    let mut s = format!("Mapping for file {} ({} bytes in size):\n", f.path, f.size);
    for r in &f.runs {
        let head = format!("[{:>12}:{:>12}] --> ", r.off, r.len);
        let line = match (r.kind, r.lv) {
            (RunKind::Data, Some(lv)) | (RunKind::Tbz, Some(lv)) => format!(
                "[VMFS {} LVID:{lvid}:( {lv} --> {} )]",
                if r.kind == RunKind::Tbz { "Z-" } else { "--" },
                lv + r.len
            ),
            _ => format!("[NOMP -- :( {} --> {} )]", r.off, r.off + r.len),
        };
        s.push_str(&head);
        s.push_str(&line);
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::t0::assert_renders_back;

    const LVID: &str = "49edf842-dcb35d37-b383-0021280083cf/49edf844-da2dde19-747b-0021280083cf/1";

    fn t0(body: &str) -> Result<BlockMap> {
        import(&ImportInputs {
            t0: vec![(PathBuf::from("x.t0"), body.to_string())],
            ..Default::default()
        })
    }

    #[test]
    fn parses_the_reconstructed_layout() {
        let text = format!(
            "Mapping for file /vmfs/volumes/ds/vm/vm-flat.vmdk (4194304 bytes in size):\n\
             [           0:     1048576] --> [VMFS -- LVID:{LVID}:( 93192257536 --> 93193306112 )]\n\
             [     1048576:     1048576] --> [VMFS -- LVID:{LVID}:( 93193306112 --> 93194354688 )]\n\
             [     2097152:     1048576] --> [VMFS Z- LVID:{LVID}:( 0x100000 --> 0x200000 )]\n\
             [     3145728:     1048576] --> [NOMP -- :( 3145728 --> 4194304 )]\n"
        );
        let m = t0(&text).unwrap();
        let f = &m.files[0];
        assert_eq!(f.runs.len(), 3, "adjacent data runs merge: {:?}", f.runs);
        assert_eq!(f.runs[0].len, 2 << 20);
        assert_eq!(f.runs[0].lv, Some(93192257536));
        assert_eq!(f.runs[1].kind, RunKind::Tbz);
        assert_eq!(f.runs[2].kind, RunKind::Hole);
        assert_eq!(m.volumes[0].lvid_raw.as_deref(), Some(LVID));
        assert_eq!(m.volumes[0].lv_uuid, "");
        // [offset: end] with inclusive volume ends is the other accepted reading.
        let text = format!(
            "Mapping for file a.vmdk (2048 bytes in size):\n\
             [0: 1024] --> [VMFS -- LVID:{LVID}:( 4096 --> 5119 )]\n\
             [1024: 2048] --> [NOMP -- :]\n"
        );
        let m = t0(&text).unwrap();
        assert_eq!(m.files[0].runs[1].len, 1024);
    }

    #[test]
    fn fails_clearly() {
        let e = t0("Mapping for file a (2048 bytes in size):\n[0: 1024] --> [NOMP -- :]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("do not tile"), "{e}");
        let e = t0("Mapping for file a (1024 bytes in size):\n[0: 1024] --> [COW -- :]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("COW"), "{e}");
        let e = t0("hello\n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        let e = t0(&format!(
            "Mapping for file a (1024 bytes in size):\n[0: 1024] --> [VMFS -- LVID:{LVID}:( 0 --> 5 )]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("volume range"), "{e}");
        let e = t0("Mapping for file a (2048 bytes in size):\n[0: 2048] --> [NOMP -- :]\n[1024: 1024] --> [NOMP -- :]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("do not tile"), "{e}");
    }

    /// The `t0` fuzz seeds stay meaningful: each imports, with its probes attached.
    #[test]
    fn fuzz_seeds_import() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/fuzz/seeds/t0");
        for (name, probes) in [("handmade", 2), ("rig-delta-sesparse", 3)] {
            let seed = std::fs::read_to_string(dir.join(name)).unwrap();
            let p: Vec<&str> = seed.splitn(4, '\0').collect();
            let m = import(&ImportInputs {
                t0: vec![(PathBuf::from(name), p[0].into())],
                extents: Some((PathBuf::from("e"), p[1].into())),
                probes: Some((PathBuf::from("p"), p[2].into())),
                descriptors: p
                    .get(3)
                    .map(|d| (PathBuf::from("sample-000001.vmdk"), d.to_string()))
                    .into_iter()
                    .collect(),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            let n: usize = m.files.iter().map(|f| f.probes.len()).sum();
            assert_eq!(n, probes, "{name}");
            assert_renders_back(&m);
        }
    }

    /// Found while adding the t0 fuzz target: a multi-byte character where the two flag
    /// characters go panicked in `split_at`; an LV offset near u64::MAX overflowed (debug
    /// panic, release wrap) while merging runs.
    #[test]
    fn fuzz_findings_are_errors() {
        let e = t0("Mapping for file a (1024 bytes in size):\n[0: 1024] --> [VMFS \u{20ac}- LVID:x:( 0 --> 1024 )]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("flags"), "{e}");
        let e = t0(&format!(
            "Mapping for file a (2048 bytes in size):\n\
             [0: 1024] --> [VMFS -- LVID:{LVID}:( 18446744073709550592 --> 18446744073709551615 )]\n\
             [1024: 1024] --> [VMFS -- LVID:{LVID}:( 0 --> 1023 )]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("overflows") || e.contains("volume range"), "{e}");
    }

    #[test]
    fn render_parses_back() {
        let f = MappedFile {
            path: "[ds] vm/a-flat.vmdk".into(),
            role: None,
            size: 3072,
            volume: Some("v0".into()),
            text: None,
            runs: vec![
                MapRun {
                    off: 0,
                    len: 1024,
                    kind: RunKind::Data,
                    lv: Some(1 << 30),
                },
                MapRun {
                    off: 1024,
                    len: 1024,
                    kind: RunKind::Tbz,
                    lv: Some(4096),
                },
                MapRun {
                    off: 2048,
                    len: 1024,
                    kind: RunKind::Hole,
                    lv: None,
                },
            ],
            probes: vec![],
        };
        let m = t0(&render_t0(&f, LVID)).unwrap();
        assert_eq!(m.files[0].runs, f.runs);
    }
}
