//! SAN mode (LAN-free backup): read a VM's files straight from the datastore's LUNs.
//!
//! The ESX host knows where each file of the snapshot chain lies on the VMFS logical volume and
//! exports that as a block map ([`blockmap`], formats/BLOCKMAP.md; [`t0`] builds one from
//! `vmkfstools -t0` text). The proxy sees the LUNs as block devices but has no VMFS driver:
//! [`lun`] finds each LUN's VMFS LVM header and PE table ([`lvm`]) and maps logical-volume
//! offsets to device offsets, and [`opener::BlockMapOpener`] plugs the result into the chain
//! collapse as a [`crate::input::SourceOpener`]. [`probes`] attaches host-side hashes of file
//! ranges that the reader checks before and after the copy. Bulk reads then go through `crate::blockio`
//! (io_uring) using [`crate::input::ByteSource::locate`].
//!
//! `crate::restore::writeback` runs the same path backwards (`vdar restore --blockmap` writes an
//! archived disk into the blocks of a pre-created eager-zeroed flat disk, straight to the
//! LUNs); san itself is input only and imports neither restore nor the pipeline.

pub mod blockmap;
pub mod lun;
pub mod lvm;
pub mod opener;
pub mod probes;
pub mod t0;

pub use blockmap::BlockMap;
pub use lun::{LunSet, LvMap, ScanOptions};
pub use lvm::VmfsUuid;
pub use opener::BlockMapOpener;
