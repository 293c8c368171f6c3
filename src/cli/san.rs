//! SAN mode on the command line: expand `--lun` globs, scan the LUNs, bind the block map, and
//! report notices (skipped devices, dead paths) on stderr.

use std::path::{Path, PathBuf};

use crate::blockio::{Backend, ReadOptions};
use crate::san::{BlockMap, BlockMapOpener, LunSet, ScanOptions};
use anyhow::Context;

use super::args::SanArgs;

/// Reader options from the flags.
pub fn read_options(a: &SanArgs) -> ReadOptions {
    ReadOptions {
        queue_depth: usize::from(a.queue_depth),
        backend: Backend::Auto,
    }
}

/// Whether `s` has glob metacharacters.
fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Matches one path component against a glob pattern (`*`, `?`, `[abc]`, `[a-z]`, `[!x]`).
fn glob_match(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_match(&p[1..], s) || (!s.is_empty() && glob_match(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob_match(&p[1..], &s[1..]),
        (Some(b'['), Some(&c)) => {
            let Some(end) = p.iter().skip(1).position(|&x| x == b']').map(|i| i + 1) else {
                return c == b'[' && glob_match(&p[1..], &s[1..]);
            };
            let set = &p[1..end];
            let (neg, set) = match set.first() {
                Some(b'!' | b'^') => (true, &set[1..]),
                _ => (false, set),
            };
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != neg && glob_match(&p[end + 1..], &s[1..])
        }
        (Some(&a), Some(&b)) => a == b && glob_match(&p[1..], &s[1..]),
        _ => false,
    }
}

/// Expands a glob component by component; sorted, so scans are deterministic.
pub fn expand_glob(pattern: &str) -> anyhow::Result<Vec<PathBuf>> {
    if !is_glob(pattern) {
        return Ok(vec![PathBuf::from(pattern)]);
    }
    let abs = pattern.starts_with('/');
    let mut cur = vec![PathBuf::from(if abs { "/" } else { "." })];
    for comp in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for dir in &cur {
            if !is_glob(comp) {
                next.push(dir.join(comp));
                continue;
            }
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name();
                let n = name.as_encoded_bytes();
                if n.first() == Some(&b'.') && !comp.starts_with('.') {
                    continue;
                }
                if glob_match(comp.as_bytes(), n) {
                    next.push(dir.join(&name));
                }
            }
        }
        next.sort();
        cur = next;
    }
    if !abs {
        cur = cur
            .into_iter()
            .map(|p| p.strip_prefix(".").map(Path::to_path_buf).unwrap_or(p))
            .collect();
    }
    anyhow::ensure!(!cur.is_empty(), "--lun {pattern:?} matches nothing");
    Ok(cur)
}

/// `--lun` values as groups of paths to one LUN (`A,B`); globs expand to one group per match.
pub fn lun_groups(luns: &[String]) -> anyhow::Result<Vec<Vec<PathBuf>>> {
    let mut groups = Vec::new();
    for l in luns {
        if l.contains(',') {
            let mut g = Vec::new();
            for p in l.split(',').filter(|p| !p.is_empty()) {
                g.extend(expand_glob(p)?);
            }
            groups.push(g);
        } else {
            groups.extend(expand_glob(l)?.into_iter().map(|p| vec![p]));
        }
    }
    Ok(groups)
}

/// Scans LUNs and prints the scan's notices.
pub fn scan(luns: &[String], direct: bool) -> anyhow::Result<LunSet> {
    let set = LunSet::scan(&lun_groups(luns)?, ScanOptions { direct })?;
    print_notices(&set);
    Ok(set)
}

/// Prints and clears the LUN notices.
pub fn print_notices(set: &LunSet) {
    log_notices(set.take_notices());
}

/// Prints LUN notices (skipped devices, dead paths, failovers), one warning each.
pub fn log_notices(notices: Vec<String>) {
    for n in notices {
        log::warn!("{n}");
    }
}

/// The block-map opener for SAN mode, or `None` without `--blockmap`.
pub fn opener(a: &SanArgs) -> anyhow::Result<Option<BlockMapOpener>> {
    let Some(map_path) = &a.blockmap else {
        return Ok(None);
    };
    let map = BlockMap::load(map_path)?;
    let luns = scan(&a.lun, a.read_path().is_direct())?;
    let o = BlockMapOpener::new(map_path, map, luns)
        .with_context(|| format!("binding {} to the LUNs", map_path.display()))?;
    Ok(Some(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match() {
        assert!(glob_match(b"scsi-3*", b"scsi-3600a"));
        assert!(!glob_match(b"scsi-3*", b"wwn-0x6"));
        assert!(glob_match(b"lun[0-9].img", b"lun1.img"));
        assert!(!glob_match(b"lun[!0-9].img", b"lun1.img"));
        assert!(glob_match(b"l?n*", b"lun"));
    }
}
