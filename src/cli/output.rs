//! Writing a collapsed disk as raw bytes to a file (zero runs as holes) or a stream.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::Context;
use vdar::chain::{read_run, VirtualDisk};

/// Bytes moved per read: large enough for sequential throughput, small enough to stay in cache.
const IO_BYTES: usize = 4 << 20;

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
            return Ok(RawSink::Stream(
                Box::new(io::BufWriter::with_capacity(1 << 20, io::stdout().lock())),
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
                Box::new(io::BufWriter::with_capacity(1 << 20, f)),
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

/// Copies the whole collapsed disk into `sink`.
pub fn copy_disk(disk: &mut dyn VirtualDisk, sink: RawSink) -> anyhow::Result<CopyStats> {
    let mut stats = CopyStats::default();
    let mut buf = vec![0u8; IO_BYTES];
    let zeros = vec![0u8; IO_BYTES];
    let capacity = disk.capacity();
    let (mut file, mut stream) = match sink {
        RawSink::File(f, p) => (Some((f, p)), None),
        RawSink::Stream(w, n) => (None, Some((w, n))),
    };
    if let Some((f, p)) = &file {
        // Truncate first so skipped zero runs really are holes, not stale bytes.
        f.set_len(0)
            .with_context(|| format!("{}: cannot truncate", p.display()))?;
    }
    while let Some(run) = disk.next_run()? {
        let mut done = 0u64;
        while done < run.len {
            let n = (run.len - done).min(IO_BYTES as u64) as usize;
            let chunk: &[u8] = if run.is_zero() {
                if stream.is_none() {
                    break;
                }
                &zeros[..n]
            } else {
                read_run(disk.files(), &run, done, &mut buf[..n])?;
                &buf[..n]
            };
            let at = run.offset + done;
            if let Some((f, p)) = &mut file {
                f.write_all_at(chunk, at)
                    .with_context(|| format!("{}: write at byte {at:#x}", p.display()))?;
            } else if let Some((w, name)) = &mut stream {
                w.write_all(chunk).map_err(|e| pipe_error(e, name, at))?;
            }
            done += n as u64;
        }
        if run.is_zero() {
            stats.zero_bytes += run.len;
        } else {
            stats.data_bytes += run.len;
        }
    }
    if let Some((f, p)) = &file {
        f.set_len(capacity)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("{}: cannot finish", p.display()))?;
    }
    if let Some((w, name)) = &mut stream {
        w.flush().map_err(|e| pipe_error(e, name, capacity))?;
    }
    Ok(stats)
}

/// A write error on a stream; a closed pipe means the reader got a truncated disk, which must
/// not look like success.
pub fn pipe_error(e: io::Error, name: &str, at: u64) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        anyhow::anyhow!("{name}: reader closed the pipe at byte {at:#x}: output is incomplete")
    } else {
        anyhow::Error::new(e).context(format!("{name}: write at byte {at:#x}"))
    }
}
