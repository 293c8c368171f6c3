//! io_uring vs pread on a fragmented SAN layout: one flat file of `VDAR_BENCH_MIB` (default
//! 1024) 1 MiB blocks, laid out by the LUN rig as single-block extents scattered out of order
//! over two LUN images, read in file order through `BlockMapSource` at queue depths 1 to 64,
//! with `O_DIRECT` (so the device, not the page cache, is measured) and buffered.
//!
//! Run: `cargo bench --bench blockio` (figures in formats/BLOCKMAP.md §7 / the final report).

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vdar::blockio::{Backend, Job, ReadAhead, ReadOptions, ReadRequest};
use vdar::fixture::lunrig::{lay_out, RigOptions};
use vdar::input::{ByteSource, SourceOpener};
use vdar::san::{BlockMap, BlockMapOpener, LunSet, ScanOptions};

const MIB: usize = 1 << 20;

fn setup(dir: &Path, mib: usize) -> (std::path::PathBuf, Vec<std::path::PathBuf>) {
    let vm = dir.join("vm");
    std::fs::create_dir_all(&vm).unwrap();
    // Incompressible, non-zero content so every block is a data run.
    let mut data = vec![0u8; MIB];
    let mut x = 0x1234_5678_9abc_def0u64;
    let f = std::fs::File::create(vm.join("big-flat.vmdk")).unwrap();
    use std::os::unix::fs::FileExt;
    for i in 0..mib {
        for c in data.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all_at(&data, (i * MIB) as u64).unwrap();
    }
    let out = dir.join("rig");
    let r = lay_out(
        &vm,
        &out,
        &RigOptions {
            luns: 2,
            pe_bytes: 256 << 20,
            block: MIB as u64,
            seed: 42,
            max_extent_blocks: 1,
            spread: 2,
            ..RigOptions::default()
        },
    )
    .unwrap();
    (r.map_path, r.luns)
}

fn read_all(src: &Arc<dyn ByteSource>, opts: &ReadOptions) -> u64 {
    let n = (src.len() as usize) / MIB;
    let jobs = (0..n).map(|i| {
        Ok(Job {
            tag: (),
            read: Some(ReadRequest {
                source: src.clone(),
                offset: (i * MIB) as u64,
                len: MIB,
            }),
        })
    });
    let mut ra = ReadAhead::new(jobs, opts).unwrap();
    let mut sum = 0u64;
    while let Some(d) = ra.next() {
        let buf = d.unwrap().data.unwrap();
        sum = sum.wrapping_add(u64::from(buf[0]));
        ra.recycle(buf);
    }
    sum
}

fn bench(c: &mut Criterion) {
    let mib: usize = std::env::var("VDAR_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::Builder::new()
        .prefix("vdar-bench-")
        .tempdir()
        .unwrap();
    let (map_path, luns) = setup(dir.path(), mib);
    let uring_ok = vdar::blockio::uring::probe().is_ok();
    for direct in [true, false] {
        let set = LunSet::scan(
            &luns.iter().map(|l| vec![l.clone()]).collect::<Vec<_>>(),
            ScanOptions { direct },
        )
        .unwrap();
        let opener =
            BlockMapOpener::new(&map_path, BlockMap::load(&map_path).unwrap(), set).unwrap();
        let src = opener.open(Path::new("big-flat.vmdk")).unwrap();
        let mut g = c.benchmark_group(if direct {
            "fragmented_1MiB_runs_odirect"
        } else {
            "fragmented_1MiB_runs_buffered"
        });
        g.throughput(Throughput::Bytes((mib * MIB) as u64));
        g.sample_size(10);
        g.warm_up_time(Duration::from_millis(500));
        g.measurement_time(Duration::from_secs(8));
        for qd in [1usize, 4, 16, 64] {
            for backend in [Backend::Pread, Backend::Uring] {
                if backend == Backend::Uring && !uring_ok {
                    continue;
                }
                // pread is synchronous: its queue depth does not change what it does, so it
                // runs once, at QD 1, as the baseline.
                if backend == Backend::Pread && qd > 1 {
                    continue;
                }
                let opts = ReadOptions {
                    queue_depth: qd,
                    backend,
                };
                let name = if backend == Backend::Uring {
                    "io_uring"
                } else {
                    "pread"
                };
                g.bench_with_input(BenchmarkId::new(name, qd), &opts, |b, o| {
                    b.iter(|| black_box(read_all(&src, o)))
                });
            }
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
