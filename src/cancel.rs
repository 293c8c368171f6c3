//! Stopping a backup or restore from outside: the command line sets the flag on SIGINT or
//! SIGTERM, and the pipelines check it between chunks, so they stop through their error path
//! and remove what they had not finished (the `.partial` files) instead of dying mid-write.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

/// A shared stop flag: zero runs, any other value (the caller's, e.g. a signal number) stops.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicUsize>);

impl Cancel {
    /// The flag itself, for a signal handler to set.
    pub fn flag(&self) -> Arc<AtomicUsize> {
        self.0.clone()
    }

    /// Asks the work to stop, with `why` (nonzero).
    pub fn set(&self, why: usize) {
        self.0.store(why.max(1), Ordering::Relaxed);
    }

    /// `Err(Error::Interrupted)` once set.
    pub fn check(&self) -> Result<()> {
        match self.0.load(Ordering::Relaxed) {
            0 => Ok(()),
            why => Err(Error::Interrupted(why)),
        }
    }
}
