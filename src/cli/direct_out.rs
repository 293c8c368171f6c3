//! Archive file output that bypasses the page cache: whole aligned 4 MiB blocks go to the file
//! with `O_DIRECT` from a write-behind thread, the unaligned tail through a buffered handle.
//!
//! Why: written through the page cache, a backup archive cost the kernel's copy into it (3-6% of
//! the backup's CPU in profiles) and then sat dirty in memory until the final fsync, which waited
//! for all of it (0.7 s for 750 MB on the bench machine). The archive is not read back here, so
//! caching it only evicts what the host had cached. Direct writes leave nothing to flush at the
//! end; the write-behind thread keeps them overlapped with compression, as the kernel's
//! writeback did. File systems that refuse `O_DIRECT` (tmpfs) get buffered writes, silently.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::blockio::{AlignedBuf, DIRECT_ALIGN};
use crate::input::source::open_direct;
use crossbeam_channel::{bounded, Receiver, Sender};

use super::stdout::FailedWrite;

/// Size of one direct write (and of each staging buffer).
const BLOCK_BYTES: usize = 4 << 20;
/// Staging buffers: one filling, the others queued or being written.
const BUFFERS: usize = 3;

/// A full or final staging buffer: `len` bytes to write at `at`.
type Filled = (AlignedBuf, usize, u64);

/// Sequential writer of one new file.
pub struct DirectAppend {
    file: Arc<File>,
    stage: AlignedBuf,
    filled: usize,
    /// File offset of `stage`'s first byte.
    pos: u64,
    to_writer: Option<Sender<Filled>>,
    free: Receiver<AlignedBuf>,
    writer: Option<JoinHandle<io::Result<()>>>,
}

impl DirectAppend {
    /// Writes `file` (created empty at `path`) from offset 0.
    pub fn new(path: &Path, file: File) -> DirectAppend {
        let file = Arc::new(file);
        let direct = open_direct(path, true).ok();
        let (to_writer, jobs) = bounded::<Filled>(BUFFERS);
        let (give_back, free) = bounded(BUFFERS);
        for _ in 1..BUFFERS {
            give_back
                .send(AlignedBuf::new(BLOCK_BYTES))
                .expect("invariant: capacity");
        }
        let buffered = file.clone();
        let writer = std::thread::spawn(move || write_behind(jobs, give_back, direct, buffered));
        DirectAppend {
            file,
            stage: AlignedBuf::new(BLOCK_BYTES),
            filled: 0,
            pos: 0,
            to_writer: Some(to_writer),
            free,
            writer: Some(writer),
        }
    }

    /// Hands the staged bytes to the writer thread and takes a free buffer.
    fn ship(&mut self, len: usize) -> io::Result<()> {
        let next = match self.free.recv() {
            Ok(b) => b,
            Err(_) => return Err(self.writer_error()),
        };
        let full = std::mem::replace(&mut self.stage, next);
        let sent = self
            .to_writer
            .as_ref()
            .expect("invariant: open until finish")
            .send((full, len, self.pos));
        if sent.is_err() {
            return Err(self.writer_error());
        }
        self.pos += len as u64;
        Ok(())
    }

    /// The error that stopped the writer thread.
    fn writer_error(&mut self) -> io::Error {
        self.to_writer = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("archive writer thread panicked"),
            _ => io::Error::other("archive writer thread stopped"),
        }
    }

    /// Writes everything still staged and returns the file (for fsync).
    pub fn finish(mut self) -> io::Result<Arc<File>> {
        // The aligned part of the tail still goes direct; the rest through the page cache.
        let aligned = self.filled / DIRECT_ALIGN * DIRECT_ALIGN;
        let tail = self.stage.spare()[aligned..self.filled].to_vec();
        if aligned > 0 {
            self.ship(aligned)?;
        }
        self.to_writer = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(r)) => r?,
            _ => return Err(io::Error::other("archive writer thread panicked")),
        }
        self.file
            .write_all_at(&tail, self.pos)
            .map_err(|e| FailedWrite::wrap(self.pos, e))?;
        Ok(self.file.clone())
    }
}

impl Write for DirectAppend {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(BLOCK_BYTES - self.filled);
        self.stage.spare()[self.filled..self.filled + n].copy_from_slice(&data[..n]);
        self.filled += n;
        if self.filled == BLOCK_BYTES {
            self.filled = 0;
            self.ship(BLOCK_BYTES)?;
        }
        Ok(n)
    }

    /// Nothing to do before [`DirectAppend::finish`]: only whole blocks leave early.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for DirectAppend {
    fn drop(&mut self) {
        // Abandoned (an error elsewhere): stop the thread; the caller removes the file.
        self.to_writer = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// The writer thread: writes each buffer at its offset, direct while the file system takes it.
fn write_behind(
    jobs: Receiver<Filled>,
    give_back: Sender<AlignedBuf>,
    mut direct: Option<File>,
    buffered: Arc<File>,
) -> io::Result<()> {
    for (mut buf, len, at) in jobs {
        let bytes = &buf.spare()[..len];
        let r = match &direct {
            Some(d) => d.write_all_at(bytes, at),
            None => buffered.write_all_at(bytes, at),
        };
        match r {
            Ok(()) => {}
            // Opened with O_DIRECT but this write refused: buffered from here on.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                direct = None;
                buffered
                    .write_all_at(bytes, at)
                    .map_err(|e| FailedWrite::wrap(at, e))?;
            }
            Err(e) => return Err(FailedWrite::wrap(at, e)),
        }
        // The filling side may be gone (finished or failed); nothing more to hand back then.
        let _ = give_back.send(buf);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length around the block and alignment boundaries, in odd-sized writes, reads
    /// back exactly, on the file system of the target directory (O_DIRECT) and on /dev/shm
    /// (tmpfs: buffered) when present.
    #[test]
    fn bytes_written_in_any_pieces_read_back_exactly() {
        let dirs: Vec<tempfile::TempDir> = [Some(std::env::temp_dir()), Some("/dev/shm".into())]
            .into_iter()
            .flatten()
            .filter_map(|d| tempfile::tempdir_in(d).ok())
            .collect();
        for dir in &dirs {
            for len in [
                0,
                1,
                DIRECT_ALIGN - 1,
                DIRECT_ALIGN,
                BLOCK_BYTES - 1,
                BLOCK_BYTES,
                BLOCK_BYTES + 4097,
                3 * BLOCK_BYTES + 12345,
            ] {
                let data: Vec<u8> = (0..len)
                    .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
                    .collect();
                let path = dir.path().join(format!("a{len}"));
                let file = File::create(&path).unwrap();
                let mut out = DirectAppend::new(&path, file);
                for piece in data.chunks(100_003) {
                    out.write_all(piece).unwrap();
                }
                out.finish().unwrap();
                assert!(
                    std::fs::read(&path).unwrap() == data,
                    "{len} bytes in {dir:?}"
                );
            }
        }
    }
}
