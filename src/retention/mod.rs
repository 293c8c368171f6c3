//! Retention: what archives a place holds, and which of them a keep policy lets go.
//!
//! - [`store`]: a place archives are kept, behind one small trait: a local directory
//!   ([`store::DirStore`]) or an object-store prefix (`BucketStore`, feature `s3`).
//! - [`inventory`]: every archive and catalog there, read from each one's front and footer
//!   (a few small reads each, so a prefix of hundreds of archives costs a few requests each).
//! - [`policy`]: restic's keep rules (`--keep-last`, `--keep-daily` …) over creation times,
//!   in UTC calendar buckets.
//! - [`plan`]: the policy per VM set, then every base a kept incremental needs kept too, and
//!   the catalogs of what goes; [`plan::execute`] deletes newest first, catalogs before
//!   their archives, so an interrupted prune never leaves an incremental without its base
//!   while the incremental's catalog still offers it as a base.

pub mod inventory;
pub mod plan;
pub mod policy;
pub mod store;

pub use inventory::Inventory;
pub use plan::PrunePlan;
pub use policy::Policy;
pub use store::Store;
