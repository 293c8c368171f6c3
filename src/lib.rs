//! vdar: a streaming archiver for VMware virtual disks.
//!
//! Pipeline (one module per stage, each behind a small trait):
//! 1. [`input`]: parse descriptors (`.vmx`, `.vmsd`, VMDK descriptors) and open every extent of
//!    every layer of a snapshot chain. Each extent format implements `ExtentMap`: it *maps*
//!    sectors to `Source`s (file + offset, deflate grain, zero, unallocated) and never reads data.
//! 2. [`chain`]: collapse the chain on the fly into ordered runs of the virtual disk
//!    (`VirtualDisk`): per run of sectors the topmost layer that has it wins, an explicit zero
//!    stops the search, unallocated at the bottom is zero. Runs are coalesced, so later stages
//!    issue large sequential reads and never read unallocated or zero space.
//! 3. [`chunk`]: fixed-size chunks aligned to the disk, held as their data runs packed (zero
//!    runs inside a chunk are never built); BLAKE3 digests of the whole chunk; the dedup table.
//! 4. [`pipeline`]: one reader thread, hashing and zstd on all cores (order-preserving), a single
//!    writer that deduplicates; bounded queues and a latched error.
//! 5. [`archive`]: the on-disk format (formats/ARCHIVE.md): framed records, index, footer, written
//!    strictly sequentially.
//! 6. [`restore`], [`verify`], [`list`]: reading archives back, in one pass from a pipe or with
//!    random access from a file; [`restore::writeback`] writes a disk back onto SAN LUNs.
//!    [`retention`] inventories a directory or an object-store prefix of archives and prunes it
//!    under a keep policy, never deleting a base a kept incremental needs.
//!
//! [`output`] is the one write path under backup, `cat`, restore and write-back: opening an
//! output (staged `.partial` file, device or FIFO in place, stdout but never a terminal),
//! locking, `O_DIRECT` with one fallback rule, write-behind, tape records, and write errors
//! that name the file and byte offset.
//!
//! [`job`] decides what a backup takes, for every front end: which VMs the inputs form, which
//! disks and small files each holds and under what names, what is recorded about each disk.
//!
//! [`vsphere`] (feature `vsphere`, on by default) backs up a VM by name from vCenter or ESXi:
//! a SOAP session, a backup snapshot that is always removed, the frozen disk layout handed to
//! [`job`], the chain read over HTTPS or (transport `san`) from the LUNs; and restores onto a
//! datastore and registers the VM.
//!
//! [`objstore`] (feature `s3`, on by default) is the S3 client under `-o s3://BUCKET/KEY`
//! (a streaming multipart upload that [`output`] opens, aborted unless completed) and under
//! archives read from object storage (ranged GETs behind `Read + Seek`, so the archive's index
//! gives random access there too). It knows nothing of the archive format.
//!
//! [`blockio`] reads data runs with a read-ahead pipeline (io_uring, pread fallback). [`san`]
//! (LAN-free SAN mode) plugs into stage 1 as an [`input::SourceOpener`]: files come from a block
//! map and are read from the datastore's LUNs, every copy under the map's probe check
//! ([`san::probes::guarded_copy`]). [`sniff`] names the format of a file handed to the wrong
//! command. [`clock`] turns Unix time into UTC calendar fields and RFC 3339 strings for names
//! and messages, never local time.
//!
//! Layers, bottom up (tests/layout.rs keeps them, and keeps them free of import loops):
//! `error`/`cancel`/`clock`/`sniff`, `input`, `blockio`/`chain`, `san`/`chunk`, `archive`,
//! `base`, `objstore`, `output`, `pipeline`/`restore`, `job`, `vsphere`,
//! `list`/`verify`/`retention`, and on top the front ends. The input side never imports the
//! output side.
//!
//! Front ends: [`cli`] (feature `cli`, on by default) is the command line of both binaries,
//! `vdar` and `vdar-restore`, which are one call each into it; it turns flags into library
//! calls and results into text or JSON (formats/JSON.md), and holds no rule of its own.
//! `fixture` (feature `fixture`) writes test images: COWD, SEsparse, ESX flat, VMware-layout
//! streamOptimized, LUN rigs; the tests, benches and tools/ enable it, `cargo install` does
//! not. Fuzz targets live in tools/fuzz and use the public parsing APIs only.
//!
//! Invariants: every length read from untrusted bytes is bounded before allocation; every error
//! names the file (or archive) and byte offset; nothing reads as silent zeros that was not zeros.
#![deny(missing_docs)]

pub mod archive;
pub mod base;
pub mod blockio;
pub mod cancel;
pub mod chain;
pub mod chunk;
#[cfg(feature = "cli")]
pub mod cli;
pub mod clock;
pub mod error;
#[cfg(any(test, feature = "fixture"))]
pub mod fixture;
pub mod input;
pub mod job;
pub mod list;
#[cfg(feature = "s3")]
pub mod objstore;
pub mod output;
pub mod pipeline;
pub mod restore;
pub mod retention;
pub mod san;
pub mod sniff;
pub mod verify;
#[cfg(feature = "vsphere")]
pub mod vsphere;

pub use error::{Error, Result};
