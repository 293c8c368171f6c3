//! `.vmsd` snapshot dictionaries: which snapshots a VM has and which disk file each one froze.
//!
//! Like [`super::vmx`], this sits in front of the input stage. To back up snapshot S, vdar opens
//! each `snapshotN.diskM.fileName` of S as the top of a chain: that descriptor was the VM's
//! current disk when S was taken and became read-only at that moment, so the chain below it is
//! exactly the disk as of S, however the VM has changed since.
//!
//! A `.vmsd` uses the `.vmx` syntax, and is parsed by [`VmxFile::parse`]. The keys are
//! specified in `formats/VMX.md`.
//!
//! Invariants:
//! - Counts read from the file (`snapshot.numSnapshots`, `snapshotN.numDisks`) are bounded by
//!   [`MAX_SNAPSHOTS`] and [`MAX_SNAPSHOT_DISKS`] before anything is allocated from them, and
//!   nothing is preallocated from them at all: vectors grow one parsed entry at a time, and a
//!   missing entry stops the parse.
//! - Snapshot uids are unique and every `parent` names a listed snapshot; otherwise the file is
//!   rejected, because selection by uid and chain reasoning would be ambiguous.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use super::vmx::{snippet, VmxFile};
use crate::error::{Error, Result};

/// Most snapshots accepted in one `.vmsd`. vSphere supports at most 32 in a chain and a few
/// hundred in a tree; a larger count means a damaged or hostile file.
pub const MAX_SNAPSHOTS: u32 = 1024;

/// Most disks accepted per snapshot: 4 SCSI controllers x 64 units, 4 SATA x 30, 4 NVMe x 64
/// and 4 IDE fit under it.
pub const MAX_SNAPSHOT_DISKS: u32 = 1024;

/// One snapshot (`snapshotN.*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// `snapshotN.uid`: stable identity, unlike `N`, which changes as snapshots are deleted.
    pub uid: u64,
    /// `snapshotN.displayName` (empty when absent). Not necessarily unique.
    pub display_name: String,
    /// `snapshotN.parent`: the uid of the snapshot this one was taken on top of; `None` for a
    /// root of the snapshot tree.
    pub parent_uid: Option<u64>,
    /// `(snapshotN.diskM.node, snapshotN.diskM.fileName)`: device node (`"scsi0:0"`) and the
    /// descriptor that snapshot froze. Resolve names with [`super::vmx::resolve_disk_path`],
    /// giving it the `.vmsd` path.
    pub disks: Vec<(String, String)>,
    /// `snapshotN.createTimeHigh/Low` combined: microseconds since the Unix epoch.
    pub create_time_us: Option<u64>,
}

/// The snapshots of a VM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vmsd {
    /// Snapshots in file order (`snapshot0`, `snapshot1`, ...).
    pub snapshots: Vec<Snapshot>,
    /// `snapshot.current`: the snapshot the VM's running state is based on.
    pub current_uid: Option<u64>,
}

/// Reads and parses a `.vmsd`. An empty file (ESXi creates one for every VM) has no snapshots.
pub fn read(path: &Path) -> Result<Vmsd> {
    Vmsd::from_dict(&VmxFile::read(path)?)
}

/// Parses `.vmsd` text; `path` is for error messages.
pub fn parse(path: &Path, text: &str) -> Result<Vmsd> {
    Vmsd::from_dict(&VmxFile::parse(path, text)?)
}

/// Typed, line-aware lookups over one parsed dictionary.
struct Dict<'a> {
    path: &'a Path,
    map: HashMap<String, (&'a str, usize)>,
}

impl Dict<'_> {
    fn syntax(&self, line: usize, what: String) -> Error {
        Error::Syntax {
            path: self.path.to_path_buf(),
            line,
            what,
        }
    }

    /// The value and line of `key` (ASCII-case-insensitive).
    fn get(&self, key: &str) -> Option<(&str, usize)> {
        self.map.get(&key.to_ascii_lowercase()).copied()
    }

    /// `key` parsed as `T`, or `None` when absent.
    fn num<T: FromStr>(&self, key: &str) -> Result<Option<(T, usize)>> {
        match self.get(key) {
            None => Ok(None),
            Some((v, line)) => match v.parse() {
                Ok(n) => Ok(Some((n, line))),
                Err(_) => {
                    Err(self.syntax(line, format!("{key} = \"{}\": not a number", snippet(v))))
                }
            },
        }
    }

    /// `key`, which an earlier count (on `count_line`) says must exist.
    fn required(&self, key: &str, count_line: usize, count_key: &str) -> Result<(&str, usize)> {
        self.get(key).ok_or_else(|| {
            self.syntax(
                count_line,
                format!("{count_key} implies `{key}`, which is missing"),
            )
        })
    }

    /// A count bounded by `max`, 0 when absent.
    fn count(&self, key: &str, max: u32) -> Result<(u32, usize)> {
        match self.num::<u64>(key)? {
            None => Ok((0, 0)),
            Some((n, line)) => match u32::try_from(n) {
                Ok(n) if n <= max => Ok((n, line)),
                _ => Err(self.syntax(line, format!("{key} = {n} > {max}"))),
            },
        }
    }
}

impl Vmsd {
    /// Interprets a parsed dictionary as a `.vmsd`.
    pub fn from_dict(dict: &VmxFile) -> Result<Vmsd> {
        let d = Dict {
            path: &dict.path,
            map: dict.line_map(),
        };
        let (count, count_line) = d.count("snapshot.numSnapshots", MAX_SNAPSHOTS)?;
        let mut snapshots: Vec<Snapshot> = Vec::new();
        // uid -> line of its `uid` entry, to report duplicates and check parents.
        let mut uid_lines: HashMap<u64, usize> = HashMap::new();
        let mut parent_lines = Vec::new();
        for n in 0..count {
            let p = format!("snapshot{n}.");
            let count_key = "snapshot.numSnapshots";
            let uid_key = format!("{p}uid");
            let (uid_text, uid_line) = d.required(&uid_key, count_line, count_key)?;
            let uid: u64 = uid_text.parse().map_err(|_| {
                d.syntax(
                    uid_line,
                    format!("{uid_key} = \"{}\": not a number", snippet(uid_text)),
                )
            })?;
            if let Some(first) = uid_lines.insert(uid, uid_line) {
                return Err(d.syntax(
                    uid_line,
                    format!("snapshot uid {uid} repeats the uid on line {first}"),
                ));
            }
            let parent = d.num::<u64>(&format!("{p}parent"))?;
            parent_lines.extend(parent);
            let (num_disks, disks_line) = d.count(&format!("{p}numDisks"), MAX_SNAPSHOT_DISKS)?;
            let disks_key = format!("snapshot{n}.numDisks");
            let mut disks = Vec::new();
            for m in 0..num_disks {
                let node = d.required(&format!("{p}disk{m}.node"), disks_line, &disks_key)?;
                let file = d.required(&format!("{p}disk{m}.fileName"), disks_line, &disks_key)?;
                disks.push((node.0.to_string(), file.0.to_string()));
            }
            snapshots.push(Snapshot {
                uid,
                display_name: d
                    .get(&format!("{p}displayName"))
                    .map(|(v, _)| v.to_string())
                    .unwrap_or_default(),
                parent_uid: parent.map(|(uid, _)| uid),
                disks,
                create_time_us: create_time(&d, &p)?,
            });
        }
        for (parent, line) in parent_lines {
            if !uid_lines.contains_key(&parent) {
                return Err(d.syntax(
                    line,
                    format!("parent uid {parent} names no snapshot in this file"),
                ));
            }
        }
        let current_uid = d.num::<u64>("snapshot.current")?.map(|(uid, _)| uid);
        Ok(Vmsd {
            snapshots,
            current_uid,
        })
    }

    /// The snapshot `latest` stands for: the one `snapshot.current` names, or, without that
    /// key, the newest by creation time (the last listed among equals and untimed ones).
    /// `None` when there are no snapshots or `snapshot.current` names a missing uid.
    pub fn latest(&self) -> Option<&Snapshot> {
        match self.current_uid {
            Some(uid) => self.snapshots.iter().find(|s| s.uid == uid),
            None => self.snapshots.iter().max_by_key(|s| s.create_time_us),
        }
    }

    /// Picks a snapshot by what a user typed:
    /// 1. `latest`: see [`Self::latest`];
    /// 2. an exact display name, which must be unique;
    /// 3. a uid, as `7` or `uid:7`.
    ///
    /// Anything else is an [`Error::Usage`] listing the choices.
    pub fn select(&self, name: &str) -> Result<&Snapshot> {
        if self.snapshots.is_empty() {
            return Err(Error::Usage(format!(
                "cannot select snapshot `{}`: the VM has no snapshots",
                snippet(name)
            )));
        }
        if name == "latest" {
            return self.latest().ok_or_else(|| {
                Error::Usage(format!(
                    "snapshot.current = {} names no snapshot; choose one of {}",
                    self.current_uid.unwrap_or_default(),
                    self.choices()
                ))
            });
        }
        let named: Vec<&Snapshot> = self
            .snapshots
            .iter()
            .filter(|s| s.display_name == name)
            .collect();
        match named[..] {
            [one] => return Ok(one),
            [] => {}
            _ => {
                let uids: Vec<String> = named.iter().map(|s| s.uid.to_string()).collect();
                return Err(Error::Usage(format!(
                    "several snapshots are named `{}` (uids {}); select one by uid instead, \
                     as uid:N",
                    snippet(name),
                    uids.join(", ")
                )));
            }
        }
        let uid = name.strip_prefix("uid:").unwrap_or(name).parse::<u64>();
        if let Some(s) = uid
            .ok()
            .and_then(|uid| self.snapshots.iter().find(|s| s.uid == uid))
        {
            return Ok(s);
        }
        Err(Error::Usage(format!(
            "no snapshot `{}`; choose one of {}",
            snippet(name),
            self.choices()
        )))
    }

    /// `"a" (uid 1), "b" (uid 2), latest` for error messages.
    fn choices(&self) -> String {
        let mut list: Vec<String> = self
            .snapshots
            .iter()
            .map(|s| format!("\"{}\" (uid {})", snippet(&s.display_name), s.uid))
            .collect();
        list.push("latest".to_string());
        list.join(", ")
    }
}

/// `createTimeHigh` and `createTimeLow` are the two 32-bit halves of a microsecond Unix time.
/// VMware prints the low half as a *signed* 32-bit number, so it is often negative.
fn create_time(d: &Dict<'_>, prefix: &str) -> Result<Option<u64>> {
    let high = d.num::<i64>(&format!("{prefix}createTimeHigh"))?;
    let low = d.num::<i64>(&format!("{prefix}createTimeLow"))?;
    let (Some((high, high_line)), Some((low, low_line))) = (high, low) else {
        return Ok(None);
    };
    let high = u32::try_from(high).map_err(|_| {
        d.syntax(
            high_line,
            format!("{prefix}createTimeHigh = {high}: outside 0..=4294967295"),
        )
    })?;
    // Accept both the signed spelling VMware writes and an unsigned one.
    let low = u32::try_from(low)
        .or_else(|_| i32::try_from(low).map(|l| l as u32))
        .map_err(|_| {
            d.syntax(
                low_line,
                format!("{prefix}createTimeLow = {low}: not a 32-bit number"),
            )
        })?;
    Ok(Some(u64::from(high) << 32 | u64::from(low)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Modelled on an ESXi `.vmsd` after two snapshots of a one-disk VM, then a revert to the
    /// first and a third snapshot from there.
    const VMSD: &str = r#".encoding = "UTF-8"
snapshot.lastUID = "3"
snapshot.current = "3"
snapshot0.uid = "1"
snapshot0.filename = "web-Snapshot1.vmsn"
snapshot0.displayName = "before-upgrade"
snapshot0.description = "kernel 5.15|0Abefore apt upgrade"
snapshot0.createTimeHigh = "398127"
snapshot0.createTimeLow = "-1212167046"
snapshot0.numDisks = "2"
snapshot0.disk0.fileName = "web.vmdk"
snapshot0.disk0.node = "scsi0:0"
snapshot0.disk1.fileName = "web_1.vmdk"
snapshot0.disk1.node = "scsi0:1"
snapshot0.type = "1"
snapshot.numSnapshots = "3"
snapshot1.uid = "2"
snapshot1.filename = "web-Snapshot2.vmsn"
snapshot1.parent = "1"
snapshot1.displayName = "after-upgrade"
snapshot1.createTimeHigh = "398130"
snapshot1.createTimeLow = "55"
snapshot1.numDisks = "2"
snapshot1.disk0.fileName = "web-000001.vmdk"
snapshot1.disk0.node = "scsi0:0"
snapshot1.disk1.fileName = "web_1-000001.vmdk"
snapshot1.disk1.node = "scsi0:1"
snapshot2.uid = "3"
snapshot2.filename = "web-Snapshot3.vmsn"
snapshot2.parent = "1"
snapshot2.displayName = "after-upgrade"
snapshot2.createTimeHigh = "398129"
snapshot2.createTimeLow = "0"
snapshot2.numDisks = "1"
snapshot2.disk0.fileName = "web-000002.vmdk"
snapshot2.disk0.node = "scsi0:0"
"#;

    fn vmsd(text: &str) -> Vmsd {
        parse(Path::new("web.vmsd"), text).expect("test vmsd parses")
    }

    fn syntax_line(text: &str) -> (usize, String) {
        match parse(Path::new("t.vmsd"), text) {
            Err(Error::Syntax { line, what, .. }) => (line, what),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    fn usage(r: Result<&Snapshot>) -> String {
        match r {
            Err(Error::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn esxi_snapshots() {
        let v = vmsd(VMSD);
        assert_eq!(v.current_uid, Some(3));
        assert_eq!(v.snapshots.len(), 3);
        let s0 = &v.snapshots[0];
        assert_eq!(s0.uid, 1);
        assert_eq!(s0.display_name, "before-upgrade");
        assert_eq!(s0.parent_uid, None);
        assert_eq!(
            s0.disks,
            [
                ("scsi0:0".to_string(), "web.vmdk".to_string()),
                ("scsi0:1".to_string(), "web_1.vmdk".to_string()),
            ]
        );
        // -1212167046 as u32 is 3082800250.
        assert_eq!(s0.create_time_us, Some((398127u64 << 32) | 3_082_800_250));
        assert_eq!(v.snapshots[1].parent_uid, Some(1));
        assert_eq!(v.snapshots[2].disks.len(), 1);
    }

    #[test]
    fn select_by_name_uid_and_latest() {
        let v = vmsd(VMSD);
        assert_eq!(v.select("before-upgrade").expect("name").uid, 1);
        assert_eq!(v.select("latest").expect("current").uid, 3);
        assert_eq!(v.select("2").expect("uid").uid, 2);
        assert_eq!(v.select("uid:3").expect("uid:").uid, 3);

        let m = usage(v.select("after-upgrade"));
        assert!(m.contains("uids 2, 3") && m.contains("uid"), "{m}");
        let m = usage(v.select("nope"));
        assert!(
            m.contains("\"before-upgrade\" (uid 1)") && m.contains("latest"),
            "{m}"
        );
        usage(v.select("9"));
    }

    #[test]
    fn latest_without_current_is_newest() {
        let text = VMSD.replace("snapshot.current = \"3\"\n", "");
        let v = vmsd(&text);
        assert_eq!(v.current_uid, None);
        // uid 2 has createTimeHigh 398130, the largest.
        assert_eq!(v.select("latest").expect("newest").uid, 2);

        let text = VMSD.replace("snapshot.current = \"3\"", "snapshot.current = \"7\"");
        let m = usage(vmsd(&text).select("latest"));
        assert!(m.contains("snapshot.current = 7"), "{m}");
    }

    #[test]
    fn empty_vmsd_has_no_snapshots() {
        let v = vmsd("");
        assert_eq!(v, Vmsd::default());
        assert!(usage(v.select("latest")).contains("no snapshots"));
        assert!(vmsd(".encoding = \"UTF-8\"\n").snapshots.is_empty());
    }

    #[test]
    fn hostile_counts_fail_before_allocating() {
        let (line, what) = syntax_line("a = \"b\"\nsnapshot.numSnapshots = \"4294967295\"\n");
        assert_eq!(line, 2);
        assert!(what.contains("> 1024"), "{what}");
        assert_eq!(
            syntax_line("snapshot.numSnapshots = \"99999999999999999999999\"\n").0,
            1
        );
        // Within the bound but not backed by entries: stops at the first missing one.
        let (line, what) = syntax_line("snapshot.numSnapshots = \"1000\"\nsnapshot0.uid = \"1\"\n");
        assert_eq!(line, 1);
        assert!(what.contains("snapshot1.uid"), "{what}");
        let text = "snapshot.numSnapshots = \"1\"\nsnapshot0.uid = \"1\"\n\
                    snapshot0.numDisks = \"18446744073709551615\"\n";
        assert_eq!(syntax_line(text).0, 3);
        let text = "snapshot.numSnapshots = \"1\"\nsnapshot0.uid = \"1\"\n\
                    snapshot0.numDisks = \"2\"\nsnapshot0.disk0.node = \"scsi0:0\"\n\
                    snapshot0.disk0.fileName = \"a.vmdk\"\nsnapshot0.disk1.node = \"scsi0:1\"\n";
        let (line, what) = syntax_line(text);
        assert_eq!(line, 3);
        assert!(what.contains("snapshot0.disk1.fileName"), "{what}");
    }

    #[test]
    fn inconsistent_trees_are_rejected() {
        let dup = "snapshot.numSnapshots = \"2\"\nsnapshot0.uid = \"1\"\nsnapshot1.uid = \"1\"\n";
        assert_eq!(syntax_line(dup).0, 3);
        let orphan = "snapshot.numSnapshots = \"1\"\nsnapshot0.uid = \"1\"\n\
                      snapshot0.parent = \"9\"\n";
        assert_eq!(syntax_line(orphan).0, 3);
        let bad_uid = "snapshot.numSnapshots = \"1\"\nsnapshot0.uid = \"x\"\n";
        assert_eq!(syntax_line(bad_uid).0, 2);
        let bad_time = "snapshot.numSnapshots = \"1\"\nsnapshot0.uid = \"1\"\n\
                        snapshot0.createTimeHigh = \"1\"\nsnapshot0.createTimeLow = \"-3000000000\"\n";
        assert_eq!(syntax_line(bad_time).0, 4);
        assert_eq!(syntax_line("snapshot0.uid = \"1\"\nbroken line\n").0, 2);
    }

    #[test]
    fn read_from_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("web.vmsd");
        std::fs::write(&p, VMSD.replace('\n', "\r\n")).expect("write");
        assert_eq!(read(&p).expect("reads").snapshots.len(), 3);
        let empty = dir.path().join("empty.vmsd");
        std::fs::write(&empty, b"").expect("write");
        assert!(read(&empty).expect("reads").snapshots.is_empty());
    }
}
