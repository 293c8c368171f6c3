//! The integration test binary. Modules, one per capability:
//! - util: temp dirs, command runners, oracles (qemu-img, qemu-io)

#[macro_use]
mod util;
