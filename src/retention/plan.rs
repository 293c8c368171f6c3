//! Which archives a prune keeps and why, which it deletes, and the deleting.
//!
//! The rules, in order:
//! 1. Anything whose front cannot be read stops the prune: its bases are unknown, so no
//!    archive can be shown to be unneeded.
//! 2. An archive with no good footer (still being written, or cut short) is kept.
//! 3. The policy is applied to each group of archives that hold the same VMs, newest first.
//! 4. Every base a kept archive names (its base and that base's own bases) is kept, with the
//!    archive that needs it as the reason. A base not in the store is reported, not an error:
//!    it may be on tape.
//! 5. The rest goes, and with each archive the catalogs in the store that describe it, unless
//!    a kept copy of the same archive (same identity) stays. Catalogs of archives not in the
//!    store stay (their archives may be elsewhere). Later volumes of volume sets are never
//!    touched; a set of several volumes has no identity here and is kept (`volume set`).

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use super::inventory::{ArchiveEntry, Inventory};
use super::policy::Policy;
use super::store::Store;
use crate::error::{Error, Result};

/// What a prune does.
#[derive(Clone, Debug, Serialize)]
pub struct PrunePlan {
    /// The store.
    pub location: String,
    /// Archives kept, oldest first.
    pub keep: Vec<Decision>,
    /// Archives deleted, in the order they are deleted (newest first).
    pub remove: Vec<Decision>,
    /// Identities a kept archive needs that are not in the store: (needing archive, identity).
    pub missing_bases: Vec<(String, String)>,
}

/// One archive and why it is kept (empty when it goes).
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    /// The archive.
    pub archive: ArchiveEntry,
    /// The rules (`last`, `daily`, …), `base of NAME`, or `incomplete`.
    pub reasons: Vec<String>,
}

impl PrunePlan {
    /// Bytes the removals free (archives and their catalogs).
    pub fn freed_bytes(&self, inv: &Inventory) -> u64 {
        self.remove
            .iter()
            .map(|d| {
                let cats = inv
                    .catalogs
                    .iter()
                    .filter(|c| d.archive.catalogs.contains(&c.name));
                d.archive.bytes + cats.map(|c| c.bytes).sum::<u64>()
            })
            .sum()
    }
}

/// Plans the prune of `inv` under `policy`.
pub fn plan(inv: &Inventory, policy: &Policy) -> Result<PrunePlan> {
    if policy.is_empty() {
        return Err(Error::Usage(
            "no keep rule given: a prune would delete every archive (give --keep-last and the like)"
                .into(),
        ));
    }
    if let Some(d) = inv.damaged.iter().find(|d| d.kind == "archive") {
        return Err(Error::Usage(format!(
            "{}: {}; its bases cannot be told, so nothing in {} is pruned (move it away \
             or delete it first)",
            d.name, d.why, inv.location
        )));
    }
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); inv.archives.len()];
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, a) in inv.archives.iter().enumerate() {
        if a.id.is_none() {
            // A volume set's footer is on its last volume; anything else without one is
            // still being written, or cut short.
            let why = if a.volume_set.is_some() {
                "volume set"
            } else {
                "incomplete"
            };
            reasons[i].push(why.into());
        } else {
            groups.entry(a.group()).or_default().push(i);
        }
    }
    for members in groups.values() {
        // Archives are oldest first: the policy wants newest first.
        let newest: Vec<usize> = members.iter().rev().copied().collect();
        let times: Vec<u64> = newest.iter().map(|&i| inv.archives[i].created).collect();
        for (&i, rules) in newest.iter().zip(policy.apply(&times)) {
            reasons[i].extend(rules.into_iter().map(String::from));
        }
    }
    let missing_bases = keep_bases(inv, &mut reasons);
    let mut keep = Vec::new();
    let mut remove = Vec::new();
    for (a, r) in inv.archives.iter().zip(reasons) {
        let d = Decision {
            archive: a.clone(),
            reasons: r,
        };
        if d.reasons.is_empty() {
            remove.push(d);
        } else {
            keep.push(d);
        }
    }
    remove.reverse();
    // A catalog goes only with the last copy of its archive, and only once.
    let kept: HashSet<&str> = keep
        .iter()
        .filter_map(|d| d.archive.id.as_deref())
        .collect();
    let mut listed: HashSet<String> = HashSet::new();
    for d in &mut remove {
        let held = d.archive.id.as_deref().is_some_and(|id| kept.contains(id));
        d.archive
            .catalogs
            .retain(|c| !held && listed.insert(c.clone()));
    }
    Ok(PrunePlan {
        location: inv.location.clone(),
        keep,
        remove,
        missing_bases,
    })
}

/// Rule 4: marks every base of a kept archive kept, until nothing changes (a chain's lineage
/// names all of it at once, so one round usually does). Returns the bases not in the store.
fn keep_bases(inv: &Inventory, reasons: &mut [Vec<String>]) -> Vec<(String, String)> {
    let mut missing = Vec::new();
    let mut done: HashSet<usize> = HashSet::new();
    loop {
        let todo: Vec<usize> = (0..reasons.len())
            .filter(|i| !reasons[*i].is_empty() && !done.contains(i))
            .collect();
        if todo.is_empty() {
            return missing;
        }
        for i in todo {
            done.insert(i);
            let a = &inv.archives[i];
            for need in a.needs() {
                let holders: Vec<usize> = (0..inv.archives.len())
                    .filter(|&j| inv.archives[j].id.as_deref() == Some(need))
                    .collect();
                if holders.is_empty() {
                    missing.push((a.name.clone(), need.to_string()));
                }
                for j in holders {
                    let why = format!("base of {}", a.name);
                    if !reasons[j].contains(&why) {
                        reasons[j].push(why);
                    }
                }
            }
        }
    }
}

/// What [`execute`] deleted.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Pruned {
    /// Archives deleted.
    pub archives: Vec<String>,
    /// Catalogs deleted.
    pub catalogs: Vec<String>,
}

/// Deletes what `plan` removes from `store`, in its order, each archive's catalogs first (a
/// catalog must not outlive its archive: a later backup would take it as a base). Stops at
/// the first failure, naming it; what was deleted before stays deleted and is in the error.
pub fn execute(store: &dyn Store, plan: &PrunePlan) -> Result<Pruned> {
    let mut done = Pruned::default();
    for d in &plan.remove {
        for c in &d.archive.catalogs {
            store.delete(c).map_err(|e| partial(e, &done))?;
            done.catalogs.push(c.clone());
        }
        store
            .delete(&d.archive.name)
            .map_err(|e| partial(e, &done))?;
        done.archives.push(d.archive.name.clone());
    }
    Ok(done)
}

fn partial(e: Error, done: &Pruned) -> Error {
    if done.archives.is_empty() && done.catalogs.is_empty() {
        return e;
    }
    Error::Usage(format!(
        "{e} (prune stopped; deleted before it: {})",
        done.catalogs
            .iter()
            .chain(&done.archives)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    ))
}
