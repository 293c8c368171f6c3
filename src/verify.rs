//! Verify: read a whole archive and check every checksum, naming each damaged record.
//!
//! Runs the restore engine into a sink that keeps only digests: every record header checksum,
//! every plaintext BLAKE3 (after decompression), every reference (its target must exist earlier
//! with the same digest and length), the index against the records actually seen, and the
//! footer's record count and metadata hash. Works on a non-seekable stream.

use std::io::Read;

use serde::Serialize;

use crate::archive::index::ReadSeek;
use crate::error::{Error, Result};
use crate::restore::{Bases, Damage, LostRange};

/// The result of a verify.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Whether the archive is intact.
    pub ok: bool,
    /// Records (and damage events) read.
    pub records: u64,
    /// Each damaged record or unreadable stretch, with VM, disk and byte range where known.
    pub damage: Vec<Damage>,
    /// Disk ranges a restore could not recover.
    pub lost: Vec<LostRange>,
    /// VM files that could not be recovered (`vm/file`).
    pub missing_files: Vec<String>,
}

/// Verifies the archive read from `input`. Damage is reported in the result, including an
/// archive too damaged to read past its front (bad magic, truncated or altered manifest): a
/// verify run by a scheduler must say "damaged", not "could not run". `Err` is left for what
/// says nothing about the archive's bytes (I/O errors, a newer format version).
pub fn verify(input: &mut dyn Read) -> Result<VerifyReport> {
    verify_with(input, None)
}

/// [`verify`] of an incremental: every BaseRef is read from `bases` and checked, so damage in
/// a base shows here, with the base named. An incremental without its bases is an error.
pub fn verify_with(input: &mut dyn Read, bases: Option<Bases>) -> Result<VerifyReport> {
    report(crate::restore::verify_stream(input, bases))
}

/// [`verify`] for a file: when its front (file header or manifest) is damaged, the records are
/// still checked, placed by the manifest's copy after the index (or one rebuilt from the record
/// headers), so the report names what is lost.
pub fn verify_file(input: &mut dyn ReadSeek) -> Result<VerifyReport> {
    verify_file_with(input, None)
}

/// [`verify_file`] with the bases of an incremental (see [`verify_with`]).
pub fn verify_file_with(input: &mut dyn ReadSeek, bases: Option<Bases>) -> Result<VerifyReport> {
    report(crate::restore::verify_seekable(input, bases))
}

fn report(r: Result<crate::restore::RestoreReport>) -> Result<VerifyReport> {
    let r = match r {
        Ok(r) => r,
        Err(Error::ArchiveCorrupt { offset, what }) => {
            return Ok(VerifyReport {
                ok: false,
                records: 0,
                damage: vec![Damage::at(
                    offset,
                    format!("{what}; nothing past it can be read"),
                )],
                lost: vec![],
                missing_files: vec![],
            })
        }
        Err(e) => return Err(e),
    };
    Ok(VerifyReport {
        ok: r.is_complete(),
        records: r.records,
        damage: r.damage,
        lost: r.lost,
        missing_files: r.missing_files,
    })
}
