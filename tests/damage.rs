//! The accounting rule (formats/ARCHIVE.md, "Accounting"): after any damage, every byte of
//! every disk is restored, known zero, or reported lost. Regression tests for each way it was
//! broken (truncation inside a header, cuts across records, crafted archives with valid
//! checksums, duplicated stretches, a damaged front), and a sweep of random truncations, cuts,
//! duplications and flips, each restored seekable and piped and compared with the original.

use std::io::Cursor;
use std::path::PathBuf;

use vdar::archive::format::{
    csum8, FileHeader, Footer, IndexEntry, RecordHeader, RecordKind, RECORD_HEADER_BYTES,
};
use vdar::archive::{Codec, Manifest};
use vdar::restore::{restore_seekable, restore_stream, RestoreOptions, RestoreReport};

use crate::archive::{chunk_record, make_archive, Expected, Pieces, CS};

fn salvage() -> RestoreOptions {
    RestoreOptions {
        salvage: true,
        ..Default::default()
    }
}

/// How a damaged archive is restored.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Seekable,
    Piped,
}

fn restore(ar: &[u8], mode: Mode, dir: &std::path::Path) -> RestoreReport {
    let r = match mode {
        Mode::Seekable => restore_seekable(&mut Cursor::new(ar), dir, &salvage()),
        Mode::Piped => restore_stream(
            &mut Pieces {
                data: ar,
                piece: 4093,
            },
            dir,
            &salvage(),
        ),
    };
    r.unwrap_or_else(|e| panic!("{mode:?} salvage failed: {e}"))
}

/// The image a report names for corpus disk `n`, with its lost ranges. Disks of a rebuilt
/// manifest are matched by ordinal (`disk<N>`).
fn image_of(r: &RestoreReport, expect: &Expected, n: usize) -> Option<(PathBuf, Vec<(u64, u64)>)> {
    let (vm, disk, _) = &expect[n];
    let rebuilt = format!("disk{n}");
    let d = r
        .disks
        .iter()
        .find(|d| (&d.vm == vm && &d.disk == disk) || d.disk == rebuilt)?;
    let lost = r
        .lost
        .iter()
        .filter(|l| l.vm == d.vm && l.disk == d.disk)
        .map(|l| (l.start, l.end))
        .collect();
    Some((d.path.clone()?, lost))
}

/// The accounting rule against the original images: any byte that differs lies in a reported
/// lost range, the tallies add up, and no chunk whose record is intact in `ar` is lost.
fn check_accounting(ar: &[u8], pristine: &[u8], expect: &Expected, mode: Mode, what: &str) {
    let dir = crate::util::tempdir();
    let r = restore(ar, mode, dir.path());
    for d in &r.disks {
        assert_eq!(
            d.restored_bytes + d.zero_bytes + d.lost_bytes,
            d.capacity,
            "{what} {mode:?}: tallies of {d:?}"
        );
    }
    let intact = intact_chunks(ar, pristine);
    for (n, (_, _, want)) in expect.iter().enumerate() {
        let Some((path, lost)) = image_of(&r, expect, n) else {
            continue;
        };
        let got = std::fs::read(&path).unwrap();
        let in_lost = |i: u64| lost.iter().any(|&(s, e)| s <= i && i < e);
        for i in 0..want.len().min(got.len()) {
            if got[i] != want[i] {
                assert!(
                    in_lost(i as u64),
                    "{what} {mode:?}: disk {n} byte {i:#x} differs and is not reported lost; \
                     {r:#?}"
                );
            }
        }
        for &(disk, offset) in &intact {
            if disk as usize == n {
                assert!(
                    !in_lost(offset),
                    "{what} {mode:?}: intact chunk of disk {n} at {offset:#x} reported lost; {r:#?}"
                );
            }
        }
    }
    if ar != pristine {
        let v = vdar::verify::verify(&mut &ar[..]).unwrap();
        assert!(!v.ok, "{what}: verify says ok");
    }
}

/// Chunk records of the pristine archive whose bytes appear whole in `ar` (disk, offset).
fn intact_chunks(ar: &[u8], pristine: &[u8]) -> Vec<(u32, u64)> {
    let mut c = Cursor::new(pristine);
    let a = vdar::archive::index::SeekableArchive::open(&mut c).unwrap();
    a.index
        .iter()
        .filter(|e| e.kind == RecordKind::Chunk)
        .filter(|e| {
            let s = e.record_offset as usize;
            let rec = &pristine[s..s + RECORD_HEADER_BYTES + e.stored_len as usize];
            ar.windows(rec.len()).any(|w| w == rec)
        })
        .map(|e| (e.disk, e.offset))
        .collect()
}

fn both_modes(ar: &[u8], pristine: &[u8], expect: &Expected, what: &str) {
    for mode in [Mode::Seekable, Mode::Piped] {
        check_accounting(ar, pristine, expect, mode, what);
    }
}

/// Issue item 1: an archive cut 1..79 bytes into a record header lost everything after it
/// without a word.
#[test]
fn truncation_inside_a_record_header_is_lost_not_zero() {
    let (ar, expect) = make_archive(2);
    for disk in [0u32, 2] {
        let (rec, off, _) = chunk_record(&ar, disk, if disk == 0 { 1 } else { 0 });
        for k in [1usize, 8, 40, 79] {
            let cut = &ar[..rec as usize + k];
            let v = vdar::verify::verify(&mut &cut[..]).unwrap();
            let name = &expect[disk as usize].1;
            assert!(
                v.lost
                    .iter()
                    .any(|l| &l.disk == name && l.start <= off && l.end > off),
                "cut {k} into disk {disk}'s record: {v:#?}"
            );
            // Every later disk with data is lost too.
            assert!(v.lost.iter().any(|l| l.disk == "c"), "{v:#?}");
            both_modes(cut, &ar, &expect, &format!("cut {k} into header"));
            let l = vdar::list::list_stream(&mut &cut[..]).unwrap();
            assert!(!l.complete && !l.lost.is_empty(), "{l:#?}");
        }
    }
}

/// Issue item 2: a missing stretch across several records reported only the first.
#[test]
fn a_cut_across_records_reports_every_record_in_it() {
    let (ar, expect) = make_archive(2);
    let (rec1, off1, _) = chunk_record(&ar, 0, 0);
    let (rec3, _, _) = chunk_record(&ar, 0, 3);
    let mut cut = ar[..rec1 as usize + 300].to_vec();
    cut.extend_from_slice(&ar[rec3 as usize + 500..]);
    let v = vdar::verify::verify(&mut &cut[..]).unwrap();
    for n in 0..4 {
        let (_, off, len) = chunk_record(&ar, 0, n);
        assert!(
            v.lost
                .iter()
                .any(|l| l.disk == "scsi0:0" && l.start <= off && l.end >= off + len as u64),
            "chunk {n} at {off:#x} (first {off1:#x}): {v:#?}"
        );
    }
    both_modes(&cut, &ar, &expect, "cut across records");
}

/// Issue item 5: a repeated stretch reported intact chunks lost, and a few bytes missing just
/// before a record's end lost the next record too.
#[test]
fn repeated_stretches_and_short_tails_lose_nothing_intact() {
    let (ar, expect) = make_archive(2);
    let (a, _, _) = chunk_record(&ar, 0, 1);
    let (b, _, _) = chunk_record(&ar, 1, 0);
    let mut dup = ar[..b as usize].to_vec();
    dup.extend_from_slice(&ar[a as usize..]);
    let dir = crate::util::tempdir();
    let r = restore(&dup, Mode::Piped, dir.path());
    assert!(r.lost.is_empty(), "{r:#?}");
    assert!(!r.damage.is_empty());
    both_modes(&dup, &ar, &expect, "repeated stretch");
    for k in 1..=7 {
        let (next, noff, _) = chunk_record(&ar, 0, 2);
        let mut cut = ar[..next as usize - k].to_vec();
        cut.extend_from_slice(&ar[next as usize..]);
        let r = restore(&cut, Mode::Piped, crate::util::tempdir().path());
        assert!(
            !r.lost
                .iter()
                .any(|l| l.start <= noff && noff < l.end && l.disk == "scsi0:0"),
            "{k} bytes cut before the record at {noff:#x}: {r:#?}"
        );
        both_modes(
            &cut,
            &ar,
            &expect,
            &format!("{k} bytes before a record end"),
        );
    }
}

/// Issue item 6: a flipped byte in the file header or the manifest lost every VM.
#[test]
fn a_damaged_front_still_restores_everything() {
    let (ar, expect) = make_archive(2);
    // File header, the manifest's record header, the manifest's JSON.
    for at in [9usize, 30, 64 + 20, 64 + 80 + 30] {
        let mut d = ar.clone();
        d[at] ^= 0x10;
        for mode in [Mode::Seekable, Mode::Piped] {
            let dir = crate::util::tempdir();
            let r = restore(&d, mode, dir.path());
            assert!(r.lost.is_empty(), "flip at {at} {mode:?}: {r:#?}");
            assert!(r.damage[0].what.contains("front"), "{r:#?}");
            crate::archive::check_restored(dir.path(), &expect);
        }
        let v = vdar::verify::verify(&mut &d[..]).unwrap();
        assert!(!v.ok && v.lost.is_empty(), "{v:#?}");
    }
    // Both manifests damaged: the records still restore, under made-up names.
    let mut d = ar.clone();
    d[64 + 80 + 30] ^= 0x10;
    let copy = find_last(&d, b"\"vdar_version\"");
    d[copy] ^= 0x10;
    let dir = crate::util::tempdir();
    let r = restore(&d, Mode::Seekable, dir.path());
    for (n, (_, _, want)) in expect.iter().enumerate().filter(|(_, e)| !e.2.is_empty()) {
        let got = std::fs::read(dir.path().join(format!("salvaged-vm0/disk{n}.raw"))).unwrap();
        assert!(got == *want, "disk {n}: {r:#?}");
    }
    both_modes(&d, &ar, &expect, "both manifests damaged");
}

/// A rebuilt manifest takes no capacity from a hostile DiskEnd that the format does not allow.
#[test]
fn a_rebuilt_manifest_bounds_what_it_believes() {
    let m = small_manifest();
    let a = chunk_bytes(3);
    let mut c = Crafted::new(&m);
    c.chunk(0, 0, &a);
    c.disk_end(0, 1 << 60, 1);
    let mut ar = c.finish(None);
    ar[64 + 80 + 5] ^= 0x20; // the front manifest; this archive has no copy
    let dir = crate::util::tempdir();
    let r = restore(&ar, Mode::Seekable, dir.path());
    assert_eq!(r.disks[0].capacity, CS, "{r:#?}");
    let got = std::fs::read(dir.path().join("salvaged-vm0/disk0.raw")).unwrap();
    assert!(got == a);
}

fn find_last(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .rposition(|w| w == needle)
        .expect("needle")
}

/// Hand-assembles archives with valid checksums everywhere: the index, the record count and
/// the metadata hash are whatever the test says.
struct Crafted {
    bytes: Vec<u8>,
    meta: blake3::Hasher,
    records: u64,
    index: Vec<IndexEntry>,
}

impl Crafted {
    fn new(m: &Manifest) -> Self {
        let h = FileHeader {
            format_version: 1,
            incompat_features: 1,
            compat_features: 0,
            block_size: 0,
        }
        .encode();
        let mut c = Crafted {
            bytes: Vec::new(),
            meta: blake3::Hasher::new(),
            records: 0,
            index: Vec::new(),
        };
        c.meta.update(&h);
        c.bytes.extend_from_slice(&h);
        let json = serde_json::to_vec(m).unwrap();
        c.record(
            RecordKind::Manifest,
            u32::MAX,
            0,
            json.len() as u64,
            &json,
            blake3::hash(&json),
        );
        c
    }

    fn record(
        &mut self,
        kind: RecordKind,
        disk: u32,
        offset: u64,
        raw_len: u64,
        payload: &[u8],
        digest: blake3::Hash,
    ) -> u64 {
        let at = self.bytes.len() as u64;
        let h = RecordHeader {
            kind,
            codec: Codec::None,
            disk,
            offset,
            stored_len: payload.len() as u64,
            raw_len,
            digest: *digest.as_bytes(),
        }
        .encode();
        self.meta.update(&h);
        self.records += 1;
        self.bytes.extend_from_slice(&h);
        self.bytes.extend_from_slice(payload);
        if matches!(kind, RecordKind::Chunk | RecordKind::Ref | RecordKind::File) {
            self.index.push(IndexEntry {
                record_offset: at,
                offset,
                disk,
                kind,
                codec: Codec::None,
                stored_len: payload.len() as u32,
                raw_len: raw_len as u32,
            });
        }
        at
    }

    fn chunk(&mut self, disk: u32, offset: u64, data: &[u8]) {
        self.record(
            RecordKind::Chunk,
            disk,
            offset,
            data.len() as u64,
            data,
            blake3::hash(data),
        );
    }

    fn disk_end(&mut self, disk: u32, capacity: u64, count: u64) {
        let mut p = [0u8; 16];
        p[..8].copy_from_slice(&count.to_le_bytes());
        self.record(
            RecordKind::DiskEnd,
            disk,
            capacity,
            16,
            &p,
            blake3::hash(&p),
        );
    }

    /// Index (the given entries, or the records' own), footer.
    fn finish(mut self, index: Option<Vec<IndexEntry>>) -> Vec<u8> {
        let raw: Vec<u8> = index
            .unwrap_or(std::mem::take(&mut self.index))
            .iter()
            .flat_map(|e| e.encode())
            .collect();
        let at = self.record(
            RecordKind::Index,
            u32::MAX,
            0,
            raw.len() as u64,
            &raw,
            blake3::hash(&raw),
        );
        let f = Footer {
            index_offset: at,
            footer_offset: self.bytes.len() as u64,
            record_count: self.records,
            meta_hash: *self.meta.finalize().as_bytes(),
        };
        self.bytes.extend_from_slice(&f.encode());
        self.bytes
    }
}

/// One VM, one disk of four chunks.
fn small_manifest() -> Manifest {
    let (ar, _) = make_archive(1);
    let mut m = vdar::archive::StreamReader::new(&mut &ar[..], false)
        .unwrap()
        .manifest;
    m.vms.truncate(1);
    m.vms[0].files.clear();
    m.vms[0].disks.truncate(1);
    m.vms[0].disks[0].meta.capacity = 4 * CS;
    m
}

fn chunk_bytes(seed: u8) -> Vec<u8> {
    (0..CS)
        .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
        .collect()
}

/// Restores a crafted archive every way; returns (seekable strict, seekable salvage, piped
/// salvage, verify).
fn every_way(
    ar: &[u8],
) -> (
    bool,
    RestoreReport,
    RestoreReport,
    vdar::verify::VerifyReport,
) {
    let strict = restore_seekable(
        &mut Cursor::new(ar),
        crate::util::tempdir().path(),
        &RestoreOptions::default(),
    )
    .is_ok();
    let s = restore(ar, Mode::Seekable, crate::util::tempdir().path());
    let p = restore(ar, Mode::Piped, crate::util::tempdir().path());
    let v = vdar::verify::verify(&mut &ar[..]).unwrap();
    (strict, s, p, v)
}

/// Issue item 4: crafted archives with valid checksums were believed.
#[test]
fn crafted_archives_are_cross_checked() {
    let m = small_manifest();
    let (a, b) = (chunk_bytes(3), chunk_bytes(5));
    // The disk's one chunk names a disk that does not exist.
    let mut c = Crafted::new(&m);
    c.chunk(7, 0, &a);
    c.disk_end(0, 4 * CS, 1);
    let ar = c.finish(None);
    let (strict, s, p, v) = every_way(&ar);
    assert!(!strict && !v.ok);
    for r in [&s, &p] {
        assert_eq!(
            r.lost.iter().map(|l| l.end - l.start).sum::<u64>(),
            4 * CS,
            "{r:#?}"
        );
    }
    // An empty index over a real chunk.
    let mut c = Crafted::new(&m);
    c.chunk(0, CS, &a);
    c.disk_end(0, 4 * CS, 1);
    let ar = c.finish(Some(vec![]));
    let (strict, s, p, v) = every_way(&ar);
    assert!(!strict && !v.ok);
    for r in [&s, &p] {
        assert!(
            r.lost.is_empty(),
            "the disk end accounts for the chunk: {r:#?}"
        );
        assert_eq!(r.disks[0].restored_bytes, CS);
    }
    // Two different chunks for one place.
    let mut c = Crafted::new(&m);
    c.chunk(0, 0, &a);
    c.chunk(0, 0, &b);
    c.disk_end(0, 4 * CS, 2);
    let ar = c.finish(None);
    let (strict, s, p, v) = every_way(&ar);
    assert!(!strict && !v.ok);
    for r in [&s, &p] {
        assert!(r.lost.iter().any(|l| l.start == 0 && l.end == CS), "{r:#?}");
    }
    // A disk end that claims 2^64 - 1 records where one exists.
    let mut c = Crafted::new(&m);
    c.chunk(0, 0, &a);
    c.disk_end(0, 4 * CS, u64::MAX);
    let ar = c.finish(None);
    let (strict, s, p, v) = every_way(&ar);
    assert!(!strict && !v.ok, "{v:#?}");
    for r in [&s, &p] {
        assert!(
            r.lost.iter().any(|l| l.start == CS && l.end == 4 * CS),
            "{r:#?}"
        );
    }
    // A Ref that points forward, to itself, or nowhere: the same answer seekable and piped.
    for src in [(0u32, 2 * CS), (0, CS), (9, 0)] {
        let mut c = Crafted::new(&m);
        c.chunk(0, 0, &a);
        let mut p = [0u8; 12];
        p[..4].copy_from_slice(&src.0.to_le_bytes());
        p[4..].copy_from_slice(&src.1.to_le_bytes());
        c.record(RecordKind::Ref, 0, CS, CS, &p, blake3::hash(&b));
        c.chunk(0, 2 * CS, &b);
        c.disk_end(0, 4 * CS, 3);
        let ar = c.finish(None);
        let (strict, s, p, v) = every_way(&ar);
        assert!(!strict && !v.ok);
        assert_eq!(s.lost, p.lost, "ref to {src:?}");
        assert_eq!(
            s.lost.iter().map(|l| (l.start, l.end)).collect::<Vec<_>>(),
            [(CS, 2 * CS)]
        );
    }
    let _ = csum8;
}

/// The sweep: random truncations, cuts, duplications and flips over a small archive, each
/// restored seekable and piped, and checked against the original images.
#[test]
fn accounting_holds_under_random_damage() {
    let (ar, expect) = make_archive(2);
    both_modes(&ar, &ar, &expect, "pristine");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    for i in 0..160 {
        let at = rnd(ar.len());
        let len = 1 + rnd(3000);
        let mut d = ar.clone();
        let what = match i % 4 {
            0 => {
                d.truncate(at);
                format!("truncated at {at}")
            }
            1 => {
                d.drain(at..(at + len).min(ar.len()));
                format!("cut {at}+{len}")
            }
            2 => {
                let end = (at + len).min(ar.len());
                let copy = ar[at..end].to_vec();
                d.splice(end..end, copy);
                format!("repeated {at}+{len}")
            }
            _ => {
                d[at] ^= 1 + rnd(255) as u8;
                format!("flipped {at}")
            }
        };
        if d != ar {
            both_modes(&d, &ar, &expect, &what);
        }
    }
}

/// Found by the hostile review: a footer moved into the middle of the stream ended reading
/// there; a swapped or moved stretch lost intact records through the index.
#[test]
fn moved_footers_and_records_lose_nothing_intact() {
    let (ar, expect) = make_archive(2);
    let footer = &ar[ar.len() - 96..];
    let (mid, _, _) = chunk_record(&ar, 0, 2);
    let mid = mid as usize;
    let mut moved = ar[..mid].to_vec();
    moved.extend_from_slice(footer);
    moved.extend_from_slice(&ar[mid..ar.len() - 96]);
    both_modes(&moved, &ar, &expect, "footer moved mid-stream");
    // Two adjacent records swapped, and a stretch moved earlier.
    let (a, _, _) = chunk_record(&ar, 0, 0);
    let (b, _, _) = chunk_record(&ar, 0, 1);
    let (c, _, _) = chunk_record(&ar, 0, 2);
    let (a, b, c) = (a as usize, b as usize, c as usize);
    let mut swapped = ar[..a].to_vec();
    swapped.extend_from_slice(&ar[b..c]);
    swapped.extend_from_slice(&ar[a..b]);
    swapped.extend_from_slice(&ar[c..]);
    both_modes(&swapped, &ar, &expect, "records swapped");
    let (d, _, _) = chunk_record(&ar, 2, 0);
    let mut shifted = ar[..a].to_vec();
    shifted.extend_from_slice(&ar[c..d as usize]);
    shifted.extend_from_slice(&ar[a..c]);
    shifted.extend_from_slice(&ar[d as usize..]);
    both_modes(&shifted, &ar, &expect, "stretch moved earlier");
}

/// Found by the hostile review: bytes after the footer (two archives concatenated, a retry
/// appended to a cut archive) were ok to some readers, and a cut archive followed by another
/// archive of the same shape took the other archive's chunks for its own.
#[test]
fn another_archive_after_this_one_is_never_read_as_it() {
    let (ar, expect) = make_archive(2);
    let mut twice = ar.clone();
    twice.extend_from_slice(&ar);
    assert!(!vdar::verify::verify(&mut &twice[..]).unwrap().ok);
    assert!(!vdar::list::list_stream(&mut &twice[..]).unwrap().complete);
    let strict = restore_stream(
        &mut &twice[..],
        crate::util::tempdir().path(),
        &RestoreOptions::default(),
    );
    assert!(strict.is_err());
    both_modes(&twice, &ar, &expect, "two archives");
    // A cut archive, then another of the same VMs with other bytes.
    let m = small_manifest();
    let (a, b) = (chunk_bytes(3), chunk_bytes(5));
    let build = |x: &[u8]| {
        let mut c = Crafted::new(&m);
        for k in 0..3 {
            c.chunk(0, k * CS, x);
        }
        c.disk_end(0, 4 * CS, 3);
        c.finish(None)
    };
    let (first, second) = (build(&a), build(&b));
    let (cut_at, _, _) = chunk_record(&first, 0, 2);
    let mut spliced = first[..cut_at as usize + 1000].to_vec();
    spliced.extend_from_slice(&second);
    for mode in [Mode::Seekable, Mode::Piped] {
        let dir = crate::util::tempdir();
        let r = restore(&spliced, mode, dir.path());
        let img = std::fs::read(r.disks[0].path.clone().unwrap()).unwrap();
        let lost = |i: u64| r.lost.iter().any(|l| l.start <= i && i < l.end);
        for (k, chunk) in img.chunks(CS as usize).enumerate() {
            let at = k as u64 * CS;
            let want: &[u8] = if k < 3 { &a } else { &[0; CS as usize] };
            assert!(chunk == want || lost(at), "{mode:?} chunk {k}: {r:#?}");
            assert!(
                chunk != &b[..] || lost(at),
                "{mode:?}: the other archive's chunk {k}"
            );
        }
    }
}

/// Found by the hostile review: a disk holding a record image in its own data (a backup
/// server's disk) had that image taken for a record when a flip made the reader rescan the
/// chunk holding it; it then stood in for the damaged record in the disk end's count.
#[test]
fn a_record_image_inside_disk_data_is_not_restored() {
    let planted_at = 3 * CS; // a zero chunk of the disk
    let plant = {
        let data = vec![b'P'; CS as usize];
        let (codec, payload) = vdar::archive::writer::encode_payload(&data, 3).unwrap();
        let h = RecordHeader {
            kind: RecordKind::Chunk,
            codec,
            disk: 0,
            offset: planted_at,
            stored_len: payload.len() as u64,
            raw_len: CS,
            digest: *blake3::hash(&data).as_bytes(),
        };
        [&h.encode()[..], &payload].concat()
    };
    // Chunk 0: noise (stored raw) carrying the record image; chunk 3 zero; the rest noise.
    let mut disk = crate::util::noise(4 * CS as usize, 0x2545_f491_4f6c_dd1d);
    disk[5000..5000 + plant.len()].copy_from_slice(&plant);
    disk[planted_at as usize..(planted_at + CS) as usize].fill(0);
    let vm = vdar::pipeline::VmInput {
        origin: None,
        name: "vm".into(),
        files: vec![],
        disks: vec![vdar::pipeline::DiskInput {
            name: "d".into(),
            meta: vdar::pipeline::DiskMeta {
                capacity: disk.len() as u64,
                ..Default::default()
            },
            disk: Box::new(vdar::fixture::memdisk::MemDisk::new("d", disk.clone(), &[])),
        }],
    };
    let mut ar = Vec::new();
    vdar::pipeline::backup(vec![vm], &crate::archive::opts(1), &mut ar, None).unwrap();
    // The host chunk is stored raw, so the image is in the archive byte for byte.
    let host = find_last(&ar, &plant[..RECORD_HEADER_BYTES]);
    let expect: Expected = vec![("vm".into(), "d".into(), disk)];
    for flip in [host - 4000, chunk_record(&ar, 0, 0).0 as usize + 20] {
        let mut d = ar.clone();
        d[flip] ^= 0x04;
        both_modes(
            &d,
            &ar,
            &expect,
            &format!("flip at {flip} near a record image"),
        );
    }
}

/// Found by the hostile review: list skipped payloads, so a cut inside one lost the record
/// after it instead; a rebuilt manifest shrank a disk whose end was cut off without a word;
/// damage between the index and the footer passed seekable readers.
#[test]
fn list_rebuilt_sizes_and_the_tail_are_accounted_for() {
    let (ar, _) = make_archive(2);
    let (rec, off, len) = chunk_record(&ar, 0, 2);
    let mut cut = ar[..rec as usize + 300].to_vec();
    cut.extend_from_slice(&ar[rec as usize + 400..]);
    let l = vdar::list::list_stream(&mut &cut[..]).unwrap();
    let v = vdar::verify::verify(&mut &cut[..]).unwrap();
    assert_eq!(l.lost, v.lost);
    assert!(
        l.lost
            .iter()
            .any(|x| x.start == off && x.end == off + len as u64),
        "{l:#?}"
    );
    // Both manifests lost and the end cut off: the rest of the disk is reported, not dropped.
    let mut d = ar[..chunk_record(&ar, 0, 2).0 as usize].to_vec();
    d[64 + 80 + 30] ^= 0x10;
    let r = restore(&d, Mode::Seekable, crate::util::tempdir().path());
    let cap = r.disks[0].capacity;
    assert!(
        r.lost
            .iter()
            .any(|l| l.disk == "disk0" && l.start == cap && l.end > cap),
        "{r:#?}"
    );
    // The manifest copy and the padding are checked by the index path too.
    let copy = find_last(&ar, b"\"vdar_version\"");
    let mut d = ar.clone();
    d[copy] ^= 0x10;
    let strict = restore_seekable(
        &mut Cursor::new(&d),
        crate::util::tempdir().path(),
        &RestoreOptions::default(),
    );
    assert!(strict.is_err());
    assert!(vdar::list::list_seekable(&mut Cursor::new(&d)).is_err());
}

/// Zero bytes after the footer (a tape copied with its last block padded) are not damage, to
/// any reader; anything else after it is.
#[test]
fn zero_padding_after_the_footer_is_not_damage() {
    let (ar, expect) = make_archive(2);
    let mut padded = ar.clone();
    padded.extend(std::iter::repeat_n(0u8, 70_000));
    assert!(vdar::verify::verify(&mut &padded[..]).unwrap().ok);
    assert!(
        vdar::verify::verify_file(&mut Cursor::new(&padded))
            .unwrap()
            .ok
    );
    assert!(
        vdar::list::list_seekable(&mut Cursor::new(&padded))
            .unwrap()
            .complete
    );
    assert!(vdar::list::list_stream(&mut &padded[..]).unwrap().complete);
    for mode in [Mode::Seekable, Mode::Piped] {
        let dir = crate::util::tempdir();
        let opts = RestoreOptions::default();
        let r = match mode {
            Mode::Seekable => restore_seekable(&mut Cursor::new(&padded), dir.path(), &opts),
            Mode::Piped => restore_stream(&mut &padded[..], dir.path(), &opts),
        };
        assert!(r.unwrap().is_complete());
        crate::archive::check_restored(dir.path(), &expect);
    }
    padded.push(1);
    assert!(!vdar::verify::verify(&mut &padded[..]).unwrap().ok);
    assert!(vdar::list::list_seekable(&mut Cursor::new(&padded)).is_err());
}
