//! Store format 4: one tree, `records`, instead of a tree per kind. Every key starts with a byte
//! naming its space (`src/store/keys.rs`, [`Space`]) followed by the format-3 key unchanged, so
//! each space is a contiguous, ordered range: subnets, VIPs, pods, switch-LB rules, address and
//! MAC allocations, object revisions, the change log, and in clustered mode the replica's rows
//! and its last transaction id. A mutation is then one atomic `sled::Batch` on one tree instead
//! of a transaction across eight (ten in the clustered mirror). The values are unchanged. The
//! format-3 trees are dropped once the new version is written.

use super::{PlannedWrite, Space, Tree, Trees};

pub const DESCRIPTION: &str = "one prefixed tree for every record";

pub fn plan(trees: &Trees) -> Result<Vec<PlannedWrite>, String> {
    let mut writes = Vec::new();
    let spaces = [
        (&trees.subnets, Space::Subnet),
        (&trees.vips, Space::Vip),
        (&trees.pods, Space::Pod),
        (&trees.slrs, Space::SwitchLbRule),
        (&trees.ips, Space::Ip),
        (&trees.macs, Space::Mac),
        (&trees.revisions, Space::Revision),
        (&trees.changes, Space::Change),
        (&trees.cluster_rows, Space::ClusterRow),
    ];
    for (tree, space) in spaces {
        for entry in tree.iter() {
            let (key, value) = entry.map_err(|error| error.to_string())?;
            writes.push(PlannedWrite {
                tree: Tree::Records,
                key: space.key(&key),
                value: Some(value.to_vec()),
            });
        }
    }
    // Clustered mode's last replica transaction id lived in `meta`.
    if let Some(txn) = trees
        .meta
        .get(b"cluster_last_txn_id")
        .map_err(|error| error.to_string())?
    {
        writes.push(PlannedWrite {
            tree: Tree::Records,
            key: Space::ClusterMeta.key(b"cluster_last_txn_id"),
            value: Some(txn.to_vec()),
        });
        writes.push(PlannedWrite {
            tree: Tree::Meta,
            key: b"cluster_last_txn_id".to_vec(),
            value: None,
        });
    }
    Ok(writes)
}
