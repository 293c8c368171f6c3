//! The integration test binary. Modules, one per capability:
//! - util: temp dirs, command runners, oracles (qemu-img, qemu-io, vmdk-convert)
//! - chain: chain resolution and collapse via `vdar cat`/`inspect`, bad-input exit codes
//! - sparse: KDMV sparse extents (monolithic, split, both streamOptimized layouts) vs qemu-img
//! - cowd: vmfsSparse (COWD) deltas vs qemu-img
//! - sesparse: SEsparse deltas vs qemu-img
//! - oracle_libvmdk: sparse chain, COWD chain, VMware streamOptimized vs libvmdk (vmdkmount)
//! - oracle_vmware: every sparse, stream and OVA disk vdar restores vs VMware's reader
//!   (open-vmdk's vmdk-convert, built from ../shared/tools/open-vmdk)
//! - real_vmdk: files VMware products wrote (../shared/data/real-vmdk) through cat, backup and
//!   every restore format, read back by qemu-img and vmdk-convert
//! - sample: the bundled sample VM, .vmx/.vmsd selection
//! - select: what a backup takes: clashing names kept, --disk/--exclude-disk, cat of a .vmx
//! - archive: backup/restore round trips, determinism, golden vector, damage, hostile archives
//! - damage: the accounting rule (restored, known zero or reported lost) under truncation,
//!   cuts, duplication, flips and crafted archives, seekable and piped
//! - backup: the archive commands end to end against qemu-img, pipes, damage, salvage
//! - esx: restore to vmdk (ESX layout), sparse, stream, ova; qemu-img/vmdkinfo/xmllint oracles
//! - ovf: the OVA's OVF vs VMware's ova-compose for the same VM; tar member names (PAX, safe)
//! - san: SAN mode (block map + LUN images from the rig) vs direct files, faults
//! - writeback: SAN write-back (restore --blockmap) into an eager-zeroed target on the rig
//! - ux: progress, -v/-q, the --json schema, errors about files that are not what was asked
//! - package: what the .deb ships besides the binaries: completions, man pages, systemd units
//! - read_path: the default read path leaves the page cache alone; --read-path buffered fills it
//! - vsphere: the vSphere client against vcsim: login, VM lookup, the backup snapshot always
//!   removed, stale snapshots refused, the network transport vs qemu-img
//! - incremental: backups on a base by each change source (redo logs, CBT, none), restore with
//!   the bases or from a pipe, consolidate, verify of a chain, catalogs; golden vectors
//! - s3 (with garage, the three-node Garage cluster, and s3_proxy): object storage: backup to
//!   and restore from s3://, bytes fetched by a one-disk restore, multipart uploads, node
//!   failures, bad buckets and credentials, truncated objects and answers, interrupted uploads
//! - retention: `list DIR` inventories, `prune` keeps the policy and every needed base,
//!   deletes catalogs with their archives, stops at damage
//! - volumes: volume sets cut at a size, on loop devices that end, wrong volumes refused;
//!   a stream spanned by mbuffer
//! - layout: the source layout: no import loops between modules or files, no `#[path]`, the
//!   fixture binary behind its feature

#[macro_use]
mod util;
mod archive;
mod backup;
mod chain;
mod cowd;
mod damage;
mod esx;
mod full_disk;
mod garage;
mod incremental;
mod interrupt;
mod layout;
mod oracle_libvmdk;
mod oracle_vmware;
mod ovf;
mod package;
mod read_path;
mod real_vmdk;
mod retention;
mod s3;
mod s3_proxy;
mod sample;
mod san;
mod select;
mod sesparse;
mod sparse;
mod ux;
mod volumes;
mod vsphere;
mod vsphere_faults;
mod writeback;
