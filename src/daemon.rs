//! The daemon's wiring: connect to OVN NB, keep the cache in sync, react to a closed set of
//! events, and stop cleanly when the shutdown token fires. The binary only parses flags and
//! calls [`run`].

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{self, Listen};
use crate::nb;
use crate::ovsdb::{Client, ClientEvent, OvsdbError, Remote, TlsFiles};
use crate::registry::{Registry, RegistryError};

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub ovn_nb: Vec<Remote>,
    pub nb_tls: Option<TlsFiles>,
    pub data_dir: PathBuf,
    /// gRPC listeners.
    pub listen: Vec<Listen>,
    /// Interval of the safety-net full resync.
    pub resync_interval: Duration,
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
}

/// How long in-flight requests may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Everything that makes the main loop act, in one place.
#[derive(Debug)]
enum Event {
    Nb(ClientEvent),
    /// The NB event stream overflowed: what changed is unknown, so resync everything.
    NbLagged(u64),
    ResyncTick,
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
    let api_server = api::serve(config.listen.clone(), registry.clone(), shutdown.clone()).await?;
    let api_task = tokio::spawn(api_server);
    let mut client_config = nb::client_config(config.ovn_nb.clone());
    client_config.tls = config.nb_tls.clone();
    let (client, mut events) = Client::start_subscribed(client_config);
    let reconciler = tokio::spawn(crate::reconcile::run(
        registry.clone(),
        client.clone(),
        config.resync_interval,
        shutdown.clone(),
    ));
    let mut resync = tokio::time::interval(config.resync_interval);
    resync.tick().await;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => Event::Shutdown,
            _ = resync.tick() => Event::ResyncTick,
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
            Event::ResyncTick => {
                let summary = nb::summary(&client.cache());
                info!(?summary, connected = client.state().is_connected(), "periodic resync");
            }
        }
    }
    info!("shutting down");
    // The API stops accepting and finishes in-flight requests (within a grace period), then the
    // store is flushed.
    match tokio::time::timeout(SHUTDOWN_GRACE, api_task).await {
        Ok(Ok(Err(error))) => warn!(%error, "gRPC server ended with an error"),
        Ok(Err(error)) => warn!(%error, "gRPC server task failed"),
        Ok(Ok(Ok(()))) => {}
        Err(_) => warn!(grace = ?SHUTDOWN_GRACE, "in-flight gRPC requests did not finish in time"),
    }
    let _ = reconciler.await;
    client.shutdown().await;
    registry.flush()?;
    Ok(())
}
