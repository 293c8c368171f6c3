//! `-v` and `-q`: warnings, notices and detail go out as `log` records, printed by env_logger
//! as `vdar: warning: …` (warnings), `vdar: …` (notices, summaries, `-v` detail).
//!
//! The `log` facade is what the Rust ecosystem logs through, so a library-side record would
//! need no second mechanism; env_logger without its default features is its smallest common
//! backend (no colours, no timestamps, no regex). tracing would bring spans and a subscriber
//! stack that a command-line tool that prints a few lines does not use.
//!
//! Levels: default notices (info) and warnings; `-q` warnings only; `-qq` nothing (errors are
//! printed by the caller whatever the level); `-v` adds detail (debug: the I/O engine, per-disk
//! timings), `-vv` trace.

use std::io::Write;

use log::{Level, LevelFilter};

/// The level the flags ask for.
pub fn level(verbose: u8, quiet: u8) -> LevelFilter {
    match (verbose, quiet) {
        (_, 1) => LevelFilter::Warn,
        (_, q) if q > 1 => LevelFilter::Off,
        (0, _) => LevelFilter::Info,
        (1, _) => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Installs the logger. Records of other crates are dropped: only vdar's lines are the tool's.
pub fn init(verbose: u8, quiet: u8) {
    let _ = env_logger::Builder::new()
        .filter_level(LevelFilter::Off)
        .filter_module("vdar", level(verbose, quiet))
        .format(|buf, r| {
            let kind = match r.level() {
                Level::Error => "error: ",
                Level::Warn => "warning: ",
                _ => "",
            };
            writeln!(buf, "vdar: {kind}{}", r.args())
        })
        .target(env_logger::Target::Pipe(Box::new(AboveTheBar)))
        .try_init();
}

/// Stderr, with a progress bar on screen moved out of the way of each record.
struct AboveTheBar;

impl Write for AboveTheBar {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        super::progress::suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_to_levels() {
        assert_eq!(level(0, 0), LevelFilter::Info);
        assert_eq!(level(0, 1), LevelFilter::Warn);
        assert_eq!(level(0, 2), LevelFilter::Off);
        assert_eq!(level(1, 0), LevelFilter::Debug);
        assert_eq!(level(3, 0), LevelFilter::Trace);
    }
}
