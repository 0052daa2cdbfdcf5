//! Clustered mode (`--cluster-db`): daemons beside one NB share the `OVN_VIPD` database, a real
//! 3-member RAFT cluster of `ovsdb-server` processes made from `deploy/ovn-vipd.ovsschema`. Exactly
//! one daemon is active (the cluster lock, then NB's); a change is acknowledged once its cluster
//! transaction committed; every daemon mirrors the database into its sled store and a standby's
//! reads follow it; a takeover needs no load; a deposed active cannot commit; the indexes refuse a
//! second owner. Real daemons as processes, real servers, SIGKILL/SIGSTOP.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::process::{http_get, plain_channel, sample, DaemonProcess};
use common::{reserve_port, wait_until, NbCluster, OvsdbServer, ReservedPort};
use ovn_vipd::api::proto::v1 as pb;
use ovn_vipd::cluster::{epoch_wait, rows};
use ovn_vipd::ovsdb::{Atom, Client, ClientConfig, Operation, OvsdbError, Remote, Value};
use ovn_vipd::store::{Write, WriteBatch};
use pb::subnet_service_client::SubnetServiceClient;
use pb::vip_service_client::VipServiceClient;

const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/ovn-vipd.ovsschema");

/// One NB and one 3-member OVN_VIPD cluster.
struct Setup {
    nb: OvsdbServer,
    vipd: NbCluster,
    dir: tempfile::TempDir,
}

impl Setup {
    fn start() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let nb = OvsdbServer::nb(dir.path());
        let vipd = NbCluster::start_schema(dir.path(), SCHEMA, "OVN_VIPD", "vipd");
        Setup { nb, vipd, dir }
    }

    /// A daemon named `name` (its data directory `<dir>/<name>` is kept across restarts).
    fn daemon(&self, name: &str) -> Daemon {
        // Fixed ports: the advertised address and a restart on the same address need them known.
        Daemon::start(self, name, reserve_port(), reserve_port())
    }
}

struct Daemon {
    process: DaemonProcess,
    name: String,
    port: u16,
    metrics: u16,
    data: PathBuf,
    reserved: (ReservedPort, ReservedPort),
}

impl Daemon {
    fn start(setup: &Setup, name: &str, grpc: ReservedPort, metrics_port: ReservedPort) -> Daemon {
        let (port, metrics) = (grpc.port, metrics_port.port);
        let data = setup.dir.path().join(name);
        std::fs::create_dir_all(&data).unwrap();
        let args = [
            format!("--ovn-nb={}", setup.nb.tcp_remote()),
            format!("--cluster-db={}", setup.vipd.remotes()),
            format!("--advertise-address=tcp:127.0.0.1:{port}"),
            format!("--data-dir={}", data.join("data").display()),
            format!("--listen=tcp:127.0.0.1:{port}"),
            format!("--metrics-listen=127.0.0.1:{metrics}"),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = std::env::var("CLUSTER_TEST_DAEMON_LOG").unwrap_or_else(|_| "info".into());
        let process = DaemonProcess::start(&data, &args, &[("OVN_VIPD_LOG", log.as_str())]);
        Daemon {
            process,
            name: name.to_string(),
            port,
            metrics,
            data,
            reserved: (grpc, metrics_port),
        }
    }

    /// The same daemon again (same data directory and ports) after it stopped.
    fn restart(self, setup: &Setup) -> Daemon {
        let Daemon {
            process,
            name,
            reserved,
            ..
        } = self;
        drop(process);
        Daemon::start(setup, &name, reserved.0, reserved.1)
    }

    fn metric(&self, name: &str) -> f64 {
        match std::net::TcpStream::connect(("127.0.0.1", self.metrics)) {
            Ok(_) => sample(&http_get(self.metrics, "/metrics").1, &format!("ovn_vipd_{name}")).unwrap_or(-1.0),
            Err(_) => -1.0,
        }
    }

    fn active(&self) -> bool {
        self.metric("active") == 1.0
    }

    fn address(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.port)
    }

    async fn vips(&self) -> VipServiceClient<tonic::transport::Channel> {
        VipServiceClient::new(plain_channel(self.port).await)
    }

    async fn create_subnet(&self) {
        SubnetServiceClient::new(plain_channel(self.port).await)
            .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/24", ""))
            .await
            .expect("create subnet on the active");
    }

    async fn create_vip(&self, name: &str) -> Result<pb::Vip, tonic::Status> {
        let mut vips = self.vips().await;
        let request = pb::CreateVipRequest {
            vip: Some(pb::Vip {
                name: name.into(),
                subnet: "ovn-default".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
        };
        tokio::time::timeout(Duration::from_secs(10), vips.create_vip(request))
            .await
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("test timeout")))
            .map(tonic::Response::into_inner)
    }

    /// Every VIP this daemon serves: name → (v4, mac).
    async fn list(&self) -> std::collections::BTreeMap<String, (String, String)> {
        let mut vips = self.vips().await;
        let mut all = std::collections::BTreeMap::new();
        let mut token = String::new();
        loop {
            let page = vips
                .list_vips(pb::ListVipsRequest {
                    page_size: 1000,
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await
                .expect("list vips")
                .into_inner();
            for vip in page.vips {
                let status = vip.status.unwrap_or_default();
                all.insert(vip.name, (status.v4ip, status.mac));
            }
            if page.next_page_token.is_empty() {
                return all;
            }
            token = page.next_page_token;
        }
    }
}

/// Waits until exactly one of `daemons` is active and returns its index.
fn one_active(daemons: &[&Daemon], timeout: Duration) -> usize {
    let mut active = Vec::new();
    wait_until("exactly one active daemon", timeout, || {
        active = daemons
            .iter()
            .enumerate()
            .filter(|(_, daemon)| daemon.active())
            .map(|(index, _)| index)
            .collect();
        active.len() == 1
    });
    active[0]
}

/// No address and no MAC has two owners among `vips`.
fn distinct(vips: &std::collections::BTreeMap<String, (String, String)>) {
    let addresses: BTreeSet<&String> = vips.values().map(|(v4, _)| v4).collect();
    let macs: BTreeSet<&String> = vips.values().map(|(_, mac)| mac).collect();
    assert_eq!(addresses.len(), vips.len(), "an address with two owners: {vips:?}");
    assert_eq!(macs.len(), vips.len(), "a MAC with two owners: {vips:?}");
}

/// A client of the cluster database (the leader), for what the test reads or forces there.
async fn cluster_client(setup: &Setup) -> Client {
    let remotes = Remote::parse_list(&setup.vipd.remotes()).unwrap();
    let mut config = ClientConfig::new(remotes, rows::DATABASE);
    config.monitored_tables = rows::TABLES.iter().map(|table| table.to_string()).collect();
    let client = Client::start(config);
    client.wait_connected(Duration::from_secs(20)).await.unwrap();
    client
}

fn active_epoch(client: &Client) -> i64 {
    client
        .cache()
        .rows(rows::ACTIVE)
        .next()
        .and_then(|(_, row)| row.get("epoch").and_then(Value::as_atom).and_then(Atom::as_i64))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_active_and_the_standby_reads_what_it_committed() {
    common::init_tracing();
    let setup = Setup::start();
    let a = setup.daemon("a");
    let b = setup.daemon("b");
    let daemons = [&a, &b];
    let active = daemons[one_active(&daemons, Duration::from_secs(20))];
    let standby = daemons.iter().find(|daemon| daemon.port != active.port).unwrap();
    active.create_subnet().await;
    let mut created = std::collections::BTreeMap::new();
    for index in 0..20 {
        let vip = active
            .create_vip(&format!("v{index}"))
            .await
            .expect("create on the active");
        let status = vip.status.unwrap();
        created.insert(vip.name, (status.v4ip, status.mac));
    }
    distinct(&created);
    // The standby's reads follow the replica.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = standby.list().await;
        if seen == created {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never served {created:?}; it serves {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A change on the standby is refused, naming the active.
    let refused = standby
        .create_vip("on-standby")
        .await
        .expect_err("a standby refuses changes");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let named = refused
        .metadata()
        .get("ovn-vipd-active")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    assert_eq!(named, Some(active.address()), "{refused:?}");
    assert!(!active.list().await.contains_key("on-standby"));
    // Exactly one daemon wrote NB: the ports are the active's, nothing was deleted.
    let ports = setup
        .nb
        .nbctl(&["--bare", "--columns=name", "list", "logical_switch_port"]);
    for name in created.keys() {
        assert!(
            ports.lines().any(|line| line == name),
            "port {name} missing in NB: {ports}"
        );
    }
    assert!(a.process.stderr().contains("replica downloaded in full"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_active_the_standby_serves_writes_within_3s_with_every_acknowledged_change() {
    common::init_tracing();
    let setup = Setup::start();
    let a = setup.daemon("a");
    let b = setup.daemon("b");
    let mut daemons = vec![a, b];
    let active_index = one_active(&daemons.iter().collect::<Vec<_>>(), Duration::from_secs(20));
    daemons[active_index].create_subnet().await;
    let mut acknowledged = std::collections::BTreeMap::new();
    for index in 0..30 {
        let vip = daemons[active_index]
            .create_vip(&format!("before-{index}"))
            .await
            .expect("create");
        let status = vip.status.unwrap();
        acknowledged.insert(vip.name, (status.v4ip, status.mac));
    }
    let standby = daemons.remove(1 - active_index);
    let killed = Instant::now();
    daemons[0].process.signal("KILL");
    let mut attempt = 0;
    let served = loop {
        attempt += 1;
        match standby.create_vip("after-kill").await {
            Ok(vip) => break vip,
            Err(status) => {
                assert!(
                    killed.elapsed() < Duration::from_secs(10),
                    "no write served after the kill: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let takeover = killed.elapsed();
    eprintln!("takeover: first acknowledged write {takeover:?} after SIGKILL ({attempt} attempts)");
    assert!(takeover < Duration::from_secs(3), "takeover took {takeover:?}");
    let status = served.status.unwrap();
    acknowledged.insert(served.name, (status.v4ip, status.mac));
    let now = standby.list().await;
    for (name, held) in &acknowledged {
        assert_eq!(now.get(name), Some(held), "acknowledged {name} lost or changed");
    }
    distinct(&now);
    assert!(standby.active());
    // A warm standby: its registry already followed the replica, the takeover loaded nothing.
    let log = standby.process.stderr();
    let line = log
        .lines()
        .find(|line| line.contains("active in the cluster database"))
        .unwrap_or_default()
        .to_string();
    assert!(line.contains("registry_loaded=false"), "{line}");
    // The new active converges NB: a port for every acknowledged VIP, the new one included.
    wait_until(
        "NB to hold every acknowledged VIP's port",
        Duration::from_secs(10),
        || {
            let ports = setup
                .nb
                .nbctl(&["--bare", "--columns=name", "list", "logical_switch_port"]);
            let ports: BTreeSet<&str> = ports.lines().collect();
            acknowledged.keys().all(|name| ports.contains(name.as_str()))
        },
    );
}

/// A VIP naming a subnet that does not exist yet goes through the cluster like any write: the
/// pending record (no addresses) is committed and replicated, so the standbys serve it pending
/// (`SubnetNotFound`); after a SIGKILL of the active, the subnet created on the new active
/// allocates it from the replicated record (the address it requested), NB gets its virtual port,
/// and the remaining standby serves it allocated, no longer `SubnetNotFound`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pending_vip_and_its_later_allocation_go_through_the_cluster() {
    common::init_tracing();
    let setup = Setup::start();
    let mut daemons = vec![setup.daemon("a"), setup.daemon("b"), setup.daemon("c")];
    let active_index = one_active(&daemons.iter().collect::<Vec<_>>(), Duration::from_secs(20));
    let request = pb::CreateVipRequest {
        vip: Some(pb::Vip {
            name: "early".into(),
            subnet: "ovn-default".into(),
            namespace: "default".into(),
            v4ip: "10.16.0.40".into(),
            ..Default::default()
        }),
    };
    let pending = daemons[active_index]
        .vips()
        .await
        .create_vip(request)
        .await
        .expect("a VIP before its subnet is accepted")
        .into_inner();
    let status = pending.status.unwrap_or_default();
    assert!(status.v4ip.is_empty(), "{status:?}");
    assert_eq!(status.conditions[0].reason, "SubnetNotFound", "{status:?}");
    let killed = daemons.remove(active_index);
    for standby in &daemons {
        wait_for_standby_to_serve(standby, "early", "").await;
        assert_eq!(ready_reason(standby, "early").await, "SubnetNotFound");
    }
    killed.process.signal("KILL");
    // A standby takes over; the subnet is created there.
    let deadline = Instant::now() + Duration::from_secs(10);
    let new_active = 'created: loop {
        for (index, daemon) in daemons.iter().enumerate() {
            let mut subnets = SubnetServiceClient::new(plain_channel(daemon.port).await);
            let request = common::subnet_request("ovn-default", "10.16.0.0/24", "");
            match subnets.create_subnet(request).await {
                Ok(_) => break 'created index,
                Err(status) => assert!(Instant::now() < deadline, "no subnet served after the kill: {status:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        daemons[new_active].list().await.get("early").map(|(v4, _)| v4.as_str()),
        Some("10.16.0.40")
    );
    wait_until("NB to hold the VIP's virtual port", Duration::from_secs(10), || {
        setup
            .nb
            .nbctl(&["--if-exists", "get", "logical_switch_port", "early", "type"])
            .trim()
            == "virtual"
    });
    let standby = &daemons[1 - new_active];
    wait_for_standby_to_serve(standby, "early", "10.16.0.40").await;
    assert_ne!(ready_reason(standby, "early").await, "SubnetNotFound");
}

/// The reason of VIP `name`'s Ready condition as `daemon` serves it.
async fn ready_reason(daemon: &Daemon, name: &str) -> String {
    let vip = daemon
        .vips()
        .await
        .get_vip(pb::GetVipRequest { name: name.into() })
        .await
        .expect("get vip")
        .into_inner();
    let status = vip.status.unwrap_or_default();
    status
        .conditions
        .iter()
        .find(|condition| condition.r#type == "Ready")
        .map(|condition| condition.reason.clone())
        .unwrap_or_default()
}

/// Waits until `daemon` lists VIP `name` with `v4` as its address.
async fn wait_for_standby_to_serve(daemon: &Daemon, name: &str, v4: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = daemon.list().await;
        if seen.get(name).is_some_and(|(address, _)| address == v4) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never served with {v4:?}: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_restart_resumes_its_replica_from_its_last_transaction() {
    common::init_tracing();
    let setup = Setup::start();
    let a = setup.daemon("a");
    let b = setup.daemon("b");
    let daemons = [&a, &b];
    let active_index = one_active(&daemons, Duration::from_secs(20));
    let (active, standby) = if active_index == 0 { (a, b) } else { (b, a) };
    active.create_subnet().await;
    for index in 0..10 {
        active.create_vip(&format!("first-{index}")).await.expect("create");
    }
    standby
        .process
        .wait_for_log("replica downloaded in full", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while standby.list().await.len() != 10 {
        assert!(Instant::now() < deadline, "the standby never held the first VIPs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let standby_name = standby.name.clone();
    standby.process.signal("TERM");
    let mut standby = standby;
    standby.process.wait(Duration::from_secs(15));
    for index in 0..10 {
        active
            .create_vip(&format!("second-{index}"))
            .await
            .expect("create while the standby is down");
    }
    let standby = standby.restart(&setup);
    assert_eq!(standby.name, standby_name);
    standby
        .process
        .wait_for_log("replica resumed from transaction", Duration::from_secs(20));
    let log = standby.process.stderr();
    assert!(
        !log.contains("replica downloaded in full"),
        "a full download after a restart:\n{log}"
    );
    let mut resumed = -1.0;
    wait_until("the resume counted", Duration::from_secs(10), || {
        resumed = standby.metric("replica_syncs_total{kind=\"resumed\"}");
        resumed == 1.0
    });
    assert_eq!(
        standby.metric("replica_syncs_total{kind=\"full\"}"),
        -1.0,
        "no full download is counted"
    );
    // The replica is current: the standby serves what was created while it was down.
    let expected = active.list().await;
    assert_eq!(expected.len(), 20);
    let deadline = Instant::now() + Duration::from_secs(10);
    while standby.list().await != expected {
        assert!(
            Instant::now() < deadline,
            "the restarted standby never served every VIP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(standby.data.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_leader_killed_under_the_active_writes_go_on_with_one_owner_each() {
    common::init_tracing();
    let mut setup = Setup::start();
    let a = setup.daemon("a");
    let b = setup.daemon("b");
    let active_index = one_active(&[&a, &b], Duration::from_secs(20));
    let daemons = [&a, &b];
    daemons[active_index].create_subnet().await;
    let mut acknowledged = std::collections::BTreeMap::new();
    for index in 0..10 {
        let vip = daemons[active_index]
            .create_vip(&format!("before-{index}"))
            .await
            .expect("create");
        let status = vip.status.unwrap();
        acknowledged.insert(vip.name, (status.v4ip, status.mac));
    }
    let leader = setup.vipd.wait_for_leader(Duration::from_secs(10));
    setup.vipd.members[leader].kill();
    // Writes go on (through whichever daemon is active; a refusal is retried as clients do).
    let started = Instant::now();
    for index in 0..10 {
        let name = format!("after-{index}");
        let vip = loop {
            let mut last = None;
            for daemon in daemons {
                match daemon.create_vip(&name).await {
                    Ok(vip) => {
                        last = None;
                        acknowledged.insert(vip.name.clone(), {
                            let status = vip.status.clone().unwrap();
                            (status.v4ip, status.mac)
                        });
                        break;
                    }
                    Err(status) => last = Some(status),
                }
            }
            match last {
                None => break name.clone(),
                Some(status) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "no write served: {status:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        assert_eq!(vip, name);
    }
    eprintln!("10 writes after the leader's death took {:?}", started.elapsed());
    let active_now = one_active(&[&a, &b], Duration::from_secs(20));
    let standby_now = 1 - active_now;
    let served = daemons[active_now].list().await;
    for (name, held) in &acknowledged {
        assert_eq!(served.get(name), Some(held), "acknowledged {name} lost or changed");
    }
    distinct(&served);
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemons[standby_now].list().await != served {
        assert!(Instant::now() < deadline, "the standby's replica never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The cluster database itself: one row per address, each owned by its VIP.
    let client = cluster_client(&setup).await;
    let owners: Vec<(String, String)> = client
        .cache()
        .rows(rows::ADDRESS)
        .map(|(_, row)| {
            (
                row.get("address")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                row.get("owner").and_then(Value::as_str).unwrap_or_default().to_string(),
            )
        })
        .collect();
    let unique: BTreeSet<&String> = owners.iter().map(|(address, _)| address).collect();
    assert_eq!(unique.len(), owners.len(), "{owners:?}");
    assert_eq!(owners.len(), acknowledged.len());
    client.shutdown().await;
    setup.vipd.members[leader].start();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemon_that_lost_its_lock_cannot_land_a_cluster_write() {
    common::init_tracing();
    let setup = Setup::start();
    let a = setup.daemon("a");
    let b = setup.daemon("b");
    let active_index = one_active(&[&a, &b], Duration::from_secs(20));
    let daemons = [&a, &b];
    let (old, new) = (daemons[active_index], daemons[1 - active_index]);
    old.create_subnet().await;
    old.create_vip("kept").await.expect("create");
    let client = cluster_client(&setup).await;
    wait_until("the replica of the test client", Duration::from_secs(10), || {
        active_epoch(&client) > 0
    });
    let old_epoch = active_epoch(&client);

    // The fence itself, on the real servers: what a deposed active would send. Without the lock
    // the `assert` refuses; with the lock but a stale epoch the `wait` does.
    let mut batch = WriteBatch::new();
    batch.push(Write::DeleteVip("kept".into()));
    let mut operations = vec![
        Operation::Assert {
            lock: "ovn_vipd".into(),
        },
        epoch_wait(old_epoch),
    ];
    rows::operations(&batch, &mut operations).unwrap();
    match client.transact(&operations).await {
        Err(OvsdbError::Transaction(error)) => assert_eq!(error.error, "not owner", "{error:?}"),
        other => panic!("a write without the lock was not refused: {other:?}"),
    }

    // The real thing: pause the active past the server's inactivity probe; the other daemon takes
    // over (a new epoch); the paused one is then sent a change, which must not land.
    old.process.signal("STOP");
    let paused = Instant::now();
    wait_until("the other daemon to take over", Duration::from_secs(40), || {
        new.active()
    });
    eprintln!("takeover from a paused active after {:?}", paused.elapsed());
    wait_until("a new epoch", Duration::from_secs(10), || {
        active_epoch(&client) > old_epoch
    });
    let mut old_vips = old.vips().await;
    let late = tokio::spawn(async move {
        old_vips
            .create_vip(pb::CreateVipRequest {
                vip: Some(pb::Vip {
                    name: "from-the-deposed".into(),
                    subnet: "ovn-default".into(),
                    namespace: "default".into(),
                    ..Default::default()
                }),
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    old.process.signal("CONT");
    let answer = tokio::time::timeout(Duration::from_secs(40), late)
        .await
        .unwrap()
        .unwrap();
    let refused = answer.expect_err("a deposed active acknowledged a change");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    eprintln!("the deposed active's refusal: {}", refused.message());
    // Nowhere: not in the cluster, not on the new active, not on the old one after it caught up.
    assert!(client
        .cache()
        .rows(rows::VIP)
        .all(|(_, row)| row.get("name").and_then(Value::as_str) != Some("from-the-deposed")));
    assert!(!new.list().await.contains_key("from-the-deposed"));
    wait_until("the old active to be a standby", Duration::from_secs(20), || {
        !old.active() && new.active()
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = old.list().await;
        if !seen.contains_key("from-the-deposed") && seen.contains_key("kept") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deposed daemon keeps a trace of the refused change: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the new active goes on.
    new.create_vip("after").await.expect("the new active writes");
    // A holder of the lock with a superseded epoch (a deposed active whose `assert` still
    // passes on its server, as during a leader change) is refused by the epoch `wait`.
    assert!(
        client.steal("ovn_vipd").await.unwrap(),
        "the test client steals the lock"
    );
    match client.transact(&operations).await {
        Err(OvsdbError::Transaction(error)) => assert_eq!(error.error, "timed out", "{error:?}"),
        other => panic!("a write with a superseded epoch was not refused: {other:?}"),
    }
    assert!(new.list().await.contains_key("kept"));
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_owner_of_an_address_is_refused_by_the_index_even_when_forced() {
    common::init_tracing();
    let setup = Setup::start();
    let a = setup.daemon("a");
    one_active(&[&a], Duration::from_secs(20));
    a.create_subnet().await;
    let vip = a.create_vip("owned").await.expect("create");
    let status = vip.status.unwrap();
    let client = cluster_client(&setup).await;
    // Forced: the daemon's own operations for an allocation of the same address and MAC to
    // another owner, as a registry that lost track would send them (fault injection).
    for write in [
        Write::AllocateIp {
            subnet: "ovn-default".into(),
            ip: status.v4ip.parse().unwrap(),
            owner: "vip/intruder".into(),
        },
        Write::AllocateMac {
            subnet: "ovn-default".into(),
            mac: status.mac.parse().unwrap(),
            owner: "vip/intruder".into(),
        },
    ] {
        let mut batch = WriteBatch::new();
        batch.push(write);
        let mut operations = Vec::new();
        rows::operations(&batch, &mut operations).unwrap();
        match client.transact(&operations).await {
            Err(OvsdbError::Transaction(error)) => {
                assert_eq!(error.error, "constraint violation", "{error:?}")
            }
            other => panic!("a second owner was committed: {other:?}"),
        }
    }
    let owners: Vec<String> = client
        .cache()
        .rows(rows::ADDRESS)
        .filter_map(|(_, row)| row.get("owner").and_then(Value::as_str).map(str::to_string))
        .collect();
    assert_eq!(owners, vec!["vip/owned".to_string()]);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standalone_store_is_not_replaced_by_the_replica() {
    common::init_tracing();
    let setup = Setup::start();
    let reserved = reserve_port();
    let port = reserved.port;
    let data = setup.dir.path().join("standalone");
    std::fs::create_dir_all(&data).unwrap();
    // A fixed port: the same arguments start it again in clustered mode below.
    let args = common::process::daemon_args_on(&data, &setup.nb.tcp_remote(), port);
    let mut standalone = common::process::start(&data, &args, &[]);
    SubnetServiceClient::new(plain_channel(port).await)
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/24", ""))
        .await
        .expect("a standalone daemon stores a subnet");
    standalone.signal("TERM");
    standalone.wait(Duration::from_secs(15));
    // The same store in clustered mode: refused at start, naming the store; nothing is replaced.
    let mut clustered = args.clone();
    clustered.push(format!("--cluster-db={}", setup.vipd.remotes()));
    let mut refused = common::process::start(&data, &clustered, &[]);
    let status = refused.wait(Duration::from_secs(15));
    assert!(!status.success());
    let log = refused.stderr();
    assert!(log.contains("holds a standalone daemon's data"), "{log}");
    let mut again = common::process::start(&data, &args, &[]);
    let subnet = SubnetServiceClient::new(plain_channel(port).await)
        .get_subnet(pb::GetSubnetRequest {
            name: "ovn-default".into(),
        })
        .await;
    assert!(subnet.is_ok(), "the standalone data is still there: {subnet:?}");
    again.signal("TERM");
    again.wait(Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_cluster_majority_a_change_fails_unavailable_and_the_registry_drops_it() {
    common::init_tracing();
    let mut setup = Setup::start();
    let a = setup.daemon("a");
    one_active(&[&a], Duration::from_secs(20));
    a.create_subnet().await;
    a.create_vip("before").await.expect("create");
    // The leader loses its majority: it stays connected but can commit nothing, so the change
    // is taken into the registry and queued, and its transaction fails.
    let leader = setup.vipd.wait_for_leader(Duration::from_secs(10));
    for (index, member) in setup.vipd.members.iter_mut().enumerate() {
        if index != leader {
            member.kill();
        }
    }
    let started = Instant::now();
    let refused = a
        .create_vip("while-down")
        .await
        .expect_err("a change without the cluster");
    eprintln!("refused after {:?}: {refused:?}", started.elapsed());
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    // No trace: not in the registry's answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = a.list().await;
        if !seen.contains_key("while-down") {
            assert!(seen.contains_key("before"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the refused change is still served: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The cluster back: the daemon is active again and writes go on; the refused change stays out.
    for (index, member) in setup.vipd.members.iter_mut().enumerate() {
        if index != leader {
            member.start();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        match a.create_vip("after").await {
            Ok(_) => break,
            Err(status) => assert!(
                Instant::now() < deadline,
                "no write after the cluster came back: {status:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A transaction left unanswered by a leader without its majority has an unknown outcome: it
    // may still commit once the majority is back. Either way the daemon serves what the cluster
    // holds (the takeover after the failure reloaded the registry after everything committed).
    let client = cluster_client(&setup).await;
    let in_cluster = || -> BTreeSet<String> {
        client
            .cache()
            .rows(rows::VIP)
            .filter_map(|(_, row)| row.get("name").and_then(Value::as_str).map(str::to_string))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served: BTreeSet<String> = a.list().await.into_keys().collect();
        if served == in_cluster() && served.contains("before") && served.contains("after") {
            eprintln!("after recovery: {served:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon serves {served:?}, the cluster holds {:?}",
            in_cluster()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expected = in_cluster();
    client.shutdown().await;
    // And sled, the replica: a restart from it serves the same.
    let a = a.restart(&setup);
    one_active(&[&a], Duration::from_secs(20));
    let served: BTreeSet<String> = a.list().await.into_keys().collect();
    assert_eq!(served, expected);
}

/// Durable creations per second, clustered (one daemon on the 3-member cluster) against
/// standalone, on this machine: 16 clients creating at once. A measurement, not a check
/// (`cargo test --test cluster creation_rate -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn creation_rate_clustered_against_standalone() {
    async fn rate(port: u16, prefix: &str) -> f64 {
        let channel = plain_channel(port).await;
        SubnetServiceClient::new(channel.clone())
            .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/16", ""))
            .await
            .expect("subnet");
        let total = 2000;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for worker in 0..16 {
            let channel = channel.clone();
            let prefix = prefix.to_string();
            tasks.push(tokio::spawn(async move {
                let mut vips = VipServiceClient::new(channel);
                for index in (worker..total).step_by(16) {
                    vips.create_vip(pb::CreateVipRequest {
                        vip: Some(pb::Vip {
                            name: format!("{prefix}-{index}"),
                            subnet: "ovn-default".into(),
                            namespace: "default".into(),
                            ..Default::default()
                        }),
                    })
                    .await
                    .expect("create");
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        total as f64 / started.elapsed().as_secs_f64()
    }
    let setup = Setup::start();
    let clustered = setup.daemon("clustered");
    one_active(&[&clustered], Duration::from_secs(20));
    let clustered_rate = rate(clustered.port, "c").await;
    let data = setup.dir.path().join("standalone");
    std::fs::create_dir_all(&data).unwrap();
    // Its own NB, so both daemons are active.
    let nb = OvsdbServer::nb(&data);
    let args = common::process::daemon_args(&data, &nb.tcp_remote());
    let standalone = common::process::start(&data, &args, &[]);
    let port = standalone.grpc_port();
    let standalone_rate = rate(port, "s").await;
    eprintln!(
        "durable creations/s with 16 clients: clustered {clustered_rate:.0}, standalone {standalone_rate:.0}, ratio {:.2}",
        clustered_rate / standalone_rate
    );
}
