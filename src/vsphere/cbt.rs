//! `QueryChangedDiskAreas`: with change id `*`, a disk's areas in use, what VADP backup tools
//! read of a thin disk instead of its whole flat file (see [`crate::input::in_use`]); with the
//! change id a base recorded, what changed since (an incremental's changed-areas list).
//!
//! The server answers one page at a time: `startOffset` (the offset asked for), `length` (how
//! far the page covers) and the `changedArea`s inside it; the next call starts where the page
//! ends. Every page is checked: it starts where asked, makes progress, stays inside the disk,
//! and its areas lie inside it in order. The call needs change tracking on the VM; a server that
//! refuses it, or answers badly, costs only speed: the caller reads the disk whole.

use super::soap::{children, el, returnvals, text, MoRef, Soap};
use crate::archive::manifest::DiskOrigin;
use crate::error::{Error, Result};
use crate::input::in_use::{DiskAreas, MAX_AREAS};

/// Most pages for one disk: ESX pages cover gigabytes, so this is only a bound on a server that
/// creeps forward a byte at a time.
const MAX_PAGES: usize = 1 << 16;

/// The areas in use of `disk` as `snapshot` (of `vm`) froze it.
pub fn in_use(soap: &Soap, vm: &MoRef, snapshot: &MoRef, disk: &DiskOrigin) -> Result<DiskAreas> {
    let areas = changed(soap, vm, snapshot, disk, "*")?;
    DiskAreas::from_bytes(disk.capacity, areas).map_err(|why| bad(soap, disk, why))
}

/// The areas (start, length in bytes) of `disk` that changed between the state `since`
/// names and `snapshot` (of `vm`), as the server lists them: every page followed and checked.
pub fn changed(
    soap: &Soap,
    vm: &MoRef,
    snapshot: &MoRef,
    disk: &DiskOrigin,
    since: &str,
) -> Result<Vec<(u64, u64)>> {
    let capacity = disk.capacity;
    let mut areas: Vec<(u64, u64)> = Vec::new();
    let mut start = 0u64;
    let mut pages = 0usize;
    while start < capacity {
        pages += 1;
        if pages > MAX_PAGES {
            return Err(bad(soap, disk, format!("more than {MAX_PAGES} pages")));
        }
        let args = format!(
            "{}{}{}{}",
            snapshot.xml("snapshot"),
            el("deviceKey", &disk.key.to_string()),
            el("startOffset", &start.to_string()),
            el("changeId", since)
        );
        let answer = soap.call("QueryChangedDiskAreas", vm, &args, true)?;
        let doc = answer.doc()?;
        let page = returnvals(&doc)
            .into_iter()
            .next()
            .ok_or_else(|| bad(soap, disk, "an answer without a returnval".into()))?;
        let num = |n: roxmltree::Node<'_, '_>, name: &str| {
            text(n, name)
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(|| bad(soap, disk, format!("no usable {name} in the answer")))
        };
        let (from, len) = (num(page, "startOffset")?, num(page, "length")?);
        let end = from.checked_add(len).filter(|&e| e <= capacity);
        let end = match end {
            Some(e) if from == start && len > 0 => e,
            _ => {
                return Err(bad(
                    soap,
                    disk,
                    format!("asked from byte {start}, the answer covers {len} bytes from {from}"),
                ))
            }
        };
        for a in children(page, "changedArea") {
            let (s, l) = (num(a, "start")?, num(a, "length")?);
            if l == 0 {
                return Err(bad(soap, disk, format!("an empty area at byte {s}")));
            }
            if s < from || s.checked_add(l).is_none_or(|e| e > end) {
                return Err(bad(
                    soap,
                    disk,
                    format!("area of {l} bytes at byte {s} lies outside its page [{from}, {end})"),
                ));
            }
            if areas.len() == MAX_AREAS {
                return Err(bad(soap, disk, format!("more than {MAX_AREAS} areas")));
            }
            areas.push((s, l));
        }
        start = end;
    }
    Ok(areas)
}

fn bad(soap: &Soap, disk: &DiskOrigin, why: String) -> Error {
    soap.error(format!(
        "QueryChangedDiskAreas for disk {} ({}): {why}",
        disk.key,
        disk.files.first().map_or("?", String::as_str)
    ))
}
