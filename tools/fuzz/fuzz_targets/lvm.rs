//! Fuzz target: VMFS LVM header and PE table decoding (`LvmHeader::decode`, `PeEntry::decode`,
//! `read_lvm`) and the LUN partition probing (MBR, GPT) on an in-memory device; the first byte
//! picks which. Errors are fine; panics and huge allocations are bugs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vdar::san::lvm::fuzz_lvm(data);
});
