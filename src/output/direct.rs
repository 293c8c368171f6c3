//! The positional direct writer: one file (or LUN) written at explicit offsets, bypassing the
//! page cache where the file system allows. Archive output ([`super::behind`]), raw image
//! restore ([`super::sink::RawSink`]) and SAN write-back all decide with it which handle a
//! piece goes through; write-back's queued writes ([`super::queue`]) redo a refused direct
//! write through the buffered handle, as [`DirectFile::write_at`] does.
//!
//! Why bypass the cache: written through it, the kernel's copy into the page cache was 3-6% of
//! a backup's CPU and the largest single cost of a restore (more than zstd), and gigabytes of
//! dirty pages evict whatever else the host caches, then make the final fsync wait for them.
//!
//! The one rule: a piece at a [`DIRECT_ALIGN`]-aligned offset goes out with `O_DIRECT` for its
//! aligned head (from an aligned buffer; bytes elsewhere are staged through one), the unaligned
//! tail through the buffered handle, which the kernel keeps coherent with direct writes. A file
//! system that refuses `O_DIRECT` when opening (tmpfs) or on a write (`EINVAL`) gets buffered
//! writes from then on, silently: the bytes are the same either way.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::located::FailedWrite;
use crate::blockio::{AlignedBuf, DIRECT_ALIGN};
use crate::input::source::open_direct;

/// Largest direct write staged at a time: one buffer, reused.
const STAGE_BYTES: usize = 4 << 20;

/// A file written at offsets through a buffered handle and, while the file system takes it, an
/// `O_DIRECT` one.
#[derive(Debug)]
pub struct DirectFile {
    path: Arc<Path>,
    buffered: Arc<File>,
    direct: Option<Arc<File>>,
    /// Staging for direct writes of bytes that are not in an aligned buffer; made on first use.
    stage: Option<AlignedBuf>,
}

impl DirectFile {
    /// `buffered` (created or opened for writing at `path`), plus an `O_DIRECT` handle when the
    /// file system gives one.
    pub fn open(path: &Path, buffered: File) -> DirectFile {
        let direct = open_direct(path, true).ok().map(Arc::new);
        DirectFile::from_handles(Arc::from(path), Arc::new(buffered), direct)
    }

    /// Handles opened elsewhere (a LUN opened for write-back after its identity check).
    pub fn from_handles(
        path: Arc<Path>,
        buffered: Arc<File>,
        direct: Option<Arc<File>>,
    ) -> DirectFile {
        DirectFile {
            path,
            buffered,
            direct,
            stage: None,
        }
    }

    /// The path, for errors.
    pub fn path(&self) -> &Arc<Path> {
        &self.path
    }

    /// The buffered handle (reads, fsync).
    pub fn buffered(&self) -> &Arc<File> {
        &self.buffered
    }

    /// Both handles, to fsync each one written through.
    pub fn handles(&self) -> impl Iterator<Item = &Arc<File>> {
        std::iter::once(&self.buffered).chain(self.direct.as_ref())
    }

    /// The handle for `len` bytes at file offset `offset` taken from buffer position `at` (of an
    /// aligned buffer), and whether it is the direct one. For callers that queue their writes.
    pub fn handle_for(&self, offset: u64, len: usize, at: usize) -> (&Arc<File>, bool) {
        match &self.direct {
            Some(d) if (offset as usize | len | at) % DIRECT_ALIGN == 0 => (d, true),
            _ => (&self.buffered, false),
        }
    }

    /// Writes `data` at `offset` by the rule above. The error carries the offset of the write
    /// that failed.
    pub fn write_at(&mut self, data: &[u8], offset: u64) -> Result<(), FailedWrite> {
        let head = if offset as usize % DIRECT_ALIGN == 0 && self.direct.is_some() {
            data.len() / DIRECT_ALIGN * DIRECT_ALIGN
        } else {
            0
        };
        let done = self.write_direct(&data[..head], offset)?;
        let at = offset + done as u64;
        self.buffered
            .write_all_at(&data[done..], at)
            .map_err(|cause| FailedWrite { at, cause })
    }

    /// Writes the aligned `data` at the aligned `offset` directly; returns how much went out
    /// before the file system refused `O_DIRECT` (the rest is the buffered path's).
    fn write_direct(&mut self, data: &[u8], offset: u64) -> Result<usize, FailedWrite> {
        let in_place = data.as_ptr() as usize % DIRECT_ALIGN == 0;
        let mut done = 0;
        while done < data.len() {
            let Some(d) = self.direct.clone() else {
                break;
            };
            let n = (data.len() - done).min(STAGE_BYTES);
            let piece = &data[done..done + n];
            let bytes = if in_place {
                piece
            } else {
                let stage = self
                    .stage
                    .get_or_insert_with(|| AlignedBuf::new(STAGE_BYTES))
                    .spare();
                stage[..n].copy_from_slice(piece);
                &stage[..n]
            };
            let at = offset + done as u64;
            match d.write_all_at(bytes, at) {
                Ok(()) => done += n,
                // Opened with O_DIRECT but this write refused: buffered from here on.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    self.direct = None;
                }
                Err(cause) => return Err(FailedWrite { at, cause }),
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Aligned and unaligned pieces, from aligned and unaligned memory, read back exactly on
    /// the target directory's file system (O_DIRECT) and on /dev/shm (tmpfs: buffered).
    #[test]
    fn pieces_of_any_alignment_read_back_exactly() {
        let dirs: Vec<tempfile::TempDir> = [std::env::temp_dir(), "/dev/shm".into()]
            .into_iter()
            .filter_map(|d| tempfile::tempdir_in(d).ok())
            .collect();
        let len = (9 << 20) + 777;
        let data: Vec<u8> = (0..len)
            .map(|i| (i % 253) as u8 ^ (i >> 13) as u8)
            .collect();
        for dir in &dirs {
            let path = dir.path().join("f");
            let mut f = DirectFile::open(&path, File::create(&path).unwrap());
            let mut aligned = AlignedBuf::new(5 << 20);
            aligned.spare()[..5 << 20].copy_from_slice(&data[4096..4096 + (5 << 20)]);
            f.write_at(&aligned.spare()[..5 << 20], 4096).unwrap();
            f.write_at(&data[..4096], 0).unwrap();
            let from = 4096 + (5 << 20);
            f.write_at(&data[from..from + 5000], from as u64).unwrap();
            f.write_at(&data[from + 5000..], (from + 5000) as u64)
                .unwrap();
            assert!(std::fs::read(&path).unwrap() == data, "{dir:?}");
        }
    }

    #[test]
    fn failed_writes_name_their_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro");
        std::fs::write(&path, b"x").unwrap();
        let mut f = DirectFile::from_handles(
            Arc::from(path.as_path()),
            Arc::new(File::open(&path).unwrap()),
            None,
        );
        let e = f.write_at(b"abc", 0x1234).unwrap_err();
        assert_eq!(e.at, 0x1234);
    }
}
