//! The daemon's wiring: connect to OVN NB, keep the cache in sync, react to a closed set of
//! events, and stop cleanly when the shutdown token fires. The binary only parses flags and
//! calls [`run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::api::{self, Listen};
use crate::config::{GrpcTls, Settings};
use crate::nb;
use crate::ovsdb::{Client, ClientEvent, OvsdbError, Remote, TlsFiles};
use crate::registry::{Registry, RegistryError};
use crate::telemetry::{self, systemd, Heartbeat};

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub ovn_nb: Vec<Remote>,
    pub nb_tls: Option<TlsFiles>,
    pub data_dir: PathBuf,
    /// gRPC listeners.
    pub listen: Vec<Listen>,
    /// TLS (and client certificates) on the TCP gRPC listeners.
    pub grpc_tls: Option<GrpcTls>,
    /// Group of the unix sockets.
    pub socket_group: Option<u32>,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Interval of the safety-net full resync.
    pub resync_interval: Duration,
    /// How long in-flight requests may take to finish at shutdown.
    pub shutdown_grace: Duration,
}

impl DaemonConfig {
    /// A configuration with the defaults for everything but where NB, the store and the API are.
    pub fn new(ovn_nb: Vec<Remote>, data_dir: PathBuf, listen: Vec<Listen>) -> DaemonConfig {
        DaemonConfig {
            ovn_nb,
            nb_tls: None,
            data_dir,
            listen,
            grpc_tls: None,
            socket_group: None,
            metrics_listen: None,
            resync_interval: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(10),
        }
    }

    pub fn from_settings(settings: &Settings) -> DaemonConfig {
        DaemonConfig {
            ovn_nb: settings.ovn_nb.clone(),
            nb_tls: settings.nb_tls.clone(),
            data_dir: settings.data_dir.clone(),
            listen: settings.listen.clone(),
            grpc_tls: settings.grpc_tls.clone(),
            socket_group: settings.socket_group,
            metrics_listen: settings.metrics_listen,
            resync_interval: settings.resync_interval,
            shutdown_grace: settings.shutdown_grace,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot prepare data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Ovsdb(#[from] OvsdbError),
    #[error("cannot open the store: {0}")]
    Store(#[from] RegistryError),
    #[error(transparent)]
    Api(#[from] api::server::ServeError),
    #[error("cannot serve metrics on {address}: {source}")]
    Metrics {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Everything that makes the main loop act, in one place.
#[derive(Debug)]
enum Event {
    Nb(ClientEvent),
    /// The NB event stream overflowed: what changed is unknown, so resync everything.
    NbLagged(u64),
    ResyncTick,
    /// The sync finished a pass; the first one makes the daemon ready.
    Synced,
    /// Time to tell systemd the loops are alive (if they are).
    WatchdogTick,
    Shutdown,
}

/// Runs until `shutdown` is cancelled.
pub async fn run(config: DaemonConfig, shutdown: CancellationToken) -> Result<(), DaemonError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| DaemonError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let store_path = config.data_dir.join("store");
    let (registry, report) = Registry::open(&store_path)?;
    if report.is_clean() {
        info!(path = %store_path.display(), "store open and consistent");
    } else {
        warn!(path = %store_path.display(), problems = report.problems.len(), "store open with inconsistencies");
    }
    let registry = std::sync::Arc::new(registry);
    let options = api::ServeOptions {
        tls: config.grpc_tls.clone(),
        socket_group: config.socket_group,
    };
    let api_server = api::serve(config.listen.clone(), registry.clone(), shutdown.clone(), options).await?;
    let api_task = tokio::spawn(api_server.instrument(tracing::info_span!("api")));
    let mut client_config = nb::client_config(config.ovn_nb.clone());
    client_config.tls = config.nb_tls.clone();
    let (client, mut events) = Client::start_subscribed(client_config);
    registry.set_in_use_outside(std::sync::Arc::new(nb::NbInUse(client.clone())));
    if let Some(address) = config.metrics_listen {
        telemetry::serve_metrics(address, registry.clone(), client.clone(), shutdown.clone())
            .await
            .map_err(|source| DaemonError::Metrics { address, source })?;
    }
    let heartbeat = Heartbeat::default();
    heartbeat.beat();
    let (passes_sender, mut passes) = tokio::sync::watch::channel(0u64);
    let reconciler = tokio::spawn(
        crate::reconcile::run(
            registry.clone(),
            client.clone(),
            config.resync_interval,
            shutdown.clone(),
            crate::reconcile::Hooks {
                heartbeat: heartbeat.clone(),
                passes: passes_sender,
            },
        )
        .instrument(tracing::info_span!("sync")),
    );
    systemd::status("store open; waiting for the first NB sync");
    let mut ready = false;
    // systemd expects keep-alives within the timeout; send them twice as often.
    let watchdog_timeout = systemd::watchdog_timeout();
    let mut watchdog = tokio::time::interval(watchdog_timeout.map(|timeout| timeout / 2).unwrap_or(Duration::MAX / 4));
    let mut resync = tokio::time::interval(config.resync_interval);
    resync.tick().await;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => Event::Shutdown,
            _ = resync.tick() => Event::ResyncTick,
            _ = watchdog.tick(), if watchdog_timeout.is_some() => Event::WatchdogTick,
            changed = passes.changed(), if !ready => match changed {
                Ok(()) => Event::Synced,
                Err(_) => Event::Shutdown,
            },
            received = events.recv() => match received {
                Ok(event) => Event::Nb(event),
                Err(RecvError::Lagged(missed)) => Event::NbLagged(missed),
                Err(RecvError::Closed) => Event::Shutdown,
            },
        };
        match event {
            Event::Shutdown => break,
            Event::Nb(ClientEvent::Resynced { remote, resumed }) => {
                let summary = nb::summary(&client.cache());
                info!(%remote, resumed, ?summary, "NB cache in sync");
            }
            Event::Nb(ClientEvent::Changed(changes)) => {
                for change in changes.iter() {
                    let name = change
                        .new
                        .as_ref()
                        .or(change.old.as_ref())
                        .and_then(|row| row.get("name"))
                        .and_then(|value| value.as_str())
                        .unwrap_or("");
                    let kind = match (&change.old, &change.new) {
                        (None, Some(_)) => "insert",
                        (Some(_), None) => "delete",
                        _ => "modify",
                    };
                    tracing::debug!(table = %change.table, uuid = %change.uuid, name, kind, "NB row changed");
                }
            }
            Event::Nb(ClientEvent::Disconnected { error }) => warn!(%error, "NB unavailable"),
            Event::Nb(ClientEvent::LockAcquired(_) | ClientEvent::LockStolen(_)) => {}
            Event::NbLagged(missed) => warn!(missed, "NB events overflowed; full resync"),
            Event::Synced => {
                ready = true;
                info!("first NB sync done; ready");
                systemd::ready("serving; NB in sync");
            }
            Event::WatchdogTick => {
                // Both loops must be alive: this one (it is running) and the sync's. The sync may
                // wait on NB up to its request timeout; the unit's WatchdogSec leaves room for it.
                let age = heartbeat.age();
                match watchdog_timeout {
                    Some(timeout) if age < timeout * 3 / 4 => systemd::watchdog(),
                    _ => warn!(
                        ?age,
                        "the sync loop has not gone round; holding back the watchdog keep-alive"
                    ),
                }
            }
            Event::ResyncTick => {
                let summary = nb::summary(&client.cache());
                info!(?summary, connected = client.state().is_connected(), "periodic resync");
            }
        }
    }
    info!("shutting down");
    systemd::stopping();
    // The API stops accepting and finishes in-flight requests (within a grace period), then the
    // store is flushed.
    let grace = config.shutdown_grace;
    match tokio::time::timeout(grace, api_task).await {
        Ok(Ok(Err(error))) => warn!(%error, "gRPC server ended with an error"),
        Ok(Err(error)) => warn!(%error, "gRPC server task failed"),
        Ok(Ok(Ok(()))) => {}
        Err(_) => warn!(?grace, "in-flight gRPC requests did not finish in time"),
    }
    let _ = reconciler.await;
    client.shutdown().await;
    registry.flush()?;
    Ok(())
}
