//! zstd with one compression and one decompression context per thread.
//!
//! `zstd::bulk::compress`/`decompress` create and zero a fresh context for every call; for
//! 4 MiB chunks that setup was a few percent of a restore's CPU (the context memset showed in
//! profiles). Contexts carry no data between frames, so reusing them changes no output byte.

use std::cell::RefCell;
use std::io;

use zstd::bulk::{Compressor, Decompressor};
use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective as EndDirective;
use zstd::zstd_safe::{InBuffer, OutBuffer, ResetDirective};

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
    /// Decompression output that is consumed at once (sparse runs scattered into the chunk).
    static PLAIN_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Compresses `raw` into one zstd frame at `level`, appended to `out`. The frame is written
/// straight into `out`'s spare capacity: compressing into a scratch buffer and copying it over
/// was a memory copy of every stored byte (under 1% of a backup's CPU, but for nothing).
pub fn compress_append(raw: &[u8], level: i32, out: &mut Vec<u8>) -> io::Result<()> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, Compressor::new(level)?));
        }
        let (_, comp) = c.as_mut().expect("invariant: just set");
        let ctx = comp.context_mut();
        // With room for the worst case, zstd compresses the whole input in one pass straight
        // into the output, exactly as its one-shot call does: the frames are the same bytes.
        out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
        let start = out.len();
        let mut input = InBuffer::around(raw);
        let left = {
            let mut output = OutBuffer::around_pos(out, start);
            ctx.compress_stream2(&mut output, &mut input, EndDirective::ZSTD_e_end)
        };
        if left == Ok(0) && input.pos() == raw.len() {
            return Ok(());
        }
        // Close the failed frame so that the next call starts a new one, and drop its bytes.
        let _ = ctx.reset(ResetDirective::SessionOnly);
        out.truncate(start);
        Err(match left {
            Err(code) => zstd_error(code),
            Ok(_) => io::Error::other("zstd left the frame unfinished with worst-case room"),
        })
    })
}

fn zstd_error(code: usize) -> io::Error {
    io::Error::other(zstd::zstd_safe::get_error_name(code))
}

/// Decompresses one frame of at most `cap` bytes of plaintext; a larger frame is an error,
/// so a hostile payload cannot make it allocate more than the caller admitted.
pub fn decompress(payload: &[u8], cap: usize) -> io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(Decompressor::new()?);
        }
        d.as_mut()
            .expect("invariant: just set")
            .decompress(payload, cap)
    })
}

/// Decompresses one frame of at most `cap` bytes into a per-thread buffer and hands it to
/// `use_bytes`: no allocation per call for output that is copied elsewhere anyway.
pub fn decompress_with<R>(
    payload: &[u8],
    cap: usize,
    use_bytes: impl FnOnce(&[u8]) -> R,
) -> io::Result<R> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(Decompressor::new()?);
        }
        let d = d.as_mut().expect("invariant: just set");
        PLAIN_SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            s.clear();
            s.reserve(cap);
            let n = d.decompress_to_buffer(payload, &mut *s)?;
            // The buffer may be larger than asked for; the cap is the caller's.
            if n > cap {
                return Err(io::Error::other(format!(
                    "frame holds more than the {cap} bytes expected"
                )));
            }
            Ok(use_bytes(&s[..n]))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(raw: &[u8], level: i32) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        compress_append(raw, level, &mut out)?;
        Ok(out)
    }

    #[test]
    fn same_frames_as_one_shot_calls_and_caps_hold() {
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 977) as u8)
            .collect();
        for level in [1, 3, 3, 19, 3] {
            let a = compress(&data, level).unwrap();
            assert_eq!(
                a,
                zstd::bulk::compress(&data, level).unwrap(),
                "level {level}"
            );
            assert_eq!(decompress(&a, data.len()).unwrap(), data);
            assert!(decompress(&a, data.len() - 1).is_err());
        }
        assert!(decompress(b"not zstd", 100).is_err());
        // Appending keeps what was there and adds the very frame of a one-shot call, also for
        // inputs past zstd's block and window sizes and into a buffer with room to spare.
        let big: Vec<u8> = (0..(4 << 20) + 123u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 28) as u8 & (i / 4096 % 3) as u8)
            .collect();
        let mut out = Vec::with_capacity(16 << 20);
        out.extend_from_slice(b"table");
        compress_append(&big, 3, &mut out).unwrap();
        assert_eq!(&out[..5], b"table");
        assert!(out[5..] == zstd::bulk::compress(&big, 3).unwrap()[..]);
        let before = out.len();
        compress_append(&[], 3, &mut out).unwrap();
        assert_eq!(out[before..], zstd::bulk::compress(&[], 3).unwrap()[..]);
        // The kept buffer grows to the largest frame; caps still hold after that.
        let a = compress(&data, 3).unwrap();
        let small = compress(&data[..1000], 3).unwrap();
        assert!(decompress_with(&a, data.len(), |b| b == data).unwrap());
        assert!(decompress_with(&a, data.len() - 1, |_| ()).is_err());
        assert_eq!(decompress_with(&small, 1000, |b| b.len()).unwrap(), 1000);
        assert!(decompress_with(&a, 1000, |_| ()).is_err());
        // A failed call leaves the context usable.
        let a = compress(&data, 3).unwrap();
        assert_eq!(decompress(&a, data.len()).unwrap(), data);
    }
}
