//! SIGINT and SIGTERM during a backup or restore. The first asks the work to stop between
//! chunks: it then fails through its normal error path, which removes the `.partial` outputs,
//! and exits 128 + the signal number like a process the signal killed. A second one exits at
//! once (the way out if the work is stuck in a read).

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::cancel::Cancel;
use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM};

/// Installs the handlers and returns the flag they set.
pub fn on_interrupt() -> anyhow::Result<Cancel> {
    let cancel = Cancel::default();
    let again = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Handlers run in order: the shutdown checks whether an earlier signal set `again`.
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, again.clone())
            .and_then(|_| signal_hook::flag::register(sig, again.clone()))
            .and_then(|_| signal_hook::flag::register_usize(sig, cancel.flag(), sig as usize))
            .context("installing signal handlers")?;
    }
    Ok(cancel)
}

/// The exit for an error that is an interruption: a notice on stderr and 128 + the signal.
pub fn interrupted(e: &anyhow::Error, prog: &str) -> Option<ExitCode> {
    match e.downcast_ref::<crate::Error>() {
        Some(crate::Error::Interrupted(sig)) => {
            eprintln!(
                "{prog}: interrupted by signal {sig}: output incomplete, unfinished files removed"
            );
            Some(ExitCode::from(128u8.saturating_add(*sig as u8)))
        }
        _ => None,
    }
}
