//! A drive buffer: the archive stream handed to a writer thread through a bounded queue of
//! 1 MiB pieces, so a tape drive (or a pipe to one) keeps streaming while compression has a
//! slow moment, and compression keeps going while the drive repositions or changes volume.
//! A drive that runs dry stops and backs up (shoe-shining); counting the moments it waited
//! shows whether the buffer is large enough.

use std::io::{self, Write};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, SendTimeoutError, Sender};

use crate::cancel::Cancel;

/// The default buffer: a quarter of a second of a 300 MB/s drive (LTO-9's native rate is
/// 400 MB/s; LTO-7 and -8 run at 300 and 360).
pub const DEFAULT_DRIVE_BUFFER: usize = 64 << 20;

/// Bytes per queued piece.
const PIECE_BYTES: usize = 1 << 20;
/// A wait for data longer than this counts as a stall (a drive's repositioning takes seconds;
/// a millisecond is already a gap a 300 MB/s drive notices).
const STALL: Duration = Duration::from_millis(1);

/// What the buffer saw, for `-v` and the benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DriveStats {
    /// Bytes written to the drive.
    pub bytes: u64,
    /// Times the drive had nothing to write (after the first byte, before the end).
    pub stalls: u64,
    /// Seconds it waited in those stalls.
    pub starved_secs: f64,
    /// Seconds the archive writer waited for room (the drive was the slower side).
    pub blocked_secs: f64,
    /// Seconds from the first byte to the last.
    pub busy_secs: f64,
}

type Drive = Box<dyn Write + Send>;

/// A buffered writer in front of `Drive`; [`DriveBuffer::finish`] drains it.
pub struct DriveBuffer {
    piece: Vec<u8>,
    to_drive: Option<Sender<Vec<u8>>>,
    thread: Option<JoinHandle<(io::Result<()>, DriveStats)>>,
    blocked: Duration,
    cancel: Cancel,
}

/// How often a wait for the drive looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

impl DriveBuffer {
    /// Buffers up to `bytes` (at least one piece) in front of `drive`. Waiting for the drive
    /// (for room, or for it to drain at the end) stops when `cancel` is set: a reader that
    /// stopped reading must not hold a SIGTERM up.
    pub fn new(drive: Drive, bytes: usize, cancel: Cancel) -> DriveBuffer {
        let (tx, rx) = bounded::<Vec<u8>>((bytes / PIECE_BYTES).max(1));
        let stop = cancel.clone();
        let thread = std::thread::spawn(move || {
            let mut drive = drive;
            let mut stats = DriveStats::default();
            let mut first: Option<Instant> = None;
            loop {
                let waited = Instant::now();
                let Ok(piece) = rx.recv() else { break };
                let w = waited.elapsed();
                if first.is_some() && w > STALL {
                    stats.stalls += 1;
                    stats.starved_secs += w.as_secs_f64();
                }
                first.get_or_insert_with(Instant::now);
                // Stopped: not another piece goes out, so what a stopped backup wrote is
                // short of the end, as without the buffer.
                if let Err(e) = stop.check() {
                    return (Err(io::Error::other(e)), stats);
                }
                if let Err(e) = drive.write_all(&piece) {
                    return (Err(e), stats);
                }
                stats.bytes += piece.len() as u64;
            }
            let r = drive.flush();
            stats.busy_secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
            (r, stats)
        });
        DriveBuffer {
            piece: Vec::with_capacity(PIECE_BYTES),
            to_drive: Some(tx),
            thread: Some(thread),
            blocked: Duration::ZERO,
            cancel,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let mut piece = std::mem::replace(&mut self.piece, Vec::with_capacity(PIECE_BYTES));
        let started = Instant::now();
        let Some(tx) = self.to_drive.clone() else {
            return Err(io::Error::other("drive writer already stopped"));
        };
        loop {
            match tx.send_timeout(piece, POLL) {
                Ok(()) => break,
                Err(SendTimeoutError::Timeout(p)) => {
                    self.cancel.check().map_err(io::Error::other)?;
                    piece = p;
                }
                Err(SendTimeoutError::Disconnected(_)) => {
                    // The drive thread stopped: its error is the one to report.
                    let e = self.stop().0.err();
                    return Err(e.unwrap_or_else(|| io::Error::other("drive writer stopped")));
                }
            }
        }
        self.blocked += started.elapsed();
        Ok(())
    }

    fn stop(&mut self) -> (io::Result<()>, DriveStats) {
        self.to_drive = None;
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            if let Err(e) = self.cancel.check() {
                // The thread may be blocked on a reader that went quiet; the process ends
                // without it.
                self.thread = None;
                return (Err(io::Error::other(e)), DriveStats::default());
            }
            std::thread::sleep(Duration::from_millis(5).min(POLL));
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok((r, mut stats))) => {
                stats.blocked_secs = self.blocked.as_secs_f64();
                // A stop before the drive took the last byte stops the backup, whoever won.
                match self.cancel.check() {
                    Err(e) => (Err(io::Error::other(e)), stats),
                    Ok(()) => (r, stats),
                }
            }
            Some(Err(_)) => (
                Err(io::Error::other("drive writer panicked")),
                DriveStats::default(),
            ),
            None => (
                Err(io::Error::other("drive writer already stopped")),
                DriveStats::default(),
            ),
        }
    }

    /// Writes what is buffered, waits for the drive to take it all, and returns the figures.
    pub fn finish(mut self) -> io::Result<DriveStats> {
        if !self.piece.is_empty() {
            self.send()?;
        }
        let (r, stats) = self.stop();
        r.map(|()| stats)
    }
}

impl Write for DriveBuffer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(PIECE_BYTES - self.piece.len());
        self.piece.extend_from_slice(&data[..n]);
        if self.piece.len() == PIECE_BYTES {
            self.send()?;
        }
        Ok(n)
    }

    /// Pieces go out whole; the drive is flushed by [`DriveBuffer::finish`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A drive that takes `per_piece` per write and records what it got.
    struct Slow(std::sync::Arc<std::sync::Mutex<Vec<u8>>>, Duration);

    impl Write for Slow {
        fn write(&mut self, d: &[u8]) -> io::Result<usize> {
            std::thread::sleep(self.1);
            self.0.lock().unwrap().extend_from_slice(d);
            Ok(d.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_arrive_in_order_and_a_slow_drive_blocks_the_writer() {
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut b = DriveBuffer::new(
            Box::new(Slow(got.clone(), Duration::from_millis(5))),
            2 << 20,
            Cancel::default(),
        );
        let data: Vec<u8> = (0..(6u32 << 20) + 123).map(|i| (i % 251) as u8).collect();
        for c in data.chunks(300_000) {
            b.write_all(c).unwrap();
        }
        let stats = b.finish().unwrap();
        assert_eq!(*got.lock().unwrap(), data);
        assert_eq!(stats.bytes, data.len() as u64);
        assert!(stats.blocked_secs > 0.0, "{stats:?}");
    }

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "reader went away",
            ))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_drive_error_reaches_the_writer() {
        let mut b = DriveBuffer::new(Box::new(Broken), 1 << 20, Cancel::default());
        let mut r = Ok(());
        for _ in 0..8 {
            r = b.write_all(&[1u8; 1 << 20]);
            if r.is_err() {
                break;
            }
        }
        let e = r.err().or_else(|| b.finish().err()).expect("an error");
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{e}");
    }
}
