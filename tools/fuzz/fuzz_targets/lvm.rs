//! Fuzz target: VMFS LVM header and PE table decoding (`LvmHeader::decode`, `PeEntry::decode`,
//! `read_lvm`) and the LUN partition probing (MBR, GPT, LVM: `lun::probe_device`) on an
//! in-memory device; the first byte picks which. Errors are fine; panics and huge allocations
//! are bugs.
//!
//! `data[0]` even: `data[1..]` is an LVM header (first 1 KiB, zero-padded), a PE bitmap (next
//! 1 KiB) and PE table entries (the rest), decoded directly and then through `read_lvm` as a
//! partition holding them at their on-disk offsets. `data[0]` odd: `data[1..]` is a virtual
//! device: a u64 LE device length (capped at 16 TiB), then records of `u32 LE offset in KiB,
//! u16 LE length, bytes` placed at that offset (the seeds' test in src/san/lun.rs reads the
//! same layout).
#![no_main]

use std::path::Path;

use vdar::san::lun::probe_device;
use vdar::san::lvm::{
    read_lvm, LvmHeader, PeEntry, LVM_HEADER_BYTES, LVM_HEADER_OFFSET, MAX_PES_PER_DEVICE,
    PE_BITMAP_OFFSET, PE_ENTRY_BYTES, PE_TABLE_OFFSET,
};
use vdar::Error;

/// A device of `len` bytes holding `segs` (device offset, bytes); zeros elsewhere.
struct Device<'a> {
    path: &'a Path,
    len: u64,
    segs: Vec<(u64, &'a [u8])>,
}

impl Device<'_> {
    /// Reads at `off`; a read past the end of the device fails, as on a real one.
    fn read_at(&self, buf: &mut [u8], off: u64) -> vdar::Result<()> {
        let end = off.checked_add(buf.len() as u64).filter(|&e| e <= self.len);
        let Some(end) = end else {
            return Err(Error::corrupt(
                self.path,
                off,
                "read past the end of the device",
            ));
        };
        buf.fill(0);
        for &(at, bytes) in &self.segs {
            let s_end = at + bytes.len() as u64;
            let (lo, hi) = (at.max(off), s_end.min(end));
            if lo < hi {
                buf[(lo - off) as usize..(hi - off) as usize]
                    .copy_from_slice(&bytes[(lo - at) as usize..(hi - at) as usize]);
            }
        }
        Ok(())
    }
}

fn lvm(data: &[u8]) {
    let path = Path::new("fuzz-lvm");
    let window = |from: usize, to: usize| data.get(from.min(data.len())..to.min(data.len()));
    let header = window(0, LVM_HEADER_BYTES).unwrap_or_default();
    let bitmap = window(LVM_HEADER_BYTES, 2 * LVM_HEADER_BYTES).unwrap_or_default();
    let table = window(2 * LVM_HEADER_BYTES, usize::MAX).unwrap_or_default();
    let mut b = [0u8; LVM_HEADER_BYTES];
    b[..header.len()].copy_from_slice(header);
    let _ = LvmHeader::decode(path, LVM_HEADER_OFFSET, &b);
    for raw in table.chunks_exact(PE_ENTRY_BYTES) {
        let raw: &[u8; PE_ENTRY_BYTES] = raw.try_into().expect("exact chunk");
        if let Some(pe) = PeEntry::decode(raw) {
            assert_eq!(
                PeEntry::decode(&pe.encode()),
                Some(pe),
                "PE entry round trip"
            );
        }
    }
    // A partition at byte 0 whose metadata is `data`; a device big enough for a full table.
    let hdr = LVM_HEADER_OFFSET;
    let dev = Device {
        path,
        len: (hdr + PE_TABLE_OFFSET)
            + (u64::from(MAX_PES_PER_DEVICE) * PE_ENTRY_BYTES as u64).max(table.len() as u64),
        segs: vec![
            (hdr, header),
            (hdr + PE_BITMAP_OFFSET, bitmap),
            (hdr + PE_TABLE_OFFSET, table),
        ],
    };
    let _ = read_lvm(path, 0, &mut |buf, off| dev.read_at(buf, off));
}

fn lun(data: &[u8]) {
    let Some((len, mut rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let mut dev = Device {
        path: Path::new("fuzz-lun"),
        len: u64::from_le_bytes(*len).min(16 << 40),
        segs: Vec::new(),
    };
    while let Some((hd, r)) = rest.split_first_chunk::<6>() {
        let at = u64::from(u32::from_le_bytes([hd[0], hd[1], hd[2], hd[3]])) * 1024;
        let n = usize::from(u16::from_le_bytes([hd[4], hd[5]])).min(r.len());
        dev.segs.push((at, &r[..n]));
        rest = &r[n..];
    }
    let _ = probe_device(dev.path, dev.len, &mut |buf, off| dev.read_at(buf, off));
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((&mode, rest)) if mode & 1 == 1 => lun(rest),
        Some((_, rest)) => lvm(rest),
        None => {}
    }
});
