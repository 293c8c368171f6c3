//! The names files get inside a VM's archive, and reading those small files.
//!
//! An archive stores file names without directories, but a VM's files need not share one: on
//! ESX a VM's disks often sit on two datastores (`ds1/web/web.vmdk`, `ds2/web/web.vmdk`), and
//! loose disks may come from two folders. [`unique_names`] keeps every distinct file: the first
//! of a name keeps it, each later one becomes `<stem>_<n><ext>` with the smallest `n` no file
//! of the VM is named (VMware's own pattern for a VM's second disk), and its original path is
//! recorded (`source` in the manifest, formats/ARCHIVE.md). Inputs without a clash get exactly
//! the names they had, so their archives are byte for byte what they were.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::input::SourceOpener;

/// Largest VM configuration file stored (.vmx, .nvram, ...): they are kilobytes; anything
/// bigger is not a config file.
pub const MAX_CONFIG_FILE_BYTES: u64 = 64 << 20;

/// The archive name of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedFile {
    /// The path as given (or as the .vmx or a descriptor named it).
    pub path: PathBuf,
    /// Its name in the archive.
    pub name: String,
    /// The original path, when `name` is not the file's own name.
    pub source: Option<String>,
}

/// One name per distinct file of a VM, in first-seen order.
#[derive(Clone, Debug, Default)]
pub struct NameTable {
    entries: Vec<(PathBuf, NamedFile)>,
}

impl NameTable {
    /// The entry for `path` (any spelling of a path the table was built from).
    ///
    /// # Panics
    /// If `path` was not among the paths the table was built from (an internal invariant).
    pub fn entry(&self, path: &Path) -> &NamedFile {
        let id = identity(path);
        self.entries
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(_, e)| e)
            .expect("invariant: every path of the VM is in its name table")
    }

    /// The archive name of `path`, if the table knows it.
    pub fn name(&self, path: &Path) -> Option<&String> {
        let id = identity(path);
        self.entries
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(_, e)| &e.name)
    }
}

/// What makes two paths one file: the canonical path when it resolves locally (a `.vmx` may name
/// a disk by an absolute path and a relative one), else the path as given (SAN mode: host paths).
fn identity(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn base_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into())
}

/// Names every distinct file of `paths` uniquely (case-insensitively, so that a restore onto a
/// case-insensitive file system keeps them apart). Deterministic: depends only on the order and
/// the names of `paths`.
pub fn unique_names(paths: &[PathBuf]) -> NameTable {
    // Every original name is reserved first, so a renamed file never takes the name of a file
    // that comes later.
    let mut taken: HashSet<String> = paths
        .iter()
        .map(|p| base_name(p).to_ascii_lowercase())
        .collect();
    let mut given: HashSet<String> = HashSet::new();
    let mut table = NameTable::default();
    for p in paths {
        let id = identity(p);
        if table.entries.iter().any(|(k, _)| *k == id) {
            continue;
        }
        let own = base_name(p);
        let (name, source) = if given.insert(own.to_ascii_lowercase()) {
            (own, None)
        } else {
            let name = free_name(&own, &mut taken);
            given.insert(name.to_ascii_lowercase());
            (name, Some(p.display().to_string()))
        };
        table.entries.push((
            id,
            NamedFile {
                path: p.clone(),
                name,
                source,
            },
        ));
    }
    table
}

/// `<stem>_<n><ext>` for the smallest `n` >= 1 not in `taken`; taken from then on.
fn free_name(own: &str, taken: &mut HashSet<String>) -> String {
    let (stem, ext) = match own.rfind('.') {
        Some(i) if i > 0 => own.split_at(i),
        _ => (own, ""),
    };
    (1..)
        .map(|n| format!("{stem}_{n}{ext}"))
        .find(|n| taken.insert(n.to_ascii_lowercase()))
        .expect("invariant: finitely many names are taken")
}

/// Reads a configuration file or descriptor whole, refusing anything too large to be one:
/// locally when `opener` is `None`, else through it.
pub fn read_small_file(p: &Path, opener: Option<&dyn SourceOpener>) -> Result<Vec<u8>> {
    let check = |len: u64| {
        if len > MAX_CONFIG_FILE_BYTES {
            return Err(Error::Usage(format!(
                "{}: {len} bytes is too large for a VM configuration file",
                p.display()
            )));
        }
        Ok(len)
    };
    match opener {
        None => {
            let meta = fs::metadata(p).map_err(|e| Error::io(p, None, e))?;
            check(meta.len())?;
            fs::read(p).map_err(|e| Error::io(p, None, e))
        }
        Some(o) => {
            let src = o.open(p)?;
            let mut bytes = vec![0u8; check(src.len())? as usize];
            src.read_exact_at(&mut bytes, 0)?;
            Ok(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clashing_names_get_numbered_around_existing_ones() {
        let paths: Vec<PathBuf> = ["ds1/web/web.vmdk", "ds2/web/web.vmdk", "x/web_1.vmdk"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let t = unique_names(&paths);
        let names: Vec<&str> = paths.iter().map(|p| t.entry(p).name.as_str()).collect();
        assert_eq!(names, ["web.vmdk", "web_2.vmdk", "web_1.vmdk"]);
        assert_eq!(t.entry(&paths[0]).source, None);
        assert_eq!(
            t.entry(&paths[1]).source.as_deref(),
            Some("ds2/web/web.vmdk")
        );
        assert_eq!(t.entry(&paths[2]).source, None);
    }

    #[test]
    fn one_file_twice_is_one_entry() {
        let paths = vec![PathBuf::from("a/b.vmdk"), PathBuf::from("a/b.vmdk")];
        let t = unique_names(&paths);
        assert_eq!(t.entries.len(), 1);
    }
}
