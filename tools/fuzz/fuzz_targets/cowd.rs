//! Fuzz target: arbitrary bytes through the cowd parser (`cowd::open`) and the mapping of every
//! sector. Errors are fine; panics, hangs and huge allocations are bugs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vdar::fixture::walk::map_end_to_end("fuzz-delta.vmdk", data, vdar::input::cowd::open);
});
