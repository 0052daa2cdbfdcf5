//! Store format versions and the migrations between them. Each migration is a numbered file
//! under `migrations/` compiled into the binary. A migration reads the store and returns the
//! writes it needs; the runner applies those writes and the new version number in one sled
//! transaction, so a crash mid-migration leaves the store at the old version, untouched.

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use tracing::info;

use super::{StoreError, Trees};

const VERSION_KEY: &[u8] = b"format_version";

/// One write a migration asks for: `value: None` removes the key.
pub struct PlannedWrite {
    pub tree: Tree,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// The record trees, named: what a write (the store's batches, a migration's plan) goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    Subnets,
    Vips,
    Pods,
    SwitchLbRules,
    Ips,
    Macs,
}

impl Tree {
    /// This tree among the six a multi-tree transaction hands out, given in declaration order
    /// (subnets, vips, pods, slrs, ips, macs).
    pub fn pick(self, trees: [&TransactionalTree; 6]) -> &TransactionalTree {
        let [subnets, vips, pods, slrs, ips, macs] = trees;
        match self {
            Tree::Subnets => subnets,
            Tree::Vips => vips,
            Tree::Pods => pods,
            Tree::SwitchLbRules => slrs,
            Tree::Ips => ips,
            Tree::Macs => macs,
        }
    }
}

pub struct Migration {
    pub version: u32,
    pub description: &'static str,
    pub plan: fn(&Trees) -> Result<Vec<PlannedWrite>, String>,
}

#[path = "../../migrations/0001_initial.rs"]
mod m0001_initial;
#[path = "../../migrations/0002_binary_address_keys.rs"]
mod m0002_binary_address_keys;
#[path = "../../migrations/0003_revisions.rs"]
mod m0003_revisions;

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: m0001_initial::DESCRIPTION,
        plan: m0001_initial::plan,
    },
    Migration {
        version: 2,
        description: m0002_binary_address_keys::DESCRIPTION,
        plan: m0002_binary_address_keys::plan,
    },
    Migration {
        version: 3,
        description: m0003_revisions::DESCRIPTION,
        plan: m0003_revisions::plan,
    },
];

/// The format this build writes.
pub const CURRENT_VERSION: u32 = 3;

pub(crate) fn read_version(trees: &Trees) -> Result<u32, StoreError> {
    match trees.meta.get(VERSION_KEY)? {
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

pub(crate) fn run(_db: &sled::Db, trees: &Trees, path: &str) -> Result<(), StoreError> {
    let found = read_version(trees)?;
    if found > CURRENT_VERSION {
        return Err(StoreError::NewerVersion {
            path: path.to_string(),
            found,
            supported: CURRENT_VERSION,
        });
    }
    for migration in MIGRATIONS.iter().filter(|migration| migration.version > found) {
        let writes = (migration.plan)(trees).map_err(|message| StoreError::Migration {
            version: migration.version,
            message,
        })?;
        let count = writes.len();
        let all = (
            &trees.meta,
            &trees.subnets,
            &trees.vips,
            &trees.pods,
            &trees.slrs,
            &trees.ips,
            &trees.macs,
        );
        let result: Result<(), TransactionError<()>> =
            all.transaction(|(meta, subnets, vips, pods, slrs, ips, macs)| {
                for write in &writes {
                    let tree = write.tree.pick([subnets, vips, pods, slrs, ips, macs]);
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
