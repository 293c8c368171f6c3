//! Fuzz target: arbitrary bytes as the first volume of a volume set (formats/VOLUME.md), read
//! through the volume reader to its end, and as a catalog header's identity. A header that
//! decodes must encode to the same first 512 bytes. Errors are fine; panics are bugs.
#![no_main]

use std::io::Read;

use vdar::archive::volume::{VolumeHeader, VolumeReader, HEADER_CORE_BYTES};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vdar::base::catalog::id_of(data);
    if let Some(core) = data.get(..HEADER_CORE_BYTES) {
        let core: &[u8; HEADER_CORE_BYTES] = core.try_into().expect("len");
        if let Ok(h) = VolumeHeader::decode(core, "fuzz") {
            let again = h.encode();
            assert_eq!(VolumeHeader::decode(again[..HEADER_CORE_BYTES].try_into().unwrap(), "again").ok(), Some(h));
        }
    }
    let Ok(mut r) = VolumeReader::open("fuzz", Box::new(std::io::Cursor::new(data.to_vec())), None, None) else {
        return;
    };
    let mut sink = Vec::new();
    let _ = r.read_to_end(&mut sink);
    assert!(sink.len() <= data.len(), "a volume yields no more than it holds");
});
