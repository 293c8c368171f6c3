//! Fuzz target: arbitrary bytes through the descriptor parser (`Descriptor::parse`). Errors are
//! fine; panics, hangs and huge allocations are bugs.
#![no_main]

use std::path::Path;

use vdar::input::descriptor::Descriptor;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = Descriptor::parse(Path::new("fuzz"), data);
});
