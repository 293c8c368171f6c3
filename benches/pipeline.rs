//! Chunk hash + compress throughput: the per-chunk work of the parallel stage
//! (`pipeline::compress::process`) at several chunk sizes, on half-compressible data; and the
//! cost of finding a chunk's zero blocks (`ChunkBytes::canonicalize`), which every read chunk
//! pays before hashing.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use std::sync::Mutex;

use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput,
};
use vdar::chunk::dedup::DedupTable;
use vdar::chunk::{Chunk, ChunkBytes, ChunkData, ChunkPool};
use vdar::pipeline::compress::{process, Processed};

/// Pseudo-random bytes with every other 4 KiB block text-like (compresses about 2:1).
fn data(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (i / 4096) % 2 == 0 {
                x as u8
            } else {
                b"vdar text "[i % 10]
            }
        })
        .collect()
}

fn hash_compress(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunk_hash_compress");
    g.sample_size(10);
    let table = Mutex::new(DedupTable::default());
    // Payload buffers come back for reuse, as the pipeline's writer hands them back.
    let pool = ChunkPool::new(1);
    for cs in [64usize << 10, 256 << 10, 1 << 20, 4 << 20] {
        // No zero blocks: processing leaves the chunk as it is, so it can be processed again.
        let mut chunk = Chunk {
            disk: 0,
            offset: 0,
            len: cs as u64,
            data: ChunkData::Data(ChunkBytes::dense(data(cs))),
        };
        g.throughput(Throughput::Bytes(cs as u64));
        g.bench_function(BenchmarkId::new("zstd3", cs >> 10), |b| {
            b.iter(|| {
                if let Processed::Data { payload, .. } =
                    process(black_box(&mut chunk), 3, &table, None, None, &pool).unwrap()
                {
                    pool.give(payload);
                }
            })
        });
        if let ChunkData::Data(ChunkBytes { packed: d, .. }) = &chunk.data {
            g.bench_with_input(BenchmarkId::new("blake3", cs >> 10), d, |b, d| {
                b.iter(|| blake3::hash(black_box(d)))
            });
        }
    }
    g.finish();
}

fn zero_blocks(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunk_zero_blocks");
    let cs = 4 << 20;
    let dense = data(cs);
    // Every eighth 4 KiB block read as zeros: the data moves down in place.
    let mut holey = dense.clone();
    for b in holey.chunks_mut(4096).step_by(8) {
        b.fill(0);
    }
    g.throughput(Throughput::Bytes(cs as u64));
    for (name, bytes) in [("none", dense), ("every_8th", holey)] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || ChunkBytes::dense(bytes.clone()),
                |mut c| {
                    c.canonicalize();
                    c
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, hash_compress, zero_blocks);
criterion_main!(benches);
