//! The long-lived OVSDB client: it picks a remote (the cluster leader, when the database is
//! clustered), checks the schema, monitors the configured tables into a [`Cache`], resumes with
//! `monitor_cond_since` after a reconnect, follows leader changes through the `_Server` database,
//! and reconnects with exponential backoff and jitter. Users read the cache, subscribe to
//! [`ClientEvent`]s, and send transactions, which wait for a usable connection.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value as Json};
use tokio::sync::{broadcast, watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use super::cache::{Cache, IndexSpec, RowChange};
use super::connection::{Connection, ConnectionOptions, Notification};
use super::error::OvsdbError;
use super::operation::{Condition, Operation, OperationResult};
use super::remote::{Remote, TlsFiles};
use super::schema::DatabaseSchema;
use super::value::Value;

const ZERO_TXN_ID: &str = "00000000-0000-0000-0000-000000000000";
const SERVER_MONITOR_ID: &str = "_Server";

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub remotes: Vec<Remote>,
    pub tls: Option<TlsFiles>,
    pub database: String,
    /// Tables to monitor into the cache (all their columns unless `monitored_columns` names some).
    pub monitored_tables: Vec<String>,
    /// Per monitored table, the only columns to monitor and cache (RFC 7047 §4.1.5
    /// `<monitor-request>` `columns`): what the users read, so the server sends, and the cache
    /// keeps, nothing else. A monitored table not listed here is monitored whole.
    pub monitored_columns: Vec<(String, Vec<String>)>,
    /// Tables and columns the server's schema must have.
    pub required_columns: Vec<(String, Vec<String>)>,
    pub connection: ConnectionOptions,
    /// Reconnect delays: `backoff_initial` after a failed round over every remote, doubled per
    /// further round up to `backoff_max` (default 100 ms and 1 s: a takeover after a RAFT
    /// leader's death waits for one reconnect round, and the 3 s takeover goal of
    /// ARCHITECTURE.md "Clustered mode" must hold; OVS's own default cap of 8 s would not).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Connect only to a clustered database's leader (as `ovn-nbctl --leader-only`, the default).
    pub leader_only: bool,
    /// How long a transaction waits for a usable connection before failing.
    pub request_timeout: Duration,
    /// Secondary indexes the cache keeps (see [`Cache::find`]).
    pub indexes: Vec<IndexSpec>,
    /// OVSDB locks (RFC 7047 §4.1.8) to ask for on every connection, before it is announced
    /// ready: a grant is announced ([`ClientEvent::LockAcquired`]) before the connection's
    /// [`ClientEvent::Resynced`], so a lock not granted by then is held by another session.
    pub locks: Vec<String>,
    /// After a reconnect, how long to wait before asking again for a lock this client did not
    /// hold when its last connection ended: the previous holder, reconnecting too (e.g. after a
    /// cluster leader change, where the lock table of the old leader is lost), asks first and
    /// keeps its part. Zero asks at once.
    pub lock_grace: Duration,
    /// A replica of the monitored tables kept elsewhere (e.g. on disk) to resume from: the cache
    /// starts with its rows and the first `monitor_cond_since` asks for what followed its
    /// transaction id, so a restart need not download everything.
    pub replica_seed: Option<Arc<ReplicaSeed>>,
    /// Where every change of the monitored tables is also sent, with the id of the transaction
    /// that made it, in order: what a replica on disk needs to follow the cache exactly.
    pub replica_feed: Option<tokio::sync::mpsc::UnboundedSender<ReplicaUpdate>>,
}

/// The rows a replica holds and the last transaction it has seen.
#[derive(Debug, Clone)]
pub struct ReplicaSeed {
    pub last_txn_id: String,
    /// `<table-updates2>` (RFC 7047 + ovsdb-server(7) `update2`) with one `initial` per row.
    pub rows: Json,
}

/// One step of a replica: changes in transaction order.
#[derive(Debug, Clone)]
pub struct ReplicaUpdate {
    /// Set for the first update of a connection: `Some(true)` when the server resumed from the
    /// replica's last transaction (only the changes since follow), `Some(false)` when it sent
    /// every row again (the replica must drop what it held first).
    pub synced: Option<bool>,
    /// The id of the last transaction these changes include (the all-zero id when the server
    /// has none, e.g. without `monitor_cond_since`).
    pub last_txn_id: String,
    pub changes: Vec<RowChange>,
}

impl ClientConfig {
    pub fn new(remotes: Vec<Remote>, database: impl Into<String>) -> ClientConfig {
        ClientConfig {
            remotes,
            tls: None,
            database: database.into(),
            monitored_tables: Vec::new(),
            monitored_columns: Vec::new(),
            required_columns: Vec::new(),
            connection: ConnectionOptions::default(),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            leader_only: true,
            request_timeout: Duration::from_secs(30),
            indexes: Vec::new(),
            locks: Vec::new(),
            lock_grace: Duration::ZERO,
            replica_seed: None,
            replica_feed: None,
        }
    }
}

/// What the client tells the cache's users.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// A connection is ready and the cache is in sync with it: after every (re)connect. The
    /// cache may have been replaced whole, so users must treat this as "resync everything".
    Resynced {
        remote: String,
        /// Whether `monitor_cond_since` resumed from the last transaction seen (only changes
        /// since were sent) rather than sending everything again.
        resumed: bool,
    },
    /// Rows changed in the monitored tables.
    Changed(Arc<Vec<RowChange>>),
    /// The connection was lost; the cache keeps its last content until the next `Resynced`.
    Disconnected {
        error: String,
    },
    LockAcquired(String),
    LockStolen(String),
}

/// What the client knows about its connection right now.
#[derive(Clone, Default)]
pub struct ConnectionState {
    pub connection: Option<Connection>,
    pub schema: Option<Arc<DatabaseSchema>>,
    /// Counts successful connections; a change means a reconnect happened.
    pub generation: u64,
    pub last_error: Option<String>,
}

impl ConnectionState {
    pub fn is_connected(&self) -> bool {
        self.connection
            .as_ref()
            .is_some_and(|connection| !connection.is_closed())
    }
}

struct Shared {
    config: ClientConfig,
    /// Guarded by a std lock: readers hold it briefly and never across an await.
    cache: RwLock<Cache>,
    state: watch::Sender<ConnectionState>,
    events: broadcast::Sender<ClientEvent>,
    /// Asks the supervisor to drop the current connection (e.g. after a "not leader" refusal).
    reconnect: Notify,
    /// Locks the user holds or waits for; requested again on every new connection.
    wanted_locks: Mutex<BTreeSet<String>>,
    /// Locks granted on the current connection.
    held_locks: Mutex<BTreeSet<String>>,
    /// Locks held when the last connection ended (asked for again at once, see `lock_grace`).
    held_when_lost: Mutex<BTreeSet<String>>,
    shutdown: CancellationToken,
    transactions: AtomicU64,
    transaction_failures: AtomicU64,
}

/// A handle to the client; clones share it.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    supervisor: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Client {
    /// Starts connecting in the background.
    pub fn start(config: ClientConfig) -> Client {
        Client::start_subscribed(config).0
    }

    /// Starts connecting, with a subscription that sees every event from the first on.
    pub fn start_subscribed(config: ClientConfig) -> (Client, broadcast::Receiver<ClientEvent>) {
        let (events, receiver) = broadcast::channel(4096);
        let mut cache = Cache::with_indexes(config.indexes.clone());
        cache.set_columns(&config.monitored_columns);
        let wanted_locks = Mutex::new(config.locks.iter().cloned().collect());
        let shared = Arc::new(Shared {
            config,
            cache: RwLock::new(cache),
            state: watch::channel(ConnectionState::default()).0,
            events,
            reconnect: Notify::new(),
            wanted_locks,
            held_locks: Mutex::new(BTreeSet::new()),
            held_when_lost: Mutex::new(BTreeSet::new()),
            shutdown: CancellationToken::new(),
            transactions: AtomicU64::new(0),
            transaction_failures: AtomicU64::new(0),
        });
        let span = tracing::info_span!("ovsdb_client", database = %shared.config.database);
        let supervisor = tokio::spawn(supervise(shared.clone()).instrument(span));
        (
            Client {
                shared,
                supervisor: Arc::new(Mutex::new(Some(supervisor))),
            },
            receiver,
        )
    }

    pub fn config(&self) -> &ClientConfig {
        &self.shared.config
    }

    /// Reads the cache. Do not hold the guard across an `.await`.
    pub fn cache(&self) -> RwLockReadGuard<'_, Cache> {
        match self.shared.cache.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ClientEvent> {
        self.shared.events.subscribe()
    }

    pub fn state(&self) -> ConnectionState {
        self.shared.state.borrow().clone()
    }

    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    pub fn transaction_count(&self) -> u64 {
        self.shared.transactions.load(Ordering::Relaxed)
    }

    pub fn transaction_failure_count(&self) -> u64 {
        self.shared.transaction_failures.load(Ordering::Relaxed)
    }

    /// Waits until a connection is ready and the cache is in sync, up to `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<Connection, OvsdbError> {
        let mut state = self.shared.state.subscribe();
        let wait = async {
            state
                .wait_for(|state| state.is_connected())
                .await
                .map(|state| state.connection.clone())
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(connection)) => connection.ok_or(OvsdbError::Disconnected),
            Ok(Err(_)) => Err(OvsdbError::Shutdown),
            Err(_) => Err(OvsdbError::Timeout(timeout)),
        }
    }

    /// Resolves once the session of connection `generation` is no longer the client's: the
    /// supervisor gave it up (it may stay open while a request holds it) or replaced it.
    async fn abandoned(&self, generation: u64) {
        let mut state = self.shared.state.subscribe();
        let _ = state
            .wait_for(|state| state.generation != generation || state.connection.is_none())
            .await;
    }

    /// Sends one transaction. It waits for a usable connection (up to the request timeout) and
    /// retries what a "not leader" answer refused on the next leader, and what a closed
    /// connection never sent ([`OvsdbError::NotSent`]). A connection lost while the transaction
    /// was in flight returns [`OvsdbError::Disconnected`]: it may or may not have been committed,
    /// so writes must be safe to repeat.
    pub async fn transact(&self, operations: &[Operation]) -> Result<Vec<OperationResult>, OvsdbError> {
        let deadline = tokio::time::Instant::now() + self.shared.config.request_timeout;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let connection = self.wait_connected(remaining).await?;
            let (schema, generation) = {
                let state = self.shared.state.borrow();
                (state.schema.clone(), state.generation)
            };
            self.shared.transactions.fetch_add(1, Ordering::Relaxed);
            // The supervisor may give this session up while the transaction is in flight (its
            // server lost its cluster role, e.g. a leader cut off from its cluster, which keeps
            // the request pending and the socket alive): the transaction's fate is then unknown,
            // as for a closed connection.
            let outcome = tokio::select! {
                outcome = connection.transact(&self.shared.config.database, operations, schema.as_deref()) => outcome,
                () = self.abandoned(generation) => Err(OvsdbError::Disconnected),
            };
            match outcome {
                Err(error) if is_not_leader(&error) && tokio::time::Instant::now() < deadline => {
                    warn!(remote = %connection.remote(), "transaction refused: not leader; finding the leader");
                    self.shared.reconnect.notify_one();
                    tokio::select! {
                        _ = connection.closed() => {}
                        () = self.abandoned(generation) => {}
                    }
                }
                Err(OvsdbError::NotSent) if tokio::time::Instant::now() < deadline => {
                    self.shared.reconnect.notify_one();
                    tokio::select! {
                        _ = connection.closed() => {}
                        () = self.abandoned(generation) => {}
                    }
                }
                Err(error) => {
                    self.shared.transaction_failures.fetch_add(1, Ordering::Relaxed);
                    return Err(if is_not_leader(&error) {
                        OvsdbError::NotLeader
                    } else {
                        error
                    });
                }
                Ok(results) => return Ok(results),
            }
        }
    }

    /// Asks for an OVSDB lock; returns whether it is held now. When not, a
    /// [`ClientEvent::LockAcquired`] follows once it is granted. Locks are requested again after a reconnect.
    pub async fn lock(&self, lock_id: &str) -> Result<bool, OvsdbError> {
        self.lock_set().insert(lock_id.to_string());
        let connection = self.wait_connected(self.shared.config.request_timeout).await?;
        let held = connection.lock(lock_id).await?;
        if held && lock_guard(&self.shared.held_locks).insert(lock_id.to_string()) {
            let _ = self.shared.events.send(ClientEvent::LockAcquired(lock_id.to_string()));
        }
        Ok(held)
    }

    /// Whether `lock_id` is asked for on every connection (held or waited for).
    pub fn wants_lock(&self, lock_id: &str) -> bool {
        self.lock_set().contains(lock_id)
    }

    /// Stops asking for `lock_id` and, when it is held or waited for, drops the connection, which
    /// is how the server surely lets go of it (an `unlock` needs a usable connection); users see
    /// `Disconnected` and a `Resynced` without the lock.
    pub fn release_lock(&self, lock_id: &str) {
        let wanted = self.lock_set().remove(lock_id);
        lock_guard(&self.shared.held_when_lost).remove(lock_id);
        if wanted {
            lock_guard(&self.shared.held_locks).remove(lock_id);
            self.shared.reconnect.notify_one();
        }
    }

    /// Whether the server has granted `lock_id` on the current connection (as far as this
    /// client has heard: a `stolen` notification may be on its way).
    pub fn holds_lock(&self, lock_id: &str) -> bool {
        lock_guard(&self.shared.held_locks).contains(lock_id)
    }

    pub async fn steal(&self, lock_id: &str) -> Result<bool, OvsdbError> {
        self.lock_set().insert(lock_id.to_string());
        let connection = self.wait_connected(self.shared.config.request_timeout).await?;
        connection.steal(lock_id).await
    }

    pub async fn unlock(&self, lock_id: &str) -> Result<(), OvsdbError> {
        self.lock_set().remove(lock_id);
        let connection = self.wait_connected(self.shared.config.request_timeout).await?;
        connection.unlock(lock_id).await
    }

    fn lock_set(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        match self.shared.wanted_locks.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Drops the current connection; the client reconnects as after a failure.
    pub fn force_reconnect(&self) {
        self.shared.reconnect.notify_one();
    }

    /// Stops the client and waits for its task to end.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        let handle = match self.supervisor.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }
}

fn is_not_leader(error: &OvsdbError) -> bool {
    match error {
        OvsdbError::NotLeader => true,
        OvsdbError::Rpc { error, .. } => error.contains("not leader"),
        OvsdbError::Transaction(error) => {
            error.error.contains("not leader") || error.details.as_deref().is_some_and(|d| d.contains("not leader"))
        }
        _ => false,
    }
}

enum SessionEnd {
    Shutdown,
    /// The connection ended after it had been ready.
    Lost(OvsdbError),
}

/// What survives from one connection to the next.
struct Resume {
    last_txn_id: String,
    /// The highest RAFT log index seen: a server behind it is stale and not used.
    highest_index: i64,
    /// Rows to put in the cache before the first monitor (see [`ClientConfig::replica_seed`]).
    seed: Option<Arc<ReplicaSeed>>,
}

async fn supervise(shared: Arc<Shared>) {
    let remotes = shared.config.remotes.clone();
    if remotes.is_empty() {
        warn!("no OVSDB remote configured");
        return;
    }
    let mut resume = Resume {
        last_txn_id: shared
            .config
            .replica_seed
            .as_ref()
            .map_or_else(|| ZERO_TXN_ID.to_string(), |seed| seed.last_txn_id.clone()),
        highest_index: 0,
        seed: shared.config.replica_seed.clone(),
    };
    let mut next_remote = rand::thread_rng().gen_range(0..remotes.len());
    let mut backoff = Backoff::new(shared.config.backoff_initial, shared.config.backoff_max);
    let mut failures_in_round = 0usize;
    // Whether every failure of this round was a "not leader" answer (members up, an election
    // under way): the next round then comes after `backoff_initial`, without doubling, since an
    // election ends within a few election timers and the backoff would outlast it.
    let mut round_only_not_leader = true;
    loop {
        if shared.shutdown.is_cancelled() {
            break;
        }
        let remote = remotes[next_remote % remotes.len()].clone();
        next_remote = next_remote.wrapping_add(1);
        let outcome = run_session(&shared, &remote, &mut resume).await;
        let error = match outcome {
            Ok(SessionEnd::Shutdown) => break,
            Ok(SessionEnd::Lost(error)) => {
                // It was ready: start a fresh round with a short backoff, and stay on this remote
                // first, since a restarted server usually comes back where it was.
                backoff.reset();
                failures_in_round = 0;
                round_only_not_leader = true;
                next_remote = next_remote.wrapping_sub(1);
                error
            }
            Err(error) => error,
        };
        warn!(remote = %remote, %error, "OVSDB connection unavailable");
        shared.state.send_modify(|state| {
            state.connection = None;
            state.last_error = Some(format!("{remote}: {error}"));
        });
        // The server released the session's locks with it.
        let held = std::mem::take(&mut *lock_guard(&shared.held_locks));
        if !held.is_empty() {
            *lock_guard(&shared.held_when_lost) = held;
        }
        let _ = shared.events.send(ClientEvent::Disconnected {
            error: error.to_string(),
        });
        failures_in_round += 1;
        let not_leader = matches!(error, OvsdbError::NotLeader);
        round_only_not_leader &= not_leader;
        // Try every remote once before sleeping: the leader may simply be elsewhere.
        if failures_in_round < remotes.len() && not_leader {
            continue;
        }
        let delay = if round_only_not_leader && failures_in_round == remotes.len() {
            shared.config.backoff_initial
        } else {
            backoff.next_delay()
        };
        failures_in_round = 0;
        round_only_not_leader = true;
        let jittered = delay.mul_f64(rand::thread_rng().gen_range(0.5..1.0));
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = tokio::time::sleep(jittered) => {}
        }
    }
    shared.state.send_modify(|state| state.connection = None);
}

/// An exponential retry schedule: `initial` after the first failure, doubled after each further
/// one up to `max`, back to `initial` after a success. The client's reconnect loop uses it (and
/// sleeps a random 50–100 % of each delay, so clients of a restarted server do not return in
/// step); the sync controller retries failed passes on it (without jitter).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next attempt (before jitter); the one after is doubled, capped.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Checks `_Server` for the database's cluster role. Returns an error when this server must not
/// be used: not the leader (when leader-only), disconnected from its cluster, or behind an index
/// already seen.
async fn check_cluster_role(shared: &Shared, connection: &Connection, resume: &mut Resume) -> Result<(), OvsdbError> {
    let select = Operation::Select {
        table: "Database".into(),
        conditions: vec![Condition::equal("name", Value::string(shared.config.database.clone()))],
        columns: Some(vec![
            "model".into(),
            "connected".into(),
            "leader".into(),
            "index".into(),
        ]),
    };
    let results = connection.transact("_Server", &[select], None).await?;
    let Some(row) = results
        .first()
        .and_then(|result| result.rows.as_ref())
        .and_then(|rows| rows.first())
    else {
        return Err(OvsdbError::SchemaMismatch(format!(
            "server has no database {}",
            shared.config.database
        )));
    };
    let model = row.get("model").and_then(Value::as_str).unwrap_or("standalone");
    if model != "clustered" {
        return Ok(());
    }
    let flag = |column: &str| {
        row.get(column)
            .and_then(Value::as_atom)
            .and_then(|atom| atom.as_bool())
            .unwrap_or(false)
    };
    tracing::debug!(remote = %connection.remote(), ?row, "cluster role");
    if !flag("connected") {
        return Err(OvsdbError::NotLeader);
    }
    if shared.config.leader_only && !flag("leader") {
        return Err(OvsdbError::NotLeader);
    }
    let index = row
        .get("index")
        .and_then(Value::as_atom)
        .and_then(|atom| atom.as_i64())
        .unwrap_or(0);
    if index < resume.highest_index {
        info!(remote = %connection.remote(), index, highest = resume.highest_index, "server is behind an index already seen");
        return Err(OvsdbError::NotLeader);
    }
    resume.highest_index = index;
    Ok(())
}

async fn run_session(shared: &Arc<Shared>, remote: &Remote, resume: &mut Resume) -> Result<SessionEnd, OvsdbError> {
    let config = &shared.config;
    let (connection, mut notifications) = tokio::select! {
        _ = shared.shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
        opened = Connection::open(remote, config.tls.as_ref(), &config.connection) => opened?,
    };
    let databases = connection.list_dbs().await?;
    if !databases.contains(&config.database) {
        return Err(OvsdbError::SchemaMismatch(format!(
            "{remote} serves no database {} (it serves {})",
            config.database,
            databases.join(", ")
        )));
    }
    let has_server_db = databases.iter().any(|name| name == "_Server");
    if has_server_db {
        check_cluster_role(shared, &connection, resume).await?;
        // `_Server` supports only monitor_cond; an update means "look at the role again".
        connection
            .monitor_cond(
                "_Server",
                json!(SERVER_MONITOR_ID),
                json!({"Database": [{"columns": ["name", "model", "connected", "leader", "index"]}]}),
            )
            .await?;
    }
    let schema = Arc::new(connection.get_schema(&config.database).await?);
    let required: Vec<(&str, Vec<&str>)> = config
        .required_columns
        .iter()
        .map(|(table, columns)| (table.as_str(), columns.iter().map(String::as_str).collect()))
        .collect();
    let required_refs: Vec<(&str, &[&str])> = required
        .iter()
        .map(|(table, columns)| (*table, columns.as_slice()))
        .collect();
    schema.require(&required_refs)?;
    for table in &config.monitored_tables {
        if !schema.tables.contains_key(table) {
            return Err(OvsdbError::SchemaMismatch(format!(
                "database {} has no table {table}",
                config.database
            )));
        }
    }

    if let Some(seed) = resume.seed.take() {
        let mut cache = shared.cache.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.clear();
        if let Err(error) = cache.apply_update2(&schema, &seed.rows) {
            // A replica that does not fit the schema is not resumed from: download everything.
            warn!(%error, "the replica's rows do not fit the server's schema; downloading in full");
            cache.clear();
            resume.last_txn_id = ZERO_TXN_ID.to_string();
        }
    }
    let requests: serde_json::Map<String, Json> = config
        .monitored_tables
        .iter()
        .map(|table| {
            let columns = config
                .monitored_columns
                .iter()
                .find(|(name, _)| name == table)
                .map(|(_, columns)| columns);
            let request = match columns {
                Some(columns) => json!([{ "columns": columns }]),
                None => json!([{}]),
            };
            (table.clone(), request)
        })
        .collect();
    let requests = Json::Object(requests);
    let monitor_id = json!(config.database);
    let download_started = std::time::Instant::now();
    let (found, updates) = match connection
        .monitor_cond_since_unparsed(
            &config.database,
            monitor_id.clone(),
            requests.clone(),
            &resume.last_txn_id,
        )
        .await
    {
        Ok((found, txn_id, updates)) => {
            resume.last_txn_id = txn_id;
            (found, MonitorReply::Unparsed(updates))
        }
        Err(OvsdbError::Rpc { error, .. }) if error.contains("unknown method") => {
            // Servers older than OVS 2.12 have no monitor_cond_since.
            (
                false,
                MonitorReply::Parsed(
                    connection
                        .monitor_cond(&config.database, monitor_id.clone(), requests)
                        .await?,
                ),
            )
        }
        Err(error) => return Err(error),
    };
    let download = download_started.elapsed();
    let apply_started = std::time::Instant::now();
    let (rows, rows_changed) = {
        let mut cache = shared.cache.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !found {
            cache.clear();
        }
        let changes = match updates {
            MonitorReply::Unparsed(updates) => cache.apply_update2_unparsed(&schema, &updates)?,
            MonitorReply::Parsed(updates) => cache.apply_update2_owned(&schema, updates)?,
        };
        let rows = cache.tables().map(|table| cache.len(table)).sum::<usize>();
        let rows_changed = changes.len();
        if let Some(feed) = &config.replica_feed {
            let _ = feed.send(ReplicaUpdate {
                synced: Some(found),
                last_txn_id: resume.last_txn_id.clone(),
                changes,
            });
        }
        (rows, rows_changed)
    };
    let apply = apply_started.elapsed();
    let wanted_locks: Vec<String> = shared
        .wanted_locks
        .lock()
        .map(|locks| locks.iter().cloned().collect())
        .unwrap_or_default();
    let held_before = std::mem::take(&mut *lock_guard(&shared.held_when_lost));
    let reconnect = shared.state.borrow().generation > 0;
    let (first, later): (Vec<String>, Vec<String>) = wanted_locks
        .into_iter()
        .partition(|lock| !reconnect || shared.config.lock_grace.is_zero() || held_before.contains(lock));
    for lock in first {
        if connection.lock(&lock).await? {
            lock_guard(&shared.held_locks).insert(lock.clone());
            let _ = shared.events.send(ClientEvent::LockAcquired(lock));
        }
    }
    if !later.is_empty() {
        // Asked for after the grace period; a grant arrives as a `locked` notification.
        let grace = shared.config.lock_grace;
        let asker = connection.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            for lock in later {
                if let Ok(true) = asker.lock(&lock).await {
                    lock_guard(&shared.held_locks).insert(lock.clone());
                    let _ = shared.events.send(ClientEvent::LockAcquired(lock));
                }
            }
        });
    }
    // One line per connection with the cost of its monitor reply: the wait for it (the server
    // composing and sending it, and this side reading and parsing it) and applying it to the
    // cache, which is most of a restart's "NB download" stage.
    info!(
        remote = %remote,
        resumed = found,
        rows,
        rows_changed,
        download_ms = download.as_millis() as u64,
        apply_ms = apply.as_millis() as u64,
        "OVSDB connection ready"
    );
    shared.state.send_modify(|state| {
        state.connection = Some(connection.clone());
        state.schema = Some(schema.clone());
        state.generation += 1;
        state.last_error = None;
    });
    let _ = shared.events.send(ClientEvent::Resynced {
        remote: remote.to_string(),
        resumed: found,
    });

    loop {
        let notification = tokio::select! {
            _ = shared.shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            _ = shared.reconnect.notified() => return Ok(SessionEnd::Lost(OvsdbError::NotLeader)),
            notification = notifications.recv() => notification,
        };
        let Some(notification) = notification else {
            return Ok(SessionEnd::Lost(connection.closed().await));
        };
        match notification {
            Notification::Update3 {
                last_txn_id, updates, ..
            } => {
                apply_and_publish(shared, &schema, updates, &last_txn_id)?;
                resume.last_txn_id = last_txn_id;
            }
            Notification::Update2 { monitor_id, .. } if monitor_id == json!(SERVER_MONITOR_ID) => {
                if let Err(error) = check_cluster_role(shared, &connection, resume).await {
                    info!(remote = %remote, %error, "server lost its cluster role; reconnecting");
                    return Ok(SessionEnd::Lost(error));
                }
            }
            Notification::Update2 { updates, .. } => apply_and_publish(shared, &schema, updates, &resume.last_txn_id)?,
            Notification::Locked(lock) => {
                lock_guard(&shared.held_locks).insert(lock.clone());
                let _ = shared.events.send(ClientEvent::LockAcquired(lock));
            }
            Notification::Stolen(lock) => {
                lock_guard(&shared.held_locks).remove(&lock);
                let _ = shared.events.send(ClientEvent::LockStolen(lock));
            }
            Notification::Update { .. } | Notification::Other { .. } => {}
        }
    }
}

/// A monitor's initial reply: as sent (`monitor_cond_since`), or parsed (`monitor_cond`).
enum MonitorReply {
    Unparsed(Box<serde_json::value::RawValue>),
    Parsed(Json),
}

fn lock_guard(locks: &Mutex<BTreeSet<String>>) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
    match locks.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn apply_and_publish(
    shared: &Shared,
    schema: &DatabaseSchema,
    updates: Json,
    last_txn_id: &str,
) -> Result<(), OvsdbError> {
    let changes = {
        let mut cache = shared.cache.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let changes = cache.apply_update2_owned(schema, updates)?;
        // Sent under the cache's lock: the feed sees the changes in the cache's order.
        if let Some(feed) = &shared.config.replica_feed {
            let _ = feed.send(ReplicaUpdate {
                synced: None,
                last_txn_id: last_txn_id.to_string(),
                changes: changes.clone(),
            });
        }
        changes
    };
    if !changes.is_empty() {
        let _ = shared.events.send(ClientEvent::Changed(Arc::new(changes)));
    }
    Ok(())
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_its_cap_and_a_ready_session_resets_it() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(8));
        let delays: Vec<u128> = (0..10).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 6400, 8000, 8000, 8000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
        assert_eq!(backoff.next_delay(), Duration::from_millis(200));
    }

    /// The reconnect loop on tokio's paused clock, against a unix socket nobody serves: each
    /// failed attempt is followed by a sleep of 50–100 % of 100, 200, 400 … ms, capped at 800.
    #[tokio::test(start_paused = true)]
    async fn failed_connects_are_retried_on_the_jittered_doubling_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let remote = Remote::parse(&format!("unix:{}", dir.path().join("nobody.sock").display())).unwrap();
        let mut config = ClientConfig::new(vec![remote], "OVN_Northbound");
        config.backoff_initial = Duration::from_millis(100);
        config.backoff_max = Duration::from_millis(800);
        let (client, mut events) = Client::start_subscribed(config);
        let mut failures = Vec::new();
        while failures.len() < 7 {
            if let ClientEvent::Disconnected { .. } = events.recv().await.unwrap() {
                failures.push(tokio::time::Instant::now());
            }
        }
        let gaps: Vec<Duration> = failures.windows(2).map(|pair| pair[1] - pair[0]).collect();
        for (gap, delay) in gaps.iter().zip([100u64, 200, 400, 800, 800, 800]) {
            let delay = Duration::from_millis(delay);
            assert!(
                *gap >= delay / 2 && *gap <= delay,
                "gaps {gaps:?}: {gap:?} is not within 50-100 % of {delay:?}"
            );
        }
        client.shutdown().await;
    }
}
