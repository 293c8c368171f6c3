//! The integration test binary. Modules, one per capability:
//! - util: temp dirs, command runners, oracles (qemu-img, qemu-io)
//! - sparse: KDMV sparse extents (monolithic, split, both streamOptimized layouts) vs qemu-img

#[macro_use]
mod util;
mod sparse;
