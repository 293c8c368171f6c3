//! Fuzz target: arbitrary bytes as an archive through list, verify and a discarding restore.
//! Errors are fine; panics, hangs and large allocations are bugs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vdar::archive::fuzz_archive(data);
});
