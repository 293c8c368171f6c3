//! Chunks read through the `blockio` read-ahead pipeline (io_uring, or pread as the fallback),
//! so a backup keeps many reads in flight on local files and LUNs alike instead of one
//! positioned read at a time.
//!
//! Each [`ChunkPlan`] becomes a run of jobs: a start marker, one read per data piece of at most
//! [`READ_BYTES`], compressed grains passed through (inflating them is CPU work done here), and
//! an end marker. The read-ahead hands the jobs back in order, so chunks come out in disk order.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::blockio::{Job, ReadAhead, ReadOptions, ReadRequest};
use crate::chain::{read_run, DiskRun, VirtualDisk};
use crate::error::Result;
use crate::input::{FileId, FileTable, Source};

use super::{Chunk, ChunkBytes, ChunkData, ChunkPlan, ChunkPool, Chunker};

/// Largest single read. Buffers are pooled per queue slot, so this bounds the reader's memory
/// (queue depth × 1 MiB) whatever the chunk size; 1 MiB is already past the point where larger
/// requests stop helping on disks and LUNs.
pub const READ_BYTES: u64 = 1 << 20;

/// What a job means when it comes back.
#[derive(Debug)]
enum Tag {
    /// A chunk begins; no parts follow when `zero`. `gaps` are the chunk's byte ranges that no
    /// part covers (zero runs inside it); the parts fill `packed_len` bytes.
    Start {
        disk: u32,
        offset: u64,
        len: u64,
        zero: bool,
        gaps: Vec<(usize, usize)>,
        packed_len: usize,
    },
    /// Read bytes for packed bytes `[at, at + len)` (the parts end to end, zero runs left out).
    Data { at: usize },
    /// One read serving several parts: each `(from, at, len)` copies read bytes
    /// `[from, from + len)` to packed bytes `[at, at + len)`; the rest of the read is unwanted.
    Gather { pieces: Vec<(usize, usize, usize)> },
    /// A compressed grain piece, inflated on arrival into packed bytes from `at`.
    Deflate { part: DiskRun, at: usize },
    /// The chunk is complete.
    End,
}

type Jobs<'a> = Box<dyn Iterator<Item = Result<Job<Tag>>> + 'a>;

/// Reads the chunks of one disk in order, with reads in flight ahead of the consumer.
pub struct ChunkReader<'a> {
    files: FileTable,
    ahead: ReadAhead<Tag, Jobs<'a>>,
    pool: Arc<ChunkPool>,
}

impl<'a> ChunkReader<'a> {
    /// Chunks `disk` (ordinal `id`) into `chunk_size`-byte pieces, reading with `opts` into
    /// buffers from `pool` (the consumer gives them back when done with them).
    pub fn new(
        disk: &'a mut dyn VirtualDisk,
        id: u32,
        chunk_size: u64,
        opts: &ReadOptions,
        pool: Arc<ChunkPool>,
    ) -> Result<Self> {
        let files = disk.files().clone();
        let job_files = files.clone();
        let mut chunker = Chunker::new(disk, id, chunk_size);
        let mut queue: VecDeque<Job<Tag>> = VecDeque::new();
        let jobs: Jobs<'a> = Box::new(std::iter::from_fn(move || {
            if queue.is_empty() {
                match chunker.next_plan() {
                    Ok(Some(plan)) => plan_jobs(&plan, &job_files, &mut queue),
                    Ok(None) => return None,
                    Err(e) => return Some(Err(e)),
                }
            }
            queue.pop_front().map(Ok)
        }));
        Ok(ChunkReader {
            files,
            ahead: ReadAhead::new(jobs, opts)?,
            pool,
        })
    }

    /// The next chunk, or `None` at the end of the disk.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        let mut cur: Option<(Chunk, ChunkBytes)> = None;
        while let Some(done) = self.ahead.next() {
            let done = done?;
            match done.tag {
                Tag::Start {
                    disk,
                    offset,
                    len,
                    zero,
                    gaps,
                    packed_len,
                } => {
                    let chunk = Chunk {
                        disk,
                        offset,
                        len,
                        data: ChunkData::Zero,
                    };
                    if zero {
                        return Ok(Some(chunk));
                    }
                    // Every packed byte is overwritten by a part: reused buffers need no clearing.
                    let bytes = ChunkBytes {
                        packed: self.pool.take(packed_len, len as usize),
                        zeros: gaps,
                        len: len as usize,
                    };
                    cur = Some((chunk, bytes));
                }
                Tag::Data { at } => {
                    let buf = done.data.expect("invariant: data jobs carry a read");
                    let (_, bytes) = cur.as_mut().expect("invariant: parts follow a start");
                    bytes.packed[at..at + buf.len()].copy_from_slice(&buf);
                    self.ahead.recycle(buf);
                }
                Tag::Gather { pieces } => {
                    let buf = done.data.expect("invariant: gather jobs carry a read");
                    let (_, bytes) = cur.as_mut().expect("invariant: parts follow a start");
                    for (from, at, len) in pieces {
                        bytes.packed[at..at + len].copy_from_slice(&buf[from..from + len]);
                    }
                    self.ahead.recycle(buf);
                }
                Tag::Deflate { part, at } => {
                    let (_, bytes) = cur.as_mut().expect("invariant: parts follow a start");
                    read_run(
                        &self.files,
                        &part,
                        0,
                        &mut bytes.packed[at..at + part.len as usize],
                    )?;
                }
                Tag::End => {
                    let (mut chunk, bytes) = cur.take().expect("invariant: end follows a start");
                    chunk.data = ChunkData::Data(bytes);
                    return Ok(Some(chunk));
                }
            }
        }
        Ok(None)
    }
}

/// Appends the jobs of one chunk.
fn plan_jobs(plan: &ChunkPlan, files: &FileTable, queue: &mut VecDeque<Job<Tag>>) {
    let zero = plan.parts.is_empty();
    let gaps = if zero { Vec::new() } else { plan.gaps() };
    let packed_len = plan.packed_len();
    queue.push_back(Job {
        tag: Tag::Start {
            disk: plan.disk,
            offset: plan.offset,
            len: plan.len,
            zero,
            gaps,
            packed_len,
        },
        read: None,
    });
    if zero {
        return;
    }
    let mut at = 0;
    let mut gathered: Vec<Piece> = Vec::new();
    for part in &plan.parts {
        match part.source {
            Source::Data { file, offset } if part.len <= READ_BYTES => {
                if files.get(file).gather_gap() > 0 {
                    gathered.push(Piece {
                        file,
                        offset,
                        len: part.len,
                        at,
                    });
                } else {
                    push_read(queue, files, file, offset, part.len, at);
                }
            }
            Source::Data { file, offset } => {
                let mut done = 0;
                while done < part.len {
                    let n = (part.len - done).min(READ_BYTES);
                    push_read(queue, files, file, offset + done, n, at + done as usize);
                    done += n;
                }
            }
            _ => queue.push_back(Job {
                tag: Tag::Deflate { part: *part, at },
                read: None,
            }),
        }
        at += part.len as usize;
    }
    push_gathered(queue, files, gathered);
    queue.push_back(Job {
        tag: Tag::End,
        read: None,
    });
}

/// A data part waiting to be joined with its neighbours in the same file.
struct Piece {
    file: FileId,
    offset: u64,
    len: u64,
    at: usize,
}

fn push_read(
    queue: &mut VecDeque<Job<Tag>>,
    files: &FileTable,
    file: FileId,
    offset: u64,
    len: u64,
    at: usize,
) {
    queue.push_back(Job {
        tag: Tag::Data { at },
        read: Some(ReadRequest {
            source: files.get(file).clone(),
            offset,
            len: len as usize,
        }),
    });
}

/// Reads `pieces` (each at most [`READ_BYTES`]) with as few requests as their sources'
/// [`ByteSource::gather_gap`](crate::input::ByteSource::gather_gap) allows: per file, in file
/// order, a piece starting at most that gap after the previous one's end joins its read while
/// the read stays within [`READ_BYTES`]. Overlapping pieces (two grains sharing file bytes)
/// never join.
fn push_gathered(queue: &mut VecDeque<Job<Tag>>, files: &FileTable, mut pieces: Vec<Piece>) {
    pieces.sort_by_key(|p| (p.file, p.offset));
    let mut i = 0;
    while i < pieces.len() {
        let first = &pieces[i];
        let gap = files.get(first.file).gather_gap();
        let mut end = first.offset + first.len;
        let mut j = i + 1;
        while let Some(p) = pieces.get(j) {
            let joins = p.file == first.file
                && p.offset >= end
                && p.offset - end <= gap
                && p.offset + p.len - first.offset <= READ_BYTES;
            if !joins {
                break;
            }
            end = p.offset + p.len;
            j += 1;
        }
        let group = &pieces[i..j];
        let tag = match group {
            [one] => Tag::Data { at: one.at },
            _ => Tag::Gather {
                pieces: group
                    .iter()
                    .map(|p| ((p.offset - first.offset) as usize, p.at, p.len as usize))
                    .collect(),
            },
        };
        queue.push_back(Job {
            tag,
            read: Some(ReadRequest {
                source: files.get(first.file).clone(),
                offset: first.offset,
                len: (end - first.offset) as usize,
            }),
        });
        i = j;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockio::Backend;
    use crate::fixture::memdisk::MemDisk;
    use crate::input::MemSource;

    fn chunks(mut next: impl FnMut() -> Result<Option<Chunk>>) -> Vec<(u64, u64, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        while let Some(c) = next().unwrap() {
            let data = match c.data {
                ChunkData::Zero => None,
                ChunkData::Data(b) => Some(b.to_plain()),
            };
            out.push((c.offset, c.len, data));
        }
        out
    }

    #[test]
    fn read_ahead_chunks_equal_serial_chunks() {
        let cs = 256 << 10;
        let len = 9 * cs + 4096;
        let data: Vec<u8> = (0..len).map(|i| (i * 31 + i / 7000) as u8).collect();
        // Zero runs: a whole chunk, a piece inside one, and one crossing a chunk boundary.
        let zeros = [
            (cs as u64, cs as u64),
            (3 * cs as u64 + 4096, 8192),
            (5 * cs as u64 - 65536, 131072),
        ];
        let mut d = MemDisk::new("d", data.clone(), &zeros);
        let serial = {
            let mut c = Chunker::new(&mut d, 3, cs as u64);
            chunks(|| c.next_chunk())
        };
        for (backend, qd) in [(Backend::Pread, 1), (Backend::Auto, 4), (Backend::Auto, 64)] {
            let mut d = MemDisk::new("d", data.clone(), &zeros);
            let opts = ReadOptions {
                queue_depth: qd,
                backend,
            };
            let pool = Arc::new(ChunkPool::new(0));
            let mut r = ChunkReader::new(&mut d, 3, cs as u64, &opts, pool).unwrap();
            let got = chunks(|| r.next_chunk());
            assert_eq!(got, serial, "{backend:?} qd {qd}");
        }
        assert!(serial[1].2.is_none(), "the all-zero chunk is not read");
        let flat: Vec<u8> = serial
            .iter()
            .flat_map(|(_, l, d)| d.clone().unwrap_or(vec![0; *l as usize]))
            .collect();
        let mut want = data;
        for (o, l) in zeros {
            want[o as usize..(o + l) as usize].fill(0);
        }
        assert_eq!(flat, want);
    }

    #[test]
    fn gathered_reads_equal_serial_chunks() {
        let cs = 256 << 10;
        let len = 6 * cs;
        let data: Vec<u8> = (0..len).map(|i| (i * 13 + i / 5000) as u8).collect();
        // Small holes between data parts: joined into one read when the gap allows.
        let zeros = [
            (4096, 512),
            (8192, 4096),
            (cs as u64 - 1024, 2048),
            (3 * cs as u64, 40960),
        ];
        let serial = {
            let mut d = MemDisk::new("d", data.clone(), &zeros);
            let mut c = Chunker::new(&mut d, 0, cs as u64);
            chunks(|| c.next_chunk())
        };
        for gap in [512, 4096, 32 << 10, 1 << 20] {
            let mut d = MemDisk::with_gap("d", data.clone(), &zeros, gap);
            let opts = ReadOptions {
                queue_depth: 4,
                backend: Backend::Auto,
            };
            let pool = Arc::new(ChunkPool::new(0));
            let mut r = ChunkReader::new(&mut d, 0, cs as u64, &opts, pool).unwrap();
            assert_eq!(chunks(|| r.next_chunk()), serial, "gap {gap}");
        }
    }

    #[test]
    fn pieces_join_within_the_gap_in_file_order_and_never_overlap() {
        let mut files = FileTable::default();
        let near = files.add(Arc::new(
            MemSource::new("near", vec![0; 4 << 20]).gathering(4096),
        ));
        let piece = |offset: u64, len: u64, at: usize| Piece {
            file: near,
            offset,
            len,
            at,
        };
        let mut queue = VecDeque::new();
        // Out of file order (a redo log's grains), a 4 KiB gap, a 4 KiB + 1 gap, an overlap,
        // and a piece that would take the read past READ_BYTES.
        let pieces = vec![
            piece(8192, 4096, 0),
            piece(0, 4096, 4096),
            piece(16385, 100, 8192),
            piece(16400, 10, 8292),
            piece(20000, READ_BYTES - 3000, 8302),
        ];
        push_gathered(&mut queue, &files, pieces);
        let got: Vec<(u64, usize, String)> = queue
            .into_iter()
            .map(|j| {
                let r = j.read.unwrap();
                (r.offset, r.len, format!("{:?}", j.tag))
            })
            .collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!((got[0].0, got[0].1), (0, 12288));
        assert!(
            got[0].2.contains("(0, 4096, 4096), (8192, 0, 4096)"),
            "{got:?}"
        );
        assert_eq!((got[1].0, got[1].1), (16385, 100));
        // 16400 overlaps the piece before; joining 20000 would read READ_BYTES + 600 bytes.
        assert_eq!((got[2].0, got[2].1), (16400, 10));
        assert_eq!((got[3].0, got[3].1), (20000, READ_BYTES as usize - 3000));
    }

    #[test]
    fn recycled_buffers_leave_nothing_of_earlier_chunks() {
        // Every buffer handed out has held 0xAA bytes; zero runs inside chunks must still read
        // as zeros and data as data.
        let cs = 64 << 10;
        let len = 6 * cs + 512;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 | 1).collect();
        let zeros = [
            (4096, 8192),
            (cs as u64 - 512, 1024),
            (3 * cs as u64, cs as u64),
        ];
        let serial = {
            let mut d = MemDisk::new("d", data.clone(), &zeros);
            let mut c = Chunker::new(&mut d, 0, cs as u64);
            chunks(|| c.next_chunk())
        };
        let pool = Arc::new(ChunkPool::new(4));
        for _ in 0..4 {
            pool.give(vec![0xAA; cs]);
        }
        let mut d = MemDisk::new("d", data, &zeros);
        let opts = ReadOptions {
            queue_depth: 4,
            backend: Backend::Auto,
        };
        let mut r = ChunkReader::new(&mut d, 0, cs as u64, &opts, pool.clone()).unwrap();
        let mut got = Vec::new();
        while let Some(c) = r.next_chunk().unwrap() {
            let bytes = match c.data {
                ChunkData::Zero => None,
                ChunkData::Data(b) => {
                    pool.give(vec![0xAA; b.packed.len()]);
                    Some(b.to_plain())
                }
            };
            got.push((c.offset, c.len, bytes));
        }
        assert_eq!(got, serial);
    }
}
