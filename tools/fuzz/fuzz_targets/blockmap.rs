//! Fuzz target: arbitrary bytes as block-map JSON through `BlockMap::parse` (serde plus every
//! `check` rule) and a serialize/parse round trip. Errors are fine; panics are bugs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vdar::san::blockmap::fuzz_blockmap(data);
});
