//! The sync controller: the one loop of the sync. Events (registry changes, NB changes, the
//! connection and lock, timers) make objects dirty; a pass runs over what is dirty when the
//! daemon is active, connected and not waiting for the echo of its last write.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::nb;
use crate::ovsdb::{Backoff, Client, ClientEvent, OvsdbError};
use crate::registry::Registry;
use crate::role::Role;
use crate::telemetry::{self, Heartbeat};

use super::pass;
use super::scope::{dirty_from_nb, Dirty, Memory};
use super::status::{mark_unavailable, unavailable_if_disconnected};

/// What the sync controller tells the daemon.
pub struct Hooks {
    /// Beaten every time round the loop (at least every `IDLE_BEAT`): the watchdog's evidence.
    pub heartbeat: Heartbeat,
    /// Counts finished passes; the first one makes the daemon ready.
    pub passes: tokio::sync::watch::Sender<u64>,
    /// The daemon's role (active, standby), for the API, the health service and the metrics.
    pub role: tokio::sync::watch::Sender<Role>,
}

/// The sync controller's settings.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Interval of the safety-net full pass.
    pub resync_interval: Duration,
    /// The OVSDB lock on NB that makes this daemon the one writer ([`crate::role::LOCK_NAME`]);
    /// `None` writes without one (a single daemon that owns its NB, e.g. `check --repair`).
    pub lock: Option<String>,
    /// How long to wait for the monitor's echo of a write before looking at its scope again.
    pub echo_timeout: Duration,
    /// First delay after a failed pass; doubled on each failure up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl ControllerConfig {
    pub fn new(resync_interval: Duration, lock: Option<String>) -> ControllerConfig {
        ControllerConfig {
            resync_interval,
            lock,
            echo_timeout: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// How often an idle loop still goes round, so the watchdog can tell idle from stuck.
const IDLE_BEAT: Duration = Duration::from_millis(250);

/// Everything the sync reacts to, in one closed set: the controller loop takes one at a time and
/// no source is read anywhere else, so none can be dropped while another is awaited.
#[derive(Debug)]
enum Event {
    /// The registry changed an object.
    Registry(crate::registry::Change),
    /// NB rows changed (including the echo of our own writes).
    NbChanged(Arc<Vec<crate::ovsdb::RowChange>>),
    /// The client (re)connected and its cache is in sync; it may have been replaced whole.
    NbResynced {
        remote: String,
        resumed: bool,
    },
    /// The NB connection was lost (and with it any lock it held).
    NbDisconnected(String),
    /// The server granted the lock.
    LockGained(String),
    /// The server took the lock away (`stolen`).
    LockLost(String),
    /// An event stream overflowed: what changed is unknown.
    Lagged(&'static str),
    /// The periodic safety-net full pass is due.
    ResyncTick,
    /// The echo of the last write did not arrive in time.
    EchoTimeout,
    /// A failed pass may be retried.
    RetryDue,
    /// Nothing happened for `IDLE_BEAT`.
    Idle,
    Shutdown,
}

/// The state of the one sync loop.
struct Controller {
    registry: Arc<Registry>,
    client: Client,
    config: ControllerConfig,
    hooks: Hooks,
    memory: Memory,
    /// What the next pass looks at.
    pending: Dirty,
    /// After a write: the scope it covered and when to stop waiting for its echo. No pass runs
    /// meanwhile (the cache may not show the write yet), but every event is still handled.
    echo: Option<(Dirty, tokio::time::Instant)>,
    /// The error policy: after a failed pass, no pass before this instant.
    retry_at: Option<tokio::time::Instant>,
    backoff: Backoff,
    role: Role,
    /// Whether the server has granted the lock on the current connection.
    locked: bool,
}

/// Runs until `shutdown`: one loop over [`Event`]s. A pass over what changed runs whenever the
/// registry or NB changes; a full pass after every (re)connect, on lag, when the lock is gained,
/// and every `resync_interval`. A failed pass is retried with exponential backoff. With a lock
/// configured, passes run only while it is held, and every write asserts it.
///
/// `nb_events` must be subscribed before the client's first connection (see
/// [`Client::start_subscribed`]): the lock's grant comes once, with that connection.
pub async fn run(
    registry: Arc<Registry>,
    client: Client,
    mut nb_events: tokio::sync::broadcast::Receiver<ClientEvent>,
    config: ControllerConfig,
    shutdown: CancellationToken,
    hooks: Hooks,
) {
    let mut registry_changes = registry.subscribe();
    let mut resync = tokio::time::interval(config.resync_interval);
    resync.tick().await;
    let mut idle = tokio::time::interval(IDLE_BEAT);
    let backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut controller = Controller {
        registry,
        client,
        config,
        hooks,
        memory: Memory::default(),
        pending: Dirty::full(),
        echo: None,
        retry_at: None,
        backoff,
        role: Role::Unknown,
        locked: false,
    };
    if controller.config.lock.is_none() {
        controller.set_role(Role::Active);
    }
    loop {
        controller.hooks.heartbeat.beat();
        if controller.may_pass() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = controller.pass() => {}
            }
        }
        let echo_deadline = controller.echo.as_ref().map(|(_, deadline)| *deadline);
        let retry_at = controller.retry_at;
        let event = tokio::select! {
            _ = shutdown.cancelled() => Event::Shutdown,
            _ = resync.tick() => Event::ResyncTick,
            _ = idle.tick() => Event::Idle,
            _ = sleep_until(echo_deadline) => Event::EchoTimeout,
            _ = sleep_until(retry_at) => Event::RetryDue,
            change = registry_changes.recv() => match change {
                Ok(change) => Event::Registry(change),
                Err(RecvError::Lagged(_)) => Event::Lagged("registry"),
                Err(RecvError::Closed) => Event::Shutdown,
            },
            event = nb_events.recv() => match event {
                Ok(event) => Event::from(event),
                Err(RecvError::Lagged(_)) => Event::Lagged("NB"),
                Err(RecvError::Closed) => Event::Shutdown,
            },
        };
        if matches!(event, Event::Shutdown) {
            return;
        }
        controller.handle(event);
        // One pass covers every event queued so far: take them all first.
        loop {
            let event = match registry_changes.try_recv() {
                Ok(change) => Event::Registry(change),
                Err(TryRecvError::Lagged(_)) => Event::Lagged("registry"),
                Err(_) => match nb_events.try_recv() {
                    Ok(event) => Event::from(event),
                    Err(TryRecvError::Lagged(_)) => Event::Lagged("NB"),
                    Err(_) => break,
                },
            };
            controller.handle(event);
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl From<ClientEvent> for Event {
    fn from(event: ClientEvent) -> Event {
        match event {
            ClientEvent::Changed(changes) => Event::NbChanged(changes),
            ClientEvent::Resynced { remote, resumed } => Event::NbResynced { remote, resumed },
            ClientEvent::Disconnected { error } => Event::NbDisconnected(error),
            ClientEvent::LockAcquired(lock) => Event::LockGained(lock),
            ClientEvent::LockStolen(lock) => Event::LockLost(lock),
        }
    }
}

impl Controller {
    fn may_pass(&self) -> bool {
        !self.pending.is_empty()
            && self.echo.is_none()
            && self.retry_at.is_none()
            && self.role == Role::Active
            && self.client.state().is_connected()
    }

    fn set_role(&mut self, role: Role) {
        if self.role == role {
            return;
        }
        match role {
            Role::Active => info!(lock = ?self.config.lock, "active: this daemon writes NB"),
            Role::Standby => warn!(
                lock = ?self.config.lock,
                "standby: another daemon holds the NB lock; waiting for it, writing nothing to NB"
            ),
            Role::Unknown => info!("NB lock not held (no NB connection); writing nothing to NB"),
        }
        self.role = role;
        telemetry::metrics().active.set(i64::from(role == Role::Active));
        self.hooks.role.send_replace(role);
    }

    fn is_our_lock(&self, lock: &str) -> bool {
        self.config.lock.as_deref() == Some(lock)
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Registry(change) => {
                unavailable_if_disconnected(&change, &self.registry, &self.client);
                self.pending.merge(Dirty::from_registry(&change));
            }
            Event::NbChanged(changes) => {
                self.pending
                    .merge(dirty_from_nb(&changes, &self.memory, &self.client.cache()));
                // The first change after a write is its echo: the touched objects are looked at
                // again, which confirms them (a pass is not repeated whole for its own echo).
                self.echo = None;
            }
            Event::NbResynced { remote, resumed } => {
                let summary = nb::summary(&self.client.cache());
                info!(%remote, resumed, ?summary, "NB cache in sync");
                // The cache may have been replaced whole: look at everything.
                self.pending.full = true;
                self.echo = None;
                if self.config.lock.is_some() && !self.locked {
                    // The lock was asked for on this connection before it became ready; a grant
                    // would have come first (`LockGained`), so another session holds it.
                    self.set_role(Role::Standby);
                }
            }
            Event::NbDisconnected(error) => {
                warn!(%error, "NB unavailable");
                mark_unavailable(&self.registry, &error);
                if let Some((scope, _)) = self.echo.take() {
                    self.pending.merge(scope);
                }
                // The server drops a session's locks with the session.
                if self.config.lock.is_some() {
                    self.locked = false;
                    if self.role == Role::Active {
                        self.set_role(Role::Unknown);
                    }
                }
            }
            Event::LockGained(lock) if self.is_our_lock(&lock) => {
                self.locked = true;
                self.pending.full = true;
                self.retry_at = None;
                self.set_role(Role::Active);
            }
            Event::LockLost(lock) if self.is_our_lock(&lock) => {
                self.locked = false;
                self.set_role(Role::Standby);
            }
            Event::LockGained(_) | Event::LockLost(_) => {}
            Event::Lagged(stream) => {
                warn!(stream, "events overflowed; full pass");
                self.pending.full = true;
                if let Some((scope, _)) = self.echo.take() {
                    self.pending.merge(scope);
                }
                // A lost lock event must not leave the role wrong: ask the client what it holds.
                if let Some(lock) = self.config.lock.clone() {
                    self.locked = self.client.holds_lock(&lock);
                    if self.locked {
                        self.set_role(Role::Active);
                    } else if self.client.state().is_connected() {
                        self.set_role(Role::Standby);
                    } else if self.role == Role::Active {
                        self.set_role(Role::Unknown);
                    }
                }
            }
            Event::ResyncTick => {
                let summary = nb::summary(&self.client.cache());
                info!(
                    ?summary,
                    connected = self.client.state().is_connected(),
                    role = self.role.as_str(),
                    "periodic resync"
                );
                self.pending.full = true;
            }
            Event::EchoTimeout => {
                // Without an echo, look at the same scope again.
                if let Some((scope, _)) = self.echo.take() {
                    self.pending.merge(scope);
                }
            }
            Event::RetryDue => self.retry_at = None,
            Event::Idle | Event::Shutdown => {}
        }
    }

    /// One pass over what is pending; its outcome sets the echo wait or the retry time.
    async fn pass(&mut self) {
        let scope = std::mem::take(&mut self.pending);
        let started = std::time::Instant::now();
        let lock = self.config.lock.clone();
        let span = pass_span(&scope);
        let result = pass(&self.registry, &self.client, &scope, &mut self.memory, lock.as_deref())
            .instrument(span.clone())
            .await;
        telemetry::metrics()
            .reconcile_seconds
            .observe(started.elapsed().as_secs_f64());
        span.in_scope(|| {
            debug!(full = scope.full, vips = scope.vips.len(), pods = scope.pods.len(), rules = scope.rules.len(), elapsed = ?started.elapsed(), "sync pass");
        });
        match result {
            Ok(sent) => {
                self.backoff.reset();
                self.hooks.passes.send_modify(|passes| *passes += 1);
                if sent > 0 {
                    info!(operations = sent, full = scope.full, "NB updated");
                    self.echo = Some((scope, tokio::time::Instant::now() + self.config.echo_timeout));
                }
            }
            Err(error) => {
                let retry_in = self.backoff.next_delay();
                if is_lock_refusal(&error) {
                    // The server says this session does not hold the lock (its `stolen` may still
                    // be on the way): nothing was written; wait for the lock again.
                    warn!(%error, "NB refused the write: the lock is not ours; standby");
                    self.locked = false;
                    self.set_role(Role::Standby);
                } else {
                    warn!(%error, ?retry_in, "NB sync failed; retrying");
                }
                if !self.client.state().is_connected() {
                    mark_unavailable(&self.registry, &error.to_string());
                }
                self.pending.merge(scope);
                self.retry_at = Some(tokio::time::Instant::now() + retry_in);
            }
        }
    }
}

/// The server's refusal of an `assert` (RFC 7047 §5.2.10: error "not owner").
pub fn is_lock_refusal(error: &OvsdbError) -> bool {
    matches!(error, OvsdbError::Transaction(error) if error.error == "not owner")
}

/// A span per pass naming what it looks at (the first few objects of each kind), so every log
/// line of a pass says which objects it was about.
fn pass_span(scope: &Dirty) -> tracing::Span {
    let span = tracing::info_span!(
        "pass",
        full = scope.full,
        vips = tracing::field::Empty,
        pods = tracing::field::Empty,
        rules = tracing::field::Empty,
    );
    // A full pass names what it looked at once it knows (see `pass`).
    if !scope.full {
        span.record("vips", tracing::field::display(span_names(scope.vips.iter().cloned())));
        span.record(
            "pods",
            tracing::field::display(span_names(scope.pods.iter().map(|pod| pod.to_string()))),
        );
        span.record(
            "rules",
            tracing::field::display(span_names(scope.rules.iter().cloned())),
        );
    }
    span
}

/// The first eight names, then "…".
pub(super) fn span_names(items: impl Iterator<Item = String>) -> String {
    let mut names: Vec<String> = items.take(9).collect();
    if names.len() == 9 {
        names[8] = "…".into();
    }
    names.join(",")
}
