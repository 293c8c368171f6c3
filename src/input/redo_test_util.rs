//! What the redo-log readers' unit tests share (COWD and SEsparse): a sector-by-sector
//! expectation built from fixture regions, and a walk that maps an extent end to end and
//! checks every sector it reads against it.

use std::sync::Arc;

use super::read::read_source;
use super::{ExtentMap, FileId, FileTable, MemSource, Run, Source, SECTOR};
use crate::error::Error;
use crate::fixture::{Content, Region};

/// What a sector should read as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    Unalloc,
    Zero,
    Data(Vec<u8>),
}

/// A file table holding `bytes` as the file `name`.
pub fn table(name: &str, bytes: Vec<u8>) -> (FileTable, FileId) {
    let mut files = FileTable::default();
    let id = files.add(Arc::new(MemSource::new(name, bytes)));
    (files, id)
}

/// A sector-unique pattern (salted per format), so misplaced sectors are caught.
pub fn pattern(lba: u64, sectors: u64, salt: u8) -> Vec<u8> {
    (0..sectors * SECTOR)
        .map(|i| ((lba * SECTOR + i) as u8) ^ (((lba * SECTOR + i) >> 9) as u8) ^ salt)
        .collect()
}

/// Each sector of a `cap`-sector extent as `regions` leave it (zero, unmapped: zero).
pub fn want(cap: u64, regions: &[Region]) -> Vec<Want> {
    let mut w = vec![Want::Unalloc; cap as usize];
    for r in regions {
        let first = r.offset / SECTOR;
        for s in 0..r.byte_len() / SECTOR {
            w[(first + s) as usize] = match &r.content {
                Content::Data(d) => {
                    Want::Data(d[(s * SECTOR) as usize..((s + 1) * SECTOR) as usize].to_vec())
                }
                _ => Want::Zero,
            };
        }
    }
    w
}

/// Maps the whole extent with `max`-sector requests, checks every sector against `want`,
/// and returns the runs.
pub fn walk(files: &FileTable, ext: &mut dyn ExtentMap, want: &[Want], max: u64) -> Vec<Run> {
    let cap = ext.sectors();
    let mut runs = Vec::new();
    let mut lba = 0;
    while lba < cap {
        let run = ext.map(lba, max.min(cap - lba)).expect("map");
        assert!(run.sectors >= 1 && run.sectors <= max.min(cap - lba));
        let mut buf = vec![0u8; (run.sectors * SECTOR) as usize];
        read_source(files, &run.source, &mut buf).expect("read");
        for s in 0..run.sectors {
            let got = match run.source {
                Source::Unallocated => Want::Unalloc,
                Source::Zero => Want::Zero,
                _ => Want::Data(buf[(s * SECTOR) as usize..((s + 1) * SECTOR) as usize].to_vec()),
            };
            assert_eq!(got, want[(lba + s) as usize], "sector {}", lba + s);
        }
        runs.push(run);
        lba += run.sectors;
    }
    runs
}

/// The byte offset a `Corrupt` error names.
pub fn corrupt_at(e: Error) -> u64 {
    match e {
        Error::Corrupt { offset, .. } => offset,
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
