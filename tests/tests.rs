//! The integration test binary. Modules, one per capability:
//! - util: temp dirs, command runners, oracles (qemu-img, qemu-io)
//! - cowd: vmfsSparse (COWD) deltas vs qemu-img
//! - sesparse: SEsparse deltas vs qemu-img

#[macro_use]
mod util;

mod cowd;
mod sesparse;
