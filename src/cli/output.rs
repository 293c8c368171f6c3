//! Writing a collapsed disk as raw bytes to a file (zero runs as holes) or a stream.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::Context;
use vdar::blockio::{Job, ReadAhead, ReadOptions, ReadRequest};
use vdar::chain::{read_run, DiskRun, VirtualDisk};
use vdar::input::Source;

use super::stdout::{output_error, Located};

/// Bytes per read request: large reads for sequential throughput; with the default queue depth
/// of 16 the pipeline holds 16 MiB of buffers.
const IO_BYTES: usize = 1 << 20;

/// Where raw bytes go.
pub enum RawSink {
    /// A regular file: data is written at its offset, zero runs are skipped (holes).
    File(File, std::path::PathBuf),
    /// A pipe or terminal: zeros are written out.
    Stream(Box<dyn Write>, String),
}

impl RawSink {
    /// Opens `path` (`-` is stdout) for a disk of `capacity` bytes.
    pub fn create(path: &Path) -> anyhow::Result<RawSink> {
        if path == Path::new("-") {
            let w = Located::new(io::stdout().lock());
            return Ok(RawSink::Stream(
                Box::new(io::BufWriter::with_capacity(1 << 20, w)),
                "stdout".into(),
            ));
        }
        let f = File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
        let is_file = f.metadata().map(|m| m.is_file()).unwrap_or(false);
        if is_file {
            Ok(RawSink::File(f, path.to_path_buf()))
        } else {
            // A device or FIFO given by name: it cannot have holes.
            Ok(RawSink::Stream(
                Box::new(io::BufWriter::with_capacity(1 << 20, Located::new(f))),
                path.display().to_string(),
            ))
        }
    }
}

/// Totals of one copy.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct CopyStats {
    /// Bytes read from data runs.
    pub data_bytes: u64,
    /// Bytes of zero runs (holes in a file output).
    pub zero_bytes: u64,
}

/// What the reader hands back, in disk order.
enum Item {
    /// Bytes read by the read-ahead pipeline, for disk offset `at`.
    Data { at: u64 },
    /// `len` zero bytes at `at`.
    Zero { at: u64, len: u64 },
    /// Part of a compressed grain, inflated here (deflate is CPU work, not device I/O).
    Deflate { run: DiskRun, skip: u64, len: usize },
}

/// Copies the whole collapsed disk into `sink`, reading through the `blockio` read-ahead
/// pipeline (io_uring, or pread as the fallback) for local files and LUNs alike.
pub fn copy_disk(
    disk: &mut dyn VirtualDisk,
    sink: RawSink,
    read: &ReadOptions,
) -> anyhow::Result<CopyStats> {
    let mut stats = CopyStats::default();
    let zeros = vec![0u8; IO_BYTES];
    let capacity = disk.capacity();
    let files = disk.files().clone();
    let (mut file, mut stream) = match sink {
        RawSink::File(f, p) => (Some((f, p)), None),
        RawSink::Stream(w, n) => (None, Some((w, n))),
    };
    if let Some((f, p)) = &file {
        // Truncate first so skipped zero runs really are holes, not stale bytes.
        f.set_len(0)
            .with_context(|| format!("{}: cannot truncate", p.display()))?;
    }
    // The job stream: each data run cut into IO_BYTES requests, zero runs and compressed grains
    // passed through in order.
    let mut cur: Option<(DiskRun, u64)> = None;
    let job_files = files.clone();
    let jobs = std::iter::from_fn(move || loop {
        if let Some((run, done)) = &mut cur {
            if *done < run.len {
                let n = (run.len - *done).min(IO_BYTES as u64);
                let at = run.offset + *done;
                let job = match run.source_at(*done) {
                    Source::Data { file, offset } => Job {
                        tag: Item::Data { at },
                        read: Some(ReadRequest {
                            source: job_files.get(file).clone(),
                            offset,
                            len: n as usize,
                        }),
                    },
                    Source::Deflate { .. } => Job {
                        tag: Item::Deflate {
                            run: *run,
                            skip: *done,
                            len: n as usize,
                        },
                        read: None,
                    },
                    Source::Zero | Source::Unallocated => {
                        let len = run.len - *done;
                        *done = run.len;
                        return Some(Ok(Job {
                            tag: Item::Zero { at, len },
                            read: None,
                        }));
                    }
                };
                *done += n;
                return Some(Ok(job));
            }
        }
        match disk.next_run() {
            Ok(Some(r)) => cur = Some((r, 0)),
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        }
    });
    let mut reader = ReadAhead::new(jobs, read)?;
    if let Some(n) = reader.notice() {
        eprintln!("vdar: notice: {n}");
    }
    let mut inflated = vec![0u8; IO_BYTES];
    let to_stream = stream.is_some();
    while let Some(done) = reader.next() {
        let done = done?;
        let mut emit = |chunk: &[u8], at: u64| -> anyhow::Result<()> {
            if let Some((f, p)) = &mut file {
                f.write_all_at(chunk, at)
                    .with_context(|| format!("{}: write at byte {at:#x}", p.display()))?;
            } else if let Some((w, name)) = &mut stream {
                w.write_all(chunk)
                    .map_err(|e| output_error(name, e.into()))?;
            }
            Ok(())
        };
        match done.tag {
            Item::Data { at } => {
                let buf = done.data.expect("invariant: data jobs carry a read");
                emit(&buf, at)?;
                stats.data_bytes += buf.len() as u64;
                reader.recycle(buf);
            }
            Item::Deflate { run, skip, len } => {
                read_run(&files, &run, skip, &mut inflated[..len])?;
                emit(&inflated[..len], run.offset + skip)?;
                stats.data_bytes += len as u64;
            }
            Item::Zero { at, len } => {
                stats.zero_bytes += len;
                if to_stream {
                    let mut done = 0;
                    while done < len {
                        let n = (len - done).min(IO_BYTES as u64) as usize;
                        emit(&zeros[..n], at + done)?;
                        done += n as u64;
                    }
                }
            }
        }
    }
    if let Some((f, p)) = &file {
        f.set_len(capacity)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("{}: cannot finish", p.display()))?;
    }
    if let Some((w, name)) = &mut stream {
        w.flush().map_err(|e| output_error(name, e.into()))?;
    }
    Ok(stats)
}
