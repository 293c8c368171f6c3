//! The integration test binary. Modules, one per capability:
//! - util: temp dirs, command runners, oracles (qemu-img, qemu-io)
//! - chain: chain resolution and collapse via `vdar cat`/`inspect`, bad-input exit codes
//! - sparse: KDMV sparse extents (monolithic, split, both streamOptimized layouts) vs qemu-img
//! - cowd: vmfsSparse (COWD) deltas vs qemu-img
//! - sesparse: SEsparse deltas vs qemu-img
//! - sample: the bundled sample VM, .vmx/.vmsd selection
//! - san: SAN mode (block map + LUN images from the rig) vs direct files, faults

#[macro_use]
mod util;
mod chain;
mod cowd;
mod sample;
mod san;
mod sesparse;
mod sparse;
