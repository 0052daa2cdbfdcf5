//! The sync controller is one loop over one closed set of events: an NB reconnect that happens
//! while the sync waits for the echo of its own write is not lost (before, that wait dropped
//! every event but `Changed`, and the full pass a reconnect calls for waited for the 300 s tick).

mod common;

use common::requests::aap;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{wait_until_async, OvsdbServer};
use futures::StreamExt;
use ovn_vipd::api::proto::v1 as pb;
use pb::subnet_service_client::SubnetServiceClient;
use pb::vip_service_client::VipServiceClient;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::FramedRead;

/// What the fault-injecting proxy does with the next write's echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Forward everything.
    Pass,
    /// Withhold the next `update3` (the echo), forward the transaction's reply after it, then
    /// cut the connection: the write committed, the daemon got its answer, the echo never came.
    Armed,
    /// The connection was cut; new connections wait (unaccepted) until `Pass` again.
    Cut,
}

/// A FAULT INJECTOR, not a server: a TCP proxy in front of the real NB ovsdb-server that loses
/// a monitor update and then the connection, which a real server cannot be made to do on cue.
struct EchoLosingProxy {
    port: u16,
    phase: Arc<Mutex<Phase>>,
    /// Monitor replies (`monitor_cond_since`) forwarded so far: a count that grows with each
    /// (re)connect's resync.
    monitors: Arc<AtomicUsize>,
}

impl EchoLosingProxy {
    async fn start(upstream: u16) -> EchoLosingProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind proxy");
        let port = listener.local_addr().expect("address").port();
        let phase = Arc::new(Mutex::new(Phase::Pass));
        let shared = phase.clone();
        let monitors = Arc::new(AtomicUsize::new(0));
        let counter = monitors.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                // While cut, a new connection is held unanswered: the client's reconnect waits
                // here instead of failing and backing off.
                while *shared.lock().unwrap() == Phase::Cut {
                    // Kept: the proxy holds the connection while cut (not a test assertion).
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                tokio::spawn(pump(client, server, shared.clone(), counter.clone()));
            }
        });
        EchoLosingProxy { port, phase, monitors }
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap() = phase;
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap()
    }
}

async fn pump(client: TcpStream, server: TcpStream, phase: Arc<Mutex<Phase>>, monitors: Arc<AtomicUsize>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (server_read, mut server_write) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut messages = FramedRead::new(server_read, ovn_vipd::ovsdb::codec::JsonCodec::new());
    let mut holding = false;
    while let Some(Ok(message)) = messages.next().await {
        let json: serde_json::Value = serde_json::from_slice(&message).unwrap_or_default();
        let armed = *phase.lock().unwrap() == Phase::Armed;
        if armed && json.get("method").and_then(|m| m.as_str()) == Some("update3") {
            holding = true;
            continue;
        }
        if client_write.write_all(&message).await.is_err() {
            break;
        }
        let result = json.get("result").and_then(|result| result.as_array());
        if result.is_some_and(|result| result.len() == 3 && result[0].is_boolean()) {
            monitors.fetch_add(1, Ordering::SeqCst);
        }
        if holding && json.get("result").is_some() {
            // The reply went out; the echo did not. Let the daemon start waiting for it, then
            // lose the connection. (Kept: the fault is timed here; the test's check is positive.)
            tokio::time::sleep(Duration::from_millis(100)).await;
            *phase.lock().unwrap() = Phase::Cut;
            break;
        }
    }
    upstream.abort();
}

fn port_exists(nb: &OvsdbServer, name: &str) -> bool {
    !nb.nbctl(&["--if-exists", "get", "logical_switch_port", name, "name"])
        .trim()
        .is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_during_the_echo_wait_still_brings_a_full_pass_at_once() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let nb = OvsdbServer::nb(dir.path());
    let proxy = EchoLosingProxy::start(nb.port).await;
    let mut config = ovn_vipd::daemon::DaemonConfig::new(
        ovn_vipd::ovsdb::Remote::parse_list(&format!("tcp:127.0.0.1:{}", proxy.port)).unwrap(),
        dir.path().join("data"),
        vec![ovn_vipd::api::Listen::Tcp(([127, 0, 0, 1], 0).into())],
    );
    let mut bound = common::report_grpc_bound(&mut config);
    // The default safety-net interval: only an event-driven full pass can repair in time.
    assert_eq!(config.resync_interval, Duration::from_secs(300));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    let daemon = tokio::spawn(async move { ovn_vipd::daemon::run(config, stop).await });
    let channel = common::process::plain_channel(common::bound_port(&mut bound).await).await;
    let mut subnets = SubnetServiceClient::new(channel.clone());
    let mut vips = VipServiceClient::new(channel.clone());
    for (name, cidr) in [("net-a", "10.30.0.0/24"), ("net-b", "10.31.0.0/24")] {
        subnets
            .create_subnet(common::subnet_request(name, cidr, ""))
            .await
            .unwrap();
    }
    vips.create_vip(pb::CreateVipRequest {
        vip: Some(aap("va", "net-a")),
    })
    .await
    .unwrap();
    wait_until_async("va in NB", Duration::from_secs(10), || port_exists(&nb, "va")).await;

    // The next write (vb's port) commits and is answered, its echo is lost with the connection.
    let full_passes = || {
        ovn_vipd::telemetry::metrics()
            .sync_passes
            .get_or_create(&ovn_vipd::telemetry::PassLabels { kind: "full".into() })
            .get()
    };
    let full_before = full_passes();
    proxy.set(Phase::Armed);
    vips.create_vip(pb::CreateVipRequest {
        vip: Some(aap("vb", "net-b")),
    })
    .await
    .unwrap();
    wait_until_async("the proxy to cut NB", Duration::from_secs(10), || {
        proxy.phase() == Phase::Cut
    })
    .await;
    // While the daemon is away, someone deletes va's port (outside vb's scope): only a full pass
    // (which the reconnect's Resynced asks for) puts it back.
    nb.nbctl(&["lsp-del", "va"]);
    assert!(!port_exists(&nb, "va"));
    let monitors = proxy.monitors.load(Ordering::SeqCst);
    proxy.set(Phase::Pass);
    // Once the daemon has resynced, an unrelated change by someone else: a foreign balancer,
    // which asks the sync for nothing. (The old echo wait took it for its echo and returned,
    // having dropped the Disconnected and Resynced before it.)
    wait_until_async("the daemon to resync", Duration::from_secs(5), || {
        proxy.monitors.load(Ordering::SeqCst) > monitors
    })
    .await;
    nb.nbctl(&["lb-add", "foreign-lb", "10.99.0.1", "10.99.0.2"]);

    // Within a few seconds (the reconnect is immediate), not at the 300 s tick: the reconnect's
    // full pass ran, and NB is repaired.
    wait_until_async("a full pass after the reconnect", Duration::from_secs(5), || {
        full_passes() > full_before
    })
    .await;
    wait_until_async("va restored", Duration::from_secs(5), || port_exists(&nb, "va")).await;
    assert!(port_exists(&nb, "vb"), "vb's write committed");

    shutdown.cancel();
    daemon.await.unwrap().unwrap();
}
