//! What the archive records about a disk besides its bytes: the top descriptor, the merged
//! disk database and the chain it was collapsed from (enough for a restore to write a
//! descriptor ESX accepts).

use super::names::NameTable;
use crate::chain::Chain;
use crate::input::layer::Layer;
use crate::pipeline::{DiskMeta, LayerInfo};

/// Whether `layer` has a text descriptor of its own (a small file worth keeping), rather than
/// one embedded in a monolithic sparse extent.
pub fn is_text_descriptor(layer: &Layer) -> bool {
    layer
        .extents
        .iter()
        .all(|e| e.path.as_deref() != Some(layer.path.as_path()))
}

/// The manifest's record of `chain`; layer files are named as `names` names them.
pub fn disk_meta(chain: &Chain, names: &NameTable) -> DiskMeta {
    let top = &chain.layers[0];
    DiskMeta {
        capacity: chain.capacity(),
        descriptor: top.descriptor.text.clone(),
        create_type: top.descriptor.create_type.clone(),
        ddb: merged_ddb(chain),
        change_id: None,
        chain: chain
            .layers
            .iter()
            .map(|l| {
                let named = names.entry(&l.path);
                LayerInfo {
                    file: named.name.clone(),
                    source: named.source.clone(),
                    format: l.format(),
                    cid: l.descriptor.cid,
                    parent_cid: l.descriptor.parent_cid,
                }
            })
            .collect(),
    }
}

/// The base carries the disk's identity (uuid, geometry, adapter); deltas repeat some of it.
/// Keep the top layer's list, then the keys it lacks from the layers below, nearest first
/// (keys compare case-insensitively, as VMware reads them).
pub fn merged_ddb(chain: &Chain) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = chain.layers[0].descriptor.ddb.clone();
    for l in &chain.layers[1..] {
        for (k, v) in &l.descriptor.ddb {
            if !out.iter().any(|(o, _)| o.eq_ignore_ascii_case(k)) {
                out.push((k.clone(), v.clone()));
            }
        }
    }
    out
}
