//! The store's clustered mode (`--cluster-db`): the seam between the registry's batches and the
//! `OVN_VIPD` cluster database, and the sled replica of that database.
//!
//! - [`ClusterLink`]: with a link attached ([`Store::attach_cluster`]), [`Store::apply`] queues a
//!   batch for the committer (`crate::cluster`) instead of writing sled, and [`Store::durable`]
//!   returns once every batch queued before the call was committed by the cluster's leader (many
//!   batches per transaction: the group commit), or fails (`ClusterCommit`) when its transaction
//!   failed. A failure fails everything queued after it too and closes the link until the
//!   committer has reloaded the registry from the replica ([`ClusterLink::open`]): no trace of a
//!   failed batch is left, and no later batch is built on it.
//! - The replica: sled holds what the cluster database holds, written only by the mirror
//!   ([`Store::mirror_apply`]), with the rows by uuid (space `ClusterRow` of the `records` tree,
//!   to seed the OVSDB client's cache at the next start) and the last transaction id (space
//!   `ClusterMeta`, `cluster_last_txn_id`), in one atomic sled batch with the records they give,
//!   so a restart resumes exactly where the replica is.

use std::sync::Mutex;

use tokio::sync::watch;

use super::keys::Space;
use super::{Store, StoreError, WriteBatch};

/// The spaces of objects and allocations: what a replica holds besides its rows.
const RECORD_SPACES: [Space; 6] = [
    Space::Subnet,
    Space::Vip,
    Space::Pod,
    Space::SwitchLbRule,
    Space::Ip,
    Space::Mac,
];

const LAST_TXN_KEY: &[u8] = b"cluster_last_txn_id";

/// What has become of the queued batches (sequence numbers count from 1).
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Every batch up to this one is settled: committed or failed.
    pub settled: u64,
    /// Failed ranges (first, last, why), oldest first; failures are rare (each closes the link).
    pub failures: Vec<(u64, u64, String)>,
    /// Ranges settled beyond `settled` (a queue failed while a transaction was in flight).
    ahead: std::collections::BTreeMap<u64, u64>,
}

impl Progress {
    fn settle(&mut self, first: u64, last: u64, failure: Option<&str>) {
        if let Some(why) = failure {
            self.failures.push((first, last, why.to_string()));
        }
        self.ahead.insert(first, last);
        while let Some(last) = self.ahead.remove(&(self.settled + 1)) {
            self.settled = last;
        }
    }
}

struct Queue {
    next: u64,
    pending: Vec<(u64, WriteBatch)>,
    /// `Err(why)` while batches are refused (not active, or reloading after a failure).
    open: Result<(), String>,
}

/// The queue between the registry and the committer (see the module docs).
pub struct ClusterLink {
    queue: Mutex<Queue>,
    wake: tokio::sync::Notify,
    progress: watch::Sender<Progress>,
}

impl Default for ClusterLink {
    fn default() -> Self {
        ClusterLink::new()
    }
}

impl ClusterLink {
    /// A closed link: batches are refused until [`ClusterLink::open`].
    pub fn new() -> ClusterLink {
        ClusterLink {
            queue: Mutex::new(Queue {
                next: 1,
                pending: Vec::new(),
                open: Err("not the active daemon (the cluster database lock is not held)".into()),
            }),
            wake: tokio::sync::Notify::new(),
            progress: watch::channel(Progress::default()).0,
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        match self.queue.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Accepts batches again (the committer holds the lock and the registry is current).
    pub fn open(&self) {
        self.queue().open = Ok(());
    }

    /// Refuses batches from now on (`why` is the refusal's message) and fails those queued but
    /// not taken by the committer (a batch in a transaction in flight settles with it).
    pub fn close(&self, why: &str) {
        let failed = {
            let mut queue = self.queue();
            queue.open = Err(why.to_string());
            let first = queue.pending.first().map(|(seq, _)| *seq);
            queue.pending.clear();
            first.map(|first| (first, queue.next - 1))
        };
        if let Some((first, last)) = failed {
            self.progress
                .send_modify(|progress| progress.settle(first, last, Some(why)));
        }
    }

    pub fn is_open(&self) -> bool {
        self.queue().open.is_ok()
    }

    fn push(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        let mut queue = self.queue();
        if let Err(why) = &queue.open {
            return Err(StoreError::ClusterCommit(why.clone()));
        }
        let seq = queue.next;
        queue.next += 1;
        queue.pending.push((seq, batch.clone()));
        drop(queue);
        self.wake.notify_one();
        Ok(())
    }

    /// The last sequence number handed out.
    fn last(&self) -> u64 {
        self.queue().next - 1
    }

    /// Waits until batches are queued, then takes them all (in order).
    pub async fn take(&self) -> Vec<(u64, WriteBatch)> {
        loop {
            let notified = self.wake.notified();
            {
                let mut queue = self.queue();
                if !queue.pending.is_empty() {
                    return std::mem::take(&mut queue.pending);
                }
            }
            notified.await;
        }
    }

    /// Reports that the batches `first..=last` (one transaction) committed.
    pub fn committed(&self, first: u64, last: u64) {
        self.progress.send_modify(|progress| progress.settle(first, last, None));
    }

    /// Reports that the batches `first..=last` (one transaction) failed, closes the link and
    /// fails every batch queued since (they were built on the failed ones).
    pub fn failed(&self, first: u64, last: u64, why: &str) {
        self.progress
            .send_modify(|progress| progress.settle(first, last, Some(why)));
        self.close(&format!(
            "the cluster database refused an earlier change ({why}); retry"
        ));
    }

    /// Waits until every batch queued before the call is settled; an error when one of them
    /// failed (see the module docs).
    async fn durable(&self) -> Result<(), StoreError> {
        let target = self.last();
        if target == 0 {
            return Ok(());
        }
        let mut progress = self.progress.subscribe();
        let settled = progress
            .wait_for(|progress| progress.settled >= target)
            .await
            .map_err(|_| StoreError::ClusterCommit("the committer has stopped".into()))?;
        // A failed range holding the target fails this caller: its batch may be among them.
        match settled
            .failures
            .iter()
            .find(|(first, last, _)| *first <= target && target <= *last)
        {
            Some((_, _, why)) => Err(StoreError::ClusterCommit(why.clone())),
            None => Ok(()),
        }
    }
}

impl Store {
    /// Turns on clustered mode (before any batch): see the module docs. The first call wins.
    pub fn attach_cluster(&self, link: std::sync::Arc<ClusterLink>) {
        let _ = self.cluster.set(link);
    }

    pub fn cluster(&self) -> Option<&std::sync::Arc<ClusterLink>> {
        self.cluster.get()
    }

    /// Queues for the cluster when attached; `None` when standalone.
    pub(super) fn cluster_push(&self, batch: &WriteBatch) -> Option<Result<(), StoreError>> {
        self.cluster.get().map(|link| link.push(batch))
    }

    pub(super) async fn cluster_durable(&self) -> Option<Result<(), StoreError>> {
        match self.cluster.get() {
            Some(link) => Some(link.durable().await),
            None => None,
        }
    }

    /// The replica's last transaction id and its rows as `<table-updates2>` of `initial`s, or
    /// `None` when the replica holds nothing to resume from.
    pub fn mirror_seed(&self) -> Result<Option<(String, serde_json::Value)>, StoreError> {
        let Some(txn) = self.records.get(Space::ClusterMeta.key(LAST_TXN_KEY))? else {
            return Ok(None);
        };
        let txn =
            String::from_utf8(txn.to_vec()).map_err(|error| StoreError::Corrupt(format!("last txn id: {error}")))?;
        let mut tables = serde_json::Map::new();
        for entry in self.scan(Space::ClusterRow) {
            let (key, value) = entry?;
            let (table, uuid) = split_row_key(&key)?;
            let row: serde_json::Value = serde_json::from_slice(&value)
                .map_err(|error| StoreError::Corrupt(format!("replica row {table} {uuid}: {error}")))?;
            let rows = tables
                .entry(table)
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            if let Some(rows) = rows.as_object_mut() {
                rows.insert(uuid, serde_json::json!({ "initial": row }));
            }
        }
        Ok(Some((txn, serde_json::Value::Object(tables))))
    }

    /// Empties the replica (before a full download): the records, allocations, rows and txn id.
    /// The transaction id goes first, so a reset cut short leaves a replica that is downloaded
    /// in full again; the rest is removed in small batches (as `clear()` did per tree before
    /// format 4: sled keeps what one batch replaces until it ends, see `migrations.rs`).
    pub fn mirror_reset(&self) -> Result<(), StoreError> {
        self.records.remove(Space::ClusterMeta.key(LAST_TXN_KEY))?;
        for space in RECORD_SPACES.into_iter().chain([Space::ClusterRow]) {
            let mut batch = sled::Batch::default();
            let mut pending = 0;
            for key in self.records.scan_prefix(space.prefix()).keys() {
                batch.remove(key?);
                pending += 1;
                if pending == 256 {
                    self.records.apply_batch(std::mem::take(&mut batch))?;
                    pending = 0;
                }
            }
            self.records.apply_batch(batch)?;
        }
        Ok(())
    }

    /// Applies one step of the replica in one atomic sled batch: the records `batch` gives, the
    /// rows (`(table, uuid)` → the row as JSON, `None` to delete) and the transaction id.
    pub fn mirror_apply(
        &self,
        batch: &WriteBatch,
        rows: &[((String, String), Option<serde_json::Value>)],
        last_txn_id: &str,
    ) -> Result<(), StoreError> {
        let mut sled_batch = self.encode_batch(batch)?;
        for ((table, uuid), row) in rows {
            let key = Space::ClusterRow.key(&row_key(table, uuid));
            match row {
                Some(row) => sled_batch.insert(
                    key,
                    serde_json::to_vec(row).map_err(|error| StoreError::Encode(error.to_string()))?,
                ),
                None => sled_batch.remove(key),
            }
        }
        sled_batch.insert(Space::ClusterMeta.key(LAST_TXN_KEY), last_txn_id.as_bytes());
        // Each replica numbers the changes it applies (revisions are per daemon in clustered
        // mode: see ARCHITECTURE.md, "Clustered mode").
        let mut revisions = self.lock_revisions()?;
        let planned = revisions.plan(&batch.writes)?;
        planned.write_in(&mut sled_batch);
        self.records.apply_batch(sled_batch)?;
        revisions.commit(planned);
        Ok(())
    }

    /// Whether the store holds records or allocations that are not a replica's (standalone data:
    /// records but no replica transaction id).
    pub fn holds_standalone_data(&self) -> Result<bool, StoreError> {
        if self.records.contains_key(Space::ClusterMeta.key(LAST_TXN_KEY))? {
            return Ok(false);
        }
        for space in RECORD_SPACES {
            if self.records.scan_prefix(space.prefix()).next().is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Rows in the replica.
    pub fn mirror_row_count(&self) -> usize {
        self.records.scan_prefix(Space::ClusterRow.prefix()).count()
    }
}

fn row_key(table: &str, uuid: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(table.len() + 1 + uuid.len());
    key.extend_from_slice(table.as_bytes());
    key.push(0);
    key.extend_from_slice(uuid.as_bytes());
    key
}

fn split_row_key(key: &[u8]) -> Result<(String, String), StoreError> {
    let text = std::str::from_utf8(key).map_err(|error| StoreError::Corrupt(format!("replica row key: {error}")))?;
    text.split_once('\0')
        .map(|(table, uuid)| (table.to_string(), uuid.to_string()))
        .ok_or_else(|| StoreError::Corrupt(format!("replica row key {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Write;

    fn batch(name: &str) -> WriteBatch {
        let mut batch = WriteBatch::new();
        batch.push(Write::DeleteVip(name.into()));
        batch
    }

    #[tokio::test]
    async fn a_closed_link_refuses_and_an_open_one_acknowledges_after_the_commit() {
        let link = ClusterLink::new();
        assert!(matches!(link.push(&batch("a")), Err(StoreError::ClusterCommit(_))));
        link.open();
        link.push(&batch("a")).unwrap();
        link.push(&batch("b")).unwrap();
        let taken = link.take().await;
        assert_eq!(
            taken.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            vec![1, 2],
            "one group"
        );
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), link.durable()).await;
        assert!(waiting.is_err(), "not acknowledged before the commit");
        link.committed(1, 2);
        link.durable().await.unwrap();
    }

    #[tokio::test]
    async fn a_failure_fails_its_group_and_everything_queued_after_it_but_not_what_committed_before() {
        let link = ClusterLink::new();
        link.open();
        link.push(&batch("a")).unwrap();
        let first = link.take().await;
        link.committed(1, 1);
        link.durable().await.unwrap();
        link.push(&batch("b")).unwrap();
        let second = link.take().await;
        link.push(&batch("c")).unwrap(); // queued while "b" is in flight
        link.failed(2, 2, "not owner");
        assert!(matches!(link.durable().await, Err(StoreError::ClusterCommit(why)) if why.contains("not owner")));
        assert!(link.push(&batch("d")).is_err(), "closed until the committer reopens it");
        assert_eq!((first.len(), second.len()), (1, 1));
    }

    #[tokio::test]
    async fn closing_while_a_transaction_is_in_flight_does_not_acknowledge_it_early() {
        let link = ClusterLink::new();
        link.open();
        link.push(&batch("a")).unwrap();
        let _in_flight = link.take().await;
        link.push(&batch("b")).unwrap();
        link.close("lost the lock");
        // "b" failed; "a" (seq 1) is still in flight, so nothing up to 2 is settled yet.
        assert_eq!(link.progress.borrow().settled, 0);
        link.committed(1, 1);
        assert_eq!(link.progress.borrow().settled, 2);
        let failures = link.progress.borrow().failures.clone();
        assert_eq!(failures.len(), 1);
        assert_eq!((failures[0].0, failures[0].1), (2, 2));
    }
}
