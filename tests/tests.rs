//! The integration test binary. Modules, one per capability:
//! - util: temp dirs, command runners, oracles (qemu-img, qemu-io)
//! - archive: backup/restore round trips, determinism, golden vector, damage, hostile archives

#[macro_use]
mod util;

mod archive;
