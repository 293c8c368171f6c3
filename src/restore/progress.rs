//! Restore progress: where in the selected disks the restore is, for a progress line.
//!
//! Position, like a backup's, is measured over disk bytes: zero ranges are never written, so a
//! count of bytes written alone would not say how far along a sparse disk is.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use super::Selection;
use crate::archive::manifest::Manifest;

/// Counters of a running restore.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RestoreProgress {
    /// Disk being restored (`vm/disk`).
    pub current: String,
    /// Disk bytes covered so far, over the selected disks in archive order.
    pub position: u64,
    /// Sum of the selected disks' capacities.
    pub total: u64,
    /// Chunk bytes written so far.
    pub bytes_written: u64,
}

/// Called after every chunk a restore writes; it should be cheap (throttle any printing).
#[derive(Clone)]
pub struct ProgressHook(pub Arc<dyn Fn(&RestoreProgress) + Send + Sync>);

impl fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressHook")
    }
}

/// Turns chunk placements into [`RestoreProgress`] for a hook.
pub(crate) struct Tracker {
    hook: ProgressHook,
    /// Per disk ordinal: its label and where it starts among the selected disks.
    disks: Vec<(String, u64)>,
    p: RestoreProgress,
}

impl Tracker {
    pub(crate) fn new(hook: ProgressHook, m: &Manifest, sel: &Selection) -> Self {
        let mut start = 0;
        let disks = m
            .disks()
            .enumerate()
            .map(|(i, (v, d))| {
                let at = start;
                if sel.disks.get(i).copied().unwrap_or(false) {
                    start += d.meta.capacity;
                }
                (format!("{}/{}", m.vms[v].name, d.name), at)
            })
            .collect();
        Tracker {
            hook,
            disks,
            p: RestoreProgress {
                total: start,
                ..Default::default()
            },
        }
    }

    /// A chunk of `len` bytes at `offset` of disk `disk` was written.
    pub(crate) fn chunk(&mut self, disk: u32, offset: u64, len: u64) {
        let Some((label, start)) = self.disks.get(disk as usize) else {
            return;
        };
        if self.p.current != *label {
            self.p.current.clone_from(label);
        }
        self.p.position = self.p.position.max(start + offset + len).min(self.p.total);
        self.p.bytes_written += len;
        (self.hook.0)(&self.p);
    }

    /// Every disk is complete.
    pub(crate) fn finish(&mut self) {
        self.p.position = self.p.total;
        (self.hook.0)(&self.p);
    }
}
