//! Incrementals: archives that build on an earlier one.
//!
//! An incremental stores only the chunks its base's restored image does not hold; every other
//! chunk place is a BaseRef record naming the base image's place with the same bytes
//! (formats/ARCHIVE.md, "Incrementals"). The base is named by its identity, the footer's
//! `meta_hash`, recomputed from the base before it is trusted.
//!
//! * [`image`]: what a backup needs to know of its base: the digest at every chunk place of the
//!   base's restored image, from the base archive or from its catalog.
//! * [`catalog`]: that knowledge as a small file beside the archive (formats/CATALOG.md), so a
//!   base on tape or in object storage never has to be read back.
//! * [`plan`]: per disk, which base disk it continues and which chunks must be read; what
//!   fills it in (a CBT list, the redo logs above the base's snapshot, nothing) is
//!   [`crate::job::changes`], which knows the inputs.
//! * [`chain`]: the base archives a restore, verify or consolidate reads BaseRefs from.
//! * [`consolidate`]: a synthetic full archive from a chain.

pub mod catalog;
pub mod chain;
pub mod consolidate;
pub mod image;
pub mod plan;
pub mod recipe;

pub use chain::BaseChain;
pub use image::BaseImage;

/// An archive identity as manifests and messages write it: 64 hex digits.
pub fn id_hex(id: &[u8; 32]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The short form of an identity for messages (its first 16 hex digits).
pub fn id_short(id: &[u8; 32]) -> String {
    id_hex(id)[..16].to_string()
}
