//! The manifest: the JSON record at the front of every archive that says what it holds.
//!
//! It is written before any data so that a one-pass restore knows every VM, disk name and
//! capacity before the first chunk arrives, and so that `head -c 65536 archive` shows a human
//! what the archive is. Names in it are validated on both sides ([`check_name`]): backup refuses
//! to write a name that restore would refuse, and restore never trusts a name it reads.

use serde::{Deserialize, Serialize};

use super::format::{MAX_CHUNK_BYTES, MIN_CHUNK_BYTES};
use crate::error::{Error, Result};

/// Longest VM, disk or file name accepted (bytes); file systems allow 255.
pub const MAX_NAME_BYTES: usize = 200;
/// Most VMs, disks per VM or files per VM in one archive.
pub const MAX_ITEMS: usize = 4096;
/// Largest disk capacity accepted: 64 TiB (2^46 bytes). vSphere's largest virtual disk is
/// 62 TB, so no real disk is refused, and everything restore sizes from a capacity stays
/// bounded: a streamOptimized grain directory is then at most 8 MiB, and no output format has
/// to address more than its sector numbers can.
pub const MAX_CAPACITY_BYTES: u64 = 1 << 46;
/// Disk capacities are whole sectors: every input (descriptor extents) counts in sectors.
const SECTOR_BYTES: u64 = 512;

/// The manifest, serialized as JSON into the Manifest record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version (same as the file header's).
    pub format_version: u32,
    /// The vdar version that wrote the archive.
    pub vdar_version: String,
    /// Creation time, seconds since the Unix epoch (a backup option; SOURCE_DATE_EPOCH).
    pub created: u64,
    /// Chunk size in bytes (a power of two in 64 KiB..=16 MiB).
    pub chunk_size: u64,
    /// Codec used for chunks that shrink: "zstd".
    pub codec: String,
    /// zstd level.
    pub level: i32,
    /// Output block size (0: unpadded).
    pub block_size: u32,
    /// The VMs, in archive order.
    pub vms: Vec<VmManifest>,
    /// The archive this one is an incremental of (formats/ARCHIVE.md, "Incrementals"). Absent
    /// in a full archive, whose manifest is then byte for byte what it was before the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseLink>,
}

/// The base an incremental's BaseRef records point into, named by an identity that no other
/// archive can share: the base's footer `meta_hash`, which covers every record header and so
/// every payload's BLAKE3.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseLink {
    /// The base archive's identity, 64 hex digits.
    pub id: String,
    /// The base's creation time (its manifest's `created`), for messages and retention.
    pub created: u64,
    /// The identities of the base's own bases, oldest (the full archive) first: the whole
    /// chain restore needs besides `id`. Empty when the base is a full archive.
    pub lineage: Vec<String>,
}

/// Most links in a chain of incrementals (a nightly chain kept for years fits).
pub const MAX_LINEAGE: usize = 65536;

/// Whether `s` is an archive identity: 64 lowercase hex digits.
pub fn is_archive_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// One VM in the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmManifest {
    /// VM name; the restore directory `DIR/<name>/`.
    pub name: String,
    /// Small files stored with the VM (.vmx, .nvram ...), in record order.
    pub files: Vec<FileManifest>,
    /// Disks, in record order.
    pub disks: Vec<DiskManifest>,
    /// Where the VM came from, when vdar took it from a vSphere server (formats/ARCHIVE.md,
    /// "Origin"). Absent for VMs read from files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<VmOrigin>,
}

/// A VM's origin on a vSphere server: which VM, which snapshot, and each disk as the API
/// described it (the CBT change ids are what an incremental backup starts from).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmOrigin {
    /// The API endpoint (`https://vc.example/sdk`).
    pub server: String,
    /// `about.apiType`: `VirtualCenter` or `HostAgent`.
    pub server_type: String,
    /// The VM's name on the server.
    pub vm: String,
    /// Its managed object id (`vm-42`).
    pub moref: String,
    /// `config.instanceUuid`.
    pub instance_uuid: String,
    /// The backup snapshot's name.
    pub snapshot: String,
    /// Its `createTime`, as the server wrote it (xsd:dateTime).
    pub snapshot_time: String,
    /// Whether the snapshot was quiesced.
    pub quiesced: bool,
    /// The snapshot's disks, in device order.
    pub disks: Vec<DiskOrigin>,
}

/// One disk as the vSphere API described it in the backup snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskOrigin {
    /// Device node (`scsi0:1`), the disk's `name` in this VM.
    pub device: String,
    /// The device key.
    pub key: i32,
    /// The controller's device key.
    pub controller_key: i32,
    /// `capacityInBytes`.
    pub capacity: u64,
    /// The chain's files as datastore paths, top (the frozen file) first; servers that do not
    /// report `backing.parent` list the top alone.
    pub files: Vec<String>,
    /// The CBT `changeId` of the frozen state, when change tracking is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_id: Option<String>,
}

/// One small VM file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileManifest {
    /// File name (no directories).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// blake3 of the contents, hex.
    pub blake3: String,
    /// The original path, when `name` is not the file's own name: two files of one name from
    /// different folders (formats/ARCHIVE.md, "Manifest"). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// One disk in the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiskManifest {
    /// Disk ordinal across the whole archive (the `disk` field of its records).
    pub id: u32,
    /// Disk name (`scsi0:0` or the descriptor's stem); restored as `DIR/<vm>/<name>.raw`.
    pub name: String,
    /// Everything restore to ESX needs about the disk.
    pub meta: DiskMeta,
}

/// What is known about a disk besides its bytes: enough to write a descriptor on restore.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskMeta {
    /// Virtual size in bytes.
    pub capacity: u64,
    /// The top layer's descriptor text, verbatim.
    pub descriptor: String,
    /// `createType` of the top layer.
    pub create_type: String,
    /// The descriptor's disk database (`ddb.*`) entries, in file order.
    pub ddb: Vec<(String, String)>,
    /// The snapshot chain, top layer first.
    pub chain: Vec<LayerInfo>,
    /// The CBT change id of the state backed up, when the backup was given one (a changed-areas
    /// list, formats/JSON.md): the `since` an incremental of this disk must start from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_id: Option<String>,
}

/// One layer of the chain a disk was collapsed from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Descriptor file name, as the VM's files name it.
    pub file: String,
    /// The original path, when `file` is not the descriptor's own name (see
    /// [`FileManifest::source`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Extent format (`monolithicSparse`, `vmfsSparse`, `seSparse`, ...).
    pub format: String,
    /// `CID`
    pub cid: u32,
    /// `parentCID`
    pub parent_cid: u32,
}

/// Refuses names that could escape a directory or collide: empty, `.`, `..`, containing `/`,
/// `\`, NUL or control characters, or longer than [`MAX_NAME_BYTES`]. Absolute paths contain
/// `/` and are refused by the same rule.
pub fn check_name(name: &str) -> Result<()> {
    let why = if name.is_empty() {
        Some("empty")
    } else if name == "." || name == ".." {
        Some("a directory reference")
    } else if name.contains('/') || name.contains('\\') {
        Some("contains a path separator")
    } else if name.chars().any(|c| c.is_control()) {
        Some("contains a control character")
    } else if name.len() > MAX_NAME_BYTES {
        Some("too long")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::UnsafeName {
            name: name.chars().take(MAX_NAME_BYTES).collect(),
            why,
        }),
        None => Ok(()),
    }
}

/// Refuses a capacity no disk has and no output format can address: above
/// [`MAX_CAPACITY_BYTES`], or not a whole number of sectors. Restore sizes tables and files
/// from the capacity before any data arrives, so an archive that claims too much must fail
/// here, not halfway through an allocation or a full file system.
fn check_capacity(vm: &str, d: &DiskManifest) -> std::result::Result<(), String> {
    let cap = d.meta.capacity;
    if cap > MAX_CAPACITY_BYTES {
        return Err(format!(
            "VM {vm:?} disk {:?}: capacity {cap} bytes > {MAX_CAPACITY_BYTES} (64 TiB)",
            d.name
        ));
    }
    if cap % SECTOR_BYTES != 0 {
        return Err(format!(
            "VM {vm:?} disk {:?}: capacity {cap} bytes is not a multiple of {SECTOR_BYTES}",
            d.name
        ));
    }
    Ok(())
}

impl Manifest {
    /// Every disk, in ordinal order, with its VM's index.
    pub fn disks(&self) -> impl Iterator<Item = (usize, &DiskManifest)> {
        self.vms
            .iter()
            .enumerate()
            .flat_map(|(v, vm)| vm.disks.iter().map(move |d| (v, d)))
    }

    /// Number of disks in the archive.
    pub fn disk_count(&self) -> usize {
        self.vms.iter().map(|v| v.disks.len()).sum()
    }

    /// Checks what the reader relies on: parameters and disk capacities in range, names safe
    /// and unique, disk ordinals consecutive. `at` is the manifest's stream offset, for messages.
    pub fn validate(&self, at: u64) -> Result<()> {
        let bad = |what: String| Err(Error::archive(at, what));
        if !self.chunk_size.is_power_of_two()
            || !(MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&self.chunk_size)
        {
            return bad(format!(
                "manifest chunk size {} out of range",
                self.chunk_size
            ));
        }
        if self.vms.len() > MAX_ITEMS {
            return bad(format!("{} VMs > {MAX_ITEMS}", self.vms.len()));
        }
        if let Some(b) = &self.base {
            if !is_archive_id(&b.id) || b.lineage.len() > MAX_LINEAGE {
                return bad("manifest names a base that is not an archive identity".into());
            }
            if let Some(l) = b.lineage.iter().find(|l| !is_archive_id(l)) {
                return bad(format!(
                    "base lineage entry {l:?} is not an archive identity"
                ));
            }
        }
        let mut next_id = 0u32;
        let mut vm_names = std::collections::HashSet::new();
        for vm in &self.vms {
            check_name(&vm.name)?;
            if !vm_names.insert(vm.name.as_str()) {
                return bad(format!("VM name {:?} appears twice", vm.name));
            }
            if vm.files.len() > MAX_ITEMS || vm.disks.len() > MAX_ITEMS {
                return bad(format!("VM {:?} has too many files or disks", vm.name));
            }
            // A format rule from when raw images were named after their disks: names must
            // still differ after a `.raw` suffix is added, so archives stay valid either way.
            let mut names = std::collections::HashSet::new();
            for f in &vm.files {
                check_name(&f.name)?;
                if !names.insert(f.name.clone()) {
                    return bad(format!("file name {:?} appears twice", f.name));
                }
            }
            for d in &vm.disks {
                check_name(&d.name)?;
                check_capacity(&vm.name, d).map_err(|what| Error::archive(at, what))?;
                if d.id != next_id {
                    return bad(format!("disk {:?} has id {} != {next_id}", d.name, d.id));
                }
                next_id += 1;
                if !names.insert(format!("{}.raw", d.name)) {
                    return bad(format!("disk name {:?} collides", d.name));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names_refused() {
        for n in ["", ".", "..", "../x", "/etc", "a/b", "a\\b", "a\0b", "a\nb"] {
            assert!(check_name(n).is_err(), "{n:?}");
        }
        for n in ["vm1", "scsi0:0", "disk.vmdk", "..x", "my vm"] {
            check_name(n).unwrap();
        }
    }

    /// Issue 13 item 3: a capacity of 2^56 bytes made restore allocate 8 GiB of grain
    /// directory, 2^53 made it write grain tables until the file system was full.
    #[test]
    fn r13_capacity_bounded_and_whole_sectors() {
        let with_cap = |capacity: u64| Manifest {
            format_version: 1,
            vdar_version: "0".into(),
            created: 0,
            chunk_size: 1 << 20,
            codec: "zstd".into(),
            level: 3,
            block_size: 0,
            base: None,
            vms: vec![VmManifest {
                origin: None,
                name: "vm".into(),
                files: vec![],
                disks: vec![DiskManifest {
                    id: 0,
                    name: "d".into(),
                    meta: DiskMeta {
                        capacity,
                        ..Default::default()
                    },
                }],
            }],
        };
        for ok in [0, 512, 1 << 41, MAX_CAPACITY_BYTES] {
            with_cap(ok).validate(0).unwrap();
        }
        for bad in [1 << 53, 1 << 56, u64::MAX, MAX_CAPACITY_BYTES + 512] {
            let e = with_cap(bad).validate(7).unwrap_err().to_string();
            assert!(e.contains(&format!("capacity {bad} bytes > ")), "{e}");
        }
        for bad in [1, 1000, (1 << 30) + 256] {
            let e = with_cap(bad).validate(7).unwrap_err().to_string();
            assert!(e.contains("not a multiple of 512"), "{e}");
        }
    }
}
