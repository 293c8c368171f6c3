//! Fuzz target: arbitrary bytes through the sparse parser (`SparseExtent::open`), its embedded
//! descriptor, the mapping of every sector and the inflating of every compressed run. Errors are
//! fine; panics, hangs and huge allocations are bugs.
#![no_main]

use vdar::input::sparse::SparseExtent;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vdar::fixture::walk::map_end_to_end("fuzz.vmdk", data, |files, id| {
        let ext = SparseExtent::open(files, id)?;
        let _ = ext.embedded_descriptor();
        Ok(ext)
    });
});
