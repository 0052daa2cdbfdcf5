//! Store format versions and the migrations between them. Each migration is a numbered file
//! under `migrations/` compiled into the binary. A migration reads the store and returns the
//! writes it needs; the runner applies those writes and the new version number in one sled
//! transaction, so a crash mid-migration leaves the store at the old version, untouched.
//! Format 4 moved every record into one tree (`records`); the trees of formats 1–3 are opened
//! only while migrations run and dropped after the last one (again at the next open if a crash
//! came between).

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use tracing::info;

pub use super::keys::Space;
use super::{StoreError, Trees};

const VERSION_KEY: &[u8] = b"format_version";

/// One write a migration asks for: `value: None` removes the key.
pub struct PlannedWrite {
    pub tree: Tree,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// The trees a migration's write goes to: the record trees of formats 1–3, `meta`, and the one
/// tree of format 4 (`records`, keys with their [`Space`] byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    Subnets,
    Vips,
    Pods,
    SwitchLbRules,
    Ips,
    Macs,
    Meta,
    Records,
}

impl Tree {
    /// This tree among the eight the runner's transaction hands out, given in declaration
    /// order (subnets, vips, pods, slrs, ips, macs, meta, records).
    pub fn pick(self, trees: [&TransactionalTree; 8]) -> &TransactionalTree {
        let [subnets, vips, pods, slrs, ips, macs, meta, records] = trees;
        match self {
            Tree::Subnets => subnets,
            Tree::Vips => vips,
            Tree::Pods => pods,
            Tree::SwitchLbRules => slrs,
            Tree::Ips => ips,
            Tree::Macs => macs,
            Tree::Meta => meta,
            Tree::Records => records,
        }
    }
}

/// The trees of formats 1–3, dropped once the store is at format 4.
const FORMAT_3_TREES: [&str; 9] = [
    "subnets",
    "vips",
    "pods",
    "slrs",
    "ips",
    "macs",
    "revisions",
    "changes",
    "cluster_rows",
];

pub struct Migration {
    pub version: u32,
    pub description: &'static str,
    pub plan: fn(&Trees) -> Result<Vec<PlannedWrite>, String>,
    /// Its writes to `records` are copied first, in batches, into an emptied `records` (no
    /// format before 4 reads that tree, so a copy cut short by a crash is simply redone whole
    /// at the next open), then the rest and the version in one transaction. One transaction
    /// over a whole store's records peaked at 2.4 GiB of resident memory for 100,000 VIPs.
    pub records_first: bool,
}

/// How many writes go into each batch of a `records_first` copy. Small: sled keeps every node
/// version a batch replaces until the batch ends, so 10,000-write batches still peaked at
/// 1.7 GiB copying a 100,000-VIP store, 256-write ones at 236 MiB (and 6.2 s instead of 10.4).
const COPY_BATCH: usize = 256;

#[path = "../../migrations/0001_initial.rs"]
mod m0001_initial;
#[path = "../../migrations/0002_binary_address_keys.rs"]
mod m0002_binary_address_keys;
#[path = "../../migrations/0003_revisions.rs"]
mod m0003_revisions;
#[path = "../../migrations/0004_one_tree.rs"]
mod m0004_one_tree;

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: m0001_initial::DESCRIPTION,
        plan: m0001_initial::plan,
        records_first: false,
    },
    Migration {
        version: 2,
        description: m0002_binary_address_keys::DESCRIPTION,
        plan: m0002_binary_address_keys::plan,
        records_first: false,
    },
    Migration {
        version: 3,
        description: m0003_revisions::DESCRIPTION,
        plan: m0003_revisions::plan,
        records_first: false,
    },
    Migration {
        version: 4,
        description: m0004_one_tree::DESCRIPTION,
        plan: m0004_one_tree::plan,
        records_first: true,
    },
];

/// The format this build writes.
pub const CURRENT_VERSION: u32 = 4;

pub(crate) fn read_version(meta: &sled::Tree) -> Result<u32, StoreError> {
    match meta.get(VERSION_KEY)? {
        None => Ok(0),
        Some(bytes) => {
            let array: [u8; 4] = bytes
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("format version of {} bytes", bytes.len())))?;
            Ok(u32::from_be_bytes(array))
        }
    }
}

/// Runs the pending migrations; returns the trees the store uses: `meta` and `records`.
pub(crate) fn run(db: &sled::Db, path: &str) -> Result<(sled::Tree, sled::Tree), StoreError> {
    let meta = db.open_tree("meta")?;
    let found = read_version(&meta)?;
    if found > CURRENT_VERSION {
        return Err(StoreError::NewerVersion {
            path: path.to_string(),
            found,
            supported: CURRENT_VERSION,
        });
    }
    if found < CURRENT_VERSION {
        let trees = Trees::open(db)?;
        migrate(&trees, found)?;
    }
    // The format-3 trees, left by a crash between the last migration and their drop.
    let names = db.tree_names();
    for name in FORMAT_3_TREES {
        if names.iter().any(|present| present.as_ref() == name.as_bytes()) {
            db.drop_tree(name)?;
        }
    }
    Ok((meta, db.open_tree("records")?))
}

fn migrate(trees: &Trees, found: u32) -> Result<(), StoreError> {
    for migration in MIGRATIONS.iter().filter(|migration| migration.version > found) {
        let mut writes = (migration.plan)(trees).map_err(|message| StoreError::Migration {
            version: migration.version,
            message,
        })?;
        let count = writes.len();
        if migration.records_first {
            trees.records.clear()?;
            let (copied, rest): (Vec<PlannedWrite>, Vec<PlannedWrite>) =
                writes.into_iter().partition(|write| write.tree == Tree::Records);
            writes = rest;
            for chunk in copied.chunks(COPY_BATCH) {
                let mut batch = sled::Batch::default();
                for write in chunk {
                    match &write.value {
                        Some(value) => batch.insert(write.key.as_slice(), value.as_slice()),
                        None => batch.remove(write.key.as_slice()),
                    }
                }
                trees.records.apply_batch(batch)?;
            }
            trees.records.flush()?;
        }
        let all = (
            &trees.meta,
            &trees.subnets,
            &trees.vips,
            &trees.pods,
            &trees.slrs,
            &trees.ips,
            &trees.macs,
            &trees.records,
        );
        let result: Result<(), TransactionError<()>> =
            all.transaction(|(meta, subnets, vips, pods, slrs, ips, macs, records)| {
                for write in &writes {
                    let tree = write.tree.pick([subnets, vips, pods, slrs, ips, macs, meta, records]);
                    match &write.value {
                        Some(value) => tree.insert(write.key.as_slice(), value.as_slice())?,
                        None => tree.remove(write.key.as_slice())?,
                    };
                }
                meta.insert(VERSION_KEY, &migration.version.to_be_bytes())?;
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        match result {
            Ok(()) => {}
            Err(TransactionError::Storage(error)) => return Err(StoreError::Sled(error)),
            Err(TransactionError::Abort(())) => {
                return Err(StoreError::Migration {
                    version: migration.version,
                    message: "aborted".into(),
                })
            }
        }
        trees.records.flush()?;
        trees.meta.flush()?;
        info!(
            version = migration.version,
            description = migration.description,
            writes = count,
            "store migrated"
        );
    }
    Ok(())
}

/// Writes the format version by hand: for tests that build an old store.
pub fn write_version_for_tests(db: &sled::Db, version: u32) -> Result<(), StoreError> {
    db.open_tree("meta")?.insert(VERSION_KEY, &version.to_be_bytes())?;
    db.flush()?;
    Ok(())
}
