//! Exactly one active daemon per NB, fenced: every daemon asks for the OVSDB lock `ovn_vipd` on
//! NB; the holder writes, and each of its transactions asserts the lock; the others are
//! standbys that write nothing, say so (log, health, metric) and refuse mutating calls. Real
//! ovsdb-server processes and real daemons as processes.

mod common;

use std::time::{Duration, Instant};

use common::process::{daemon_args, http_get, plain_channel, sample, start, DaemonProcess};
use common::{wait_until, wait_until_async, NbCluster, OvsdbServer};
use ovn_vipd::api::proto::v1 as pb;
use ovn_vipd::ovsdb::{Client, ClientEvent, Operation, OvsdbError, Row, Value};
use pb::subnet_service_client::SubnetServiceClient;
use pb::vip_service_client::VipServiceClient;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A daemon process with its gRPC and metrics ports.
struct Daemon {
    process: DaemonProcess,
    port: u16,
    metrics: u16,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts a daemon with a data directory of its own (standalone mode: its own sled store).
    fn start(nb: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let mut args = daemon_args(dir.path(), nb);
        args.push("--metrics-listen=127.0.0.1:0".into());
        let process = start(dir.path(), &args, &[]);
        let (port, metrics) = (process.grpc_port(), process.metrics_port());
        Daemon {
            process,
            port,
            metrics,
            _dir: dir,
        }
    }

    /// `ovn_vipd_<name>` now.
    fn metric(&self, name: &str) -> f64 {
        let (_, text) = http_get(self.metrics, "/metrics");
        sample(&text, &format!("ovn_vipd_{name}")).unwrap_or(-1.0)
    }

    fn active(&self) -> bool {
        self.metric("active") == 1.0
    }

    async fn health(&self) -> ServingStatus {
        let channel = plain_channel(self.port).await;
        let status = HealthClient::new(channel)
            .check(HealthCheckRequest { service: String::new() })
            .await
            .expect("health check")
            .into_inner()
            .status;
        ServingStatus::try_from(status).unwrap_or(ServingStatus::Unknown)
    }
}

fn aap(name: &str) -> pb::Vip {
    common::requests::aap(name, "ovn-default")
}

async fn create_subnet(channel: &Channel) -> Result<(), tonic::Status> {
    SubnetServiceClient::new(channel.clone())
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/24", ""))
        .await
        .map(|_| ())
}

async fn create_vip(channel: &Channel, name: &str) -> Result<(), tonic::Status> {
    VipServiceClient::new(channel.clone())
        .create_vip(pb::CreateVipRequest { vip: Some(aap(name)) })
        .await
        .map(|_| ())
}

fn ports(nb: &OvsdbServer) -> Vec<String> {
    let mut names: Vec<String> = nb
        .nbctl(&["--bare", "--columns=name", "list", "logical_switch_port"])
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_nb_waits_as_a_standby_and_takes_over_when_the_first_dies() {
    let dir = tempfile::tempdir().unwrap();
    let nb = OvsdbServer::nb(dir.path());
    let mut first = Daemon::start(&nb.unix_remote());
    let first_channel = plain_channel(first.port).await;
    create_subnet(&first_channel).await.unwrap();
    create_vip(&first_channel, "va").await.unwrap();
    common::process::wait_ready(&first_channel, "va").await;
    first
        .process
        .wait_for_log("active: this daemon writes NB", Duration::from_secs(5));

    let second = Daemon::start(&nb.unix_remote());
    second.process.wait_for_log("standby", Duration::from_secs(10));
    let second_channel = plain_channel(second.port).await;

    // It says so: health, metric, and a mutating call refused with UNAVAILABLE; reads served.
    assert_eq!(second.health().await, ServingStatus::NotServing);
    assert_eq!(first.health().await, ServingStatus::Serving);
    assert_eq!(second.metric("active"), 0.0);
    assert_eq!(first.metric("active"), 1.0);
    let refused = create_subnet(&second_channel)
        .await
        .expect_err("a standby refuses changes");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("standby"), "{refused:?}");
    let refused = create_vip(&second_channel, "vb")
        .await
        .expect_err("a standby refuses changes");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    VipServiceClient::new(second_channel.clone())
        .list_vips(pb::ListVipsRequest::default())
        .await
        .expect("a standby serves reads");

    // The active goes on writing; the standby never sends a transaction to NB (it would have
    // collected va, which its own store does not hold).
    create_vip(&first_channel, "vc").await.unwrap();
    common::process::wait_ready(&first_channel, "vc").await;
    assert_eq!(ports(&nb), ["va", "vc"]);
    assert_eq!(second.metric("nb_transactions_total"), 0.0);
    assert!(first.metric("nb_transactions_total") >= 2.0);

    // SIGKILL the active: its session ends, the server grants the lock to the waiting standby.
    // Takeover time as the issue defines it: active killed -> first acknowledged change on the
    // new active (the client retries UNAVAILABLE answers).
    let killed = Instant::now();
    first.process.signal("KILL");
    let acknowledged = common::wait_for("a takeover within 5 s", Duration::from_secs(5), || {
        let channel = second_channel.clone();
        async move {
            match create_subnet(&channel).await {
                Ok(()) => Ok(killed.elapsed()),
                Err(status) => {
                    // Until then the standby refuses as UNAVAILABLE (clients retry), nothing else.
                    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                    Err(format!("{status:?}"))
                }
            }
        }
    })
    .await;
    assert!(acknowledged < Duration::from_secs(3), "takeover took {acknowledged:?}");
    let _ = first.process.wait(Duration::from_secs(5));
    assert!(second.active());
    second
        .process
        .wait_for_log("active: this daemon writes NB", Duration::from_secs(1));
    assert_eq!(second.health().await, ServingStatus::Serving);
    eprintln!("takeover: SIGKILL of the active -> first acknowledged change on the new one: {acknowledged:?}");
}

fn lock_client(nb: &OvsdbServer) -> (Client, tokio::sync::broadcast::Receiver<ClientEvent>) {
    let remotes = ovn_vipd::ovsdb::Remote::parse_list(&nb.unix_remote()).unwrap();
    let mut config = ovn_vipd::nb::client_config(remotes);
    config.locks = vec![ovn_vipd::role::LOCK_NAME.to_string()];
    Client::start_subscribed(config)
}

fn switch_insert(name: &str) -> Operation {
    Operation::Insert {
        table: "Logical_Switch".into(),
        row: Row::from([("name".to_string(), Value::string(name.to_string()))]),
        uuid_name: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_lock_was_stolen_cannot_land_a_write_the_server_refuses_the_assert() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let nb = OvsdbServer::nb(dir.path());
    let lock = ovn_vipd::role::LOCK_NAME;
    let (holder, mut events) = lock_client(&nb);
    let granted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(ClientEvent::LockAcquired(name)) = events.recv().await {
                return name;
            }
        }
    })
    .await
    .expect("the lock is granted");
    assert_eq!(granted, lock);
    let assert = Operation::Assert { lock: lock.to_string() };
    holder
        .transact(&[assert.clone(), switch_insert("while-held")])
        .await
        .expect("the holder writes");

    // Another session steals the lock (as a new active would get it after the holder's session
    // was lost); the old holder, not yet told, writes with its assert.
    let thief = Client::start(ovn_vipd::nb::client_config(
        ovn_vipd::ovsdb::Remote::parse_list(&nb.unix_remote()).unwrap(),
    ));
    thief.wait_connected(Duration::from_secs(10)).await.unwrap();
    assert!(thief.steal(lock).await.unwrap());
    let refused = holder
        .transact(&[assert.clone(), switch_insert("after-stolen")])
        .await
        .expect_err("the assert fails");
    assert!(
        ovn_vipd::reconcile::is_lock_refusal(&refused),
        "RFC 7047 5.2.10 'not owner': {refused:?}"
    );
    match &refused {
        OvsdbError::Transaction(error) => assert_eq!(error.index, 0, "{error:?}"),
        other => panic!("{other:?}"),
    }
    let switches = nb.nbctl(&["ls-list"]);
    assert!(switches.contains("while-held"), "{switches}");
    assert!(
        !switches.contains("after-stolen"),
        "nothing of the refused transaction landed: {switches}"
    );
    // The server's own log shows the refusal.
    assert!(nb.log().contains("not owner"), "the NB log records the refusal");
    holder.shutdown().await;
    thief.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_active_whose_lock_is_taken_writes_nothing_when_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let nb = OvsdbServer::nb(dir.path());
    let daemon = Daemon::start(&nb.unix_remote());
    let channel = plain_channel(daemon.port).await;
    create_subnet(&channel).await.unwrap();
    create_vip(&channel, "va").await.unwrap();
    common::process::wait_ready(&channel, "va").await;

    // Paused (as a stuck host or a long GC would), and meanwhile another session takes the lock.
    daemon.process.signal("STOP");
    let thief = Client::start(ovn_vipd::nb::client_config(
        ovn_vipd::ovsdb::Remote::parse_list(&nb.unix_remote()).unwrap(),
    ));
    thief.wait_connected(Duration::from_secs(10)).await.unwrap();
    assert!(thief.steal(ovn_vipd::role::LOCK_NAME).await.unwrap());
    // A change is waiting for it when it resumes (the request sits in its socket).
    let pending = {
        let channel = channel.clone();
        tokio::spawn(async move { create_vip(&channel, "vp").await })
    };
    // Kept: give the request time to reach the paused daemon's socket (either order is checked).
    tokio::time::sleep(Duration::from_millis(200)).await;
    daemon.process.signal("CONT");
    let answer = pending.await.unwrap();
    // Whichever it saw first (the `stolen` notification or the request), no write lands: either
    // it refused the change as a standby, or its transaction's assert was refused by NB.
    wait_until_async("the daemon to be a standby", Duration::from_secs(10), || {
        !daemon.active()
    })
    .await;
    assert_eq!(ports(&nb), ["va"], "nothing written after the lock was taken");
    let log = daemon.process.stderr();
    match answer {
        Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        Ok(()) => {
            // Accepted into its store: its pass was fenced, or never ran.
            assert!(log.contains("standby") || log.contains("the lock is not ours"), "{log}");
        }
    }
    // The thief lets go: the daemon, still waiting for the lock, gets it back and catches up.
    thief.unlock(ovn_vipd::role::LOCK_NAME).await.unwrap();
    wait_until_async("the daemon active again", Duration::from_secs(10), || daemon.active()).await;
    thief.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nb_leader_killed_under_the_active_leaves_exactly_one_active_and_one_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = NbCluster::start(dir.path());
    let remotes = cluster.remotes();
    let first = Daemon::start(&remotes);
    let channel = plain_channel(first.port).await;
    create_subnet(&channel).await.unwrap();
    create_vip(&channel, "va").await.unwrap();
    common::process::wait_ready(&channel, "va").await;
    let second = Daemon::start(&remotes);
    second.process.wait_for_log("standby", Duration::from_secs(15));

    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    cluster.members[leader].kill();
    // Through the election and reconnects: never two active at once, and then exactly one.
    // Not common::wait_until: the invariant (never two active) is checked at every look, and
    // the end is a state that has lasted 3 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut settled_since: Option<Instant> = None;
    loop {
        let (a, b) = (first.active(), second.active());
        assert!(!(a && b), "two daemons active at once");
        if a ^ b {
            let since = *settled_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(3) {
                break;
            }
        } else {
            settled_since = None;
        }
        assert!(
            Instant::now() < deadline,
            "no single active daemon after the leader change"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The previous holder asks the new leader first (the standby waits its grace period), so it
    // keeps its part; the standby has written nothing.
    assert!(
        first.active(),
        "the active before the leader change is the active after it"
    );
    assert_eq!(second.metric("nb_transactions_total"), 0.0);
    create_vip(&channel, "vb").await.unwrap();
    common::process::wait_ready(&channel, "vb").await;
    let survivor = &cluster.members[(leader + 1) % 3];
    wait_until("both ports in NB", Duration::from_secs(10), || {
        ports(survivor) == ["va", "vb"]
    });
    for (name, daemon) in [("first", &first), ("second", &second)] {
        for line in daemon.process.stderr().lines().filter(|line| {
            line.contains("active")
                || line.contains("standby")
                || line.contains("unavailable")
                || line.contains("ready")
        }) {
            eprintln!("{name}: {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_repair_does_not_write_beside_a_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let nb = OvsdbServer::nb(dir.path());
    let daemon = Daemon::start(&nb.unix_remote());
    let channel = plain_channel(daemon.port).await;
    create_subnet(&channel).await.unwrap();
    create_vip(&channel, "va").await.unwrap();
    common::process::wait_ready(&channel, "va").await;
    // A repair from another (empty) store would collect va as an orphan: it must not write.
    let other = tempfile::tempdir().unwrap();
    let data_dir = format!("--data-dir={}", other.path().join("data").display());
    let ovn_nb = format!("--ovn-nb={}", nb.unix_remote());
    let (code, _, stderr) = common::process::run_binary(&["check", &data_dir, &ovn_nb, "--repair"], &[]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("holds the NB lock ovn_vipd"), "{stderr}");
    assert_eq!(ports(&nb), ["va"]);
    // Without --repair it only reports (no lock needed).
    let (_, stdout, stderr) = common::process::run_binary(&["check", &data_dir, &ovn_nb], &[]);
    assert!(
        format!("{stdout}{stderr}").contains("owned NB row without an object"),
        "{stdout}{stderr}"
    );
    assert_eq!(ports(&nb), ["va"]);
}

/// A FAULT INJECTOR, not a server: a TCP proxy in front of the real NB that can hold back the
/// server's `stolen` notifications, as they are when their receiver is paused or far away, so
/// the daemon writes while it still believes it holds the lock.
struct StolenDelayingProxy {
    port: u16,
    hold: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl StolenDelayingProxy {
    async fn start(upstream: u16) -> StolenDelayingProxy {
        use futures::StreamExt;
        use std::sync::atomic::Ordering;
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let held = hold.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let held = held.clone();
                tokio::spawn(async move {
                    let (mut client_read, mut client_write) = client.into_split();
                    let (server_read, mut server_write) = server.into_split();
                    let upstream = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    });
                    let mut messages =
                        tokio_util::codec::FramedRead::new(server_read, ovn_vipd::ovsdb::codec::JsonCodec::new());
                    let mut delayed = Vec::new();
                    while let Some(Ok(message)) = messages.next().await {
                        let json: serde_json::Value = serde_json::from_slice(&message).unwrap_or_default();
                        if json.get("method").and_then(|m| m.as_str()) == Some("stolen") && held.load(Ordering::SeqCst)
                        {
                            delayed.push(message);
                            continue;
                        }
                        if !held.load(Ordering::SeqCst) {
                            for message in delayed.drain(..) {
                                let _ = client_write.write_all(&message).await;
                            }
                        }
                        if client_write.write_all(&message).await.is_err() {
                            break;
                        }
                    }
                    upstream.abort();
                });
            }
        });
        StolenDelayingProxy { port, hold }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_that_has_not_yet_heard_its_lock_was_stolen_is_fenced_by_the_assert() {
    let dir = tempfile::tempdir().unwrap();
    let nb = OvsdbServer::nb(dir.path());
    let proxy = StolenDelayingProxy::start(nb.port).await;
    let daemon = Daemon::start(&format!("tcp:127.0.0.1:{}", proxy.port));
    let channel = plain_channel(daemon.port).await;
    create_subnet(&channel).await.unwrap();
    create_vip(&channel, "va").await.unwrap();
    common::process::wait_ready(&channel, "va").await;

    // The lock is taken; the daemon's `stolen` notification is still on its way.
    proxy.hold.store(true, std::sync::atomic::Ordering::SeqCst);
    let thief = Client::start(ovn_vipd::nb::client_config(
        ovn_vipd::ovsdb::Remote::parse_list(&nb.unix_remote()).unwrap(),
    ));
    thief.wait_connected(Duration::from_secs(10)).await.unwrap();
    assert!(thief.steal(ovn_vipd::role::LOCK_NAME).await.unwrap());
    assert!(daemon.active(), "the daemon has not heard yet");
    // So it accepts a change and its pass writes NB, with the assert: NB refuses it whole.
    create_vip(&channel, "vp").await.unwrap();
    daemon.process.wait_for_log(
        "NB refused the write: the lock is not ours; standby",
        Duration::from_secs(10),
    );
    assert!(nb.log().contains("not owner"), "the NB log records the refused assert");
    assert_eq!(ports(&nb), ["va"], "nothing of the fenced write landed");
    assert!(!daemon.active());
    let refused = create_vip(&channel, "vq").await.expect_err("a standby refuses changes");
    assert_eq!(refused.code(), tonic::Code::Unavailable);

    // The notification arrives, the thief lets go: the daemon's queued `lock` is granted and it
    // catches up with what it had accepted.
    proxy.hold.store(false, std::sync::atomic::Ordering::SeqCst);
    thief.unlock(ovn_vipd::role::LOCK_NAME).await.unwrap();
    wait_until_async("the daemon active again", Duration::from_secs(10), || daemon.active()).await;
    wait_until_async("vp in NB", Duration::from_secs(10), || ports(&nb) == ["va", "vp"]).await;
    thief.shutdown().await;
}

#[test]
fn systemd_hears_ready_from_a_standby_with_a_status_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let nb = OvsdbServer::nb(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let first = Daemon::start(&nb.unix_remote());
    runtime.block_on(async {
        let channel = plain_channel(first.port).await;
        create_subnet(&channel).await.unwrap();
    });
    first
        .process
        .wait_for_log("active: this daemon writes NB", Duration::from_secs(10));
    // The second under systemd (Type=notify): a standby is up and doing its job, so systemd must
    // hear READY=1 (or `systemctl start` would time out on every standby host).
    let notify_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let second_dir = tempfile::tempdir().unwrap();
    let mut args = daemon_args(second_dir.path(), &nb.unix_remote());
    args.push("--metrics-listen=off".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _second = DaemonProcess::start(
        second_dir.path(),
        &args,
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
    );
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(15);
    while !seen.iter().any(|line: &String| line == "READY=1") {
        assert!(Instant::now() < deadline, "no READY=1 from the standby: {seen:?}");
        if let Ok(length) = socket.recv(&mut buffer) {
            seen.extend(String::from_utf8_lossy(&buffer[..length]).lines().map(str::to_string));
        }
    }
    assert!(
        seen.iter()
            .any(|line| line.starts_with("STATUS=") && line.contains("standby")),
        "{seen:?}"
    );
}
