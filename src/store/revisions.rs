//! Object revisions and the change log (store format 3), like Kubernetes' `resourceVersion`.
//!
//! - One store-wide counter: every put or delete of a subnet, VIP, pod or switch-LB rule takes
//!   the next revision, in the same atomic sled batch as the object itself, so it survives
//!   restarts. Space `Revision` of the `records` tree (a tree `revisions` before format 4):
//!   kind byte + object key → the object's revision (u64, big endian); removed when the object
//!   is.
//! - Space `Change` (tree `changes` before format 4): revision (u64, big endian) →
//!   [`ChangeRecord`] (kind, key, added / modified / deleted), so deletions stay visible as
//!   tombstones. It keeps the newest
//!   [`CHANGE_LOG_RETAINED`] entries; older ones are removed in the transaction that adds new
//!   ones. A watch can resume from any revision the log still covers.
//! - Objects stored before format 3 have no revision entry: they report revision 0 until their
//!   next write.
//! - **Status changes** (a VIP's conditions or NB MAC, a rule's conditions, frontends and
//!   backends: observed, not stored) take revisions from the same counter, so a watch resumed
//!   after a revision sees every status change after it too (Kubernetes bumps an object's
//!   `resourceVersion` on a status write). Their log is in memory ([`Revisions::status_log`],
//!   the same retention; from [`STATUS_BULK`] changes at once, one entry for every object of the
//!   kind): at every start an allocated VIP's status starts as `Pending` and a rule's empty, and
//!   the NB sync sets each one again, which logs it anew (a pending VIP's status follows from
//!   its stored record), so a watch resumed from an earlier run misses none. So that no revision is handed out twice across a crash, status revisions stay
//!   under a floor kept durably in the `meta` tree ([`FLOOR_KEY`]), raised in blocks of
//!   [`FLOOR_BLOCK`] with a flush; the counter restarts above it. A clean close lowers the floor
//!   to the last revision handed out, so only a crash leaves a gap.
//! - The log's window is counted in revisions, status ones included: a watch can resume after
//!   any of the newest [`CHANGE_LOG_RETAINED`] revisions.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::keys::Space;
use super::{decode, StoreError, Write};

/// How many changes the log keeps: a watch can resume from a revision at most this many
/// changes old. About 60 bytes each on disk.
pub const CHANGE_LOG_RETAINED: u64 = 100_000;

/// The `meta` tree's key of the revision floor: no revision above it was handed out (u64, big
/// endian).
pub(crate) const FLOOR_KEY: &[u8] = b"revision_floor";

/// How far the floor is raised beyond what status changes need at once: one flush per this many
/// status revisions. A clean close lowers the floor to the last revision handed out; after a
/// crash the counter restarts up to this far above it (a gap, which the change log's window,
/// counted in revisions, then spans).
pub(crate) const FLOOR_BLOCK: u64 = 4_096;

/// From this many status changes of one kind at once (the first pass after a start, every VIP
/// marked NBUnavailable when NB goes away), the status log holds one entry for "every object of
/// the kind" instead of one per object: a watch reading past it reports every object of the
/// kind (as a relist would), and the log's retention is not used up by one pass.
pub const STATUS_BULK: usize = 1_024;

/// The kinds of objects that carry a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Subnet,
    Vip,
    Pod,
    SwitchLbRule,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Subnet => 0,
            Kind::Vip => 1,
            Kind::Pod => 2,
            Kind::SwitchLbRule => 3,
        }
    }

    fn from_byte(byte: u8) -> Result<Kind, StoreError> {
        Ok(match byte {
            0 => Kind::Subnet,
            1 => Kind::Vip,
            2 => Kind::Pod,
            3 => Kind::SwitchLbRule,
            other => return Err(StoreError::Corrupt(format!("change of unknown kind {other}"))),
        })
    }
}

/// What a change did to its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One entry of the change log. `key` is the object's name, or `namespace/name` for a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedChange {
    pub revision: u64,
    pub kind: Kind,
    pub key: String,
    pub change: ChangeType,
}

/// The persisted shape of a change-log entry.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ChangeRecord {
    /// kind (0 subnet, 1 VIP, 2 pod, 3 switch-LB rule), key, change (0 added, 1 modified,
    /// 2 deleted).
    V1 { kind: u8, key: String, change: u8 },
}

/// A watch asked for changes after a revision the log no longer (or not yet) covers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("revision {asked} is {why}: a watch can resume after revisions {oldest} to {current} only (the change log keeps the newest changes, {CHANGE_LOG_RETAINED} by default); list again and watch from the list's revision")]
pub struct OutOfRange {
    pub asked: u64,
    /// `"too old"` or `"in the future"`.
    pub why: &'static str,
    /// The oldest revision a watch can start after.
    pub oldest: u64,
    pub current: u64,
}

/// The revisions in memory, guarded by the store's mutex.
#[derive(Debug, Default)]
pub(crate) struct Revisions {
    /// The newest revision handed out (0 on a new store).
    pub current: u64,
    /// The oldest revision in the change log (`current + 1` when it is empty).
    pub oldest: u64,
    pub by_object: HashMap<(Kind, String), u64>,
    /// How many changes the log keeps ([`CHANGE_LOG_RETAINED`] unless set otherwise); the
    /// status log keeps as many.
    pub retained: u64,
    /// Status changes of this run, oldest first: (revision, kind, key); no key for a bulk
    /// change of every object of the kind ([`STATUS_BULK`]).
    pub status_log: VecDeque<(u64, Kind, Option<String>)>,
    /// The newest status revision pruned from `status_log` (0: none was): a watch cannot resume
    /// before it.
    pub status_pruned: u64,
    /// The durable floor ([`FLOOR_KEY`]): status revisions are handed out only up to it.
    pub floor: u64,
}

pub(crate) fn object_key(kind: Kind, key: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(key.len() + 1);
    bytes.push(kind.byte());
    bytes.extend_from_slice(key.as_bytes());
    bytes
}

fn parse_object_key(bytes: &[u8]) -> Result<(Kind, String), StoreError> {
    let (&kind, rest) = bytes
        .split_first()
        .ok_or_else(|| StoreError::Corrupt("empty revision key".into()))?;
    let key = std::str::from_utf8(rest).map_err(|_| StoreError::Corrupt(format!("revision key {bytes:?}")))?;
    Ok((Kind::from_byte(kind)?, key.to_string()))
}

fn revision_value(bytes: &[u8]) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("revision of {} bytes", bytes.len())))?;
    Ok(u64::from_be_bytes(array))
}

/// The object a write puts or deletes, if it is one.
pub(crate) fn object_of(write: &Write) -> Option<(Kind, String, bool)> {
    Some(match write {
        Write::PutSubnet(subnet) => (Kind::Subnet, subnet.name.clone(), false),
        Write::DeleteSubnet(name) => (Kind::Subnet, name.clone(), true),
        Write::PutVip(vip) => (Kind::Vip, vip.spec.name.clone(), false),
        Write::DeleteVip(name) => (Kind::Vip, name.clone(), true),
        Write::PutPod(pod) => (Kind::Pod, pod.key().to_string(), false),
        Write::DeletePod(pod) => (Kind::Pod, pod.to_string(), true),
        Write::PutSwitchLbRule(rule) => (Kind::SwitchLbRule, rule.name.clone(), false),
        Write::DeleteSwitchLbRule(name) => (Kind::SwitchLbRule, name.clone(), true),
        _ => return None,
    })
}

/// What one batch does to revisions: computed before the transaction, committed to memory
/// after it.
pub(crate) struct Planned {
    /// (revisions-tree key, value or None to remove).
    pub revision_writes: Vec<(Vec<u8>, Option<[u8; 8]>)>,
    /// (changes-tree key, encoded record).
    pub log_writes: Vec<([u8; 8], Vec<u8>)>,
    /// Log keys to remove (beyond retention).
    pub log_removals: Vec<[u8; 8]>,
    current: u64,
    oldest: u64,
    objects: Vec<((Kind, String), Option<u64>)>,
}

impl Planned {
    /// Adds the plan's revision and change-log writes to the caller's sled batch (the one
    /// that writes the batch's records, so both land or neither does).
    pub fn write_in(&self, batch: &mut sled::Batch) {
        for (key, value) in &self.revision_writes {
            let key = Space::Revision.key(key);
            match value {
                Some(value) => batch.insert(key, value.as_slice()),
                None => batch.remove(key),
            }
        }
        for (key, value) in &self.log_writes {
            batch.insert(Space::Change.key(key), value.as_slice());
        }
        for key in &self.log_removals {
            batch.remove(Space::Change.key(key));
        }
    }
}

impl Revisions {
    /// Loads the revisions from the `records` tree and the floor from `meta`; objects without
    /// an entry (stored before format 3) are at 0. The counter starts at the floor when that is
    /// higher (status revisions of an earlier run).
    pub fn load(records: &sled::Tree, meta: &sled::Tree) -> Result<Revisions, StoreError> {
        let mut by_object = HashMap::new();
        for (kind, space) in [
            (Kind::Subnet, Space::Subnet),
            (Kind::Vip, Space::Vip),
            (Kind::Pod, Space::Pod),
            (Kind::SwitchLbRule, Space::SwitchLbRule),
        ] {
            for key in records.scan_prefix(space.prefix()).keys() {
                let key = key?;
                by_object.insert((kind, String::from_utf8_lossy(&key[1..]).into_owned()), 0);
            }
        }
        let mut current = 0;
        for entry in records.scan_prefix(Space::Revision.prefix()) {
            let (key, value) = entry?;
            let revision = revision_value(&value)?;
            current = current.max(revision);
            by_object.insert(parse_object_key(&key[1..])?, revision);
        }
        let mut log = records.scan_prefix(Space::Change.prefix()).keys();
        let oldest_logged = log
            .next()
            .transpose()?
            .map(|key| revision_value(&key[1..]))
            .transpose()?;
        let newest_logged = match log.next_back().transpose()? {
            Some(key) => Some(revision_value(&key[1..])?),
            None => oldest_logged,
        };
        let floor = meta
            .get(FLOOR_KEY)?
            .map(|value| revision_value(&value))
            .transpose()?
            .unwrap_or(0);
        current = current.max(newest_logged.unwrap_or(0)).max(floor);
        Ok(Revisions {
            current,
            oldest: oldest_logged.unwrap_or(current + 1),
            by_object,
            retained: CHANGE_LOG_RETAINED,
            status_log: VecDeque::new(),
            status_pruned: 0,
            floor,
        })
    }

    /// How many revisions status changes of `count` objects take: one each, or one for a bulk
    /// change ([`STATUS_BULK`]).
    pub fn status_revisions(count: usize) -> u64 {
        if count >= STATUS_BULK {
            1
        } else {
            count as u64
        }
    }

    /// The floor that `count` more status revisions need, if it must be raised first (written
    /// and flushed by the caller before [`Revisions::log_status`]).
    pub fn floor_needed(&self, count: u64) -> Option<u64> {
        let needed = self.current + count;
        (needed > self.floor).then_some(needed + FLOOR_BLOCK)
    }

    /// Gives the status changes of `keys` (objects of `kind`) the next revisions and logs them:
    /// one each, or one bulk entry from [`STATUS_BULK`] keys on. The caller made sure the floor
    /// covers them ([`Revisions::floor_needed`]).
    pub fn log_status(&mut self, kind: Kind, keys: &[&str]) {
        if keys.len() >= STATUS_BULK {
            self.current += 1;
            self.status_log.push_back((self.current, kind, None));
        } else {
            for key in keys {
                self.current += 1;
                self.status_log.push_back((self.current, kind, Some(key.to_string())));
            }
        }
        while self.status_log.len() as u64 > self.retained {
            if let Some((revision, _, _)) = self.status_log.pop_front() {
                self.status_pruned = revision;
            }
        }
    }

    /// The status changes after `after` up to `current` (inclusive), oldest first; a bulk entry
    /// stands for every stored object of its kind, at its revision.
    pub fn status_since(&self, after: u64, current: u64) -> Vec<LoggedChange> {
        let start = self.status_log.partition_point(|(revision, _, _)| *revision <= after);
        let mut out = Vec::new();
        for (revision, kind, key) in self.status_log.range(start..) {
            if *revision > current {
                break;
            }
            let change = |key: &str| LoggedChange {
                revision: *revision,
                kind: *kind,
                key: key.to_string(),
                change: ChangeType::Modified,
            };
            match key {
                Some(key) => out.push(change(key)),
                None => out.extend(
                    self.by_object
                        .keys()
                        .filter(|(of, _)| of == kind)
                        .map(|(_, key)| change(key)),
                ),
            }
        }
        out
    }

    /// Gives every object write of `writes` the next revision.
    pub fn plan(&self, writes: &[Write]) -> Result<Planned, StoreError> {
        let mut planned = Planned {
            revision_writes: Vec::new(),
            log_writes: Vec::new(),
            log_removals: Vec::new(),
            current: self.current,
            oldest: self.oldest,
            objects: Vec::new(),
        };
        let mut present: HashMap<(Kind, String), bool> = HashMap::new();
        for (kind, key, deleted) in writes.iter().filter_map(object_of) {
            let object = (kind, key);
            let existed = *present
                .entry(object.clone())
                .or_insert_with(|| self.by_object.contains_key(&object));
            if deleted && !existed {
                continue;
            }
            planned.current += 1;
            let revision = planned.current;
            let change = match (deleted, existed) {
                (true, _) => 2,
                (false, true) => 1,
                (false, false) => 0,
            };
            present.insert(object.clone(), !deleted);
            let record = ChangeRecord::V1 {
                kind: kind.byte(),
                key: object.1.clone(),
                change,
            };
            planned
                .log_writes
                .push((revision.to_be_bytes(), super::encode(&record)?));
            let stored = (!deleted).then_some(revision);
            planned
                .revision_writes
                .push((object_key(kind, &object.1), stored.map(u64::to_be_bytes)));
            planned.objects.push((object, stored));
        }
        while planned.current + 1 - planned.oldest > self.retained {
            planned.log_removals.push(planned.oldest.to_be_bytes());
            planned.oldest += 1;
        }
        Ok(planned)
    }

    /// Takes a committed plan into memory.
    pub fn commit(&mut self, planned: Planned) {
        self.current = planned.current;
        self.oldest = planned.oldest.min(planned.current + 1);
        for (object, revision) in planned.objects {
            match revision {
                Some(revision) => {
                    self.by_object.insert(object, revision);
                }
                None => {
                    self.by_object.remove(&object);
                }
            }
        }
    }
}

/// Reads the change log after `after` up to `current` (inclusive) from the `records` tree.
pub(crate) fn read_log(records: &sled::Tree, after: u64, current: u64) -> Result<Vec<LoggedChange>, StoreError> {
    let mut out = Vec::new();
    if after >= current {
        return Ok(out);
    }
    let from = Space::Change.key(&(after + 1).to_be_bytes());
    let to = Space::Change.key(&current.to_be_bytes());
    for entry in records.range(from..=to) {
        let (key, value) = entry?;
        let revision = revision_value(&key[1..])?;
        let ChangeRecord::V1 { kind, key, change } = decode(&value, "change log entry")?;
        out.push(LoggedChange {
            revision,
            kind: Kind::from_byte(kind)?,
            key,
            change: match change {
                0 => ChangeType::Added,
                1 => ChangeType::Modified,
                2 => ChangeType::Deleted,
                other => return Err(StoreError::Corrupt(format!("change of unknown type {other}"))),
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a crash the durable floor, not the log, says where the counter goes on: status
    /// revisions handed out up to it are never handed out again.
    #[test]
    fn the_counter_restarts_at_the_floor_when_it_is_above_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).temporary(true).open().unwrap();
        let (records, meta) = (db.open_tree("records").unwrap(), db.open_tree("meta").unwrap());
        assert_eq!(Revisions::load(&records, &meta).unwrap().current, 0);
        meta.insert(FLOOR_KEY, &4_100u64.to_be_bytes()).unwrap();
        let mut revisions = Revisions::load(&records, &meta).unwrap();
        assert_eq!((revisions.current, revisions.floor), (4_100, 4_100));
        // Status changes within the floor need no raise; beyond it, a block more.
        assert_eq!(revisions.floor_needed(0), None);
        assert_eq!(revisions.floor_needed(1), Some(4_101 + FLOOR_BLOCK));
        revisions.floor = 4_101 + FLOOR_BLOCK;
        revisions.log_status(Kind::Vip, &["a"]);
        assert_eq!(revisions.current, 4_101);
        // A bulk change takes one revision.
        let many: Vec<String> = (0..STATUS_BULK).map(|i| i.to_string()).collect();
        let keys: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(Revisions::status_revisions(keys.len()), 1);
        revisions.log_status(Kind::Vip, &keys);
        assert_eq!(revisions.current, 4_102);
        assert_eq!(revisions.status_log.len(), 2);
    }
}
