//! Progress on stderr for backup, restore and verify: an indicatif bar on a terminal, plain
//! periodic lines when `--progress` forces it onto a pipe or file (a log, a systemd journal),
//! nothing otherwise (`--no-progress`, `-q`, or stderr not a terminal).
//!
//! Backup and restore measure how far along over disk positions, not bytes moved: zero ranges
//! are neither read nor written, so byte counts alone say nothing about a sparse disk. Verify
//! measures archive bytes read against the archive's size.
//!
//! The bar is indicatif's (console-rs, the most used bar crate, maintained, MSRV within ours):
//! it redraws at a bounded rate, cuts its line to the terminal width instead of wrapping, and
//! hides itself when its target is not a terminal.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::pipeline::Progress;
use crate::restore::{ProgressHook, RestoreProgress};

use super::units::human;

/// How progress is shown, decided once from the flags and stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Nothing.
    Off,
    /// A bar redrawn in place (stderr is a terminal).
    Bar,
    /// Plain lines every [`LINE_INTERVAL`] and at the end, no escape codes.
    Lines,
}

/// How often a plain progress line is printed.
const LINE_INTERVAL: Duration = Duration::from_secs(5);
/// How often the bar's text (rates, ratios) is recomputed; the bar itself moves on every call.
const DETAIL_INTERVAL: Duration = Duration::from_millis(250);

static MODE: OnceLock<Mode> = OnceLock::new();
/// The bar on screen, so a log record can be printed above it instead of through it.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Sets the mode from `--progress` (`Some(true)`), `--no-progress` or `-q` (`Some(false)`), or
/// neither (`None`: a bar when stderr is a terminal).
pub fn set_mode(forced: Option<bool>) {
    let tty = std::io::stderr().is_terminal();
    let mode = match forced {
        Some(false) => Mode::Off,
        Some(true) if !tty => Mode::Lines,
        _ if tty => Mode::Bar,
        _ => Mode::Off,
    };
    let _ = MODE.set(mode);
}

fn mode() -> Mode {
    *MODE.get_or_init(|| {
        if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Off
        }
    })
}

/// Runs `f` (which prints to stderr) with the bar hidden, so the text lands above it.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    let bar = ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match bar {
        Some(b) => b.suspend(f),
        None => f(),
    }
}

/// One running job's progress display, and its per-disk timings for `-v`.
pub struct Meter {
    mode: Mode,
    bar: Option<ProgressBar>,
    start: Instant,
    /// When the detail text or a plain line last went out.
    last: Mutex<Instant>,
    /// The disk being worked on and when it started, for `-v` timings.
    stage: Mutex<Option<(String, Instant)>>,
    /// The last position and total seen, for the final plain line; `None` before any.
    at: Mutex<Option<(u64, u64)>>,
}

impl Meter {
    /// A meter for a job whose size is not known yet (see [`Meter::update`]).
    pub fn new() -> Self {
        let mode = mode();
        let bar = (mode == Mode::Bar).then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(style(false));
            *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()) = Some(b.clone());
            b
        });
        let start = Instant::now();
        Meter {
            mode,
            bar,
            start,
            last: Mutex::new(start),
            stage: Mutex::new(None),
            at: Mutex::new(None),
        }
    }

    /// The job is at `pos` of `total` (0: unknown) in `label` (a disk, or the archive);
    /// `detail(seconds since start)` gives the rest of the line. Cheap: call it per chunk.
    pub fn update(&self, label: &str, pos: u64, total: u64, detail: impl FnOnce(f64) -> String) {
        self.stage(label);
        *self.at.lock().unwrap_or_else(|e| e.into_inner()) = Some((pos, total));
        if let Some(b) = &self.bar {
            if total > 0 && b.length() != Some(total) {
                b.set_length(total);
                b.set_style(style(true));
            }
            b.set_position(pos);
        }
        if self.mode == Mode::Off {
            return;
        }
        let interval = match self.mode {
            Mode::Lines => LINE_INTERVAL,
            _ => DETAIL_INTERVAL,
        };
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() < interval {
            return;
        }
        *last = Instant::now();
        let secs = self.start.elapsed().as_secs_f64();
        match &self.bar {
            Some(b) => b.set_message(detail(secs)),
            None => eprintln!("{}", plain_line(pos, total, secs, &detail(secs))),
        }
    }

    /// Logs the previous disk's time when the label changes.
    fn stage(&self, label: &str) {
        let mut stage = self.stage.lock().unwrap_or_else(|e| e.into_inner());
        if stage.as_ref().is_some_and(|(l, _)| l == label) {
            return;
        }
        log_stage(stage.take());
        // Before the first disk starts, a backup reports progress without one.
        *stage = (!label.is_empty()).then(|| (label.to_string(), Instant::now()));
    }

    /// The job is over (done or failed): the bar is erased, a plain mode prints its last line
    /// (`detail` as in [`Meter::update`]) unless the job never started.
    pub fn finish(&self, detail: impl FnOnce(f64) -> String) {
        log_stage(self.stage.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        let at = *self.at.lock().unwrap_or_else(|e| e.into_inner());
        if let (Mode::Lines, Some((pos, total))) = (self.mode, at) {
            let secs = self.start.elapsed().as_secs_f64();
            eprintln!("{}", plain_line(pos, total, secs, &detail(secs)));
        }
    }
}

/// `-v`: how long a disk (or the archive, for verify) took.
fn log_stage(stage: Option<(String, Instant)>) {
    if let Some((label, t)) = stage {
        log::debug!("{label}: done in {:.2}s", t.elapsed().as_secs_f64());
    }
}

/// The bar's layout: bar, percentage and ETA where the total is known; a spinner and the bytes
/// done otherwise. `{wide_msg}` takes what is left of the line and is cut, never wrapped.
fn style(known_total: bool) -> ProgressStyle {
    let template = if known_total {
        "{bar:20} {percent:>3}% {done}/{total} ETA {eta} {wide_msg}"
    } else {
        "{spinner} {done} {wide_msg}"
    };
    ProgressStyle::with_template(template)
        .expect("invariant: the template is valid")
        .with_key("done", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{}", human(s.pos()));
        })
        .with_key("total", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{}", human(s.len().unwrap_or(0)));
        })
}

/// `secs` into a job `done` of `total` through: the estimated seconds left.
fn eta(done: u64, total: u64, secs: f64) -> f64 {
    let done = done.min(total).max(1);
    secs.max(0.001) * total.saturating_sub(done) as f64 / done as f64
}

/// One plain progress line: percentage and ETA when the total is known.
fn plain_line(pos: u64, total: u64, secs: f64, detail: &str) -> String {
    if total == 0 {
        return format!("vdar: progress: {}, {detail}", human(pos));
    }
    format!(
        "vdar: progress: {:.0}% {} of {}, ETA {:.0}s, {detail}",
        100.0 * pos.min(total) as f64 / total as f64,
        human(pos),
        human(total),
        eta(pos, total, secs)
    )
}

/// The detail of a backup line, `secs` seconds in.
pub fn backup_detail(p: &Progress, secs: f64) -> String {
    format!(
        "{}: {} read {:.0} MB/s, {} written, dedup {:.2}x, compression {:.2}x",
        p.current,
        human(p.bytes_read),
        p.bytes_read as f64 / secs.max(0.001) / 1e6,
        human(p.bytes_written),
        p.dedup_ratio(),
        p.compression_ratio(),
    )
}

/// The detail of a restore line, `secs` seconds in.
pub fn restore_detail(p: &RestoreProgress, secs: f64) -> String {
    format!(
        "{}: {} written, {:.0} MB/s",
        p.current,
        human(p.bytes_written),
        p.bytes_written as f64 / secs.max(0.001) / 1e6,
    )
}

/// A restore's progress: the hook to hand the library and the meter to finish afterwards.
/// The hook keeps the last counters, so the final line can show them.
pub fn restore_meter() -> (ProgressHook, Arc<Meter>, Arc<Mutex<RestoreProgress>>) {
    let meter = Arc::new(Meter::new());
    let last = Arc::new(Mutex::new(RestoreProgress::default()));
    let (m, l) = (meter.clone(), last.clone());
    let hook = ProgressHook(Arc::new(move |p: &RestoreProgress| {
        m.update(&p.current, p.position, p.total, |secs| {
            restore_detail(p, secs)
        });
        p.clone_into(&mut l.lock().unwrap_or_else(|e| e.into_inner()));
    }));
    (hook, meter, last)
}

/// Ends a restore's meter with its last counters.
pub fn finish_restore(meter: &Meter, last: &Mutex<RestoreProgress>) {
    let p = last.lock().unwrap_or_else(|e| e.into_inner()).clone();
    meter.finish(|secs| restore_detail(&p, secs));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_detail_figures() {
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
            backup_detail(&p, 10.0),
            "vm/scsi0:0: 476.8 MiB read 50 MB/s, 100.0 MiB written, dedup 1.33x, \
             compression 3.00x"
        );
    }

    #[test]
    fn plain_line_figures() {
        assert_eq!(
            plain_line(1 << 30, 4 << 30, 10.0, "vm/scsi0:0: x"),
            "vdar: progress: 25% 1.0 GiB of 4.0 GiB, ETA 30s, vm/scsi0:0: x"
        );
        assert_eq!(
            plain_line(1 << 20, 0, 1.0, "archive"),
            "vdar: progress: 1.0 MiB, archive"
        );
    }
}
