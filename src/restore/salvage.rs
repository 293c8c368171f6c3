//! Salvage past a damaged front (file header or manifest): a seekable archive is opened with a
//! recovered manifest ([`crate::archive::recover`]); a pipe is spooled to an unlinked file first,
//! since the manifest's copy (or the record census that rebuilds it) is only known at the end.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::archive::format::{
    RecordHeader, RecordKind, FILE_HEADER_BYTES, MAX_MANIFEST_BYTES, RECORD_HEADER_BYTES,
};
use crate::archive::index::ReadSeek;
use crate::archive::reader::StreamReader;
use crate::archive::recover::{recover, ManifestSource};
use crate::error::{Error, Result};

/// Whether an error opening an archive's front is damage a salvage can work around.
pub(super) fn is_damage(e: &Error) -> bool {
    matches!(e, Error::ArchiveCorrupt { .. })
}

/// Opens a seekable archive for a one-pass read: through its front if that reads, else with a
/// recovered manifest. Returns the reader and, in the second case, what the front's damage is.
pub(crate) fn open_seekable(
    input: &mut dyn ReadSeek,
    decode: bool,
) -> Result<(StreamReader<'_>, Option<String>)> {
    let rewind = |input: &mut dyn ReadSeek| {
        input
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("archive input", Some(0), e))
    };
    rewind(input)?;
    let front = StreamReader::new(&mut *input, false).map(|_| ());
    match front {
        Ok(()) => {
            rewind(input)?;
            Ok((StreamReader::new(input, decode)?, None))
        }
        Err(e) if is_damage(&e) => {
            let r = recover(&mut *input)?;
            if r.records_found == 0 {
                // Not an archive, or nothing of one left: say what the front said.
                return Err(e);
            }
            let how = match r.source {
                ManifestSource::Front => "the manifest read past the damaged file header",
                ManifestSource::Copy => "the manifest taken from its copy after the index",
                ManifestSource::Rebuilt => {
                    "no manifest intact: one rebuilt from the record headers, names made up \
                     (salvaged-vm<V>, disk<N>)"
                }
            };
            let what = format!("front of the archive unreadable ({e}); {how}");
            let mut reader = StreamReader::resume(input, r.resume_at, r.header, r.manifest, decode);
            reader.set_open_ended(r.open_ended);
            Ok((reader, Some(what)))
        }
        Err(e) => Err(e),
    }
}

/// Reads a stream whose front may be damaged: with `stream` when the front reads (the bytes
/// read to check it are put back in front), else spooled to an unlinked file in `dir` and
/// handed to `file`, which recovers a manifest from it. `ctx` goes to the one that runs.
pub(super) fn read_or_spool<C, T>(
    input: &mut dyn Read,
    dir: &Path,
    ctx: C,
    stream: impl FnOnce(StreamReader<'_>, C) -> Result<T>,
    file: impl FnOnce(&mut File, C) -> Result<T>,
) -> Result<T> {
    let front = read_front(input)?;
    if StreamReader::new(&mut &front[..], false).is_ok() {
        let mut whole = (&front[..]).chain(input);
        return stream(StreamReader::new(&mut whole, true)?, ctx);
    }
    file(&mut spool(&front, input, dir)?, ctx)
}

/// The front of a stream, read into memory: the file header and, when a manifest record
/// header follows, the manifest record. Fewer bytes when the stream ends first.
fn read_front(input: &mut dyn Read) -> Result<Vec<u8>> {
    let mut front = Vec::new();
    let head = (FILE_HEADER_BYTES + RECORD_HEADER_BYTES) as u64;
    read_up_to(input, head, &mut front)?;
    let rb: Option<&[u8; RECORD_HEADER_BYTES]> = front
        .get(FILE_HEADER_BYTES..)
        .and_then(|b| b.try_into().ok());
    let manifest = rb.and_then(|b| RecordHeader::decode(b, FILE_HEADER_BYTES as u64).ok());
    if let Some(h) = manifest.filter(|h| h.kind == RecordKind::Manifest) {
        read_up_to(input, h.stored_len.min(MAX_MANIFEST_BYTES), &mut front)?;
    }
    Ok(front)
}

fn read_up_to(input: &mut dyn Read, n: u64, out: &mut Vec<u8>) -> Result<()> {
    let at = out.len() as u64;
    input
        .take(n)
        .read_to_end(out)
        .map_err(|e| Error::io("archive input", Some(at), e))?;
    Ok(())
}

/// Copies `front` and the rest of `input` into an unlinked file in `dir`, rewound.
fn spool(front: &[u8], input: &mut dyn Read, dir: &Path) -> Result<File> {
    let mut f = super::raw::unlinked(dir, "spool")?;
    let what = dir.join(".vdar-spool");
    f.write_all(front)
        .map_err(|e| Error::io(&what, Some(0), e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut f);
    std::io::copy(input, &mut w).map_err(|e| Error::io(&what, None, e))?;
    w.flush().map_err(|e| Error::io(&what, None, e))?;
    drop(w);
    f.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(&what, Some(0), e))?;
    Ok(f)
}
