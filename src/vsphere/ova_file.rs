//! The parts of a staged OVA that an import needs: the OVF descriptor's text, and where each
//! other member's bytes lie in the tar, so that a disk can be sent straight from the file.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Largest OVF descriptor read: ours are a few KiB; a bigger one is not an OVA we wrote.
const MAX_OVF_BYTES: u64 = 16 << 20;

/// One member of the OVA other than the descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OvaMember {
    /// Its name in the tar (the OVF's `ovf:href`).
    pub name: String,
    /// Where its bytes start in the OVA file.
    pub offset: u64,
    /// Its length.
    pub size: u64,
}

/// An OVA on disk, read for an import.
#[derive(Debug)]
pub struct OvaFile {
    /// The file.
    pub path: PathBuf,
    /// The descriptor (the one `.ovf` member).
    pub ovf: String,
    /// Every other member, in tar order.
    pub members: Vec<OvaMember>,
}

impl OvaFile {
    /// Reads the member list and the descriptor of the OVA at `path`.
    pub fn open(path: &Path) -> Result<OvaFile> {
        let io = |e: std::io::Error| Error::io(path, None, e);
        let mut archive = tar::Archive::new(File::open(path).map_err(io)?);
        let mut ovf = None;
        let mut members = Vec::new();
        for entry in archive.entries().map_err(io)? {
            let mut entry = entry.map_err(io)?;
            let offset = entry.raw_file_position();
            let name = entry.path().map_err(io)?.to_string_lossy().into_owned();
            let size = entry.size();
            if !name.to_ascii_lowercase().ends_with(".ovf") {
                members.push(OvaMember { name, offset, size });
                continue;
            }
            if ovf.is_some() || size > MAX_OVF_BYTES {
                return Err(Error::io(
                    path,
                    Some(offset),
                    std::io::Error::other(format!(
                        "{name}: a second or oversized ({size} bytes) OVF descriptor"
                    )),
                ));
            }
            let mut text = String::with_capacity(size as usize);
            entry
                .read_to_string(&mut text)
                .map_err(|e| Error::io(path, Some(offset), e))?;
            ovf = Some(text);
        }
        let ovf = ovf.ok_or_else(|| {
            Error::io(
                path,
                None,
                std::io::Error::other("the OVA holds no .ovf descriptor"),
            )
        })?;
        Ok(OvaFile {
            path: path.to_path_buf(),
            ovf,
            members,
        })
    }

    /// The member named `name`.
    pub fn member(&self, name: &str) -> Option<&OvaMember> {
        self.members.iter().find(|m| m.name == name)
    }

    /// A reader of exactly `m`'s bytes.
    pub fn reader(&self, m: &OvaMember) -> Result<std::io::Take<File>> {
        let mut f = File::open(&self.path).map_err(|e| Error::io(&self.path, None, e))?;
        f.seek(SeekFrom::Start(m.offset))
            .map_err(|e| Error::io(&self.path, Some(m.offset), e))?;
        Ok(f.take(m.size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_found_where_tar_put_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.ova");
        let mut b = tar::Builder::new(File::create(&path).unwrap());
        for (name, data) in [
            ("vm.ovf", &b"<Envelope/>"[..]),
            ("vm-1.vmdk", b"disk bytes"),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        }
        b.into_inner().unwrap();
        let ova = OvaFile::open(&path).unwrap();
        assert_eq!(ova.ovf, "<Envelope/>");
        let m = ova.member("vm-1.vmdk").unwrap().clone();
        let mut got = String::new();
        ova.reader(&m).unwrap().read_to_string(&mut got).unwrap();
        assert_eq!(got, "disk bytes");
        assert!(OvaFile::open(&dir.path().join("none")).is_err());
    }
}
