//! Fuzz target: arbitrary bytes as a catalog (formats/CATALOG.md) and as a changed-areas list
//! (formats/JSON.md), the two files an incremental backup reads besides its inputs. A catalog
//! that decodes must encode to one that decodes to the same image. Errors are fine; panics
//! and allocations past the header's checked lengths are bugs.
#![no_main]

use std::path::Path;

use vdar::base::catalog;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vdar::job::changes::ChangedAreas::parse(data, Path::new("areas.json"));
    let Ok(img) = catalog::decode(data, Path::new("fuzz.vcat")) else {
        return;
    };
    let places = img.places();
    let again = catalog::encode(&img.id, &img.manifest, &places);
    let back = catalog::decode(&again, Path::new("again.vcat")).expect("a decoded catalog re-encodes");
    assert_eq!(back.places(), places, "catalog round trip");
    assert_eq!(back.id, img.id);
});
