//! Fuzz target: arbitrary bytes as an archive through every reader: stream and seekable listing,
//! verify, and a restore into a discarding sink with and without salvage. Errors are fine;
//! panics, hangs and allocations past the limits of `vdar::archive::format` are bugs.
#![no_main]

use std::io::Cursor;

use vdar::restore::{restore_to_sink, RestoreOptions};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vdar::list::list_stream(&mut &data[..]);
    let _ = vdar::list::list_seekable(&mut Cursor::new(data));
    // What an incremental backup reads of a base it is given.
    let _ = vdar::base::BaseImage::from_archive(&mut Cursor::new(data), std::path::Path::new("b"));
    let _ = vdar::verify::verify(&mut &data[..]);
    for salvage in [false, true] {
        let opts = RestoreOptions {
            salvage,
            ..Default::default()
        };
        let _ = restore_to_sink(&mut &data[..], &opts);
    }
});
