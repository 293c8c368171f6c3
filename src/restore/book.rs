//! The bookkeeping of a restore or verify, shared by the one-pass and seekable paths: the
//! selection, the damage found, the files restored and the [`Ledger`] that accounts for every
//! byte of every disk.

use crate::archive::format::{RecordHeader, RecordKind};
use crate::archive::manifest::Manifest;
use crate::archive::reader::StreamReader;
use crate::error::{Error, Result};

use super::ledger::Ledger;
use super::{Damage, LostRange, RestoreOptions, RestoreReport, RestoredDisk, Selection, Target};
use crate::base::recipe::Recipe;

/// See the module docs.
pub(super) struct Book<'m> {
    pub manifest: &'m Manifest,
    pub cancel: crate::cancel::Cancel,
    /// Every disk ordinal: (vm, disk, capacity).
    pub names: Vec<(String, String, u64)>,
    pub sel: Selection,
    salvage: bool,
    pub report: RestoreReport,
    pub files_done: Vec<Vec<bool>>,
    pub ledger: Ledger,
    /// The base archives BaseRef records are read from.
    bases: Option<super::Bases>,
    /// The base an in-place restore updates.
    in_place: Option<std::sync::Arc<super::in_place::InPlaceBase>>,
}

impl<'m> Book<'m> {
    pub fn new(manifest: &'m Manifest, sel: Selection, opts: &RestoreOptions) -> Self {
        let names: Vec<(String, String, u64)> = manifest
            .disks()
            .map(|(v, d)| {
                (
                    manifest.vms[v].name.clone(),
                    d.name.clone(),
                    d.meta.capacity,
                )
            })
            .collect();
        Book {
            cancel: opts.cancel.clone(),
            ledger: Ledger::new(manifest.chunk_size, names.iter().map(|n| n.2)),
            names,
            files_done: manifest
                .vms
                .iter()
                .map(|v| vec![false; v.files.len()])
                .collect(),
            manifest,
            sel,
            salvage: opts.salvage,
            report: RestoreReport::default(),
            bases: opts.bases.clone(),
            in_place: opts.in_place.clone(),
        }
    }

    /// In an in-place restore, the base place a BaseRef (header `h`, payload `payload`)
    /// names if it is its own place and the base's catalog has the recorded digest there:
    /// the bytes in the image stand ([`Target::keeps`]).
    pub fn own_base_place(&self, h: &RecordHeader, payload: &[u8]) -> Option<(u32, u64)> {
        let b = self.in_place.as_ref()?;
        let src = (payload.len() as u64 == crate::archive::format::REF_PAYLOAD_BYTES)
            .then(|| crate::archive::reader::decode_ref(payload))
            .flatten()?;
        (src.1 == h.offset && b.holds(src, &h.digest)).then_some(src)
    }

    /// The bytes a BaseRef record (header `h`, payload `payload`) stands for, read from the
    /// base archives. `Ok(None)`: no bases were given (a listing), the record is taken on
    /// trust and counted. `Ok(Some(Err(why)))`: the base cannot supply them.
    pub fn base_chunk(
        &mut self,
        h: &RecordHeader,
        payload: &[u8],
    ) -> Result<Option<std::result::Result<Vec<u8>, String>>> {
        Ok(self
            .base_recipe(h, payload)?
            .map(|r| r.and_then(Recipe::into_bytes)))
    }

    /// Whether base archives (or images) were given to read BaseRefs and base patches from.
    pub fn has_bases(&self) -> bool {
        self.bases.is_some()
    }

    /// [`Self::base_chunk`] before decoding: the records holding the bytes, found in the
    /// bases; decoding them, on any thread, checks the bytes against `h`'s digest.
    pub fn base_recipe(
        &mut self,
        h: &RecordHeader,
        payload: &[u8],
    ) -> Result<Option<std::result::Result<Recipe, String>>> {
        let Some(bases) = &self.bases else {
            self.report.base_refs_unchecked += 1;
            return Ok(None);
        };
        let id = self.base_id();
        let src = (payload.len() as u64 == crate::archive::format::REF_PAYLOAD_BYTES)
            .then(|| crate::archive::reader::decode_ref(payload))
            .flatten();
        let (Some(id), Some(src)) = (id, src) else {
            return Ok(Some(Err("base reference without a base".into())));
        };
        let mut chain = bases.lock().expect("invariant: no panic under lock");
        Ok(Some(chain.recipe(&id, src, h.raw_len, &h.digest)?))
    }

    /// The records a BasePatch record (header `h`, payload `stored` as the archive holds it)
    /// stands for: its base chunk, found in the bases, with the patch over it; decoding them
    /// checks the patch and the patched chunk. `Ok(None)`: no bases were given.
    pub fn patch_recipe(
        &mut self,
        h: &RecordHeader,
        stored: &[u8],
    ) -> Result<Option<std::result::Result<Recipe, String>>> {
        let Some(bases) = &self.bases else {
            self.report.base_refs_unchecked += 1;
            return Ok(None);
        };
        let Some(id) = self.base_id() else {
            return Ok(Some(Err("base patch without a base".into())));
        };
        let (src, base_digest) =
            match crate::archive::patch::checked_base(stored, h.offset, h.raw_len as usize) {
                Ok(b) => b,
                Err(why) => return Ok(Some(Err(why))),
            };
        let mut chain = bases.lock().expect("invariant: no panic under lock");
        Ok(Some(chain.recipe(&id, src, h.raw_len, &base_digest)?.map(
            |mut r| {
                r.patch(*h, stored.to_vec(), String::new());
                r
            },
        )))
    }

    /// The chunk a BasePatch record (header `h`, decoded patch `decoded`) stands for: the
    /// base image's chunk at the patch's place, read from the base archives (or the image an
    /// in-place restore updates), with the runs written over it and the result checked
    /// against `h`'s digest. `Ok(None)`: no bases were given (a listing), taken on trust.
    pub fn patched_chunk(
        &mut self,
        h: &RecordHeader,
        decoded: &[u8],
    ) -> Result<Option<std::result::Result<Vec<u8>, String>>> {
        let patch = match crate::archive::patch::Patch::parse(decoded, h.raw_len as usize) {
            Ok(p) => p,
            Err(why) => return Ok(Some(Err(why))),
        };
        let Some(bases) = &self.bases else {
            self.report.base_refs_unchecked += 1;
            return Ok(None);
        };
        let Some(id) = self.base_id() else {
            return Ok(Some(Err("base patch without a base".into())));
        };
        let mut chain = bases.lock().expect("invariant: no panic under lock");
        Ok(Some(
            chain
                .recipe(&id, patch.src, h.raw_len, &patch.base_digest)?
                .and_then(|base| base.under(&patch, &h.digest)),
        ))
    }

    fn base_id(&self) -> Option<[u8; 32]> {
        self.manifest
            .base
            .as_ref()
            .and_then(|b| crate::base::chain::parse_id(&b.id))
    }

    /// Records damage; without salvage, turns it into the error.
    pub fn damage(&mut self, d: Damage) -> Result<()> {
        if !self.salvage {
            return Err(Error::archive(d.archive_offset, d.detail()));
        }
        self.report.damage.push(d);
        Ok(())
    }

    /// What was found before the reader started: damage to the front, and disks whose size
    /// nothing states.
    pub fn front(&mut self, reader: &StreamReader<'_>, what: Option<String>) -> Result<()> {
        for &d in reader.open_ended() {
            self.ledger.open_ended(d);
        }
        match what {
            Some(w) => self.general_damage(0, w),
            None => Ok(()),
        }
    }

    /// Writes VM file `ordinal` of VM `vm` from a checked File record, once, if its VM is
    /// selected.
    pub fn place_file(
        &mut self,
        target: &mut dyn Target,
        vm: u32,
        ordinal: u64,
        data: &[u8],
    ) -> Result<()> {
        let (v, f) = (vm as usize, ordinal as usize);
        if self.sel.vms[v] && !self.files_done[v][f] {
            let name = &self.manifest.vms[v].files[f].name;
            self.report.files.extend(target.write_file(v, name, data)?);
            self.files_done[v][f] = true;
        }
        Ok(())
    }

    /// Damage not tied to one record's disk range.
    pub fn general_damage(&mut self, at: u64, what: String) -> Result<()> {
        self.damage(Damage::at(at, what))
    }

    /// Damage to a record whose header is trusted: its range (or file) is named, and a chunk
    /// place is entered in the ledger as lost.
    pub fn record_damage(
        &mut self,
        at: u64,
        kind: RecordKind,
        disk: u32,
        offset: u64,
        len: u64,
        what: String,
    ) -> Result<()> {
        let mut d = Damage::at(at, what);
        match kind {
            RecordKind::Chunk | RecordKind::Ref | RecordKind::BaseRef | RecordKind::BasePatch => {
                let (vm, name, _) = &self.names[disk as usize];
                d.vm = Some(vm.clone());
                d.disk = Some(name.clone());
                d.start = offset;
                d.end = offset + len;
                self.ledger.lost(disk, offset, &d.what);
            }
            RecordKind::File => {
                let vm = &self.manifest.vms[disk as usize];
                d.vm = Some(vm.name.clone());
                d.file = Some(vm.files[offset as usize].name.clone());
            }
            RecordKind::DiskEnd => {
                let (vm, name, _) = &self.names[disk as usize];
                d.vm = Some(vm.clone());
                d.disk = Some(name.clone());
            }
            RecordKind::Index => self
                .ledger
                .index_unusable(format!("index damaged: {}", d.what)),
            RecordKind::Manifest => {}
        }
        self.damage(d)
    }

    /// Settles the ledger: every selected disk's lost ranges and byte tallies, and the files
    /// not restored. `end` is the archive offset to name when the settling finds damage.
    pub fn finish(mut self, end: u64) -> Result<RestoreReport> {
        for p in self.ledger.check() {
            self.general_damage(end, p)?;
        }
        for (v, vm) in self.manifest.vms.iter().enumerate() {
            for (i, f) in vm.files.iter().enumerate() {
                if self.sel.vms[v] && !self.files_done[v][i] {
                    self.report
                        .missing_files
                        .push(format!("{}/{}", vm.name, f.name));
                }
            }
        }
        for (i, (vm, disk, cap)) in self.names.iter().enumerate() {
            if !self.sel.disks[i] {
                continue;
            }
            let (losses, tally) = self.ledger.settle(i as u32);
            self.report
                .lost
                .extend(losses.into_iter().map(|l| LostRange {
                    vm: vm.clone(),
                    disk: disk.clone(),
                    start: l.start,
                    end: l.end,
                    why: l.why,
                }));
            self.report.disks.push(RestoredDisk {
                vm: vm.clone(),
                disk: disk.clone(),
                path: None,
                capacity: *cap,
                restored_bytes: tally.restored,
                zero_bytes: tally.zero,
                lost_bytes: tally.lost,
            });
        }
        if !self.salvage {
            if let Some(l) = self.report.lost.first() {
                return Err(Error::archive(end, format!("{l}: {}", l.why)));
            }
            if let Some(f) = self.report.missing_files.first() {
                return Err(Error::archive(end, format!("file {f} missing")));
            }
        }
        Ok(self.report)
    }
}
