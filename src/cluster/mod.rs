//! Clustered mode (`--cluster-db`): the `OVN_VIPD` database (`deploy/ovn-vipd.ovsschema`),
//! served by `ovsdb-server` as a RAFT cluster, is the shared store; sled is each daemon's replica.
//! See ARCHITECTURE.md, "Clustered mode".
//!
//! Two tasks:
//! - the **mirror** follows the database through `monitor_cond_since` (the project's OVSDB client
//!   with a replica seed and feed) into sled, with the last transaction id, so a restart resumes
//!   from it (`replica resumed from transaction <id>`) instead of downloading everything
//!   (`replica downloaded in full (<n> rows)`), counted in `ovn_vipd_replica_syncs_total{kind}`;
//!   while this daemon is not active the registry follows the replica (reads on a standby are
//!   current, a takeover loads nothing);
//! - the **committer** holds the part: the lock `ovn_vipd` on the cluster database first; its
//!   holder bumps `Active.epoch` and writes its daemon id and advertised address (one transaction
//!   with the lock's `assert`), waits until the replica holds that transaction (so it holds every
//!   earlier one), reloads the registry from it, opens the store's [`ClusterLink`] and only then
//!   asks NB for its lock. Every batch transaction then starts with `assert` of the lock and a
//!   `wait` that `Active.epoch` is still its own; a change is acknowledged once its transaction
//!   committed. A failed commit fails its callers (UNAVAILABLE), closes the link and starts the
//!   takeover again (or standby, without the lock), reloading the registry from the replica.

pub mod rows;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::ovsdb::{
    Atom, Client, ClientConfig, ClientEvent, Condition, Mutation, Mutator, Operation, OvsdbError, Remote, ReplicaSeed,
    ReplicaUpdate, Row, TlsFiles, Value, WaitUntil,
};
use crate::registry::Registry;
use crate::role::LOCK_NAME;
use crate::store::{ClusterLink, WriteBatch};
use crate::telemetry::{self, PassLabels};

/// How to reach the cluster database and what to publish there.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub remotes: Vec<Remote>,
    pub tls: Option<TlsFiles>,
    /// The gRPC address written to `Active.address` while active.
    pub advertise_address: Option<String>,
    /// This daemon's id in `Active.daemon` (host name and process id).
    pub daemon_id: String,
    /// How long a takeover waits for the replica to hold its epoch transaction.
    pub catch_up_timeout: Duration,
    /// How long a cluster transaction may wait for a usable connection (to the leader).
    pub commit_timeout: Duration,
}

impl ClusterConfig {
    pub fn new(remotes: Vec<Remote>, tls: Option<TlsFiles>, advertise_address: Option<String>) -> ClusterConfig {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_string())
            .unwrap_or_else(|_| "unknown-host".into());
        ClusterConfig {
            remotes,
            tls,
            advertise_address,
            daemon_id: format!("{host}/{}", std::process::id()),
            catch_up_timeout: Duration::from_secs(10),
            commit_timeout: Duration::from_secs(5),
        }
    }
}

/// The running clustered mode: the cluster database client and its tasks.
pub struct Cluster {
    pub client: Client,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    /// Puts the store in clustered mode: call it right after opening the registry, before any
    /// mutation may arrive (batches are refused until [`Cluster::start`]'s committer is active).
    pub fn attach(registry: &Registry) -> Arc<ClusterLink> {
        let link = Arc::new(ClusterLink::new());
        registry.store().attach_cluster(link.clone());
        link
    }

    /// Starts the client with the replica's seed, the mirror and the committer. `nb` is asked
    /// for its lock only while this daemon is active here.
    pub fn start(
        config: ClusterConfig,
        registry: Arc<Registry>,
        link: Arc<ClusterLink>,
        nb: Client,
        shutdown: CancellationToken,
    ) -> Result<Cluster, crate::store::StoreError> {
        let seed = registry.store().mirror_seed()?;
        let resumed_from = seed.as_ref().map(|(txn, _)| txn.clone());
        let (feed_sender, feed) = mpsc::unbounded_channel();
        let mut client_config = ClientConfig::new(config.remotes.clone(), rows::DATABASE);
        client_config.tls = config.tls.clone();
        client_config.monitored_tables = rows::TABLES.iter().map(|table| table.to_string()).collect();
        client_config.required_columns = vec![(rows::ACTIVE.to_string(), vec!["epoch".into(), "address".into()])];
        client_config.locks = vec![LOCK_NAME.to_string()];
        // After a leader change the previous holder asks the new leader first (as on NB).
        client_config.lock_grace = Duration::from_secs(2);
        client_config.replica_seed = seed.map(|(last_txn_id, rows)| Arc::new(ReplicaSeed { last_txn_id, rows }));
        client_config.replica_feed = Some(feed_sender);
        // A change waits at most this long for a usable cluster connection before it fails
        // (UNAVAILABLE): clients retry elsewhere rather than hang on a cluster that is down.
        client_config.request_timeout = config.commit_timeout;
        let (client, events) = Client::start_subscribed(client_config);
        let follow = Arc::new(AtomicBool::new(true));
        let reloading = Arc::new(tokio::sync::Mutex::new(()));
        let (epoch_sender, epoch_seen) = watch::channel(0i64);
        let (reloaded_sender, reloaded) = watch::channel(0i64);
        let mirror = Mirror {
            client: client.clone(),
            registry: registry.clone(),
            follow: follow.clone(),
            reloading: reloading.clone(),
            epoch_seen: epoch_sender,
            reloaded: reloaded_sender,
            last_txn_id: resumed_from,
        };
        let mirror_task = tokio::spawn(
            mirror
                .run(feed, shutdown.clone())
                .instrument(tracing::info_span!("replica")),
        );
        let committer = Committer {
            config,
            registry,
            client: client.clone(),
            nb,
            link,
            follow,
            reloading,
            epoch_seen,
            reloaded,
            epoch: None,
            shutdown: shutdown.clone(),
        };
        let committer_task = tokio::spawn(
            committer
                .run(events, shutdown)
                .instrument(tracing::info_span!("cluster")),
        );
        Ok(Cluster {
            client,
            tasks: vec![mirror_task, committer_task],
        })
    }

    /// Waits for the tasks (after the shutdown token fired) and stops the client.
    pub async fn stop(self) {
        for task in self.tasks {
            let _ = task.await;
        }
        self.client.shutdown().await;
    }
}

struct Mirror {
    client: Client,
    registry: Arc<Registry>,
    /// Whether the registry follows the replica (not while active: it is ahead of it then).
    follow: Arc<AtomicBool>,
    reloading: Arc<tokio::sync::Mutex<()>>,
    /// `Active.epoch` as the replica holds it.
    epoch_seen: watch::Sender<i64>,
    /// The `Active.epoch` the replica held when the registry last followed it (a takeover whose
    /// epoch the registry already reflects loads nothing).
    reloaded: watch::Sender<i64>,
    last_txn_id: Option<String>,
}

impl Mirror {
    async fn run(mut self, mut feed: mpsc::UnboundedReceiver<ReplicaUpdate>, shutdown: CancellationToken) {
        loop {
            let update = tokio::select! {
                _ = shutdown.cancelled() => return,
                update = feed.recv() => match update {
                    Some(update) => update,
                    None => return,
                },
            };
            // Take everything already queued: one reload of the registry for all of it.
            let mut updates = vec![update];
            while let Ok(more) = feed.try_recv() {
                updates.push(more);
            }
            for update in updates {
                if let Err(error) = self.apply(update) {
                    // The replica is left as it was; the next connection downloads or resumes.
                    warn!(%error, "cannot write the replica; the registry keeps its last state");
                }
            }
            // The active's address for a standby's refusals (the cache is at least as new as the
            // feed; a resumed replica may bring no change of the row).
            let address = self.client.cache().rows(rows::ACTIVE).next().and_then(|(_, row)| {
                row.get("address")
                    .and_then(Value::as_str)
                    .filter(|address| !address.is_empty())
                    .map(str::to_string)
            });
            crate::role::set_active_address(address);
            if self.follow.load(Ordering::SeqCst) {
                let _guard = self.reloading.lock().await;
                if self.follow.load(Ordering::SeqCst) {
                    let epoch = *self.epoch_seen.borrow();
                    match self.registry.reload() {
                        Ok(_) => {
                            self.reloaded.send_replace(epoch);
                        }
                        Err(error) => warn!(%error, "cannot reload the registry from the replica"),
                    }
                }
            }
        }
    }

    fn apply(&mut self, update: ReplicaUpdate) -> Result<(), String> {
        let store = self.registry.store();
        match update.synced {
            Some(true) => {
                let from = self.last_txn_id.clone().unwrap_or_default();
                info!(
                    transaction = %from,
                    changes = update.changes.len(),
                    "replica resumed from transaction {from}"
                );
                telemetry::metrics()
                    .replica_syncs
                    .get_or_create(&PassLabels { kind: "resumed".into() })
                    .inc();
            }
            Some(false) => {
                store.mirror_reset().map_err(|error| error.to_string())?;
                let rows = update.changes.len();
                info!(rows, "replica downloaded in full ({rows} rows)");
                telemetry::metrics()
                    .replica_syncs
                    .get_or_create(&PassLabels { kind: "full".into() })
                    .inc();
            }
            None => {}
        }
        let (batch, rows) = rows::replica_step(&update.changes)?;
        store
            .mirror_apply(&batch, &rows, &update.last_txn_id)
            .map_err(|error| error.to_string())?;
        self.last_txn_id = Some(update.last_txn_id);
        for change in update.changes.iter().filter(|change| change.table == rows::ACTIVE) {
            if let Some(row) = &change.new {
                let epoch = row
                    .get("epoch")
                    .and_then(Value::as_atom)
                    .and_then(Atom::as_i64)
                    .unwrap_or(0);
                self.epoch_seen.send_replace(epoch);
            }
        }
        Ok(())
    }
}

struct Committer {
    config: ClusterConfig,
    registry: Arc<Registry>,
    client: Client,
    nb: Client,
    link: Arc<ClusterLink>,
    follow: Arc<AtomicBool>,
    reloading: Arc<tokio::sync::Mutex<()>>,
    epoch_seen: watch::Receiver<i64>,
    reloaded: watch::Receiver<i64>,
    /// `Some(epoch)` while active (the link is open).
    epoch: Option<i64>,
    shutdown: CancellationToken,
}

enum Step {
    Event(ClientEvent),
    Lagged,
    Batches(Vec<(u64, WriteBatch)>),
    Shutdown,
}

impl Committer {
    async fn run(mut self, mut events: broadcast::Receiver<ClientEvent>, shutdown: CancellationToken) {
        loop {
            let active = self.epoch.is_some();
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Step::Shutdown,
                event = events.recv() => match event {
                    Ok(event) => Step::Event(event),
                    Err(broadcast::error::RecvError::Lagged(_)) => Step::Lagged,
                    Err(broadcast::error::RecvError::Closed) => Step::Shutdown,
                },
                batches = self.link.take(), if active => Step::Batches(batches),
            };
            match step {
                Step::Shutdown => {
                    self.link.close("shutting down");
                    return;
                }
                Step::Batches(batches) => self.commit(batches).await,
                Step::Event(ClientEvent::LockAcquired(lock)) if lock == LOCK_NAME => self.take_over().await,
                Step::Event(ClientEvent::LockStolen(lock)) if lock == LOCK_NAME => {
                    self.stand_by("the cluster database lock was stolen").await
                }
                Step::Event(ClientEvent::Disconnected { error }) => {
                    // The lock went with the session; it may be granted again on the next one.
                    if self.epoch.take().is_some() {
                        warn!(%error, "cluster database connection lost; changes refused until the lock is held again");
                    }
                    self.link.close("the cluster database is unavailable");
                }
                Step::Event(ClientEvent::Resynced { .. }) | Step::Lagged => {
                    // A grant is announced before `Resynced`: without it, another daemon holds it.
                    if self.client.holds_lock(LOCK_NAME) {
                        if self.epoch.is_none() {
                            self.take_over().await;
                        }
                    } else {
                        self.stand_by("another daemon holds the cluster database lock").await;
                    }
                }
                Step::Event(_) => {}
            }
        }
    }

    /// Not active: refuse changes, let the registry follow the replica, let go of NB's lock.
    async fn stand_by(&mut self, why: &str) {
        let was_active = self.epoch.take().is_some();
        self.link.close(why);
        if was_active || !self.follow.load(Ordering::SeqCst) {
            warn!(reason = why, "standby: not writing the cluster database or NB");
        }
        self.nb.release_lock(LOCK_NAME);
        self.follow.store(true, Ordering::SeqCst);
        let _guard = self.reloading.lock().await;
        if let Err(error) = self.registry.reload() {
            warn!(%error, "cannot reload the registry from the replica");
        }
    }

    /// Holder of the cluster lock: bump the epoch, wait for the replica, reload, open, ask NB.
    /// A failed step is tried again (200 ms later) while the lock is held; without it, standby.
    async fn take_over(&mut self) {
        self.epoch = None;
        self.link.close("taking over: the registry is being brought up to date");
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            if !self.client.holds_lock(LOCK_NAME) {
                return self.stand_by("the cluster database lock is not held").await;
            }
            match self.try_take_over().await {
                Ok(()) => return,
                Err(error) => {
                    warn!(%error, "cannot take over yet; trying again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn try_take_over(&mut self) -> Result<(), String> {
        let epoch = self
            .bump_epoch()
            .await
            .map_err(|error| format!("the epoch transaction failed: {error}"))?;
        let epoch_seen = &mut self.epoch_seen;
        let caught_up = tokio::time::timeout(self.config.catch_up_timeout, async {
            epoch_seen.wait_for(|seen| *seen >= epoch).await.is_ok()
        })
        .await;
        if caught_up != Ok(true) {
            return Err(format!("the replica did not reach epoch {epoch} in time"));
        }
        // A standby's registry follows the replica: once the mirror has reloaded it with the
        // epoch transaction applied, it holds everything and nothing needs loading.
        let followed = self.follow.load(Ordering::SeqCst);
        if followed {
            let reloaded = &mut self.reloaded;
            let _ = tokio::time::timeout(self.config.catch_up_timeout, async {
                reloaded.wait_for(|reloaded| *reloaded >= epoch).await.is_ok()
            })
            .await;
        }
        let registry_loaded = {
            let _guard = self.reloading.lock().await;
            self.follow.store(false, Ordering::SeqCst);
            let current = followed && *self.reloaded.borrow() >= epoch;
            if !current {
                if let Err(error) = self.registry.reload() {
                    self.follow.store(true, Ordering::SeqCst);
                    return Err(format!("cannot load the registry from the replica: {error}"));
                }
            }
            !current
        };
        self.epoch = Some(epoch);
        self.link.open();
        info!(
            epoch,
            address = self.config.advertise_address.as_deref().unwrap_or(""),
            registry_loaded,
            "active in the cluster database (epoch {epoch}); asking NB for its lock"
        );
        if !self.nb.wants_lock(LOCK_NAME) {
            let nb = self.nb.clone();
            tokio::spawn(async move {
                if let Err(error) = nb.lock(LOCK_NAME).await {
                    warn!(%error, "cannot ask NB for its lock yet; asked again on the next NB connection");
                }
            });
        }
        Ok(())
    }

    /// One cluster transaction, answered within the commit timeout: a leader that lost its
    /// majority keeps a transaction unanswered. Its outcome is then unknown (it may still commit;
    /// the takeover that follows a failure reloads the registry after everything committed).
    async fn transact(&self, operations: &[Operation]) -> Result<Vec<crate::ovsdb::OperationResult>, OvsdbError> {
        match tokio::time::timeout(self.config.commit_timeout, self.client.transact(operations)).await {
            Ok(result) => result,
            Err(_) => Err(OvsdbError::Timeout(self.config.commit_timeout)),
        }
    }

    async fn bump_epoch(&self) -> Result<i64, OvsdbError> {
        let assert = Operation::Assert {
            lock: LOCK_NAME.to_string(),
        };
        let me: Row = [
            ("daemon".to_string(), Value::string(self.config.daemon_id.clone())),
            (
                "address".to_string(),
                Value::string(self.config.advertise_address.clone().unwrap_or_default()),
            ),
        ]
        .into_iter()
        .collect();
        let results = self
            .transact(&[
                assert.clone(),
                Operation::Mutate {
                    table: rows::ACTIVE.into(),
                    conditions: Vec::new(),
                    mutations: vec![Mutation::new("epoch", Mutator::Add, Value::Atom(Atom::Integer(1)))],
                },
                Operation::Update {
                    table: rows::ACTIVE.into(),
                    conditions: Vec::new(),
                    row: me.clone(),
                },
                Operation::Select {
                    table: rows::ACTIVE.into(),
                    conditions: Vec::new(),
                    columns: Some(vec!["epoch".into()]),
                },
            ])
            .await?;
        let epoch = results
            .get(3)
            .and_then(|result| result.rows.as_ref())
            .and_then(|rows| rows.first())
            .and_then(|row| row.get("epoch"))
            .and_then(Value::as_atom)
            .and_then(Atom::as_i64);
        if let Some(epoch) = epoch {
            return Ok(epoch);
        }
        // No row yet: the first active inserts it (`maxRows` 1 refuses a second one).
        let mut first = me;
        first.insert("epoch", Value::Atom(Atom::Integer(1)));
        self.transact(&[
            assert,
            Operation::Insert {
                table: rows::ACTIVE.into(),
                row: first,
                uuid_name: None,
            },
        ])
        .await?;
        Ok(1)
    }

    /// One transaction for every batch queued: `assert` + the epoch `wait` + their operations.
    async fn commit(&mut self, batches: Vec<(u64, WriteBatch)>) {
        let (Some(first), Some(last)) = (batches.first().map(|b| b.0), batches.last().map(|b| b.0)) else {
            return;
        };
        let Some(epoch) = self.epoch else {
            self.link.failed(first, last, "not the active daemon");
            return;
        };
        let mut operations = vec![
            Operation::Assert {
                lock: LOCK_NAME.to_string(),
            },
            epoch_wait(epoch),
        ];
        for (_, batch) in &batches {
            if let Err(error) = rows::operations(batch, &mut operations) {
                self.link.failed(first, last, &error.to_string());
                return self.after_failure().await;
            }
        }
        let started = std::time::Instant::now();
        match self.transact(&operations).await {
            Ok(_) => {
                tracing::debug!(batches = batches.len(), elapsed = ?started.elapsed(), "cluster transaction committed");
                self.link.committed(first, last)
            }
            Err(error) => {
                warn!(%error, batches = batches.len(), "cluster transaction failed; its changes are refused");
                self.link.failed(first, last, &error.to_string());
                self.after_failure().await;
            }
        }
    }

    /// The registry may hold refused changes: bring it back to the replica through a takeover
    /// (which reloads it) when the lock is still held, else as a standby.
    async fn after_failure(&mut self) {
        self.epoch = None;
        if self.client.holds_lock(LOCK_NAME) {
            self.take_over().await;
        } else if self.client.state().is_connected() {
            self.stand_by("the cluster database lock is not held").await;
        } else {
            // The connection is gone (e.g. a leader change): the lock may be granted again on the
            // next one (`Resynced` decides), so NB's lock is kept meanwhile; the registry drops
            // the refused changes now.
            self.link.close("the cluster database is unavailable");
            self.follow.store(true, Ordering::SeqCst);
            let _guard = self.reloading.lock().await;
            if let Err(error) = self.registry.reload() {
                warn!(%error, "cannot reload the registry from the replica");
            }
        }
    }
}

/// `wait` until `Active.epoch` is still `epoch` (RFC 7047 §5.2.6, timeout 0): checked by the
/// cluster's leader as the transaction's prerequisite, so a deposed active cannot commit.
pub fn epoch_wait(epoch: i64) -> Operation {
    Operation::Wait {
        table: rows::ACTIVE.into(),
        conditions: Vec::<Condition>::new(),
        columns: vec!["epoch".into()],
        until: WaitUntil::Equal,
        rows: vec![[("epoch".to_string(), Value::Atom(Atom::Integer(epoch)))]
            .into_iter()
            .collect()],
        timeout_ms: Some(0),
    }
}
