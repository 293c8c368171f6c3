//! Progress lines on stderr when it is a terminal, redrawn at most twice a second: a backup's
//! and a restore's. Both measure how far along over disk positions, not bytes moved: zero
//! ranges are neither read nor written, so byte counts alone say nothing about a sparse disk.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::pipeline::Progress;
use crate::restore::{ProgressHook, RestoreProgress};

use super::units::human;

/// Redraws one line, at most every 500 ms.
pub struct Throttle {
    start: Instant,
    last: Mutex<Instant>,
}

impl Throttle {
    /// Starts the clock.
    pub fn new() -> Self {
        let start = Instant::now();
        Throttle {
            start,
            last: Mutex::new(start),
        }
    }

    /// Draws `line(seconds since start)` unless a line went out less than 500 ms ago.
    pub fn show(&self, line: impl FnOnce(f64) -> String) {
        let mut l = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if l.elapsed().as_millis() < 500 {
            return;
        }
        *l = Instant::now();
        eprint!("\r\x1b[K{}", line(self.start.elapsed().as_secs_f64()));
    }
}

/// Erases the progress line.
pub fn clear() {
    eprint!("\r\x1b[K");
}

/// `secs` into a job `done` of `total` through: the estimated seconds left.
fn eta(done: u64, total: u64, secs: f64) -> f64 {
    let done = done.min(total).max(1);
    secs.max(0.001) * total.saturating_sub(done) as f64 / done as f64
}

/// One backup progress line, `secs` seconds into a backup of `total` disk bytes.
pub fn backup_line(p: &Progress, total: u64, secs: f64) -> String {
    format!(
        "{} {} read {:.0} MB/s, {} written, dedup {:.2}x, compression {:.2}x, ETA {:.0}s",
        p.current,
        human(p.bytes_read),
        p.bytes_read as f64 / secs.max(0.001) / 1e6,
        human(p.bytes_written),
        p.dedup_ratio(),
        p.compression_ratio(),
        eta(p.disk_bytes, total, secs)
    )
}

/// One restore progress line, `secs` seconds in.
pub fn restore_line(p: &RestoreProgress, secs: f64) -> String {
    format!(
        "{} {} of {} ({:.0}%), {} written, {:.0} MB/s, ETA {:.0}s",
        p.current,
        human(p.position),
        human(p.total),
        100.0 * p.position.min(p.total) as f64 / p.total.max(1) as f64,
        human(p.bytes_written),
        p.bytes_written as f64 / secs.max(0.001) / 1e6,
        eta(p.position, p.total, secs)
    )
}

/// A restore hook that draws [`restore_line`], when stderr is a terminal (quiet otherwise).
pub fn restore_printer() -> Option<ProgressHook> {
    std::io::stderr().is_terminal().then(|| {
        let t = Throttle::new();
        ProgressHook(Arc::new(move |p: &RestoreProgress| {
            t.show(|secs| restore_line(p, secs))
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_line_figures() {
        let p = Progress {
            current: "vm/scsi0:0".into(),
            disk_bytes: 1 << 30,
            bytes_read: 500_000_000,
            bytes_written: 100 << 20,
            stored_raw_bytes: 300 << 20,
            dedup_bytes: 100 << 20,
            stored_bytes: 100 << 20,
            ..Default::default()
        };
        assert_eq!(
            backup_line(&p, 4 << 30, 10.0),
            "vm/scsi0:0 476.8 MiB read 50 MB/s, 100.0 MiB written, dedup 1.33x, \
             compression 3.00x, ETA 30s"
        );
    }

    #[test]
    fn restore_line_figures() {
        let p = RestoreProgress {
            current: "vm/scsi0:0".into(),
            position: 1 << 30,
            total: 4 << 30,
            bytes_written: 300_000_000,
        };
        assert_eq!(
            restore_line(&p, 10.0),
            "vm/scsi0:0 1.0 GiB of 4.0 GiB (25%), 286.1 MiB written, 30 MB/s, ETA 30s"
        );
    }
}
