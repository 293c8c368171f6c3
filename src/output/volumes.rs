//! The write side of volume sets (`crate::archive::volume`): an archive stream cut across
//! media, each volume opened at the same name (a tape drive, a block device, a file the
//! next-volume command moves away), started with its header and ended when the medium says it
//! is full (a write that returns short or fails with ENOSPC: Linux st's end-of-medium early
//! warning, a block device's last byte) or at `--volume-size`.
//!
//! Bytes go out in records of the archive's block size (1 MiB without one), written with plain
//! `write` calls so that a short write tells exactly how much the medium took; what it did not
//! take opens the next volume. Each volume is synced before the next is asked for: the operator
//! or the autoloader may take it out as soon as it is asked.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use super::open::{open, Opened, OutputSpec};
use super::staged::Staged;
use crate::archive::volume::{is_volume, VolumeChanger, VolumeHeader, HEADER_CORE_BYTES};
use crate::error::{Error, Result};

/// Record size when the archive has no block size.
const UNBLOCKED_RECORD_BYTES: usize = 1 << 20;

/// How to cut the stream into volumes.
pub struct VolumeOptions {
    /// End each volume at this many bytes, header included (0: where the medium ends).
    pub volume_bytes: u64,
    /// What loads the next volume.
    pub changer: Box<dyn VolumeChanger>,
}

/// One volume being written.
struct Volume {
    file: File,
    /// A file's staging, committed when the volume ends.
    staged: Option<Staged>,
    /// Bytes on it, header included.
    written: u64,
}

/// An archive stream written across volumes.
pub struct VolumeWriter {
    path: PathBuf,
    force: bool,
    opts: VolumeOptions,
    header: VolumeHeader,
    record: Vec<u8>,
    record_bytes: usize,
    volume: Option<Volume>,
    /// Archive bytes on the volumes so far.
    stream_pos: u64,
}

impl VolumeWriter {
    /// Opens volume 1 at `spec`'s name. `block` is the archive's block size (0: none).
    pub fn open(spec: &OutputSpec<'_>, block: usize, opts: VolumeOptions) -> Result<Self> {
        let header_bytes = block.max(HEADER_CORE_BYTES);
        let v = opts.volume_bytes;
        if v != 0 && (v <= 2 * header_bytes as u64 || (block > 0 && v % block as u64 != 0)) {
            return Err(Error::Usage(format!(
                "--volume-size {v}: must be more than two headers ({header_bytes} bytes each) and \
                 a multiple of the block size"
            )));
        }
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut seed = blake3::Hasher::new();
        seed.update(b"vdar volume set");
        seed.update(&created.as_nanos().to_le_bytes());
        seed.update(&std::process::id().to_le_bytes());
        seed.update(spec.path.as_os_str().as_encoded_bytes());
        let mut w = VolumeWriter {
            path: spec.path.to_path_buf(),
            force: spec.force,
            header: VolumeHeader {
                header_bytes: header_bytes as u32,
                number: 1,
                set: seed.finalize().as_bytes()[..16].try_into().expect("len"),
                stream_offset: 0,
                volume_bytes: v,
                created: created.as_secs(),
            },
            record: Vec::new(),
            record_bytes: if block > 0 {
                block
            } else {
                UNBLOCKED_RECORD_BYTES
            },
            opts,
            volume: None,
            stream_pos: 0,
        };
        w.start_volume()?;
        Ok(w)
    }

    /// The set's header as volume 1 carries it.
    pub fn set_hex(&self) -> String {
        self.header.set_hex()
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// Refuses a medium that still holds a volume of this set: the next-volume command did
    /// not change it, and writing would destroy the volume before. Files and block devices
    /// are read for it; a tape drive is not (reading would move the tape).
    fn check_changed(&self) -> Result<()> {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return Ok(());
        };
        if !(meta.is_file() || meta.file_type().is_block_device()) {
            return Ok(());
        }
        let mut b = [0u8; HEADER_CORE_BYTES];
        let read = File::open(&self.path).and_then(|mut f| f.read_exact(&mut b));
        if read.is_err() || !is_volume(&b) {
            return Ok(());
        }
        match VolumeHeader::decode(&b, &self.name()) {
            Ok(h) if h.set == self.header.set => Err(Error::Usage(format!(
                "{}: still holds volume {} of this set: the next-volume command did not load \
                 a new medium for volume {}",
                self.name(),
                h.number,
                self.header.number
            ))),
            _ => Ok(()),
        }
    }

    fn start_volume(&mut self) -> Result<()> {
        if self.header.number > 1 {
            self.check_changed()?;
        }
        let spec = OutputSpec {
            path: &self.path,
            force: self.force,
            what: "an archive volume",
        };
        let (file, staged) = match open(&spec)? {
            Opened::Stream { file, .. } => (file, None),
            Opened::Staged { staged, file, .. } => (file, Some(staged)),
        };
        let mut vol = Volume {
            file,
            staged,
            written: 0,
        };
        self.header.stream_offset = self.stream_pos;
        let h = self.header.encode();
        let n = write_some(&mut vol.file, &h).map_err(|e| Error::io(self.name(), Some(0), e))?;
        if n < h.len() {
            return Err(Error::Usage(format!(
                "{}: volume {} is too small for its {}-byte header",
                self.name(),
                self.header.number,
                h.len()
            )));
        }
        vol.written = n as u64;
        log::info!("{}: volume {} started", self.name(), self.header.number);
        self.volume = Some(vol);
        Ok(())
    }

    /// Syncs and closes the current volume (a file gets its name).
    fn end_volume(&mut self) -> Result<()> {
        let Some(mut vol) = self.volume.take() else {
            return Ok(());
        };
        let name = self.name();
        vol.file.sync_all().map_err(|e| Error::io(&name, None, e))?;
        if let Some(mut s) = vol.staged.take() {
            s.commit()?;
        }
        log::info!(
            "{name}: volume {} ends after {} bytes",
            self.header.number,
            vol.written
        );
        Ok(())
    }

    fn switch(&mut self) -> Result<()> {
        self.end_volume()?;
        let full = self.header.number;
        self.header.number += 1;
        self.opts
            .changer
            .next(self.header.number, &format!("volume {full} is full"))?;
        self.start_volume()
    }

    /// Writes the buffered record, across volumes as the media take it.
    fn flush_record(&mut self) -> Result<()> {
        let mut off = 0;
        while off < self.record.len() {
            let vol = self
                .volume
                .as_mut()
                .expect("a volume is open while writing");
            let room = match self.opts.volume_bytes {
                0 => u64::MAX,
                v => v - vol.written,
            };
            let take = (self.record.len() - off).min(room.min(usize::MAX as u64) as usize);
            let n = if take == 0 {
                0
            } else {
                match write_some(&mut vol.file, &self.record[off..off + take]) {
                    Ok(n) => n,
                    Err(e) => {
                        let at = self.stream_pos;
                        return Err(Error::io(self.name(), Some(at), e));
                    }
                }
            };
            vol.written += n as u64;
            self.stream_pos += n as u64;
            off += n;
            if n < take || take == 0 {
                let empty = vol.written == u64::from(self.header.header_bytes);
                if empty && n == 0 {
                    return Err(Error::Usage(format!(
                        "{}: volume {} has no room for data after its {}-byte header",
                        self.name(),
                        self.header.number,
                        self.header.header_bytes
                    )));
                }
                self.switch()?;
            }
        }
        self.record.clear();
        Ok(())
    }

    /// Writes what is buffered and ends the last volume (synced, closed; a file named).
    pub fn finish(&mut self) -> Result<()> {
        self.flush_record()?;
        self.end_volume()
    }
}

/// Writes once (retrying interrupted calls); a full medium is a short count, not an error.
fn write_some(f: &mut File, data: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        match f.write(&data[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc_enospc()) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}

impl Write for VolumeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(self.record_bytes - self.record.len());
        self.record.extend_from_slice(&data[..n]);
        if self.record.len() == self.record_bytes {
            self.flush_record().map_err(io::Error::other)?;
        }
        Ok(n)
    }

    /// Ends the set ([`VolumeWriter::finish`]): records are whole on the medium, so a flush
    /// can only come at the end of the archive.
    fn flush(&mut self) -> io::Result<()> {
        self.finish().map_err(io::Error::other)
    }
}
