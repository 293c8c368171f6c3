//! What several fuzz targets share. Only the library's public API is used: a bug found here is
//! one a user of `vdar` could hit.

use std::sync::Arc;

use vdar::input::read::read_source;
use vdar::input::{ExtentMap, FileId, FileTable, MemSource, Source, SECTOR};

/// Opens `data` as one extent with `open` and maps it end to end, inflating every compressed
/// run. Errors are fine; a run outside the extent, a panic, a hang or a huge allocation is a
/// bug. A bad entry skips one grain so the rest of the tables is still walked, and the walk is
/// capped so a tiny input claiming a 64 TiB disk of small grains stays fast.
pub fn map_end_to_end<E: ExtentMap>(
    name: &str,
    data: &[u8],
    open: impl Fn(&FileTable, FileId) -> vdar::Result<E>,
) {
    let mut files = FileTable::default();
    let id = files.add(Arc::new(MemSource::new(name, data.to_vec())));
    let Ok(mut ext) = open(&files, id) else {
        return;
    };
    let cap = ext.sectors();
    let mut lba = 0;
    for _ in 0..100_000 {
        if lba >= cap {
            break;
        }
        let Ok(run) = ext.map(lba, cap - lba) else {
            lba += ext.grain_sectors();
            continue;
        };
        assert!(
            run.sectors >= 1 && run.sectors <= cap - lba,
            "{run:?} at {lba}"
        );
        if let Source::Deflate { .. } = run.source {
            // Deflate runs stay within one grain (<= 1 MiB): the buffer is bounded.
            let mut buf = vec![0u8; (run.sectors * SECTOR) as usize];
            let _ = read_source(&files, &run.source, &mut buf);
        }
        lba += run.sectors;
    }
}
