//! KDMV sparse extents against qemu-img as the oracle: every file is flattened through
//! `SparseExtent::map` + `read_source` and compared with `qemu-img convert -O raw` of the same
//! file. Covers monolithicSparse (odd capacity, zeroed grains), twoGbMaxExtentSparse parts,
//! streamOptimized in qemu's layout, and VMware's layout from our own writer (also checked by
//! libvmdk when it is installed).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vdar::fixture::streamopt::write_vmware_streamopt;
use vdar::input::read::read_source;
use vdar::input::sparse::SparseExtent;
use vdar::input::{ByteSource, ExtentMap, FileTable, LocalFile, Run, Source};

use crate::util::{qemu_io, qemu_raw, run, tempdir};

/// Opens one extent file.
fn open(path: &Path) -> (FileTable, SparseExtent) {
    let mut files = FileTable::default();
    let id = files.add(Arc::new(LocalFile::open(path).expect("open file")));
    let extent = SparseExtent::open(&files, id).expect("open sparse extent");
    (files, extent)
}

/// All runs of an extent, in order, asking for the whole remainder each time.
fn runs(extent: &mut SparseExtent) -> Vec<Run> {
    let mut out = Vec::new();
    let mut lba = 0;
    while lba < extent.sectors() {
        let r = extent.map(lba, extent.sectors() - lba).expect("map");
        assert!(r.sectors >= 1 && lba + r.sectors <= extent.sectors());
        lba += r.sectors;
        out.push(r);
    }
    out
}

/// Flattens `extents` (concatenated, as a descriptor's extent list would) and compares them with
/// the raw image `raw` without reading the raw file's holes: zero runs are checked only against
/// the raw file's data regions. Returns the runs of each extent.
fn compare_with_raw(extents: &[PathBuf], raw: &Path) -> Vec<Vec<Run>> {
    const CHUNK: u64 = 4 << 20;
    let raw = LocalFile::open(raw).expect("open raw");
    let mut pos = 0u64; // byte offset in the concatenated disk
    let mut all = Vec::new();
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for path in extents {
        let (files, mut extent) = open(path);
        let runs = runs(&mut extent);
        for r in &runs {
            let len = r.sectors * 512;
            match r.source {
                Source::Zero | Source::Unallocated => {
                    let mut at = pos;
                    while let Some((start, end)) = raw.next_data(at).expect("seek data") {
                        if start >= pos + len {
                            break;
                        }
                        let end = end.min(pos + len);
                        let mut s = start;
                        while s < end {
                            let n = (end - s).min(CHUNK);
                            want.resize(n as usize, 0);
                            raw.read_exact_at(&mut want, s).expect("read raw");
                            if let Some(i) = want.iter().position(|&b| b != 0) {
                                panic!(
                                    "{}: byte {:#x} of the disk is {:#x} in qemu's output but \
                                     a {:?} run says zeros",
                                    path.display(),
                                    s + i as u64,
                                    want[i],
                                    r.source
                                );
                            }
                            s += n;
                        }
                        at = end;
                    }
                }
                Source::Data { .. } | Source::Deflate { .. } => {
                    let mut done = 0;
                    while done < len {
                        let n = (len - done).min(CHUNK);
                        got.resize(n as usize, 0);
                        want.resize(n as usize, 0);
                        let source = match r.source {
                            Source::Data { file, offset } => Source::Data {
                                file,
                                offset: offset + done,
                            },
                            // Deflate runs stay inside one grain, far below CHUNK.
                            other => other,
                        };
                        read_source(&files, &source, &mut got).expect("read source");
                        raw.read_exact_at(&mut want, pos + done).expect("read raw");
                        if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
                            panic!(
                                "{}: byte {:#x} of the disk: vdar {:#x}, qemu {:#x} (run {:?})",
                                path.display(),
                                pos + done + i as u64,
                                got[i],
                                want[i],
                                r
                            );
                        }
                        done += n;
                    }
                }
            }
            pos += len;
        }
        all.push(runs);
    }
    assert_eq!(
        pos,
        raw.len(),
        "flattened size differs from qemu's raw image"
    );
    all
}

/// qemu's raw conversion of `img`, next to it.
fn oracle(img: &Path) -> PathBuf {
    let raw = img.with_extension("raw");
    qemu_raw(img, &raw);
    raw
}

fn qemu_img(args: &[&str]) {
    run("qemu-img", args);
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[test]
fn sparse_monolithic_odd_capacity() {
    require!("qemu-img");
    let dir = tempdir();
    let img = dir.path().join("mono.vmdk");
    // 16 MiB + 3 sectors: the last grain holds only 3 sectors.
    qemu_img(&["create", "-q", "-f", "vmdk", s(&img), "16778752"]);
    qemu_io(
        &img,
        &[
            "write -P 0xab 0 1M",
            "write -P 0xcd 4M 64k",
            "write -P 0x11 8M 4k",
            "write -P 0x5a 16M 1536",
        ],
    );
    let runs = compare_with_raw(std::slice::from_ref(&img), &oracle(&img));
    let runs = &runs[0];
    // The 1 MiB write allocated 16 grains back to back: one data run, not 16.
    assert_eq!(runs[0].sectors, 2048, "{runs:?}");
    assert!(matches!(runs[0].source, Source::Data { .. }));
    assert!(runs.len() <= 7, "runs not coalesced: {runs:?}");
    assert_eq!(runs.last().expect("runs").sectors, 3);

    let (_, extent) = open(&img);
    assert_eq!(extent.capacity_sectors(), 32771);
    assert_eq!(extent.version(), 1);
    assert!(!extent.is_stream_optimized());
    let desc = extent.embedded_descriptor().expect("desc").expect("some");
    assert!(desc.contains("createType=\"monolithicSparse\""), "{desc}");
}

#[test]
fn sparse_zeroed_grain() {
    require!("qemu-img");
    let dir = tempdir();
    let img = dir.path().join("z.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "zeroed_grain=on",
        s(&img),
        "8M",
    ]);
    qemu_io(&img, &["write -P 0x77 0 512k", "write -z 64k 128k"]);
    let runs = compare_with_raw(std::slice::from_ref(&img), &oracle(&img));
    let (_, mut extent) = open(&img);
    assert_eq!(extent.version(), 2);
    // Two whole aligned grains written with -z are explicit zero grains, one run.
    let r = extent.map(128, 1 << 20).expect("map");
    assert_eq!((r.sectors, r.source), (256, Source::Zero), "{runs:?}");
}

#[test]
fn sparse_two_gb_split_parts() {
    require!("qemu-img");
    let dir = tempdir();
    let img = dir.path().join("split.vmdk");
    // Just over 4 GiB: two full 2 GiB parts and a small third one.
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "subformat=twoGbMaxExtentSparse",
        s(&img),
        "4097M",
    ]);
    qemu_io(
        &img,
        &[
            "write -P 0x42 2047M 2M",
            "write -P 0x43 4096M 64k",
            "write -P 0x44 100M 4k",
        ],
    );
    let parts: Vec<PathBuf> = (1..=3)
        .map(|i| dir.path().join(format!("split-s{i:03}.vmdk")))
        .collect();
    let runs = compare_with_raw(&parts, &oracle(&img));
    assert_eq!(runs.len(), 3);
    // The write straddling the split put data at the end of part 1 and the start of part 2.
    assert!(matches!(
        runs[0].last().expect("runs").source,
        Source::Data { .. }
    ));
    assert!(matches!(runs[1][0].source, Source::Data { .. }));
    // A 2 GiB part that is mostly unallocated maps in a handful of runs.
    assert!(runs[1].len() <= 3, "{:?}", runs[1]);
}

#[test]
fn sparse_stream_optimized_qemu_layout() {
    require!("qemu-img");
    let dir = tempdir();
    let src = dir.path().join("src.vmdk");
    let so = dir.path().join("so.vmdk");
    // Two grain tables and a partial last grain.
    qemu_img(&["create", "-q", "-f", "vmdk", s(&src), "34079232"]);
    qemu_io(
        &src,
        &[
            "write -P 0x21 0 200k",
            "write -P 0x22 32704k 128k",
            "write -P 0x23 33279k 1k",
            "write -P 0x24 33280k 512",
        ],
    );
    qemu_img(&[
        "convert",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        s(&src),
        s(&so),
    ]);
    let runs = compare_with_raw(std::slice::from_ref(&so), &oracle(&so));
    assert!(runs[0]
        .iter()
        .any(|r| matches!(r.source, Source::Deflate { marker: true, .. })));
    // The one-sector final grain inflates to one sector.
    let last = runs[0].last().expect("runs");
    assert_eq!(last.sectors, 1);
    assert!(
        matches!(
            last.source,
            Source::Deflate {
                grain_bytes: 512,
                ..
            }
        ),
        "{last:?}"
    );
    let (_, extent) = open(&so);
    assert!(extent.is_stream_optimized());
    assert_eq!(extent.version(), 3);
}

/// A raw image with incompressible grains, pattern grains, a run straddling the first grain
/// table boundary (32 MiB), zero grains in between and a partial final grain.
fn vmware_image() -> Vec<u8> {
    let sectors = (40 << 20) / 512 + 3;
    let mut img = vec![0u8; sectors * 512];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for b in &mut img[64 << 10..192 << 10] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    img[(1 << 20) + 512..(1 << 20) + 1024].fill(0x31);
    img[(32 << 20) - 4096..(32 << 20) + 4096].fill(0x32);
    let n = img.len();
    img[n - 1024..].fill(0x33);
    img
}

#[test]
fn sparse_stream_optimized_vmware_layout() {
    require!("qemu-img");
    let dir = tempdir();
    let path = dir.path().join("vmw.vmdk");
    let image = vmware_image();
    write_vmware_streamopt(&path, &image, "vmw.vmdk").expect("write");

    // qemu reads our writer's output back byte for byte...
    let raw = oracle(&path);
    assert!(
        std::fs::read(&raw).expect("read raw") == image,
        "qemu disagrees with the image"
    );
    // ...and so does our reader, through the footer.
    let runs = compare_with_raw(std::slice::from_ref(&path), &raw);
    assert!(runs[0]
        .iter()
        .all(|r| !matches!(r.source, Source::Data { .. })));
    let last = runs[0].last().expect("runs");
    assert_eq!(last.sectors, 3);
    assert!(
        matches!(
            last.source,
            Source::Deflate {
                grain_bytes: 1536,
                ..
            }
        ),
        "{last:?}"
    );
    // All-zero grains were omitted (GTE 0), so the zeros between the data grains come back as
    // a few long Unallocated runs, not one run per grain.
    assert!(runs[0].len() < 20, "{:?}", runs[0]);
    let (_, extent) = open(&path);
    assert!(extent.is_stream_optimized());
    assert_eq!(extent.capacity_sectors() * 512, image.len() as u64);
    let desc = extent.embedded_descriptor().expect("desc").expect("some");
    assert!(desc.contains("createType=\"streamOptimized\""), "{desc}");
    assert!(desc.contains("RW 81923 SPARSE \"vmw.vmdk\""), "{desc}");
    assert!(desc.contains("parentCID=ffffffff"), "{desc}");
}

#[test]
fn sparse_vmware_layout_libvmdk() {
    require!("vmdkinfo");
    let dir = tempdir();
    let path = dir.path().join("vmw.vmdk");
    write_vmware_streamopt(&path, &vmware_image(), "vmw.vmdk").expect("write");
    let out = run("vmdkinfo", &[s(&path)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Stream optimized"), "{text}");
}
