//! Logs, metrics and the service manager: tracing set-up (text or JSON, a filter that SIGHUP can
//! change), the Prometheus metrics and their `/metrics` listener, the gRPC layer that gives every
//! RPC a span and a counter, and systemd's notify protocol (READY, WATCHDOG, STOPPING).
//!
//! Metrics live in one process-wide set ([`metrics`]): the store's flusher thread, the sync and the
//! gRPC layer record into it without being handed anything. Gauges that describe state (VIPs,
//! addresses, the NB connection) are read from the registry and the NB client at scrape time, so
//! they cannot drift from what they describe.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry as Subscribers};

use crate::config::LogFormat;
use crate::ovsdb::Client;

// ---------------------------------------------------------------------------------------------
// Logging

/// Changes the log filter of a running process (SIGHUP).
#[derive(Clone)]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Subscribers>,
}

impl LogHandle {
    pub fn set_filter(&self, filter: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(filter).map_err(|error| error.to_string())?;
        self.filter.reload(filter).map_err(|error| error.to_string())
    }
}

/// Installs the global subscriber: `filter` in RUST_LOG syntax, text or JSON lines on stderr.
/// Text is coloured only when [`stderr_wants_colour`] says so: a file, a pipe or the journal gets
/// plain lines.
pub fn init_logging(filter: &str, format: LogFormat) -> Result<LogHandle, String> {
    let filter = EnvFilter::try_new(filter).map_err(|error| error.to_string())?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(stderr_wants_colour(std::env::var_os("NO_COLOR").as_deref()))
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_ansi(false)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    result.map_err(|error| error.to_string())?;
    Ok(LogHandle { filter: handle })
}

/// Whether log lines on stderr get ANSI colours: only when stderr is a terminal and `NO_COLOR`
/// (<https://no-color.org>: set and not empty) does not forbid it. Under systemd stderr is the
/// journal's socket, in a container or a test a file or pipe: plain text there.
pub fn stderr_wants_colour(no_color: Option<&std::ffi::OsStr>) -> bool {
    use std::io::IsTerminal;
    let forbidden = no_color.is_some_and(|value| !value.is_empty());
    !forbidden && std::io::stderr().is_terminal()
}

// ---------------------------------------------------------------------------------------------
// Metrics

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VipLabels {
    pub subnet: String,
    /// `reserved`, `aap` or `switch_lb_vip`.
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AddressLabels {
    pub subnet: String,
    pub family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PassLabels {
    /// `full` or `incremental`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RemoteLabels {
    pub remote: String,
}

/// Every metric the daemon exports.
pub struct Metrics {
    pub vips: Family<VipLabels, Gauge>,
    pub addresses_used: Family<AddressLabels, Gauge<f64, AtomicU64>>,
    pub addresses_free: Family<AddressLabels, Gauge<f64, AtomicU64>>,
    pub reconcile_seconds: Histogram,
    /// Sync passes by kind.
    pub sync_passes: Family<PassLabels, Counter>,
    /// Objects and NB rows the last pass looked at: what an incremental pass keeps small.
    pub sync_pass_objects: Gauge,
    pub nb_transactions: Counter,
    pub nb_transaction_failures: Counter,
    pub nb_connected: Gauge,
    /// 1 for the remote the daemon writes to (the leader, for a cluster).
    pub nb_leader: Family<RemoteLabels, Gauge>,
    /// 1 while this daemon holds the NB lock and is the one writing NB; 0 as a standby.
    pub active: Gauge,
    pub store_flush_seconds: Histogram,
    pub grpc_requests: Family<GrpcLabels, Counter>,
    /// Clustered mode: how the sled replica of the cluster database caught up after a (re)connect,
    /// `kind` = `resumed` (from its last transaction id) or `full` (a whole download).
    pub replica_syncs: Family<PassLabels, Counter>,
    registry: prometheus_client::registry::Registry,
    /// NB transaction counts already added to the counters, per client (scrape-time deltas).
    nb_seen: Mutex<(u64, u64)>,
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = prometheus_client::registry::Registry::with_prefix("ovn_vipd");
        let metrics = Metrics {
            vips: Family::default(),
            addresses_used: Family::default(),
            addresses_free: Family::default(),
            reconcile_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            sync_passes: Family::default(),
            sync_pass_objects: Gauge::default(),
            nb_transactions: Counter::default(),
            nb_transaction_failures: Counter::default(),
            nb_connected: Gauge::default(),
            nb_leader: Family::default(),
            active: Gauge::default(),
            store_flush_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            grpc_requests: Family::default(),
            replica_syncs: Family::default(),
            registry: prometheus_client::registry::Registry::default(),
            nb_seen: Mutex::new((0, 0)),
        };
        registry.register("vips", "VIPs by subnet and type", metrics.vips.clone());
        registry.register(
            "addresses_used",
            "Allocated addresses per subnet and family",
            metrics.addresses_used.clone(),
        );
        registry.register(
            "addresses_free",
            "Free addresses per subnet and family",
            metrics.addresses_free.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of NB sync passes",
            metrics.reconcile_seconds.clone(),
        );
        registry.register(
            "sync_passes",
            "NB sync passes, full or incremental",
            metrics.sync_passes.clone(),
        );
        registry.register(
            "sync_pass_objects",
            "VIPs, pods, rules and NB rows the last sync pass looked at",
            metrics.sync_pass_objects.clone(),
        );
        registry.register(
            "nb_transactions",
            "NB transactions sent",
            metrics.nb_transactions.clone(),
        );
        registry.register(
            "nb_transaction_failures",
            "NB transactions that failed",
            metrics.nb_transaction_failures.clone(),
        );
        registry.register(
            "nb_connected",
            "1 while connected to OVN NB with the cache in sync",
            metrics.nb_connected.clone(),
        );
        registry.register(
            "active",
            "1 while this daemon holds the NB lock (the one writer of NB), 0 as a standby",
            metrics.active.clone(),
        );
        registry.register(
            "nb_leader",
            "1 for the NB remote in use (the cluster leader)",
            metrics.nb_leader.clone(),
        );
        registry.register(
            "store_flush_duration_seconds",
            "Duration of store flushes (each acknowledges every write queued before it)",
            metrics.store_flush_seconds.clone(),
        );
        registry.register(
            "grpc_requests",
            "gRPC requests by method and status code",
            metrics.grpc_requests.clone(),
        );
        registry.register(
            "replica_syncs",
            "Clustered mode: catch-ups of the sled replica of the cluster database, resumed from its last transaction id or a full download",
            metrics.replica_syncs.clone(),
        );
        Metrics { registry, ..metrics }
    }

    /// Reads the state gauges from the registry and the NB client, then encodes everything in the
    /// OpenMetrics text format.
    pub fn render(&self, state: &dyn StateSource, client: Option<&Client>) -> String {
        self.vips.clear();
        for (subnet, kind, count) in state.vip_counts() {
            self.vips
                .get_or_create(&VipLabels {
                    subnet,
                    r#type: kind.into(),
                })
                .set(count as i64);
        }
        self.addresses_used.clear();
        self.addresses_free.clear();
        for usage in state.address_usage() {
            let labels = AddressLabels {
                subnet: usage.subnet,
                family: usage.family.into(),
            };
            self.addresses_used.get_or_create(&labels).set(usage.used as f64);
            self.addresses_free.get_or_create(&labels).set(usage.free as f64);
        }
        if let Some(client) = client {
            if let Ok(mut seen) = self.nb_seen.lock() {
                let (sent, failed) = (client.transaction_count(), client.transaction_failure_count());
                self.nb_transactions.inc_by(sent.saturating_sub(seen.0));
                self.nb_transaction_failures.inc_by(failed.saturating_sub(seen.1));
                *seen = (sent.max(seen.0), failed.max(seen.1));
            }
            let state = client.state();
            self.nb_connected.set(i64::from(state.is_connected()));
            self.nb_leader.clear();
            if let Some(connection) = &state.connection {
                self.nb_leader
                    .get_or_create(&RemoteLabels {
                        remote: connection.remote().to_string(),
                    })
                    .set(1);
            }
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            warn!("cannot encode metrics");
        }
        text
    }
}

/// Where the state gauges are read from at scrape time. The registry implements it: this module
/// records what the store and the sync report and never depends on the registry itself.
pub trait StateSource: Send + Sync {
    /// One entry per subnet and VIP kind (`aap`, `reserved` or `switch_lb_vip`) with the number
    /// of such VIPs; counted in place (a scrape copies no VIP: at 100,000 VIPs, one per scrape
    /// was a copy of every VIP).
    fn vip_counts(&self) -> Vec<(String, &'static str, u64)>;
    /// One entry per subnet and address family the subnet has.
    fn address_usage(&self) -> Vec<AddressUsage>;
}

/// Addresses of one family of one subnet (the `addresses_used` / `addresses_free` gauges).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressUsage {
    pub subnet: String,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    pub used: u128,
    pub free: u128,
}

/// Serves `GET /metrics` on `address` until `shutdown`; returns the bound address.
pub async fn serve_metrics(
    address: SocketAddr,
    registry: Arc<dyn StateSource>,
    client: Client,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    info!(listen = %local, "metrics listening");
    // One render at a time: rendering clears and refills the state gauges.
    let rendering = Arc::new(tokio::sync::Mutex::new(()));
    tokio::spawn(
        async move {
            loop {
                let stream = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(error) => {
                            warn!(%error, "metrics accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let (registry, client, rendering) = (registry.clone(), client.clone(), rendering.clone());
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let (registry, client, rendering) = (registry.clone(), client.clone(), rendering.clone());
                    async move {
                        let response = if request.uri().path() == "/metrics" {
                            let _one = rendering.lock().await;
                            let body = metrics().render(registry.as_ref(), Some(&client));
                            hyper::Response::builder()
                                .header(
                                    "content-type",
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .body(Full::new(Bytes::from(body)))
                        } else {
                            hyper::Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::from_static(b"only /metrics is served here\n")))
                        };
                        response
                    }
                });
                // A kept-alive connection ends at shutdown too (it holds the registry).
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
                    tokio::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        _ = shutdown.cancelled() => {
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.await;
                        }
                    }
                });
            }
        }
        .instrument(tracing::info_span!("metrics")),
    );
    Ok(local)
}

// ---------------------------------------------------------------------------------------------
// gRPC: a span and a counter per request

/// Records the object an RPC is about in the request's span (see [`GrpcLayer`]).
pub fn record_object(name: &str) {
    tracing::Span::current().record("object", name);
}

/// Gives every gRPC request a span (`rpc` with `method` and, once known, `object`) and counts it
/// by method and status code when it answers.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcLayer;

impl<S> tower_layer::Layer<S> for GrpcLayer {
    type Service = GrpcService<S>;

    fn layer(&self, inner: S) -> GrpcService<S> {
        GrpcService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct GrpcService<S> {
    inner: S,
}

impl<S, RequestBody, ResponseBody> tower_service::Service<http::Request<RequestBody>> for GrpcService<S>
where
    S: tower_service::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResponseBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let method = request.uri().path().to_string();
        let span = tracing::info_span!("rpc", method = %method, object = tracing::field::Empty);
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let started = Instant::now();
                let result = future.await;
                // A unary error is a trailers-only response: its status is in the headers. A
                // response without one carries data, i.e. it succeeded (or is a stream).
                let code = match &result {
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|value| value.to_str().ok())
                        .and_then(|text| text.parse::<i32>().ok())
                        .map(tonic::Code::from_i32)
                        .unwrap_or(tonic::Code::Ok),
                    Err(_) => tonic::Code::Unknown,
                };
                metrics()
                    .grpc_requests
                    .get_or_create(&GrpcLabels {
                        method,
                        code: format!("{code:?}"),
                    })
                    .inc();
                tracing::debug!(code = ?code, elapsed = ?started.elapsed(), "rpc answered");
                result
            }
            .instrument(span),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// systemd

/// systemd's notify protocol; every call is a no-op when the daemon was not started by systemd
/// (no `NOTIFY_SOCKET`).
pub mod systemd {
    use std::time::Duration;

    use sd_notify::NotifyState;

    pub fn ready(status: &str) {
        let _ = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(status: &str) {
        let _ = sd_notify::notify(false, &[NotifyState::Status(status)]);
    }

    pub fn reloading() {
        let _ = sd_notify::notify(false, &[NotifyState::Reloading]);
    }

    pub fn stopping() {
        let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
    }

    pub fn watchdog() {
        let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
    }

    /// The watchdog timeout systemd expects keep-alives within, if it set one for this process:
    /// `WATCHDOG_USEC`, applying to this process when `WATCHDOG_PID` is absent or names it (as
    /// libsystemd's `sd_watchdog_enabled` reads them).
    pub fn watchdog_timeout() -> Option<Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID") {
            if pid.parse::<u32>().ok()? != std::process::id() {
                return None;
            }
        }
        (usec > 0).then(|| Duration::from_micros(usec))
    }
}

/// When the sync loop last went round, for the watchdog: keep-alives stop when it is stuck.
/// Measured on tokio's clock (monotonic; paused and advanced in tests).
#[derive(Clone, Debug)]
pub struct Heartbeat {
    since: tokio::time::Instant,
    /// Milliseconds after `since` of the last beat.
    last: Arc<AtomicU64>,
}

impl Default for Heartbeat {
    /// A heartbeat that beat now.
    fn default() -> Heartbeat {
        Heartbeat {
            since: tokio::time::Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// Time since the last beat (millisecond resolution).
    pub fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.since.elapsed().saturating_sub(last)
    }
}

/// The watchdog keep-alive rule. systemd restarts the daemon when no keep-alive comes within
/// `timeout` (`WatchdogSec`, told as `WATCHDOG_USEC`); the main loop ticks every `timeout / 2`
/// (sd_watchdog_enabled(3) advises half) and sends one only while the sync loop has gone round
/// within the last `timeout * 3 / 4`, so a stuck sync loop gets the daemon restarted.
#[derive(Clone, Debug)]
pub struct Watchdog {
    timeout: Duration,
    heartbeat: Heartbeat,
}

impl Watchdog {
    pub fn new(timeout: Duration, heartbeat: Heartbeat) -> Watchdog {
        Watchdog { timeout, heartbeat }
    }

    /// How often the main loop asks [`Watchdog::keep_alive`].
    pub fn tick_interval(&self) -> Duration {
        self.timeout / 2
    }

    /// At a tick: `Ok` to send a keep-alive, or `Err(age of the last heartbeat)` to hold it back.
    pub fn keep_alive(&self) -> Result<(), Duration> {
        let age = self.heartbeat.age();
        if age < self.timeout * 3 / 4 {
            Ok(())
        } else {
            Err(age)
        }
    }
}

#[cfg(test)]
mod watchdog_tests {
    use super::*;

    /// The main loop's schedule on tokio's paused clock (`WatchdogSec=800ms`): a tick every
    /// 400 ms; keep-alives while the sync loop beats, none once it has been silent for 600 ms
    /// (3/4 of the timeout), and again at the first tick after it beats.
    #[tokio::test(start_paused = true)]
    async fn keep_alives_follow_the_sync_loop_and_stop_when_it_is_stuck() {
        let heartbeat = Heartbeat::default();
        let watchdog = Watchdog::new(Duration::from_millis(800), heartbeat.clone());
        assert_eq!(watchdog.tick_interval(), Duration::from_millis(400));
        let start = tokio::time::Instant::now();
        let mut ticks = tokio::time::interval(watchdog.tick_interval());
        let mut schedule = Vec::new();
        for _ in 0..9 {
            ticks.tick().await;
            let at = start.elapsed().as_millis();
            // The sync loop goes round until 400 ms, is stuck from then, and moves once at 2600 ms.
            if at <= 400 {
                heartbeat.beat();
            }
            schedule.push((at, watchdog.keep_alive().map_err(|age| age.as_millis())));
            if at == 2400 {
                tokio::time::advance(Duration::from_millis(200)).await;
                heartbeat.beat();
            }
        }
        assert_eq!(
            schedule,
            vec![
                (0, Ok(())),
                (400, Ok(())),
                // 400 ms since the last beat: still within 3/4 of the timeout.
                (800, Ok(())),
                // 800 ms: held back, and from then on until the loop moves.
                (1200, Err(800)),
                (1600, Err(1200)),
                (2000, Err(1600)),
                (2400, Err(2000)),
                // It beat at 2600 ms (200 ms ago), then stuck again: at exactly 3/4 it is held back.
                (2800, Ok(())),
                (3200, Err(600)),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_ages_with_the_clock_and_resets_on_a_beat() {
        let heartbeat = Heartbeat::default();
        assert_eq!(heartbeat.age(), Duration::ZERO);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(heartbeat.age(), Duration::from_millis(1500));
        heartbeat.clone().beat();
        assert_eq!(heartbeat.age(), Duration::ZERO, "clones share the beat");
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_eq!(heartbeat.age(), Duration::from_millis(10));
    }
}
