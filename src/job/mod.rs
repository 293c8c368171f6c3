//! What a backup holds, decided once for every front end: which VMs the inputs form, which
//! of their disks are taken ([`mod@select`]), which small files each VM's archive keeps and
//! under what names ([`names`]), and what is recorded about each disk ([`meta`]).
//!
//! A front end (the command line, a vSphere or scheduled job) turns its own inputs into
//! [`SelectOptions`], calls [`select()`] and [`open`], shows [`BackupPlan::warnings`] and
//! [`BackupPlan::excluded`] to its user once, and hands [`BackupPlan::vms`] to
//! [`crate::pipeline::backup`]. Nothing here prints.
//!
//! Invariant: nothing the user gave is dropped silently. Two files of one name from different
//! folders are both kept, the later ones renamed ([`names::unique_names`]) with their original
//! paths recorded in the manifest; a disk left out is either excluded on request (and reported)
//! or missing from the selected snapshot (and warned about).

pub mod changes;
pub mod meta;
pub mod names;
pub mod select;

use std::path::PathBuf;

use crate::chain::{Chain, ChainOptions};
use crate::error::Result;
use crate::input::vm::VmSelection;
use crate::input::SourceOpener;
use crate::pipeline::{DiskInput, VmFile, VmInput};

pub use crate::input::vm::{match_disks, DiskRef};
pub use select::{select, select_one, select_vms, Excluded, SelectOptions, Selection};

/// Everything opened and ready to stream into an archive.
pub struct BackupPlan {
    /// The VMs, their files read and their chains opened.
    pub vms: Vec<VmInput>,
    /// Sum of the disks' virtual sizes (for progress and ETA).
    pub capacity: u64,
    /// Findings for the user, each once: the selection's and every chain's.
    pub warnings: Vec<String>,
    /// Disks left out on request.
    pub excluded: Vec<Excluded>,
}

impl BackupPlan {
    /// Adds another plan's VMs and findings after this one's.
    pub fn append(&mut self, other: BackupPlan) {
        self.vms.extend(other.vms);
        self.capacity += other.capacity;
        self.warnings.extend(other.warnings);
        self.excluded.extend(other.excluded);
    }
}

/// Opens every selected VM: reads its configuration files (locally) and its chains' text
/// descriptors (through `opts.opener`, so from the LUNs in SAN mode), and opens every chain.
pub fn open(selection: Selection, opts: &ChainOptions<'_>) -> Result<BackupPlan> {
    open_with(selection, opts, None)
}

/// [`open`], with the configuration files read through `config` (a datastore's file access)
/// instead of locally.
pub fn open_with(
    selection: Selection,
    opts: &ChainOptions<'_>,
    config: Option<&dyn SourceOpener>,
) -> Result<BackupPlan> {
    let mut plan = BackupPlan {
        vms: Vec::new(),
        capacity: 0,
        warnings: selection.warnings,
        excluded: selection.excluded,
    };
    for sel in &selection.vms {
        let vm = open_vm(sel, opts, config, &mut plan)?;
        plan.vms.push(vm);
    }
    Ok(plan)
}

fn open_vm(
    sel: &VmSelection,
    opts: &ChainOptions<'_>,
    config: Option<&dyn SourceOpener>,
    plan: &mut BackupPlan,
) -> Result<VmInput> {
    let mut chains = Vec::new();
    for d in &sel.disks {
        let mut chain = Chain::open(&d.top, opts)?;
        if let Some(areas) = &d.in_use {
            chain.mask_base(areas);
        }
        plan.warnings.extend(chain.warnings.iter().cloned());
        chains.push(chain);
    }
    // Every path the VM's archive names, in archive order: config files, then each chain's
    // layers top first. One name per distinct file; a file shared by two chains is kept once.
    let mut paths: Vec<PathBuf> = sel.config_files.clone();
    paths.extend(
        chains
            .iter()
            .flat_map(|c| c.layers.iter().map(|l| l.path.clone())),
    );
    let table = names::unique_names(&paths);
    let mut files = Vec::new();
    for p in &sel.config_files {
        files.push(stored_file(&table, p, config)?);
    }
    let mut disks = Vec::new();
    for (d, chain) in sel.disks.iter().zip(chains) {
        // Keep every text descriptor of the chain: restore to ESX needs the ddb values, and an
        // administrator wants the originals. Monolithic sparse files are not small files.
        for l in chain.layers.iter().filter(|l| meta::is_text_descriptor(l)) {
            if !files
                .iter()
                .any(|f: &VmFile| Some(&f.name) == table.name(&l.path))
            {
                files.push(stored_file(&table, &l.path, Some(opts.opener))?);
            }
        }
        plan.capacity += chain.capacity();
        disks.push(DiskInput {
            name: d.name.clone(),
            meta: meta::disk_meta(&chain, &table),
            disk: Box::new(chain.collapse()),
        });
    }
    Ok(VmInput {
        name: sel.name.clone(),
        files,
        disks,
        origin: None,
    })
}

fn stored_file(
    table: &names::NameTable,
    p: &std::path::Path,
    opener: Option<&dyn SourceOpener>,
) -> Result<VmFile> {
    let entry = table.entry(p);
    Ok(VmFile {
        name: entry.name.clone(),
        source: entry.source.clone(),
        bytes: names::read_small_file(p, opener)?,
    })
}
