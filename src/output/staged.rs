//! Outputs under their final names only once complete: the archive file of a backup and every
//! file a restore writes.
//!
//! Each output is created as `NAME.partial` and renamed to `NAME` after the whole job has succeeded
//! and the file is fsynced (then its directory is fsynced). A job that fails (disk full, a damaged
//! archive without `--salvage`, an I/O error, an interrupt) removes its `.partial` files, so it
//! never leaves an archive that looks complete or a full-size image whose missing ranges read as
//! zeros; and with `--force` the file being replaced stays intact until its replacement is
//! complete. Directories created for the outputs ([`Staged::create_dir`]) are removed with them. A
//! job killed outright leaves only `.partial` names, which the next run overwrites. Each `.partial`
//! is locked (`flock`) while written: a second run writing the same output (an overlapping
//! scheduled job) is refused instead of interleaving its bytes with the first one's.
//!
//! An archive may hold a VM file called `NAME.partial` beside an output `NAME` (crafted, or a
//! leftover that was backed up). Such a name is [reserved](Staged::reserve) before anything is
//! created, and the output `NAME` is then staged as `NAME.1.partial` (the first `NAME.<n>.partial`
//! that is no output's name): the staging names stay a function of the job's outputs, so a rerun
//! still finds and overwrites what a killed run left, and every file is restored under its own
//! name.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Outputs being written, renamed into place by [`Staged::commit`] and removed when dropped
/// before it.
#[derive(Debug, Default)]
pub struct Staged {
    /// Outputs not yet renamed.
    pending: Vec<Pending>,
    /// Final names of outputs created later: no staging name may take one.
    reserved: HashSet<PathBuf>,
    /// Directories this job created, in creation order: removed again if it fails.
    dirs: Vec<PathBuf>,
}

/// One output being written.
#[derive(Debug)]
struct Pending {
    partial: PathBuf,
    path: PathBuf,
    /// A handle of our own: it holds the lock until the restore ends (the sinks may close
    /// theirs earlier) and fsyncs the file at the commit.
    file: File,
}

/// Opens `path` read-write without following a symlink there (nothing is written outside the
/// restore directory); `new` refuses an existing file, otherwise it is opened as it is.
pub(crate) fn open_nofollow(path: &Path, new: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(!new)
        .create_new(new)
        .truncate(false)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| Error::io(path, None, e))
}

/// Takes the exclusive lock of a `.partial` file (a restore's or a backup's), or says that
/// another run holds it. The lock lasts as long as some handle on this open file does.
pub fn lock_partial(file: &File, path: &Path) -> Result<()> {
    use rustix::fs::{flock, FlockOperation};
    flock(file, FlockOperation::NonBlockingLockExclusive).map_err(|e| {
        if e == rustix::io::Errno::WOULDBLOCK {
            Error::Usage(format!(
                "{}: another vdar is writing it (an overlapping run?)",
                path.display()
            ))
        } else {
            Error::io(path, None, e.into())
        }
    })
}

/// `NAME.partial` beside `path`.
pub(crate) fn partial_name(path: &Path) -> PathBuf {
    let mut p = OsString::from(path.as_os_str());
    p.push(".partial");
    PathBuf::from(p)
}

/// `NAME.<n>.partial` beside `path`.
fn numbered_partial_name(path: &Path, n: u64) -> PathBuf {
    let mut p = OsString::from(path.as_os_str());
    p.push(format!(".{n}.partial"));
    PathBuf::from(p)
}

impl Staged {
    /// Declares `path` the final name of an output this job creates later, so that no other
    /// output is staged under it. Names an archive chooses (a VM's files) are reserved before
    /// the first output is created.
    pub fn reserve(&mut self, path: &Path) {
        self.reserved.insert(path.to_path_buf());
    }

    /// Creates directory `dir` if it is missing (its parent must exist) and refuses anything
    /// but a real directory, so that no output is written through a symlink. A directory
    /// created here is removed again, once empty, if the job fails: a failed restore leaves no
    /// empty `DIR/<vm>/` behind. One that existed is never removed.
    pub fn create_dir(&mut self, dir: &Path) -> Result<()> {
        self.make_dir(dir, std::fs::symlink_metadata(dir))
    }

    /// [`Self::create_dir`] for the directory the user named (`--to`): a symlink to a
    /// directory is followed there, as the user chose it; directories below it are not.
    pub fn create_root_dir(&mut self, dir: &Path) -> Result<()> {
        self.make_dir(dir, std::fs::metadata(dir))
    }

    fn make_dir(&mut self, dir: &Path, meta: std::io::Result<std::fs::Metadata>) -> Result<()> {
        match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(Error::Usage(format!(
                "{}: exists and is not a directory",
                dir.display()
            ))),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                std::fs::create_dir(dir).map_err(|e| Error::io(dir, None, e))?;
                self.dirs.push(dir.to_path_buf());
                Ok(())
            }
            Err(e) => Err(Error::io(dir, None, e)),
        }
    }

    /// Where `path` is written until the commit: `NAME.partial`, unless that is the name of
    /// another output of this job (reserved or being written), then the first free
    /// `NAME.<n>.partial`. The loop ends: each candidate taken is a different name in the
    /// finite set of this job's names.
    fn staging_name(&self, path: &Path) -> PathBuf {
        let taken = |p: &PathBuf| {
            self.reserved.contains(p)
                || self.pending.iter().any(|o| o.partial == *p || o.path == *p)
        };
        let mut partial = partial_name(path);
        let mut n = 1;
        while taken(&partial) {
            partial = numbered_partial_name(path, n);
            n += 1;
        }
        partial
    }

    /// Creates the output that becomes `path`: refuses an existing `path` unless `force`
    /// (and a directory even then) and a name this restore already writes. Returns the
    /// partial file's path, which I/O errors name, and the file, opened read-write.
    pub fn create(&mut self, path: &Path, force: bool) -> Result<(PathBuf, File)> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                return Err(Error::Usage(format!(
                    "{}: exists and is a directory",
                    path.display()
                )))
            }
            Ok(_) if !force => {
                return Err(Error::Exists {
                    path: path.to_path_buf(),
                })
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(path, None, e)),
        }
        let partial = self.staging_name(path);
        // One name, two outputs; or an output whose name was not reserved and is already
        // another's staging name (a caller's mistake: refused, never written over).
        if self
            .pending
            .iter()
            .any(|o| path == o.path || path == o.partial)
        {
            return Err(Error::Exists {
                path: path.to_path_buf(),
            });
        }
        // A `.partial` left by a restore that was killed is ours to overwrite, one that another
        // restore holds locked is not.
        let file = open_nofollow(&partial, false)?;
        lock_partial(&file, &partial)?;
        file.set_len(0)
            .map_err(|e| Error::io(&partial, Some(0), e))?;
        self.pending.push(Pending {
            partial: partial.clone(),
            path: path.to_path_buf(),
            file: file.try_clone().map_err(|e| Error::io(&partial, None, e))?,
        });
        Ok((partial, file))
    }

    /// Fsyncs every output, renames it to its final name and fsyncs the directories, and
    /// their parents (a restore may have just created them).
    pub fn commit(&mut self) -> Result<()> {
        let mut dirs = BTreeSet::new();
        for o in &self.pending {
            o.file
                .sync_all()
                .map_err(|e| Error::io(&o.partial, None, e))?;
        }
        // One at a time: if a rename fails, the outputs not yet renamed are still pending and
        // the drop removes them.
        while let Some(o) = self.pending.first() {
            std::fs::rename(&o.partial, &o.path).map_err(|e| Error::io(&o.path, None, e))?;
            let o = self.pending.remove(0);
            let dir = match o.path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if let Some(up) = dir.parent().filter(|u| !u.as_os_str().is_empty()) {
                dirs.insert(up.to_path_buf());
            }
            dirs.insert(dir);
        }
        for d in dirs {
            File::open(&d)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&d, None, e))?;
        }
        // They hold the outputs now.
        self.dirs.clear();
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for o in &self.pending {
            // Best effort: the restore is already failing with the error that matters.
            let _ = std::fs::remove_file(&o.partial);
        }
        // Innermost first; `remove_dir` removes only empty directories, so anything another
        // process put there meanwhile (or an output a failed commit already renamed) stays.
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn outputs_appear_only_on_commit_and_vanish_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.raw");
        let old = dir.path().join("old.raw");
        std::fs::write(&old, b"keep me").unwrap();

        let mut s = Staged::default();
        let (pa, mut fa) = s.create(&a, false).unwrap();
        assert_eq!(pa, dir.path().join("a.raw.partial"));
        fa.write_all(b"new").unwrap();
        assert!(matches!(s.create(&old, false), Err(Error::Exists { .. })));
        let (_, mut fo) = s.create(&old, true).unwrap();
        fo.write_all(b"replacement").unwrap();
        assert!(
            matches!(s.create(&a, true), Err(Error::Exists { .. })),
            "one name, two outputs"
        );
        assert!(!a.exists());
        assert_eq!(std::fs::read(&old).unwrap(), b"keep me");
        drop(s);
        assert!(
            !pa.exists() && !a.exists(),
            "a failed restore leaves nothing"
        );
        assert_eq!(std::fs::read(&old).unwrap(), b"keep me", "--force kept it");

        let mut s = Staged::default();
        let (_, mut fa) = s.create(&a, false).unwrap();
        fa.write_all(b"done").unwrap();
        let (_, mut fo) = s.create(&old, true).unwrap();
        fo.write_all(b"replaced").unwrap();
        s.commit().unwrap();
        drop(s);
        assert_eq!(std::fs::read(&a).unwrap(), b"done");
        assert_eq!(std::fs::read(&old).unwrap(), b"replaced");
        assert!(!pa.exists());
    }

    #[test]
    fn a_partial_another_run_holds_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.raw");
        std::fs::write(partial_name(&a), b"theirs").unwrap();
        let theirs = File::open(partial_name(&a)).unwrap();
        lock_partial(&theirs, &a).unwrap();
        let mut s = Staged::default();
        let e = s.create(&a, false).unwrap_err();
        assert!(e.to_string().contains("another vdar is writing it"), "{e}");
        drop(s);
        assert_eq!(std::fs::read(partial_name(&a)).unwrap(), b"theirs");
        // Once they are gone, a leftover is ours.
        drop(theirs);
        let mut s = Staged::default();
        let (_, f) = s.create(&a, false).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 0);
    }

    /// Issue 13 item 7: an archived file named like another output's staging name made every
    /// restore fail.
    #[test]
    fn r13_reserved_names_are_never_staging_names() {
        let dir = tempfile::tempdir().unwrap();
        let at = |n: &str| dir.path().join(n);
        let mut s = Staged::default();
        for n in ["x.partial", "x.1.partial", "y"] {
            s.reserve(&at(n));
        }
        let (px, mut fx) = s.create(&at("x"), false).unwrap();
        assert_eq!(px, at("x.2.partial"));
        fx.write_all(b"x").unwrap();
        // `x.partial` is itself staged as `x.partial.partial`, `y` as `y.partial`.
        let (pp, mut fp) = s.create(&at("x.partial"), false).unwrap();
        assert_eq!(pp, at("x.partial.partial"));
        fp.write_all(b"x.partial").unwrap();
        let (p1, mut f1) = s.create(&at("x.1.partial"), false).unwrap();
        assert_eq!(p1, at("x.1.partial.partial"));
        f1.write_all(b"x.1.partial").unwrap();
        let (py, _) = s.create(&at("y"), false).unwrap();
        assert_eq!(py, at("y.partial"));
        // An unreserved output named like a staging name in use is refused.
        assert!(matches!(
            s.create(&at("y.partial"), false),
            Err(Error::Exists { .. })
        ));
        s.commit().unwrap();
        for n in ["x", "x.partial", "x.1.partial"] {
            assert_eq!(std::fs::read(at(n)).unwrap(), n.as_bytes(), "{n}");
        }
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["x", "x.1.partial", "x.partial", "y"]);
    }

    /// Issue 13 item 7: a failed restore left an empty `DIR/<vm>/` behind.
    #[test]
    fn r13_created_directories_go_with_a_failed_job() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (dir.path().join("old"), dir.path().join("new"));
        std::fs::create_dir(&old).unwrap();
        let mut s = Staged::default();
        s.create_dir(&old).unwrap();
        s.create_dir(&new).unwrap();
        s.create_dir(&new.join("vm")).unwrap();
        s.create_dir(&old.join("vm")).unwrap();
        let (_, mut f) = s.create(&new.join("vm").join("a.raw"), false).unwrap();
        f.write_all(b"a").unwrap();
        drop(s);
        assert!(old.is_dir(), "existed before: kept");
        assert!(!new.exists() && !old.join("vm").exists());
        // Committed: they hold the outputs and stay.
        let mut s = Staged::default();
        s.create_dir(&new).unwrap();
        s.create(&new.join("a.raw"), false).unwrap();
        s.commit().unwrap();
        drop(s);
        assert!(new.join("a.raw").is_file());
    }

    #[test]
    fn directories_and_symlinked_partials_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        std::fs::create_dir(&d).unwrap();
        let mut s = Staged::default();
        assert!(s.create(&d, true).is_err());
        let outside = dir.path().join("outside");
        let x = dir.path().join("x.raw");
        std::os::unix::fs::symlink(&outside, partial_name(&x)).unwrap();
        assert!(s.create(&x, true).is_err());
        assert!(!outside.exists(), "nothing written through the link");
    }
}
