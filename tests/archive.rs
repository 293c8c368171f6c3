//! Archive round trips and damage: backup → (stream | seekable) restore → byte-identical images;
//! determinism and the golden vector; verify and salvage on flipped, truncated and cut archives;
//! hostile archives.

use std::io::Read;
use std::path::Path;

use vdar::archive::format::{FOOTER_BYTES, RECORD_HEADER_BYTES};
use vdar::fixture::memdisk::MemDisk;
use vdar::pipeline::{backup, BackupOptions, DiskInput, DiskMeta, VmFile, VmInput};
use vdar::restore::{
    restore_seekable, restore_stream, ProgressHook, RestoreOptions, RestoreProgress,
};

pub(crate) const CS: u64 = 64 << 10;

/// (VM, disk, contents) of every disk in the corpus.
pub(crate) type Expected = Vec<(String, String, Vec<u8>)>;

/// Deterministic pseudo-random bytes (xorshift), compressible by half: every other 4 KiB
/// block is text-like.
pub(crate) fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len);
    for i in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(if (i / 4096) % 2 == 0 {
            x as u8
        } else {
            b"vdar text "[i % 10]
        });
    }
    v
}

/// A corpus of disks: odd sizes, zero ranges, repeats within a disk, across disks and VMs.
/// Returns the disks' expected contents alongside the inputs.
pub(crate) fn corpus() -> (Vec<VmInput>, Expected) {
    let shared = bytes(99, CS as usize);
    // vm1/disk a: 5.5 chunks + 512 bytes, a zero range, a repeated chunk within.
    let mut a = bytes(1, (5 * CS + CS / 2 + 512) as usize);
    a[CS as usize..2 * CS as usize].copy_from_slice(&shared);
    a[3 * CS as usize..4 * CS as usize].copy_from_slice(&shared);
    let da = MemDisk::new("a", a, &[(2 * CS, CS), (4 * CS + 4096, 8192)]);
    // vm1/disk b: all-zero data chunk (read, then elided) and the shared chunk again.
    let mut b = bytes(2, (3 * CS) as usize);
    b[..CS as usize].fill(0);
    b[2 * CS as usize..].copy_from_slice(&shared);
    let db = MemDisk::new("b", b, &[]);
    // vm2/disk c: the shared chunk once more, and a copy of a's first chunk, odd capacity.
    let mut c = bytes(3, (2 * CS + 1536) as usize);
    c[..CS as usize].copy_from_slice(&shared);
    let dc = MemDisk::new("c", c, &[(2 * CS, 1536)]);
    // vm2/disk d: empty.
    let dd = MemDisk::new("d", Vec::new(), &[]);
    let expect = vec![
        ("vm1".into(), "scsi0:0".into(), da.contents().to_vec()),
        ("vm1".into(), "scsi0:1".into(), db.contents().to_vec()),
        ("vm2".into(), "c".into(), dc.contents().to_vec()),
        ("vm2".into(), "d".into(), dd.contents().to_vec()),
    ];
    let meta = |cap: usize| DiskMeta {
        capacity: cap as u64,
        descriptor: "# Disk DescriptorFile\nversion=1\n".into(),
        create_type: "monolithicSparse".into(),
        ddb: vec![("ddb.adapterType".into(), "lsilogic".into())],
        chain: vec![],
        change_id: None,
    };
    let vms = vec![
        VmInput {
            origin: None,
            name: "vm1".into(),
            files: vec![
                VmFile {
                    name: "vm1.vmx".into(),
                    source: None,
                    bytes: b"displayName = \"vm1\"\n".to_vec(),
                },
                VmFile {
                    name: "vm1.nvram".into(),
                    source: None,
                    bytes: bytes(5, 9000),
                },
            ],
            disks: vec![
                DiskInput {
                    name: "scsi0:0".into(),
                    meta: meta(expect[0].2.len()),
                    disk: Box::new(da),
                },
                DiskInput {
                    name: "scsi0:1".into(),
                    meta: meta(expect[1].2.len()),
                    disk: Box::new(db),
                },
            ],
        },
        VmInput {
            origin: None,
            name: "vm2".into(),
            files: vec![],
            disks: vec![
                DiskInput {
                    name: "c".into(),
                    meta: meta(expect[2].2.len()),
                    disk: Box::new(dc),
                },
                DiskInput {
                    name: "d".into(),
                    meta: meta(0),
                    disk: Box::new(dd),
                },
            ],
        },
    ];
    (vms, expect)
}

pub(crate) fn opts(threads: usize) -> BackupOptions {
    BackupOptions {
        chunk_size: CS,
        threads,
        created: Some(1_700_000_000),
        ..Default::default()
    }
}

pub(crate) fn make_archive(threads: usize) -> (Vec<u8>, Expected) {
    let (vms, expect) = corpus();
    let mut out = Vec::new();
    let s = backup(vms, &opts(threads), &mut out, None).unwrap();
    assert_eq!(s.totals.bytes_written, out.len() as u64);
    assert!(s.totals.chunks_dedup >= 3, "{s:?}");
    (out, expect)
}

/// A non-seekable reader that returns at most `piece` bytes per call.
pub(crate) struct Pieces<'a> {
    pub data: &'a [u8],
    pub piece: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.piece).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Where a raw restore writes a corpus disk. The corpus has no chains, so each image takes the
/// fallback name `<vm>_<disk>_<n>` (ARCHIVE.md, "Manifest"), `:` replaced.
pub(crate) fn image(vm: &str, disk: &str) -> String {
    let n = match disk {
        "scsi0:0" | "c" | "z" => 0,
        "scsi0:1" | "d" => 1,
        other => panic!("not a corpus disk: {other}"),
    };
    format!("{vm}/{vm}_{}_{n}.raw", disk.replace(':', "_"))
}

pub(crate) fn check_restored(dir: &Path, expect: &[(String, String, Vec<u8>)]) {
    for (vm, disk, data) in expect {
        let got = std::fs::read(dir.join(image(vm, disk))).unwrap();
        assert!(got == *data, "{vm}/{disk} differs");
    }
    assert_eq!(
        std::fs::read(dir.join("vm1/vm1.vmx")).unwrap(),
        b"displayName = \"vm1\"\n"
    );
    assert_eq!(
        std::fs::read(dir.join("vm1/vm1.nvram")).unwrap(),
        bytes(5, 9000)
    );
}

#[test]
fn roundtrip_stream_through_small_pieces() {
    let (ar, expect) = make_archive(2);
    for piece in [1usize, 3, 4095, 64 << 10] {
        let dir = crate::util::tempdir();
        let r = restore_stream(
            &mut Pieces { data: &ar, piece },
            dir.path(),
            &RestoreOptions::default(),
        )
        .unwrap();
        assert!(r.is_complete(), "{r:?}");
        check_restored(dir.path(), &expect);
    }
}

#[test]
fn roundtrip_through_a_pipe_thread() {
    let (ar, expect) = make_archive(0);
    // A real pipe-like channel: a producer thread writes; the restorer can only read forward.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
    let producer = std::thread::spawn(move || {
        for c in ar.chunks(7777) {
            tx.send(c.to_vec()).unwrap();
        }
    });
    struct ChanReader(std::sync::mpsc::Receiver<Vec<u8>>, Vec<u8>);
    impl Read for ChanReader {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.1.is_empty() {
                match self.0.recv() {
                    Ok(v) => self.1 = v,
                    Err(_) => return Ok(0),
                }
            }
            let n = buf.len().min(self.1.len());
            buf[..n].copy_from_slice(&self.1[..n]);
            self.1.drain(..n);
            Ok(n)
        }
    }
    let dir = crate::util::tempdir();
    restore_stream(
        &mut ChanReader(rx, Vec::new()),
        dir.path(),
        &RestoreOptions::default(),
    )
    .unwrap();
    producer.join().unwrap();
    check_restored(dir.path(), &expect);
}

#[test]
fn roundtrip_seekable_and_filtered() {
    let (ar, expect) = make_archive(2);
    let tmp = crate::util::tempdir();
    let path = tmp.path().join("a.vdar");
    std::fs::write(&path, &ar).unwrap();
    let dir = tmp.path().join("out");
    let r = restore_seekable(
        &mut std::fs::File::open(&path).unwrap(),
        &dir,
        &RestoreOptions::default(),
    )
    .unwrap();
    assert!(r.is_complete(), "{r:?}");
    check_restored(&dir, &expect);
    // vm2/c references chunks of vm1: a filtered restore must still resolve them, both ways.
    for (i, seekable) in [true, false].into_iter().enumerate() {
        let dir = tmp.path().join(format!("only{i}"));
        let o = RestoreOptions {
            vm: Some("vm2".into()),
            disk: Some("c".into()),
            ..Default::default()
        };
        let r = if seekable {
            restore_seekable(&mut std::fs::File::open(&path).unwrap(), &dir, &o).unwrap()
        } else {
            restore_stream(&mut &ar[..], &dir, &o).unwrap()
        };
        assert!(r.is_complete(), "{r:?}");
        assert_eq!(
            std::fs::read(dir.join(image("vm2", "c"))).unwrap(),
            expect[2].2
        );
        assert!(!dir.join("vm1").exists());
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "scratch file left behind"
        );
    }
    // Existing outputs are refused without force, and overwritten with it.
    let e = restore_seekable(
        &mut std::fs::File::open(&path).unwrap(),
        &dir,
        &RestoreOptions::default(),
    );
    assert!(matches!(e, Err(vdar::Error::Exists { .. })), "{e:?}");
    let o = RestoreOptions {
        force: true,
        ..Default::default()
    };
    restore_seekable(&mut std::fs::File::open(&path).unwrap(), &dir, &o).unwrap();
    check_restored(&dir, &expect);
}

#[test]
fn zero_ranges_stay_holes() {
    let data = bytes(7, (8 * CS) as usize);
    let d = MemDisk::new("z", data, &[(CS, 6 * CS)]);
    let vms = vec![VmInput {
        origin: None,
        name: "v".into(),
        files: vec![],
        disks: vec![DiskInput {
            name: "z".into(),
            meta: DiskMeta::default(),
            disk: Box::new(d),
        }],
    }];
    let mut ar = Vec::new();
    backup(vms, &opts(1), &mut ar, None).unwrap();
    let dir = crate::util::tempdir();
    restore_stream(&mut &ar[..], dir.path(), &RestoreOptions::default()).unwrap();
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir.path().join(image("v", "z"))).unwrap();
    assert_eq!(m.len(), 8 * CS);
    assert!(
        m.blocks() * 512 < 4 * CS,
        "zero range was written: {} blocks",
        m.blocks()
    );
}

#[test]
fn deterministic_and_thread_independent() {
    let (a1, _) = make_archive(1);
    let (a2, _) = make_archive(1);
    let (a4, _) = make_archive(4);
    assert!(a1 == a2, "same input, different archive");
    assert!(a1 == a4, "parallel differs from serial");
}

#[test]
fn archive_bytes_depend_on_contents_not_allocation() {
    // One disk's bytes under several allocation maps: all allocated, the zero ranges as
    // holes, holes at sector grain around data, and part of a zero range left allocated (ext4
    // reports cached preallocated extents as data).
    let mut data = bytes(7, (4 * CS + 3072) as usize);
    let zero = [
        (CS + 4096, 3 * 4096),
        (2 * CS + 512, 1024),
        (3 * CS, CS),
        (4 * CS + 1024, 2048),
    ];
    for (s, n) in zero {
        data[s as usize..(s + n) as usize].fill(0);
    }
    let maps: [&[(u64, u64)]; 4] = [
        &[],
        &zero,
        &[
            (CS + 4096, 4096),
            (2 * CS + 512, 512),
            (4 * CS + 1536, 1024),
        ],
        &[(CS + 8192, 8192), (3 * CS + 4096, CS - 8192)],
    ];
    let archives: Vec<Vec<u8>> = maps
        .iter()
        .map(|map| {
            let disk = MemDisk::new("x", data.clone(), map);
            let vm = VmInput {
                origin: None,
                name: "vm".into(),
                files: vec![],
                disks: vec![DiskInput {
                    name: "x".into(),
                    meta: DiskMeta {
                        capacity: data.len() as u64,
                        descriptor: String::new(),
                        create_type: "vmfs".into(),
                        ddb: vec![],
                        chain: vec![],
                        change_id: None,
                    },
                    disk: Box::new(disk),
                }],
            };
            let mut out = Vec::new();
            backup(vec![vm], &opts(2), &mut out, None).unwrap();
            out
        })
        .collect();
    for (i, a) in archives.iter().enumerate().skip(1) {
        assert!(*a == archives[0], "allocation map {i} changed the archive");
    }
    let mut c = std::io::Cursor::new(&archives[0]);
    let a = vdar::archive::index::SeekableArchive::open(&mut c).unwrap();
    let sparse = a
        .index
        .iter()
        .filter(|e| e.codec == vdar::archive::Codec::SparseZstd)
        .count();
    assert_eq!(
        sparse, 1,
        "only the chunk with a whole zero block is sparse"
    );
}

#[test]
fn golden_vector() {
    // If this changes, the format changed: bump FORMAT_VERSION and update formats/ARCHIVE.md.
    let (ar, _) = make_archive(2);
    // Disk a's fifth chunk holds a zero run: it is stored sparse (codec 2), the others whole.
    let mut c = std::io::Cursor::new(&ar);
    let a = vdar::archive::index::SeekableArchive::open(&mut c).unwrap();
    let sparse: Vec<_> = a
        .index
        .iter()
        .filter(|e| e.codec == vdar::archive::Codec::SparseZstd)
        .map(|e| (e.disk, e.offset))
        .collect();
    assert_eq!(sparse, [(0, 4 * CS)]);
    // The manifest's copy follows the index: the front record with offset 1.
    let front = &ar[64..a.records_start as usize];
    let fat = ar.len() - FOOTER_BYTES;
    let copy = &ar[fat - front.len()..fat];
    assert_eq!(a.header.incompat_features, 0x3);
    assert_eq!(copy[RECORD_HEADER_BYTES..], front[RECORD_HEADER_BYTES..]);
    assert_eq!(copy[16..24], 1u64.to_le_bytes());
    assert_eq!(ar.len(), GOLDEN_LEN, "archive length");
    assert_eq!(blake3::hash(&ar).to_hex().as_str(), GOLDEN_BLAKE3);
}
// The manifest records the vdar version and chunks are zstd-compressed (zstd 1.5.7, level 3):
// a version bump or a zstd upgrade that changes its output also changes these values. Check
// then that only the manifest's `vdar_version` or the compressed payloads moved.
const GOLDEN_LEN: usize = 189750;
const GOLDEN_BLAKE3: &str = "e99f91d45b8c61e1c360213c440f4cc057a9ed9876c26103da9b97b07617c1d2";

#[test]
fn block_size_pads_to_whole_blocks() {
    let (vms, expect) = corpus();
    let mut ar = Vec::new();
    let o = BackupOptions {
        block_size: 8192,
        ..opts(2)
    };
    backup(vms, &o, &mut ar, None).unwrap();
    assert_eq!(ar.len() % 8192, 0);
    let dir = crate::util::tempdir();
    let r = restore_stream(
        &mut Pieces {
            data: &ar,
            piece: 8192,
        },
        dir.path(),
        &RestoreOptions::default(),
    )
    .unwrap();
    assert!(r.is_complete(), "{r:?}");
    check_restored(dir.path(), &expect);
    let l = vdar::list::list_seekable(&mut std::io::Cursor::new(&ar)).unwrap();
    assert_eq!(l.block_size, 8192);
    assert!(vdar::verify::verify(&mut &ar[..]).unwrap().ok);
}

/// Offset of the n-th chunk record (by stream order) of disk `disk`, from the index.
pub(crate) fn chunk_record(ar: &[u8], disk: u32, n: usize) -> (u64, u64, u32) {
    let mut c = std::io::Cursor::new(ar);
    let a = vdar::archive::index::SeekableArchive::open(&mut c).unwrap();
    let e = a
        .index
        .iter()
        .filter(|e| e.disk == disk && e.kind == vdar::archive::RecordKind::Chunk)
        .nth(n)
        .copied()
        .unwrap();
    (e.record_offset, e.offset, e.raw_len)
}

#[test]
fn flipped_byte_is_named_and_salvaged() {
    let (mut ar, expect) = make_archive(2);
    // Flip a payload byte of disk 0's second stored chunk.
    let (rec, off, len) = chunk_record(&ar, 0, 1);
    ar[rec as usize + RECORD_HEADER_BYTES + 10] ^= 0x40;
    let v = vdar::verify::verify(&mut &ar[..]).unwrap();
    assert!(!v.ok);
    let d = &v.damage[0];
    assert_eq!(
        (d.vm.as_deref(), d.disk.as_deref()),
        (Some("vm1"), Some("scsi0:0"))
    );
    assert_eq!((d.start, d.end), (off, off + len as u64));
    assert_eq!(d.archive_offset, rec);
    // Strict restore fails naming the place; salvage restores everything else.
    let dir = crate::util::tempdir();
    let e = restore_stream(&mut &ar[..], dir.path(), &RestoreOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("scsi0:0") && e.contains(&format!("{off:#x}")),
        "{e}"
    );
    let dir = crate::util::tempdir();
    let o = RestoreOptions {
        salvage: true,
        ..Default::default()
    };
    let r = restore_stream(&mut &ar[..], dir.path(), &o).unwrap();
    assert!(
        r.lost.iter().any(|l| l.disk == "scsi0:0" && l.start == off),
        "{r:?}"
    );
    let got = std::fs::read(dir.path().join(image("vm1", "scsi0:0"))).unwrap();
    let mut want = expect[0].2.clone();
    want[off as usize..(off + len as u64) as usize].fill(0);
    // The damaged chunk may be referenced later (its repeats are lost too): compare the rest.
    for l in &r.lost {
        if l.disk == "scsi0:0" {
            want[l.start as usize..l.end as usize].fill(0);
        }
    }
    assert!(got == want);
    for (vm, disk, data) in &expect[1..] {
        if !r.lost.iter().any(|l| &l.disk == disk) {
            assert!(std::fs::read(dir.path().join(image(vm, disk))).unwrap() == *data);
        }
    }
    // Seekable salvage gives the same answer through the index.
    let dir2 = crate::util::tempdir();
    let r2 = restore_seekable(&mut std::io::Cursor::new(&ar), dir2.path(), &o).unwrap();
    assert_eq!(r2.lost, r.lost);
}

#[test]
fn truncated_tail_is_detected_and_salvaged() {
    let (ar, expect) = make_archive(2);
    let (rec, off, _) = chunk_record(&ar, 2, 0);
    let cut = &ar[..rec as usize + 100];
    let v = vdar::verify::verify(&mut &cut[..]).unwrap();
    assert!(!v.ok);
    assert!(
        v.damage.iter().any(|d| d.disk.as_deref() == Some("c")),
        "{v:?}"
    );
    let dir = crate::util::tempdir();
    let o = RestoreOptions {
        salvage: true,
        ..Default::default()
    };
    // Seekable salvage falls back to a stream pass (no footer).
    let r = restore_seekable(&mut std::io::Cursor::new(cut), dir.path(), &o).unwrap();
    assert!(
        r.lost.iter().any(|l| l.disk == "c" && l.start == off),
        "{r:?}"
    );
    for (vm, disk, data) in &expect[..2] {
        assert!(
            std::fs::read(dir.path().join(image(vm, disk))).unwrap() == *data,
            "{disk}"
        );
    }
    assert!(restore_stream(
        &mut &cut[..],
        crate::util::tempdir().path(),
        &RestoreOptions::default()
    )
    .is_err());
}

#[test]
fn missing_middle_is_detected_and_salvaged() {
    let (ar, expect) = make_archive(2);
    let (rec, off, _) = chunk_record(&ar, 0, 1);
    let (rec2, _, _) = chunk_record(&ar, 0, 3);
    // Cut from inside chunk 1's payload to inside chunk 3's header.
    let mut cut = ar[..rec as usize + 200].to_vec();
    cut.extend_from_slice(&ar[rec2 as usize + 40..]);
    let v = vdar::verify::verify(&mut &cut[..]).unwrap();
    assert!(!v.ok);
    assert!(
        v.damage
            .iter()
            .any(|d| d.disk.as_deref() == Some("scsi0:0") && d.start == off),
        "{v:?}"
    );
    let dir = crate::util::tempdir();
    let o = RestoreOptions {
        salvage: true,
        ..Default::default()
    };
    let r = restore_stream(&mut &cut[..], dir.path(), &o).unwrap();
    // Lost: the cut chunks of scsi0:0, and every later reference to the shared chunk that
    // was cut (scsi0:1 at 128 KiB, c at 0). Everything else is restored.
    let s1 = std::fs::read(dir.path().join(image("vm1", "scsi0:1"))).unwrap();
    assert!(
        s1[..2 * CS as usize] == expect[1].2[..2 * CS as usize],
        "{r:?}"
    );
    let c = std::fs::read(dir.path().join(image("vm2", "c"))).unwrap();
    assert!(c[CS as usize..] == expect[2].2[CS as usize..]);
    assert!(r.lost.iter().any(|l| l.disk == "scsi0:0" && l.start == off));
    assert!(r
        .lost
        .iter()
        .any(|l| l.disk == "c" && l.start == 0 && l.end == CS));
    assert!(
        !r.lost
            .iter()
            .any(|l| l.disk == "scsi0:1" && l.start < 2 * CS),
        "{r:?}"
    );
}

/// An archive written by the real writer around an arbitrary manifest.
fn with_manifest(m: &vdar::archive::Manifest) -> Vec<u8> {
    let mut out = Vec::new();
    let w = vdar::archive::ArchiveWriter::new(&mut out, "-", m, 3).unwrap();
    w.finish().unwrap();
    out
}

#[test]
fn hostile_archives_rejected_cheaply() {
    let (ar, _) = make_archive(1);
    let m = vdar::archive::StreamReader::new(&mut &ar[..], false)
        .unwrap()
        .manifest;
    // Traversal, absolute and separator names.
    for bad in ["../evil", "/etc", "a/b", "..", "x\0y"] {
        let mut m2 = m.clone();
        m2.vms[0].name = bad.into();
        let a = with_manifest(&m2);
        let dir = crate::util::tempdir();
        let e = restore_stream(
            &mut &a[..],
            &dir.path().join("t"),
            &RestoreOptions::default(),
        );
        assert!(e.is_err(), "{bad:?} accepted");
        let mut m3 = m.clone();
        m3.vms[0].files[0].name = bad.into();
        assert!(restore_stream(
            &mut &with_manifest(&m3)[..],
            &dir.path().join("t2"),
            &RestoreOptions::default()
        )
        .is_err());
        assert!(!dir.path().parent().unwrap().join("evil").exists());
    }
    // A huge manifest length in a tiny input: a header that checks out but claims 64 MiB.
    let mut h = ar[..64 + RECORD_HEADER_BYTES].to_vec();
    let hdr = vdar::archive::format::RecordHeader {
        kind: vdar::archive::RecordKind::Manifest,
        codec: vdar::archive::Codec::None,
        disk: u32::MAX,
        offset: 0,
        stored_len: 64 << 20,
        raw_len: 64 << 20,
        digest: [0; 32],
    };
    h[64..].copy_from_slice(&hdr.encode());
    // Verify reports it as damage (a scheduler must see "damaged"), after reading what is there.
    let v = vdar::verify::verify(&mut &h[..]).unwrap();
    assert!(!v.ok, "{v:?}");
    assert!(
        v.damage[0].what.contains("front of the archive unreadable"),
        "{v:?}"
    );
    // Index pointing outside the file.
    let mut bad = ar.clone();
    let fat = bad.len() - FOOTER_BYTES;
    let mut f =
        vdar::archive::format::Footer::decode(bad[fat..].try_into().unwrap(), fat as u64).unwrap();
    f.index_offset = 1 << 40;
    bad[fat..].copy_from_slice(&f.encode());
    assert!(vdar::list::list_seekable(&mut std::io::Cursor::new(&bad)).is_err());
    // Damage everywhere must never panic.
    let mut x = 0x1234_5678u64;
    for i in 0..300 {
        let mut d = ar.clone();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = (x as usize) % d.len();
        match i % 3 {
            0 => d[at] ^= (x >> 32) as u8 | 1,
            1 => d.truncate(at),
            _ => {
                d.drain(at..(at + 1000).min(d.len()));
            }
        }
        read_every_way(&d);
    }
}

/// Every reader over `data`, errors ignored, as the `archive` fuzz target (tools/fuzz) runs
/// them: stream and seekable listing, verify, restore into a discarding sink, with and without
/// salvage. Only a panic (or an allocation past the format's limits) fails.
fn read_every_way(data: &[u8]) {
    let _ = vdar::list::list_stream(&mut &data[..]);
    let _ = vdar::list::list_seekable(&mut std::io::Cursor::new(data));
    let _ = vdar::verify::verify(&mut &data[..]);
    for salvage in [false, true] {
        let opts = RestoreOptions {
            salvage,
            ..Default::default()
        };
        let _ = vdar::restore::restore_to_sink(&mut &data[..], &opts);
    }
}

#[test]
fn progress_follows_the_disk_position() {
    let (vms, _) = corpus();
    let caps: Vec<u64> = vms
        .iter()
        .flat_map(|v| v.disks.iter().map(|d| d.disk.capacity()))
        .collect();
    let seen = std::sync::Mutex::new(Vec::new());
    let cb = |p: &vdar::pipeline::Progress| seen.lock().unwrap().push(p.disk_bytes);
    let s = backup(vms, &opts(2), &mut Vec::new(), Some(&cb)).unwrap();
    let seen = seen.into_inner().unwrap();
    let total: u64 = caps.iter().sum();
    assert_eq!(s.totals.disk_bytes, total);
    assert_eq!(seen.last(), Some(&total));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    // Inside the first disk, per chunk: not only at its end.
    let inside: Vec<u64> = seen
        .iter()
        .copied()
        .filter(|&b| b > 0 && b < caps[0])
        .collect();
    assert_eq!(inside, [CS, 2 * CS, 3 * CS, 4 * CS, 5 * CS], "{seen:?}");
}

/// An archive in memory that records every byte range read from it.
struct Traced<'a> {
    data: std::io::Cursor<&'a [u8]>,
    reads: Vec<(u64, u64)>,
}

impl Read for Traced<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let at = self.data.position();
        let n = self.data.read(buf)?;
        self.reads.push((at, n as u64));
        Ok(n)
    }
}

impl std::io::Seek for Traced<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.data.seek(to)
    }
}

#[test]
fn seekable_restore_of_one_disk_reads_only_its_records() {
    use vdar::archive::format::RecordKind;
    let (ar, expect) = make_archive(2);
    let index = vdar::archive::index::SeekableArchive::open(&mut std::io::Cursor::new(&ar[..]))
        .unwrap()
        .index;
    let mut t = Traced {
        data: std::io::Cursor::new(&ar[..]),
        reads: Vec::new(),
    };
    let dir = tempfile::tempdir().unwrap();
    let o = RestoreOptions {
        vm: Some("vm1".into()),
        disk: Some("scsi0:1".into()),
        ..Default::default()
    };
    let r = restore_seekable(&mut t, dir.path(), &o).unwrap();
    assert!(r.is_complete());
    assert_eq!(
        std::fs::read(dir.path().join(image("vm1", "scsi0:1"))).unwrap(),
        expect[1].2
    );
    // Opening reads the front in one 256 KiB gulp for the manifest; in this small archive that
    // spans every record, so only the reads after it count.
    assert_eq!(t.reads[0].0, 0);
    assert!(t.reads[0].1 <= 256 << 10);
    t.reads.remove(0);
    let touched = |e: &vdar::archive::format::IndexEntry| {
        let end = e.record_offset + RECORD_HEADER_BYTES as u64 + u64::from(e.stored_len);
        t.reads
            .iter()
            .any(|&(at, n)| n > 0 && at < end && e.record_offset < at + n)
    };
    let mut of_a = 0;
    for e in index.iter().filter(|e| e.kind != RecordKind::File) {
        match e.disk {
            // Every record of the disk itself.
            1 => assert!(
                touched(e) || e.kind == RecordKind::DiskEnd,
                "{e:?} not read"
            ),
            // Disk a only for the chunk that disk b refers to.
            0 => of_a += usize::from(touched(e)),
            _ => assert!(!touched(e), "read a record of another VM: {e:?}"),
        }
    }
    assert_eq!(of_a, 1, "exactly the referenced chunk of vm1/scsi0:0");
}

#[test]
fn a_set_cancel_flag_stops_backup_and_restore() {
    let cancel = vdar::cancel::Cancel::default();
    cancel.set(15);
    let (vms, _) = corpus();
    let o = BackupOptions {
        cancel: cancel.clone(),
        ..opts(2)
    };
    let e = backup(vms, &o, &mut Vec::new(), None).unwrap_err();
    assert!(matches!(e, vdar::Error::Interrupted(15)), "{e:?}");
    let (ar, _) = make_archive(2);
    let dir = tempfile::tempdir().unwrap();
    let o = RestoreOptions {
        cancel,
        ..Default::default()
    };
    let e = restore_stream(&mut &ar[..], dir.path(), &o).unwrap_err();
    assert!(matches!(e, vdar::Error::Interrupted(15)), "{e:?}");
    let left: Vec<_> = walk(dir.path());
    assert!(left.is_empty(), "unfinished outputs left: {left:?}");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn disks_are_selected_by_name_or_number() {
    let (ar, expect) = make_archive(2);
    let tmp = tempfile::tempdir().unwrap();
    for (i, (vm, disk, want)) in [
        (Some("vm1"), "1", 1),
        (None, "scsi0:1", 1),
        (Some("vm2"), "0", 2),
        (Some("vm2"), "c", 2),
    ]
    .into_iter()
    .enumerate()
    {
        let o = RestoreOptions {
            vm: vm.map(String::from),
            disk: Some(disk.into()),
            ..Default::default()
        };
        let dir = tmp.path().join(format!("r{i}"));
        let r = restore_stream(&mut &ar[..], &dir, &o).unwrap();
        assert_eq!(r.disks.len(), 1, "{vm:?} {disk}: {r:?}");
        let (v, n, bytes) = &expect[want];
        assert_eq!(std::fs::read(dir.join(image(v, n))).unwrap(), *bytes);
    }
    let o = RestoreOptions {
        vm: Some("vm2".into()),
        disk: Some("2".into()),
        ..Default::default()
    };
    let e = restore_stream(&mut &ar[..], &tmp.path().join("none"), &o).unwrap_err();
    assert!(e.to_string().contains("vm2/c (#0), vm2/d (#1)"), "{e}");
}

#[test]
fn restore_progress_follows_the_selected_disks() {
    let (ar, expect) = make_archive(2);
    let caps: Vec<u64> = expect.iter().map(|e| e.2.len() as u64).collect();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("a.vdar");
    std::fs::write(&path, &ar).unwrap();
    for (i, (seekable, only_c)) in [(true, false), (false, false), (true, true), (false, true)]
        .into_iter()
        .enumerate()
    {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let o = RestoreOptions {
            vm: only_c.then(|| "vm2".into()),
            progress: Some(ProgressHook(std::sync::Arc::new(
                move |p: &RestoreProgress| {
                    log.lock().unwrap().push(p.clone());
                },
            ))),
            ..Default::default()
        };
        let dir = tmp.path().join(format!("r{i}"));
        let r = if seekable {
            restore_seekable(&mut std::fs::File::open(&path).unwrap(), &dir, &o).unwrap()
        } else {
            restore_stream(&mut &ar[..], &dir, &o).unwrap()
        };
        assert!(r.is_complete());
        let seen = seen.lock().unwrap();
        let total = if only_c { caps[2] } else { caps.iter().sum() };
        assert!(seen.iter().all(|p| p.total == total), "{seen:?}");
        assert_eq!(seen.last().unwrap().position, total);
        assert!(
            seen.windows(2).all(|w| w[0].position <= w[1].position),
            "{seen:?}"
        );
        let mut labels: Vec<&str> = seen.iter().map(|p| p.current.as_str()).collect();
        labels.dedup();
        let want = if only_c { 1 } else { 3 };
        assert_eq!(labels.len(), want, "one run per disk, in order: {labels:?}");
        assert!(seen.len() > want, "per chunk, not per disk: {seen:?}");
    }
}

#[test]
fn listing_reports_dedup_and_compression() {
    let (ar, _) = make_archive(2);
    let a = vdar::list::list_seekable(&mut std::io::Cursor::new(&ar)).unwrap();
    let b = vdar::list::list_stream(&mut &ar[..]).unwrap();
    assert_eq!(a, b);
    assert!(
        a.complete && a.dedup_ratio > 1.0 && a.compression_ratio > 1.0,
        "{a:?}"
    );
    assert_eq!(a.vms[0].disks[0].name, "scsi0:0");
    assert!(serde_json::to_string(&a)
        .unwrap()
        .contains("\"dedup_ratio\""));
}

/// Issue 13 item 7: an archived file named `<image>.raw.partial` (the staging name of the image
/// beside it), or a pair `x` and `x.partial`, made every restore fail: one output's staging
/// name was another's final name. Every file is restored under its own name, and nothing else
/// is left.
#[test]
fn r13_archived_partial_names_do_not_collide_with_staging() {
    let disk = bytes(7, 2 * CS as usize);
    let names = [
        "vm_x_0.raw.partial",
        "notes",
        "notes.partial",
        "notes.1.partial",
        "vm.vmx",
    ];
    let vm = VmInput {
        origin: None,
        name: "vm".into(),
        files: names
            .iter()
            .map(|n| VmFile {
                name: n.to_string(),
                source: None,
                bytes: n.as_bytes().to_vec(),
            })
            .collect(),
        disks: vec![DiskInput {
            name: "x".into(),
            meta: DiskMeta {
                capacity: disk.len() as u64,
                descriptor: String::new(),
                create_type: "vmfs".into(),
                ddb: vec![],
                chain: vec![],
                change_id: None,
            },
            disk: Box::new(MemDisk::new("x", disk.clone(), &[])),
        }],
    };
    let mut ar = Vec::new();
    backup(vec![vm], &opts(1), &mut ar, None).unwrap();
    let tmp = crate::util::tempdir();
    for seekable in [false, true] {
        let dir = tmp.path().join(format!("r{seekable}"));
        let o = RestoreOptions::default();
        if seekable {
            restore_seekable(&mut std::io::Cursor::new(&ar), &dir, &o).unwrap();
        } else {
            restore_stream(&mut &ar[..], &dir, &o).unwrap();
        }
        let vm = dir.join("vm");
        assert_eq!(std::fs::read(vm.join("vm_x_0.raw")).unwrap(), disk);
        // Every archived file is kept as it was under original/; beside the image, all but
        // the .vmx, which is rewritten for the image and here does not parse.
        let mut want = vec!["vm/vm_x_0.raw".to_string(), "vm/vm_x_0.vmdk".to_string()];
        for n in names {
            let orig = format!("vm/original/{n}");
            assert_eq!(std::fs::read(dir.join(&orig)).unwrap(), n.as_bytes(), "{n}");
            want.push(orig);
            if n != "vm.vmx" {
                assert_eq!(std::fs::read(vm.join(n)).unwrap(), n.as_bytes(), "{n}");
                want.push(format!("vm/{n}"));
            }
        }
        let mut left: Vec<_> = walk(&dir)
            .iter()
            .map(|p| p.strip_prefix(&dir).unwrap().to_string_lossy().into_owned())
            .collect();
        left.sort();
        want.sort();
        assert_eq!(left, want);
    }
}

/// Issue 13 item 7: a failed restore left an empty `DIR/<vm>/` (and `DIR`, when it created
/// it). Directories the restore created go with its outputs; ones that existed stay.
#[test]
fn r13_failed_restore_removes_the_directories_it_created() {
    let (mut ar, _) = make_archive(2);
    let (rec, _, _) = chunk_record(&ar, 0, 1);
    ar[rec as usize + RECORD_HEADER_BYTES + 10] ^= 0x40;
    let tmp = crate::util::tempdir();
    // A directory the restore creates, with the VM directories inside it.
    let new = tmp.path().join("new");
    assert!(restore_stream(&mut &ar[..], &new, &RestoreOptions::default()).is_err());
    assert!(!new.exists(), "created directory left behind");
    // An existing directory with something in it, and an existing VM directory.
    let old = tmp.path().join("old");
    std::fs::create_dir_all(old.join("vm2")).unwrap();
    std::fs::write(old.join("keep"), b"mine").unwrap();
    let o = RestoreOptions::default();
    assert!(restore_seekable(&mut std::io::Cursor::new(&ar), &old, &o).is_err());
    assert!(
        !old.join("vm1").exists(),
        "created VM directory left behind"
    );
    assert!(old.join("vm2").is_dir(), "existing VM directory removed");
    assert_eq!(std::fs::read(old.join("keep")).unwrap(), b"mine");
    // A restore that succeeds keeps them.
    let (good, _) = make_archive(2);
    restore_stream(&mut &good[..], &new, &RestoreOptions::default()).unwrap();
    assert!(new.join("vm1").is_dir() && new.join("vm2").is_dir());
}
