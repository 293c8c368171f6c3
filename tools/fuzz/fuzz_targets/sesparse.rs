//! Fuzz target: arbitrary bytes through the sesparse parser. Errors are fine; panics, hangs and
//! huge allocations are bugs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vdar::input::sesparse::fuzz_sesparse(data);
});
