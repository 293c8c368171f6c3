//! VMFS LVM on-disk structures: the device header at partition start + 1 MiB, the logical-volume
//! descriptor after it, and the physical-extent (PE) table that maps logical-volume (LV) byte
//! ranges to byte ranges of this partition.
//!
//! Byte tables: formats/BLOCKMAP.md §3 (checked against the real VMFS3 volume of vmfs-tools,
//! `../shared/data/vmfs3-test.img`, and against `debugvmfs`). Everything is little-endian and
//! decoded field by field; nothing here trusts a count before bounding it.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::input::source::{le_u32, le_u64};

/// `magic` of the LVM device header (u32 at header + 0x00).
pub const LVM_MAGIC: u32 = 0xC001_D00D;
/// The LVM header sits this many bytes after the start of the VMFS partition.
pub const LVM_HEADER_OFFSET: u64 = 0x10_0000;
/// Bytes of header plus the first volume descriptor that [`LvmHeader::decode`] reads.
pub const LVM_HEADER_BYTES: usize = 0x400;
/// Volume descriptor offset within the header on LVM3/LVM5 (LVM6 moves it to mdAlignment).
pub const VOLUME_DESC_OFFSET: usize = 0x200;
/// First PE bitmap, relative to the header (LVM3/LVM5).
pub const PE_BITMAP_OFFSET: u64 = 0x8_0200;
/// First PE table, relative to the header (LVM3/LVM5).
pub const PE_TABLE_OFFSET: u64 = 0x8_0600;
/// Bytes per PE table entry (the stride; the fields use 37 of them).
pub const PE_ENTRY_BYTES: usize = 128;
/// Entries of one PE table: the bitmap is 1 KiB, one bit per entry.
pub const MAX_PES_PER_DEVICE: u32 = 8192;

/// A VMFS UUID: 16 raw bytes, written as `u32-u32-u16-6 bytes` (the last 6 bytes are the MAC
/// of the host that created it), e.g. `49edf842-dcb35d37-b383-0021280083cf`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct VmfsUuid(pub [u8; 16]);

impl fmt::Display for VmfsUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08x}-{:08x}-{:04x}-",
            le_u32(b, 0),
            le_u32(b, 4),
            u16::from_le_bytes([b[8], b[9]])
        )?;
        for x in &b[10..] {
            write!(f, "{x:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for VmfsUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VmfsUuid({self})")
    }
}

impl FromStr for VmfsUuid {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let parts: Vec<&str> = s.trim().split('-').collect();
        let ok = matches!(parts.as_slice(), [a, b, c, d]
            if a.len() == 8 && b.len() == 8 && c.len() == 4 && d.len() == 12
            && s.trim().bytes().all(|x| x == b'-' || x.is_ascii_hexdigit()));
        if !ok {
            return Err(format!(
                "{s:?} is not a VMFS UUID (xxxxxxxx-xxxxxxxx-xxxx-xxxxxxxxxxxx)"
            ));
        }
        let hex = |t: &str| u64::from_str_radix(t, 16).map_err(|e| format!("{s:?}: {e}"));
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&(hex(parts[0])? as u32).to_le_bytes());
        b[4..8].copy_from_slice(&(hex(parts[1])? as u32).to_le_bytes());
        b[8..10].copy_from_slice(&(hex(parts[2])? as u16).to_le_bytes());
        for (i, byte) in b[10..].iter_mut().enumerate() {
            *byte = hex(&parts[3][2 * i..2 * i + 2])? as u8;
        }
        Ok(VmfsUuid(b))
    }
}

fn uuid_at(b: &[u8], at: usize) -> VmfsUuid {
    VmfsUuid(b[at..at + 16].try_into().expect("invariant: 16-byte slice"))
}

/// A fixed-size, NUL- or space-padded text field.
fn text_at(b: &[u8], at: usize, len: usize) -> String {
    let raw = &b[at..at + len];
    let end = raw.iter().position(|&c| c == 0).unwrap_or(len);
    String::from_utf8_lossy(&raw[..end]).trim_end().to_string()
}

/// The LVM device header (header + 0x00..0x200) and the first volume descriptor
/// (header + 0x200..0x400), decoded from the first [`LVM_HEADER_BYTES`] bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LvmHeader {
    /// `majorVersion`: 3 (VMFS3) or 5 (VMFS5).
    pub major: u32,
    /// `minorVersion`.
    pub minor: u32,
    /// `scsiDiskID.lun`: the LUN number at format time (informational only).
    pub lun: u16,
    /// `scsiDiskID.vendor`.
    pub vendor: String,
    /// `scsiDiskID.model`.
    pub model: String,
    /// `scsiDiskID.id`: the device name at format time (informational only).
    pub disk_id: String,
    /// `diskBlockSize`.
    pub block_size: u32,
    /// `totalBytes` of this device (partition).
    pub device_bytes: u64,
    /// `numVolumes`.
    pub num_volumes: u32,
    /// `numPEs` held by this device.
    pub num_pes: u32,
    /// `lastPEIndex`.
    pub last_pe: u32,
    /// `generation`.
    pub generation: u64,
    /// `dataOffset`: where PE data starts, relative to the partition.
    pub data_offset: u64,
    /// `devUUID`: this physical volume's UUID (blkid `UUID_SUB`).
    pub pv_uuid: VmfsUuid,
    /// The logical volume this device belongs to.
    pub volume: VolumeDescriptor,
}

/// The logical-volume descriptor at header + 0x200 (LVM3/LVM5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeDescriptor {
    /// `size`: logical-volume size in bytes.
    pub lv_size: u64,
    /// `generation`.
    pub generation: u64,
    /// `state` (1 = normal).
    pub state: u32,
    /// `name`: in practice the LV UUID as text.
    pub name: String,
    /// `lvUUID` (header + 0x254).
    pub lv_uuid: VmfsUuid,
    /// `snapID`.
    pub snap_id: u32,
    /// `numPEs` of this LV on this device.
    pub num_pes: u32,
    /// `firstPE` held on this device.
    pub first_pe: u32,
    /// `lastPE` held on this device.
    pub last_pe: u32,
    /// `numDevs`: devices (extents) making up the LV.
    pub num_devs: u32,
}

impl LvmHeader {
    /// Whether `b` starts with the LVM magic.
    pub fn has_magic(b: &[u8]) -> bool {
        b.len() >= 4 && le_u32(b, 0) == LVM_MAGIC
    }

    /// Decodes the header of device `path` whose first byte is at device byte `at`.
    pub fn decode(path: &Path, at: u64, b: &[u8; LVM_HEADER_BYTES]) -> Result<LvmHeader> {
        let bad = |off: usize, what: String| Error::corrupt(path, at + off as u64, what);
        let magic = le_u32(b, 0);
        if magic != LVM_MAGIC {
            return Err(bad(0, format!("LVM magic {magic:#x} != {LVM_MAGIC:#x}")));
        }
        let major = le_u32(b, 0x04);
        match major {
            3..=5 => {}
            6 => {
                return Err(Error::unsupported(
                    path,
                    format!(
                        "LVM header at byte {at:#x} is LVM6 (VMFS6): its volume descriptor and PE \
                         table positions are not confirmed"
                    ),
                ))
            }
            v => return Err(bad(4, format!("LVM major version {v} is not 3..=5"))),
        }
        let d = VOLUME_DESC_OFFSET;
        let h = LvmHeader {
            major,
            minor: le_u32(b, 0x08),
            lun: u16::from_le_bytes([b[0x0E], b[0x0F]]),
            vendor: text_at(b, 0x12, 8),
            model: text_at(b, 0x1A, 16),
            disk_id: text_at(b, 0x2E, 44),
            block_size: le_u32(b, 0x5A),
            device_bytes: le_u64(b, 0x5E),
            num_volumes: le_u32(b, 0x66),
            num_pes: le_u32(b, 0x6A),
            last_pe: le_u32(b, 0x6E),
            generation: le_u64(b, 0x72),
            data_offset: le_u64(b, 0x7A),
            pv_uuid: uuid_at(b, 0x82),
            volume: VolumeDescriptor {
                lv_size: le_u64(b, d),
                generation: le_u64(b, d + 0x08),
                state: le_u32(b, d + 0x10),
                name: text_at(b, d + 0x14, 64),
                lv_uuid: uuid_at(b, d + 0x54),
                snap_id: le_u32(b, d + 0x64),
                num_pes: le_u32(b, d + 0x74),
                first_pe: le_u32(b, d + 0x78),
                last_pe: le_u32(b, d + 0x80),
                num_devs: le_u32(b, d + 0x90),
            },
        };
        if h.num_volumes > 1 {
            return Err(Error::unsupported(
                path,
                format!(
                    "LVM header at byte {at:#x} lists {} volumes; only 1 is supported",
                    h.num_volumes
                ),
            ));
        }
        if h.num_pes > MAX_PES_PER_DEVICE || h.last_pe >= MAX_PES_PER_DEVICE {
            return Err(bad(
                0x6A,
                format!(
                    "{} PEs / last PE index {} exceed the {MAX_PES_PER_DEVICE}-entry PE table",
                    h.num_pes, h.last_pe
                ),
            ));
        }
        if h.data_offset < LVM_HEADER_OFFSET + PE_TABLE_OFFSET {
            return Err(bad(
                0x7A,
                format!(
                    "data offset {:#x} lies inside the LVM metadata",
                    h.data_offset
                ),
            ));
        }
        if h.volume.lv_size == 0 {
            return Err(bad(d, "logical volume size is 0".into()));
        }
        Ok(h)
    }

    /// Encodes the header and volume descriptor (used by the LUN test rig).
    pub fn encode(&self) -> [u8; LVM_HEADER_BYTES] {
        let mut b = [0u8; LVM_HEADER_BYTES];
        let put = |b: &mut [u8; LVM_HEADER_BYTES], at: usize, v: &[u8]| {
            b[at..at + v.len()].copy_from_slice(v)
        };
        let text = |b: &mut [u8; LVM_HEADER_BYTES], at: usize, len: usize, s: &str| {
            let s = s.as_bytes();
            let n = s.len().min(len);
            b[at..at + n].copy_from_slice(&s[..n]);
        };
        put(&mut b, 0, &LVM_MAGIC.to_le_bytes());
        put(&mut b, 0x04, &self.major.to_le_bytes());
        put(&mut b, 0x08, &self.minor.to_le_bytes());
        b[0x0C] = 0; // scsiDiskID.type: direct-access
        b[0x0D] = 0x36; // scsiDiskID.len
        put(&mut b, 0x0E, &self.lun.to_le_bytes());
        text(&mut b, 0x12, 8, &format!("{:<8}", self.vendor));
        text(&mut b, 0x1A, 16, &format!("{:<16}", self.model));
        text(&mut b, 0x2E, 44, &self.disk_id);
        put(&mut b, 0x5A, &self.block_size.to_le_bytes());
        put(&mut b, 0x5E, &self.device_bytes.to_le_bytes());
        put(&mut b, 0x66, &self.num_volumes.to_le_bytes());
        put(&mut b, 0x6A, &self.num_pes.to_le_bytes());
        put(&mut b, 0x6E, &self.last_pe.to_le_bytes());
        put(&mut b, 0x72, &self.generation.to_le_bytes());
        put(&mut b, 0x7A, &self.data_offset.to_le_bytes());
        put(&mut b, 0x82, &self.pv_uuid.0);
        let d = VOLUME_DESC_OFFSET;
        let v = &self.volume;
        put(&mut b, d, &v.lv_size.to_le_bytes());
        put(&mut b, d + 0x08, &v.generation.to_le_bytes());
        put(&mut b, d + 0x10, &v.state.to_le_bytes());
        text(&mut b, d + 0x14, 64, &v.name);
        put(&mut b, d + 0x54, &v.lv_uuid.0);
        put(&mut b, d + 0x64, &v.snap_id.to_le_bytes());
        put(&mut b, d + 0x74, &v.num_pes.to_le_bytes());
        put(&mut b, d + 0x78, &v.first_pe.to_le_bytes());
        put(&mut b, d + 0x80, &v.last_pe.to_le_bytes());
        put(&mut b, d + 0x90, &v.num_devs.to_le_bytes());
        b
    }
}

/// One used entry of a PE table: `length` bytes of the LV from `l_offset` live at `p_offset`
/// bytes into this partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeEntry {
    /// `peID`.
    pub pe_id: u32,
    /// `volumeID`: index into the device's volume table.
    pub volume_id: u32,
    /// `pOffset`: byte offset within the partition.
    pub p_offset: u64,
    /// `lOffset`: byte offset in the logical volume.
    pub l_offset: u64,
    /// `length` in bytes.
    pub length: u64,
    /// `version`.
    pub version: u32,
}

impl PeEntry {
    /// Decodes entry bytes; `None` for an unused slot (`used` byte 0).
    pub fn decode(b: &[u8; PE_ENTRY_BYTES]) -> Option<PeEntry> {
        // The entry is packed: used(1) peID(4) volumeID(4) pOffset(8) lOffset(8) length(8)
        // version(4), so the u64 fields are deliberately unaligned (confirmed on test.img).
        (b[0] != 0).then(|| PeEntry {
            pe_id: le_u32(b, 1),
            volume_id: le_u32(b, 5),
            p_offset: le_u64(b, 9),
            l_offset: le_u64(b, 17),
            length: le_u64(b, 25),
            version: le_u32(b, 33),
        })
    }

    /// Encodes a used entry.
    pub fn encode(&self) -> [u8; PE_ENTRY_BYTES] {
        let mut b = [0u8; PE_ENTRY_BYTES];
        b[0] = 1;
        b[1..5].copy_from_slice(&self.pe_id.to_le_bytes());
        b[5..9].copy_from_slice(&self.volume_id.to_le_bytes());
        b[9..17].copy_from_slice(&self.p_offset.to_le_bytes());
        b[17..25].copy_from_slice(&self.l_offset.to_le_bytes());
        b[25..33].copy_from_slice(&self.length.to_le_bytes());
        b[33..37].copy_from_slice(&self.version.to_le_bytes());
        b
    }
}

/// Reads the header and used PE entries of the partition starting at device byte `part_start`
/// of `path`, through `read_at(buf, device_offset)`.
pub fn read_lvm(
    path: &Path,
    part_start: u64,
    read_at: &mut dyn FnMut(&mut [u8], u64) -> Result<()>,
) -> Result<(LvmHeader, Vec<PeEntry>)> {
    // part_start comes from a partition table: untrusted, so no wrapping arithmetic on it.
    let hdr_at = part_start
        .checked_add(
            LVM_HEADER_OFFSET
                + PE_TABLE_OFFSET
                + (MAX_PES_PER_DEVICE as usize * PE_ENTRY_BYTES) as u64,
        )
        .map(|_| part_start + LVM_HEADER_OFFSET)
        .ok_or_else(|| {
            Error::corrupt(
                path,
                part_start,
                format!("partition start {part_start:#x} leaves no room for the LVM metadata"),
            )
        })?;
    let mut b = [0u8; LVM_HEADER_BYTES];
    read_at(&mut b, hdr_at)?;
    let header = LvmHeader::decode(path, hdr_at, &b)?;
    // Bounded by MAX_PES_PER_DEVICE in decode: at most 1 MiB.
    let entries = header.last_pe as usize + 1;
    let table_at = hdr_at + PE_TABLE_OFFSET;
    let mut table = vec![0u8; entries * PE_ENTRY_BYTES];
    read_at(&mut table, table_at)?;
    let mut bitmap = [0u8; (MAX_PES_PER_DEVICE / 8) as usize];
    read_at(&mut bitmap, hdr_at + PE_BITMAP_OFFSET)?;
    let mut pes = Vec::new();
    for (i, raw) in table.chunks_exact(PE_ENTRY_BYTES).enumerate() {
        let raw: &[u8; PE_ENTRY_BYTES] = raw.try_into().expect("invariant: exact chunk");
        let entry_at = table_at + (i * PE_ENTRY_BYTES) as u64;
        let in_bitmap = bitmap[i / 8] & (1 << (i % 8)) != 0;
        let Some(pe) = PeEntry::decode(raw) else {
            if in_bitmap {
                return Err(Error::corrupt(
                    path,
                    entry_at,
                    format!("PE {i} is set in the PE bitmap but its table entry is unused"),
                ));
            }
            continue;
        };
        let end_ok = pe
            .p_offset
            .checked_add(pe.length)
            .zip(pe.l_offset.checked_add(pe.length))
            .is_some_and(|(p, l)| p <= header.device_bytes && l <= header.volume.lv_size);
        if pe.length == 0 || pe.p_offset < header.data_offset || !end_ok {
            return Err(Error::corrupt(
                path,
                entry_at,
                format!(
                    "PE {i}: {} bytes at partition byte {:#x} -> LV byte {:#x} do not fit the \
                     device ({:#x} bytes, data from {:#x}) or the LV ({:#x} bytes)",
                    pe.length,
                    pe.p_offset,
                    pe.l_offset,
                    header.device_bytes,
                    header.data_offset,
                    header.volume.lv_size
                ),
            ));
        }
        pes.push(pe);
    }
    if pes.len() != header.num_pes as usize {
        return Err(Error::corrupt(
            path,
            table_at,
            format!(
                "PE table has {} used entries, the header says {}",
                pes.len(),
                header.num_pes
            ),
        ));
    }
    Ok((header, pes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_text_round_trips() {
        let s = "49edf842-dcb35d37-b383-0021280083cf";
        let u: VmfsUuid = s.parse().unwrap();
        assert_eq!(u.0[0], 0x42);
        assert_eq!(u.to_string(), s);
        assert!("49edf842-dcb35d37-b383".parse::<VmfsUuid>().is_err());
        assert!("49edf842-dcb35d37-b383-0021280083cg"
            .parse::<VmfsUuid>()
            .is_err());
    }

    #[test]
    fn header_round_trips_and_rejects_garbage() {
        let h = LvmHeader {
            major: 5,
            minor: 60,
            lun: 3,
            vendor: "VDAR".into(),
            model: "RIG".into(),
            disk_id: "naa.600".into(),
            block_size: 512,
            device_bytes: 1 << 30,
            num_volumes: 1,
            num_pes: 2,
            last_pe: 1,
            generation: 7,
            data_offset: 0x110_0000,
            pv_uuid: VmfsUuid([1; 16]),
            volume: VolumeDescriptor {
                lv_size: 1 << 29,
                generation: 1,
                state: 1,
                name: "x".into(),
                lv_uuid: VmfsUuid([2; 16]),
                snap_id: 1,
                num_pes: 2,
                first_pe: 0,
                last_pe: 1,
                num_devs: 1,
            },
        };
        let b = h.encode();
        assert_eq!(LvmHeader::decode(Path::new("d"), 0, &b).unwrap(), h);
        let mut bad = b;
        bad[0] = 0;
        assert!(LvmHeader::decode(Path::new("d"), 0, &bad).is_err());
        let mut bad = b;
        bad[0x6A..0x6E].copy_from_slice(&9000u32.to_le_bytes());
        let e = LvmHeader::decode(Path::new("d"), 0, &bad).unwrap_err();
        assert!(e.to_string().contains("9000"), "{e}");
        let pe = PeEntry {
            pe_id: 1,
            volume_id: 0,
            p_offset: 0x1110_0000,
            l_offset: 0x1000_0000,
            length: 0x1000_0000,
            version: 1,
        };
        assert_eq!(PeEntry::decode(&pe.encode()), Some(pe));
        assert_eq!(PeEntry::decode(&[0; PE_ENTRY_BYTES]), None);
    }

    /// The real VMFS3 volume of vmfs-tools (../shared/data), cross-checked with `debugvmfs`.
    #[test]
    fn real_vmfs3_image_matches_debugvmfs() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
        let img = root.join("data/vmfs3-test.img");
        let expand = root.join("tools/vmfsimg-expand.py");
        if !img.exists() || !expand.exists() {
            eprintln!("skipped: {} not present", img.display());
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("vmfs3.raw");
        let st = std::process::Command::new("python3")
            .arg(&expand)
            .arg(&img)
            .arg(&raw)
            .status();
        if !st.is_ok_and(|s| s.success()) {
            eprintln!("skipped: cannot expand {} (python3?)", img.display());
            return;
        }
        let f = std::fs::File::open(&raw).unwrap();
        let mut read_at = |buf: &mut [u8], off: u64| -> Result<()> {
            use std::os::unix::fs::FileExt;
            f.read_exact_at(buf, off)
                .map_err(|e| Error::io(&raw, Some(off), e))
        };
        let (h, pes) = read_lvm(&raw, 0, &mut read_at).unwrap();
        // Values from formats/BLOCKMAP.md §3.5 (decoded by hand from the image).
        assert_eq!((h.major, h.minor), (3, 16));
        assert_eq!((h.vendor.as_str(), h.model.as_str()), ("Sun", "VOL1"));
        assert_eq!(h.disk_id, "vmhba0:C0:T0:L0");
        assert_eq!(h.data_offset, 0x110_0000);
        assert_eq!(h.pv_uuid.to_string(), "49edf844-da2dde19-747b-0021280083cf");
        assert_eq!(
            h.volume.lv_uuid.to_string(),
            "49edf842-dcb35d37-b383-0021280083cf"
        );
        assert_eq!(h.volume.name, h.volume.lv_uuid.to_string());
        assert_eq!(h.volume.lv_size, 1 << 30);
        assert_eq!(pes.len(), 4);
        for (i, pe) in pes.iter().enumerate() {
            let i = i as u64;
            assert_eq!(pe.l_offset, i * 0x1000_0000);
            assert_eq!(pe.p_offset, 0x110_0000 + i * 0x1000_0000);
            assert_eq!(pe.length, 0x1000_0000);
        }
        // The FS descriptor sits at LV byte 0x200000: through PE 0, partition byte 0x1300000.
        let mut fs = [0u8; 0x20];
        read_at(&mut fs, pes[0].p_offset + 0x20_0000).unwrap();
        assert_eq!(le_u32(&fs, 0), 0x2FAB_F15E);
        let fs_uuid = uuid_at(&fs, 9);

        if std::process::Command::new("debugvmfs")
            .arg("--help")
            .output()
            .is_err()
        {
            eprintln!("skipped: debugvmfs (vmfs-tools) not installed");
            return;
        }
        let show = |what: &str| {
            let o = std::process::Command::new("debugvmfs")
                .arg(&raw)
                .args(["show", what])
                .output()
                .unwrap();
            format!(
                "{}\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        };
        let field = |text: &str, key: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("debugvmfs output has no {key}: {text}"))
        };
        let lvm = show("lvm");
        assert_eq!(field(&lvm, "UUID"), h.volume.lv_uuid.to_string());
        assert_eq!(field(&lvm, "Num. Extents"), h.volume.num_devs.to_string());
        let ext = show("lvm.extent[0]");
        assert_eq!(field(&ext, "UUID"), h.pv_uuid.to_string());
        assert_eq!(field(&ext, "Version"), h.major.to_string());
        assert_eq!(field(&ext, "LUN"), h.lun.to_string());
        assert_eq!(field(&ext, "Num. Segments"), pes.len().to_string());
        assert_eq!(field(&ext, "First Segment"), h.volume.first_pe.to_string());
        assert_eq!(field(&ext, "Last Segment"), h.volume.last_pe.to_string());
        assert!(field(&ext, "Name").starts_with(&format!("{:<8}{}", h.vendor, h.model)));
        let fsinfo = show("fs");
        if let Some(u) = fsinfo.lines().find_map(|l| l.trim().strip_prefix("UUID:")) {
            assert_eq!(u.trim(), fs_uuid.to_string());
        }
    }
}
