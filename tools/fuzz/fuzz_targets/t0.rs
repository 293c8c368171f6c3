//! Fuzz target: `vdar blockmap import` inputs (`vmkfstools -t0` text, `esxcli storage vmfs
//! extent list` text, probe lines, a descriptor; NUL-separated) through `san::t0::import`, plus
//! a render/import round trip of every imported file. Errors are fine; panics are bugs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vdar::san::t0::fuzz_t0(data);
});
