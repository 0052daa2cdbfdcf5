//! The daemon's wiring: connect to OVN NB, keep the cache in sync, react to a closed set of
//! events, and stop cleanly when the shutdown token fires. The binary only parses flags and
//! calls [`run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::api::{self, Listen};
use crate::config::{GrpcTls, Settings};
use crate::nb;
use crate::ovsdb::{Client, OvsdbError, Remote, TlsFiles};
use crate::registry::{Registry, RegistryError};
use crate::role::{Role, LOCK_NAME};
use crate::telemetry::{self, systemd, Heartbeat, Watchdog};

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
    /// Clustered mode: the OVN_VIPD cluster database's remotes (empty: standalone).
    pub cluster_db: Vec<Remote>,
    /// Clustered mode: the gRPC address published while active.
    pub advertise_address: Option<String>,
    /// Told the bound address of each TCP gRPC listener once it serves (the port the kernel
    /// chose for `tcp:IP:0`); see [`api::ServeOptions::bound`]. `None` from the flags.
    pub grpc_bound: Option<tokio::sync::mpsc::UnboundedSender<SocketAddr>>,
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
            cluster_db: Vec::new(),
            advertise_address: None,
            grpc_bound: None,
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
            cluster_db: settings.cluster_db.clone(),
            advertise_address: settings.advertise_address.clone(),
            grpc_bound: None,
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
    #[error(
        "the store at {path} holds a standalone daemon's data, which clustered mode (cluster-db) would replace \
         with the cluster database's; start this daemon standalone, or move the store away to start it as a \
         replica"
    )]
    StandaloneStore { path: String },
    #[error("cannot serve metrics on {address}: {source}")]
    Metrics {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the daemon's own loop reacts to (the NB sync has its own controller, the one loop over
/// registry, NB and lock events: `reconcile::run`).
#[derive(Debug)]
enum Event {
    /// The sync finished a pass; the first one makes an active daemon ready.
    Synced,
    /// The controller published a new role.
    Role(Role),
    /// Time to tell systemd the loops are alive (if they are).
    WatchdogTick,
    Shutdown,
}

/// The NB client's settings. `standalone`: the daemon takes NB's lock itself (clustered mode asks
/// NB only while active on the cluster database, see `cluster`, so the NB lock always follows
/// the cluster lock).
fn nb_client_config(config: &DaemonConfig, standalone: bool) -> crate::ovsdb::ClientConfig {
    let mut client_config = nb::client_config(config.ovn_nb.clone());
    client_config.tls = config.nb_tls.clone();
    if standalone {
        client_config.locks = vec![LOCK_NAME.to_string()];
    }
    // Standalone: after an NB leader change the previous holder asks the new leader first (see
    // ARCHITECTURE.md). Clustered: the cluster lock (and its epoch) already decided who is
    // active, and only that daemon asks NB, so it asks at once (a grace here delayed every
    // takeover whose NB leader died with the active's host by 2 s).
    client_config.lock_grace = if standalone {
        Duration::from_secs(2)
    } else {
        Duration::ZERO
    };
    client_config
}

/// Runs until `shutdown` is cancelled.
pub async fn run(config: DaemonConfig, shutdown: CancellationToken) -> Result<(), DaemonError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| DaemonError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let store_path = config.data_dir.join("store");
    // Standalone: NB's initial dump (about 2 s at 100,000 rows, nearly all of it ovsdb-server's
    // own time) downloads while the store opens. Clustered mode asks NB only once active on the
    // cluster database, so its client starts after the open, as before.
    let early_nb = config
        .cluster_db
        .is_empty()
        .then(|| Client::start_subscribed(nb_client_config(&config, true)));
    let started = std::time::Instant::now();
    let opened = {
        let store_path = store_path.clone();
        tokio::task::spawn_blocking(move || Registry::open(&store_path)).await
    };
    let (registry, report) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(error)) => {
            if let Some((client, _)) = &early_nb {
                client.shutdown().await;
            }
            return Err(error.into());
        }
        Err(panicked) => std::panic::resume_unwind(panicked.into_panic()),
    };
    let open_ms = started.elapsed().as_millis() as u64;
    if report.is_clean() {
        info!(path = %store_path.display(), open_ms, "store open and consistent");
    } else {
        warn!(path = %store_path.display(), problems = report.problems.len(), "store open with inconsistencies");
    }
    // Clustered mode: nothing may reach sled but the replica; batches wait for the committer. A
    // standalone store is not silently replaced by the replica.
    if !config.cluster_db.is_empty() && registry.store().holds_standalone_data().map_err(RegistryError::Store)? {
        return Err(DaemonError::StandaloneStore {
            path: store_path.display().to_string(),
        });
    }
    let cluster_link = (!config.cluster_db.is_empty()).then(|| crate::cluster::Cluster::attach(&registry));
    let registry = std::sync::Arc::new(registry);
    let (role_sender, role_receiver) = tokio::sync::watch::channel(Role::Unknown);
    let options = api::ServeOptions {
        tls: config.grpc_tls.clone(),
        socket_group: config.socket_group,
        role: role_receiver.clone(),
        bound: config.grpc_bound.clone(),
    };
    let api_server = match api::serve(config.listen.clone(), registry.clone(), shutdown.clone(), options).await {
        Ok(server) => server,
        Err(error) => {
            if let Some((client, _)) = &early_nb {
                client.shutdown().await;
            }
            return Err(error.into());
        }
    };
    let api_task = tokio::spawn(api_server.instrument(tracing::info_span!("api")));
    let (client, nb_events) = match early_nb {
        Some(started) => started,
        None => Client::start_subscribed(nb_client_config(&config, cluster_link.is_none())),
    };
    registry.set_in_use_outside(std::sync::Arc::new(nb::NbInUse(client.clone())));
    let cluster = match cluster_link {
        Some(link) => {
            let cluster_config = crate::cluster::ClusterConfig::new(
                config.cluster_db.clone(),
                config.nb_tls.clone(),
                config.advertise_address.clone(),
            );
            info!(
                remotes = config.cluster_db.len(),
                "clustered mode: the OVN_VIPD cluster database is the store"
            );
            Some(
                crate::cluster::Cluster::start(
                    cluster_config,
                    registry.clone(),
                    link,
                    client.clone(),
                    shutdown.clone(),
                )
                .map_err(|error| DaemonError::Store(RegistryError::Store(error)))?,
            )
        }
        None => None,
    };
    if let Some(address) = config.metrics_listen {
        telemetry::serve_metrics(address, registry.clone(), client.clone(), shutdown.clone())
            .await
            .map_err(|source| DaemonError::Metrics { address, source })?;
    }
    let heartbeat = Heartbeat::default();
    heartbeat.beat();
    let (passes_sender, mut passes) = tokio::sync::watch::channel(0u64);
    let mut roles = role_receiver;
    let reconciler = tokio::spawn(
        crate::reconcile::run(
            registry.clone(),
            client.clone(),
            nb_events,
            crate::reconcile::ControllerConfig::new(config.resync_interval, Some(LOCK_NAME.to_string())),
            shutdown.clone(),
            crate::reconcile::Hooks {
                heartbeat: heartbeat.clone(),
                passes: passes_sender,
                role: role_sender,
            },
        )
        .instrument(tracing::info_span!("sync")),
    );
    systemd::status("store open; waiting for the first NB sync");
    let mut ready = false;
    let mut synced = false;
    // systemd expects keep-alives within the timeout; send them twice as often.
    let keep_alive = systemd::watchdog_timeout().map(|timeout| Watchdog::new(timeout, heartbeat.clone()));
    let mut watchdog = tokio::time::interval(keep_alive.as_ref().map_or(Duration::MAX / 4, Watchdog::tick_interval));
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => Event::Shutdown,
            _ = watchdog.tick(), if keep_alive.is_some() => Event::WatchdogTick,
            changed = passes.changed(), if !synced => match changed {
                Ok(()) => Event::Synced,
                Err(_) => Event::Shutdown,
            },
            changed = roles.changed() => match changed {
                Ok(()) => Event::Role(*roles.borrow_and_update()),
                Err(_) => Event::Shutdown,
            },
        };
        match event {
            Event::Shutdown => break,
            Event::Synced => {
                synced = true;
                if !ready {
                    ready = true;
                    info!(
                        since_start_ms = started.elapsed().as_millis() as u64,
                        "first NB sync done; ready"
                    );
                    systemd::ready("serving; active; NB in sync");
                }
            }
            Event::Role(role) => {
                if role == Role::Standby && !ready {
                    // A standby is up and doing its job (waiting for the lock): systemd must not
                    // time its start-up out.
                    ready = true;
                    systemd::ready("serving reads; standby: another daemon holds the NB lock");
                } else if ready {
                    systemd::status(match role {
                        Role::Active => "serving; active",
                        Role::Standby => "serving reads; standby: another daemon holds the NB lock",
                        Role::Unknown => "serving; NB unavailable",
                    });
                }
            }
            Event::WatchdogTick => {
                // Both loops must be alive: this one (it is running) and the sync's. The sync may
                // wait on NB up to its request timeout; the unit's WatchdogSec leaves room for it.
                match keep_alive.as_ref().map(Watchdog::keep_alive) {
                    Some(Ok(())) => systemd::watchdog(),
                    Some(Err(age)) => warn!(
                        ?age,
                        "the sync loop has not gone round; holding back the watchdog keep-alive"
                    ),
                    None => {}
                }
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
    if let Some(cluster) = cluster {
        cluster.stop().await;
    }
    client.shutdown().await;
    registry.flush()?;
    // The store is closed (its file lock let go) only when the last holder of the registry is
    // gone: watch streams and metrics connections end on `shutdown` but may not have run yet.
    // Whoever runs the daemon next in this process (a restart, `ovn-vipd check`) must find the
    // store free, so wait for them (within the grace period).
    let deadline = tokio::time::Instant::now() + grace;
    while std::sync::Arc::strong_count(&registry) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let holders = std::sync::Arc::strong_count(&registry) - 1;
    if holders > 0 {
        warn!(holders, "tasks still hold the store after the grace period");
    }
    drop(registry);
    info!("store flushed; stopped");
    Ok(())
}
