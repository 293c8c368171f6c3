//! Fuzz target: arbitrary bytes as block-map JSON through `BlockMap::parse` (serde plus every
//! `check` rule); a map that passes must serialize and parse back to itself. Errors are fine;
//! panics are bugs.
#![no_main]

use std::path::Path;

use vdar::san::blockmap::{file_name_of, BlockMap};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.json");
    let Ok(map) = BlockMap::parse(path, data) else {
        return;
    };
    let again = BlockMap::parse(path, map.to_json().as_bytes())
        .expect("a checked map serializes to a valid map");
    assert_eq!(again, map, "block map JSON round trip");
    for f in &map.files {
        let _ = file_name_of(&f.path);
    }
});
