//! What the VMDK output formats share: output file names, descriptors written from the
//! archived disk database, fresh content IDs, and the `.vmx` rewritten to point at the
//! restored base disks.
//!
//! Everything here reads the manifest, which is untrusted: names pass [`check_name`], and ddb
//! keys and values that could break the descriptor's line syntax are dropped, not written.

use std::collections::HashSet;
use std::fmt::Write as _;

use crate::archive::manifest::{check_name, DiskMeta, VmManifest};
use crate::error::{Error, Result};
use crate::input::vmx::VmxFile;

/// Sector size; every VMDK capacity is a whole number of sectors.
pub(crate) const SECTOR: u64 = 512;

/// The file-name stem of each restored disk of `vm` (`<stem>.raw`, `<stem>.vmdk`,
/// `<stem>-flat.vmdk`).
///
/// The base layer's descriptor name is used when it is safe and unique: that is the name the
/// VM had before its snapshots, so the datastore folder looks as it did. Otherwise (loose
/// disks, collisions) `<vm>_<disk>` with unsafe characters replaced. No stem gives a name that
/// contains `:` (a device key such as `scsi0:0`): SMB shares refuse it and qemu-img reads a bare
/// `scsi0:0.raw` as a protocol. When the VM's archived files are restored beside the images
/// (`raw`), `keep_files_ext` is the image suffix, and a stem whose image would take an archived
/// file's name falls back too.
pub(crate) fn disk_stems(vm: &VmManifest, keep_files_ext: Option<&str>) -> Vec<String> {
    let mut used: HashSet<String> = HashSet::new();
    if let Some(ext) = keep_files_ext {
        // An image `<stem><ext>` must not be an archived file's name: reserve the stems that would.
        for f in &vm.files {
            let lower = f.name.to_ascii_lowercase();
            if let Some(stem) = lower.strip_suffix(ext) {
                used.insert(stem.to_string());
            }
        }
    }
    let mut out = Vec::new();
    for (i, d) in vm.disks.iter().enumerate() {
        let base = d.meta.chain.last().and_then(|l| base_stem(&l.file));
        let fallback = || {
            let clean: String = format!("{}_{}", vm.name, d.name)
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("{clean}_{i}")
        };
        let mut stem = base.unwrap_or_else(fallback);
        if !used.insert(stem.to_ascii_lowercase()) {
            stem = fallback();
            // Fallbacks differ from each other (they carry the disk's index) but a crafted
            // archive can hold a file of that name: count on until the name is free.
            let mut n = 1;
            while !used.insert(stem.to_ascii_lowercase()) {
                stem = format!("{}_{n}", fallback());
                n += 1;
            }
        }
        out.push(stem);
    }
    out
}

/// The stem of a base layer's descriptor name (`.vmdk` removed, any case), if it is safe as
/// a file name: a name [`check_name`] accepts even with `-flat.vmdk` appended (so not empty,
/// `.` or `..`, and no `/`, `\` or control character), not hidden (a leading `.`), and
/// without `:` or `"` (a descriptor or .vmx names the image in quotes: with one in it, a VMDK
/// restore failed instead of falling back).
///
/// A name with a directory in it falls back rather than losing the directory: vdar's backup
/// records the file name alone, so `sub/x.vmdk` or `../../x.vmdk` did not come from it, and
/// `x` would be a name the archive never stated.
fn base_stem(file: &str) -> Option<String> {
    let len = file.len().checked_sub(".vmdk".len())?;
    let (stem, ext) = (file.get(..len)?, file.get(len..)?);
    let safe = ext.eq_ignore_ascii_case(".vmdk")
        && check_name(stem).is_ok()
        && check_name(&format!("{stem}-flat.vmdk")).is_ok()
        && !stem.starts_with('.')
        && !stem.contains([':', '"']);
    safe.then(|| stem.to_string())
}

/// A content ID for a new disk: never the two values that mean "none"/"invalid".
pub(crate) fn fresh_cid(salt: &str) -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let h = blake3::hash(format!("{t}:{}:{salt}", std::process::id()).as_bytes());
    let mut b = [0u8; 4];
    b.copy_from_slice(&h.as_bytes()[..4]);
    match u32::from_le_bytes(b) {
        x @ 0xFFFF_FFFE.. => x - 2,
        x => x,
    }
}

/// Whether a ddb entry can be written back verbatim: a plain key, and a value without quotes,
/// escapes or control characters (which the descriptor syntax cannot carry).
fn ddb_safe(k: &str, v: &str) -> bool {
    k.starts_with("ddb.")
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
        && !v.chars().any(|c| c == '"' || c == '\\' || c.is_control())
}

/// The disk database for a restored base disk: the archived entries (geometry, adapterType,
/// virtualHWVersion, uuid ...) minus those tied to the old file (its content ID, sidecars),
/// plus defaults for the keys ESX needs when the source had none.
pub(crate) fn ddb_for(meta: &DiskMeta) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = meta
        .ddb
        .iter()
        .filter(|(k, v)| ddb_safe(k, v))
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            // longContentID describes the old content; sidecars/iofilters are not restored.
            k != "ddb.longcontentid" && !k.starts_with("ddb.sidecars") && k != "ddb.iofilters"
        })
        .cloned()
        .collect();
    let has =
        |out: &[(String, String)], k: &str| out.iter().any(|(x, _)| x.eq_ignore_ascii_case(k));
    let sectors = meta.capacity / SECTOR;
    let defaults = [
        ("ddb.adapterType", "lsilogic".to_string()),
        (
            "ddb.geometry.cylinders",
            (sectors / (255 * 63)).max(1).to_string(),
        ),
        ("ddb.geometry.heads", "255".to_string()),
        ("ddb.geometry.sectors", "63".to_string()),
        ("ddb.virtualHWVersion", "4".to_string()),
    ];
    for (k, v) in defaults {
        if !has(&out, k) {
            out.push((k.to_string(), v));
        }
    }
    out
}

/// Descriptor text for a base disk (parentCID ffffffff) with one extent.
pub(crate) fn descriptor(
    create_type: &str,
    cid: u32,
    extent_kind: &str,
    extent_file: &str,
    meta: &DiskMeta,
) -> String {
    let mut s = String::new();
    s.push_str("# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\n");
    let _ = writeln!(s, "CID={cid:08x}");
    s.push_str("parentCID=ffffffff\n");
    if create_type == "vmfs" {
        s.push_str("isNativeSnapshot=\"no\"\n");
    }
    let _ = writeln!(s, "createType=\"{create_type}\"");
    s.push_str("\n# Extent description\n");
    // A FLAT extent names its start in the file; a VMFS or SPARSE extent has none.
    let start = if extent_kind == "FLAT" { " 0" } else { "" };
    let _ = writeln!(
        s,
        "RW {} {extent_kind} \"{extent_file}\"{start}",
        meta.capacity / SECTOR
    );
    s.push_str("\n# The Disk Data Base\n#DDB\n\n");
    for (k, v) in ddb_for(meta) {
        let _ = writeln!(s, "{k} = \"{v}\"");
    }
    s
}

/// Checks what every VMDK writer needs of a disk: a positive whole number of sectors, and a
/// name the descriptor can quote.
pub(crate) fn check_disk(vm: &str, name: &str, capacity: u64, stem: &str) -> Result<()> {
    if capacity == 0 || capacity % SECTOR != 0 {
        return Err(Error::Usage(format!(
            "vm {vm:?} disk {name:?}: capacity {capacity} is not a positive multiple of 512, \
             which no VMDK can describe (restore it as raw)"
        )));
    }
    if stem.contains('"') {
        return Err(Error::UnsafeName {
            name: stem.to_string(),
            why: "contains a quote, which a descriptor cannot hold",
        });
    }
    Ok(())
}

/// Escapes a .vmx value (formats/VMX.md §1.3): `"`, `|` and control characters as `|XX`.
fn vmx_escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        if c == '"' || c == '|' || c.is_control() {
            let mut b = [0u8; 4];
            for x in c.encode_utf8(&mut b).bytes() {
                let _ = write!(s, "|{x:02X}");
            }
        } else {
            s.push(c);
        }
    }
    s
}

/// Rewrites an archived .vmx for the restored disks: each `<device>.fileName` in `disks`
/// (device such as `scsi0:0`, new descriptor name) points at the restored base descriptor,
/// and `checkpoint.*` keys, which name snapshot state files that are not restored, are
/// dropped. Every other line is kept as written. The text must parse (it is checked first).
pub(crate) fn rewrite_vmx(name: &str, text: &str, disks: &[(String, String)]) -> Result<String> {
    let vmx = VmxFile::parse(std::path::Path::new(name), text)?;
    // Disk devices the archive does not hold (a snapshot backup leaves out disks its
    // snapshot did not freeze): present no more, and no file named.
    let absent: Vec<String> = vmx
        .disks()
        .into_iter()
        .map(|d| d.device)
        .filter(|dev| !disks.iter().any(|(x, _)| x.eq_ignore_ascii_case(dev)))
        .collect();
    let mut out = String::with_capacity(text.len() + 64);
    for raw in text.split_inclusive('\n') {
        let line = raw.trim_end_matches(['\n', '\r']);
        let key = line
            .split_once('=')
            .map(|(k, _)| k.trim())
            .filter(|k| !k.starts_with('#'));
        if let Some(key) = key {
            let lower = key.to_ascii_lowercase();
            if lower.starts_with("checkpoint.") {
                continue;
            }
            if let Some(dev) = absent.iter().find(|d| lower.starts_with(&format!("{d}."))) {
                if lower == format!("{dev}.present") {
                    let _ = writeln!(out, "{key} = \"FALSE\"");
                }
                if lower == format!("{dev}.present") || lower == format!("{dev}.filename") {
                    continue;
                }
            }
            if let Some((_, file)) = disks
                .iter()
                .find(|(dev, _)| lower == format!("{}.filename", dev.to_ascii_lowercase()))
            {
                let _ = writeln!(out, "{key} = \"{}\"", vmx_escape(file));
                continue;
            }
        }
        out.push_str(raw);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::manifest::{DiskManifest, FileManifest, LayerInfo};

    #[test]
    fn vmx_rewrite_drops_disks_not_restored() {
        let vmx = "scsi0.present = \"TRUE\"\n\
                   scsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"a-000001.vmdk\"\n\
                   scsi0:1.present = \"TRUE\"\nscsi0:1.fileName = \"data.vmdk\"\n";
        let out = rewrite_vmx("vm.vmx", vmx, &[("scsi0:0".into(), "a.vmdk".into())]).unwrap();
        assert_eq!(
            out,
            "scsi0.present = \"TRUE\"\n\
             scsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"a.vmdk\"\n\
             scsi0:1.present = \"FALSE\"\n"
        );
        let parsed = VmxFile::parse(std::path::Path::new("x"), &out).unwrap();
        assert_eq!(parsed.disks().len(), 1);
    }

    #[test]
    fn vmx_rewrite_points_at_base() {
        let vmx = ".encoding = \"UTF-8\"\nscsi0.present = \"TRUE\"\nscsi0:0.present = \"TRUE\"\n\
                   scsi0:0.fileName = \"vm-000002.vmdk\"\ncheckpoint.vmState = \"vm.vmsn\"\n\
                   memSize = \"1024\"\n";
        let out =
            rewrite_vmx("vm.vmx", vmx, &[("scsi0:0".into(), "vm \"x\".vmdk".into())]).unwrap();
        assert!(out.contains("scsi0:0.fileName = \"vm |22x|22.vmdk\"\n"));
        assert!(!out.contains("000002"));
        assert!(!out.contains("checkpoint"));
        assert!(out.contains("memSize = \"1024\"\n"));
        let parsed = VmxFile::parse(std::path::Path::new("x"), &out).unwrap();
        assert_eq!(parsed.disks()[0].file_name, "vm \"x\".vmdk");
    }

    #[test]
    fn stems_prefer_base_name_and_stay_unique() {
        let disk = |name: &str, base: &str| DiskManifest {
            id: 0,
            name: name.into(),
            meta: DiskMeta {
                capacity: 1 << 20,
                chain: vec![
                    LayerInfo {
                        file: "top.vmdk".into(),
                        ..Default::default()
                    },
                    LayerInfo {
                        file: base.into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
        };
        let vm = VmManifest {
            origin: None,
            name: "vm".into(),
            files: vec![],
            disks: vec![
                disk("scsi0:0", "vm.vmdk"),
                disk("scsi0:1", "VM.vmdk"),
                disk("scsi0:2", "../x.raw"),
            ],
        };
        assert_eq!(
            disk_stems(&vm, None),
            ["vm", "vm_scsi0_1_1", "vm_scsi0_2_2"]
        );
        // Raw images keep clear of the archived files restored beside them.
        let mut vm = vm;
        let file = |name: &str| FileManifest {
            name: name.into(),
            size: 0,
            blake3: String::new(),
            source: None,
        };
        vm.files = vec![file("VM.raw"), file("vm_scsi0_0_0.raw")];
        assert_eq!(
            disk_stems(&vm, Some(".raw")),
            ["vm_scsi0_0_0_1", "vm_scsi0_1_1", "vm_scsi0_2_2"]
        );
        assert_eq!(disk_stems(&vm, None)[0], "vm");
    }

    /// Issue 13 item 7: a base named `.vmdk` gave the image the hidden name `.raw`, and
    /// `sub/x.vmdk` or `../../x.vmdk` gave `x.raw`; all take the documented fallback.
    #[test]
    fn r13_unsafe_base_names_take_the_fallback() {
        let vm = |base: &str| VmManifest {
            origin: None,
            name: "vm".into(),
            files: vec![],
            disks: vec![DiskManifest {
                id: 0,
                name: "scsi0:0".into(),
                meta: DiskMeta {
                    chain: vec![LayerInfo {
                        file: base.into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            }],
        };
        for base in [
            ".vmdk",
            "sub/x.vmdk",
            "../../x.vmdk",
            "/vmfs/volumes/ds/x.vmdk",
            "a\\x.vmdk",
            "..vmdk",
            "...vmdk",
            "x.vmdk\n",
            "vmdk",
            "x.vmd",
            "a\"b.vmdk",
            "\u{e9}\u{e9}\u{e9}",
        ] {
            assert_eq!(disk_stems(&vm(base), None), ["vm_scsi0_0_0"], "{base:?}");
        }
        for (base, stem) in [("x.vmdk", "x"), ("X.VMDK", "X"), ("a b.Vmdk", "a b")] {
            assert_eq!(disk_stems(&vm(base), Some(".raw")), [stem], "{base:?}");
        }
    }

    #[test]
    fn ddb_keeps_identity_and_drops_unsafe() {
        let meta = DiskMeta {
            capacity: 100 << 20,
            ddb: vec![
                ("ddb.uuid".into(), "60 00 C2 9a".into()),
                ("ddb.adapterType".into(), "pvscsi".into()),
                ("ddb.longContentID".into(), "abc".into()),
                ("ddb.evil".into(), "x\"\nCID=0".into()),
            ],
            ..Default::default()
        };
        let d = descriptor("vmfs", 0x1234, "VMFS", "a-flat.vmdk", &meta);
        assert!(d.contains("CID=00001234\nparentCID=ffffffff\n"));
        assert!(d.contains("createType=\"vmfs\""));
        assert!(d.contains("RW 204800 VMFS \"a-flat.vmdk\"\n"));
        assert!(d.contains("ddb.uuid = \"60 00 C2 9a\""));
        assert!(d.contains("ddb.adapterType = \"pvscsi\""));
        assert!(!d.contains("longContentID") && !d.contains("evil"));
        assert!(d.contains("ddb.geometry.heads = \"255\""));
        assert_ne!(fresh_cid("a"), 0xFFFF_FFFF);
    }
}
