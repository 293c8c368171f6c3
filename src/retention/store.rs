//! Places archives are kept: a local directory tree or an object-store prefix.

use std::path::{Path, PathBuf};

use crate::archive::index::ReadSeek;
use crate::error::{Error, Result};

/// One file or object in a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its name as the user would give it to another command (a path, `s3://B/K`).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A place archives are kept.
pub trait Store {
    /// The place, for messages (`/backups`, `s3://bucket/web/`).
    fn location(&self) -> String;
    /// Every file or object in it, in name order.
    fn entries(&self) -> Result<Vec<Entry>>;
    /// Opens one of them for reading with random access.
    fn open(&self, name: &str) -> Result<Box<dyn ReadSeek>>;
    /// Deletes one of them.
    fn delete(&self, name: &str) -> Result<()>;
}

/// Deepest directory level a [`DirStore`] descends to.
const MAX_DEPTH: usize = 16;

/// A local directory and the directories under it. Symbolic links are not followed (an
/// archive reached through one is someone else's), and files being written (`NAME.partial`,
/// the staging name of every vdar output) are left alone.
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// The store at `root`, which must be a directory.
    pub fn new(root: &Path) -> Result<DirStore> {
        let m = std::fs::symlink_metadata(root).map_err(|e| Error::io(root, None, e))?;
        if !m.is_dir() {
            return Err(Error::Usage(format!("{}: not a directory", root.display())));
        }
        Ok(DirStore {
            root: root.to_path_buf(),
        })
    }

    fn walk(&self, dir: &Path, depth: usize, out: &mut Vec<Entry>) -> Result<()> {
        let io = |e| Error::io(dir, None, e);
        for d in std::fs::read_dir(dir).map_err(io)? {
            let d = d.map_err(io)?;
            let path = d.path();
            let kind = d.file_type().map_err(|e| Error::io(&path, None, e))?;
            if kind.is_dir() && depth < MAX_DEPTH {
                self.walk(&path, depth + 1, out)?;
            } else if kind.is_file() && path.extension().is_none_or(|x| x != "partial") {
                let size = d.metadata().map_err(|e| Error::io(&path, None, e))?.len();
                out.push(Entry {
                    name: path.to_string_lossy().into_owned(),
                    size,
                });
            }
        }
        Ok(())
    }
}

impl Store for DirStore {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn entries(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        self.walk(&self.root, 0, &mut out)?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn open(&self, name: &str) -> Result<Box<dyn ReadSeek>> {
        let f = std::fs::File::open(name).map_err(|e| Error::io(Path::new(name), None, e))?;
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 16, f)))
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = Path::new(name);
        std::fs::remove_file(path).map_err(|e| Error::io(path, None, e))?;
        // The removal is durable before the next one starts, so that an interruption leaves
        // the order `execute` chose.
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io(dir, None, e))?;
        }
        Ok(())
    }
}

/// An object-store prefix (`s3://BUCKET/PREFIX`): every object whose key starts with it.
#[cfg(feature = "s3")]
pub struct BucketStore {
    client: std::sync::Arc<crate::objstore::Client>,
    place: crate::objstore::ObjectUrl,
}

#[cfg(feature = "s3")]
impl BucketStore {
    /// The store under `place` (its key is the prefix).
    pub fn new(
        client: std::sync::Arc<crate::objstore::Client>,
        place: crate::objstore::ObjectUrl,
    ) -> BucketStore {
        BucketStore { client, place }
    }

    fn object(&self, name: &str) -> Result<crate::objstore::ObjectUrl> {
        crate::objstore::ObjectUrl::parse(name)
    }
}

#[cfg(feature = "s3")]
impl Store for BucketStore {
    fn location(&self) -> String {
        self.place.to_string()
    }

    fn entries(&self) -> Result<Vec<Entry>> {
        let listed = self
            .client
            .list_objects(&self.place.bucket, &self.place.key)?;
        Ok(listed
            .into_iter()
            .map(|o| Entry {
                name: format!("{}{}/{}", crate::objstore::SCHEME, self.place.bucket, o.key),
                size: o.size,
            })
            .collect())
    }

    fn open(&self, name: &str) -> Result<Box<dyn ReadSeek>> {
        let r = crate::objstore::ObjectReader::open(self.client.clone(), self.object(name)?)?;
        Ok(Box::new(r))
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.client.delete_object(&self.object(name)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_lists_files_below_it_but_not_partials_or_links() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir(p.join("web")).unwrap();
        std::fs::write(p.join("a.vdar"), b"1").unwrap();
        std::fs::write(p.join("web/b.vdar"), b"22").unwrap();
        std::fs::write(p.join("web/c.vdar.partial"), b"").unwrap();
        std::os::unix::fs::symlink(p.join("a.vdar"), p.join("link.vdar")).unwrap();
        let store = DirStore::new(p).unwrap();
        let names: Vec<(String, u64)> = store
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| {
                (
                    e.name
                        .strip_prefix(p.to_str().unwrap())
                        .unwrap()
                        .to_string(),
                    e.size,
                )
            })
            .collect();
        assert_eq!(names, [("/a.vdar".into(), 1), ("/web/b.vdar".into(), 2)]);
        assert!(DirStore::new(&p.join("a.vdar")).is_err());
    }
}
