//! Writing a collapsed disk as raw bytes to a file (zero runs as holes) or a stream.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use crate::blockio::{Job, ReadAhead, ReadOptions, ReadRequest};
use crate::chain::{read_run, DiskRun, VirtualDisk};
use crate::input::Source;
use crate::restore::{DiskSink, RawSink, RawStream};
use crate::staged::Staged;
use anyhow::Context;

use super::stdout::{output_error, Located};

/// Bytes per read request: large reads for sequential throughput; with the default queue depth
/// of 16 the pipeline holds 16 MiB of buffers.
const IO_BYTES: usize = 1 << 20;

/// Where raw bytes go: a regular file (zero runs as holes), written as `NAME.partial` and
/// renamed into place by [`RawOut::commit`], or a stream (stdout, a device, a FIFO) that gets
/// every byte. The sinks are the restore's ([`crate::restore::RawSink`], [`RawStream`]).
pub struct RawOut {
    sink: Box<dyn DiskSink>,
    name: String,
    staged: Option<Staged>,
}

impl RawOut {
    /// Opens `path` (`-` is stdout) for a disk of `capacity` bytes. An existing regular file is
    /// replaced, but only once the new one is complete.
    pub fn create(path: &Path, capacity: u64, force: bool) -> anyhow::Result<RawOut> {
        let name = if path == Path::new("-") {
            "stdout".to_string()
        } else {
            path.display().to_string()
        };
        let stream = |w: Box<dyn Write + Send>| RawOut {
            sink: Box::new(RawStream::new(
                Box::new(io::BufWriter::with_capacity(1 << 20, Located::new(w))),
                &name,
            )),
            name: name.clone(),
            staged: None,
        };
        if path == Path::new("-") {
            super::stdout::refuse_terminal("a disk image")?;
            return Ok(stream(Box::new(io::stdout())));
        }
        match std::fs::metadata(path) {
            // A device or FIFO given by name: it cannot have holes.
            Ok(m) if !m.is_file() => {
                let f = File::options()
                    .write(true)
                    .open(path)
                    .with_context(|| format!("{}: cannot open for writing", path.display()))?;
                Ok(stream(Box::new(f)))
            }
            _ => {
                let mut staged = Staged::default();
                let (partial, f) = staged.create(path, force)?;
                Ok(RawOut {
                    sink: Box::new(RawSink::new(partial, f, capacity)?),
                    name,
                    staged: Some(staged),
                })
            }
        }
    }

    /// Puts a completed file under its name (nothing to do for a stream).
    pub fn commit(mut self) -> anyhow::Result<()> {
        if let Some(s) = &mut self.staged {
            s.commit()?;
        }
        Ok(())
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
/// The caller commits `out` once the copy is known good.
pub fn copy_disk(
    disk: &mut dyn VirtualDisk,
    out: &mut RawOut,
    read: &ReadOptions,
) -> anyhow::Result<CopyStats> {
    let mut stats = CopyStats::default();
    let files = disk.files().clone();
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
    let name = out.name.clone();
    let sink = &mut out.sink;
    let written = |r: crate::Result<()>| r.map_err(|e| output_error(&name, e.into()));
    while let Some(done) = reader.next() {
        let done = done?;
        match done.tag {
            Item::Data { at } => {
                let buf = done.data.expect("invariant: data jobs carry a read");
                written(sink.write_data(at, &buf))?;
                stats.data_bytes += buf.len() as u64;
                reader.recycle(buf);
            }
            Item::Deflate { run, skip, len } => {
                read_run(&files, &run, skip, &mut inflated[..len])?;
                written(sink.write_data(run.offset + skip, &inflated[..len]))?;
                stats.data_bytes += len as u64;
            }
            Item::Zero { at, len } => {
                written(sink.write_zero(at, len))?;
                stats.zero_bytes += len;
            }
        }
    }
    written(sink.finish())?;
    Ok(stats)
}
