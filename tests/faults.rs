//! Faults under load, bounded in time: the daemon SIGKILLed at random moments, the NB server gone
//! for 30 s, and the leader of a 3-member RAFT NB killed. Each checks that every acknowledged
//! change survives, nothing is duplicated, and NB converges to the store.

// Requests keep `..Default::default()` even where every field is set: protobuf messages grow fields.
#![allow(clippy::needless_update)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{daemon_args, plain_channel, run_binary, start};
use common::{wait_until_async, NbCluster, OvsdbServer};
use ovn_vipd::api::proto::v1 as pb;
use pb::pod_service_client::PodServiceClient;
use pb::subnet_service_client::SubnetServiceClient;
use pb::vip_service_client::VipServiceClient;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

fn aap(name: &str) -> pb::Vip {
    common::requests::aap(name, "ovn-default")
}

async fn create_subnet(channel: &Channel) {
    SubnetServiceClient::new(channel.clone())
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/16", "fd00:10:16::/64"))
        .await
        .expect("subnet");
}

async fn vip_names(channel: &Channel) -> BTreeSet<String> {
    VipServiceClient::new(channel.clone())
        .list_vips(pb::ListVipsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .vips
        .into_iter()
        .map(|vip| vip.name)
        .collect()
}

/// The names of the virtual ports in NB (one per AAP VIP and family).
fn virtual_ports(nb: &OvsdbServer) -> Vec<String> {
    nb.nbctl(&[
        "--bare",
        "--columns=name",
        "find",
        "logical_switch_port",
        "type=virtual",
    ])
    .lines()
    .filter(|line| !line.is_empty())
    .map(str::to_string)
    .collect()
}

/// What clients were told: name → exists. Names whose last request was in flight when the
/// daemon died have an unknown outcome and are dropped from it.
#[derive(Clone, Default)]
struct Acknowledged {
    vips: BTreeMap<String, bool>,
    pods: BTreeMap<String, bool>,
    in_flight: BTreeSet<String>,
    /// Acknowledged requests so far (all rounds).
    acks: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_killed_at_random_moments_loses_nothing_and_nb_converges() {
    let dir = tempfile::tempdir().unwrap();
    let nb = OvsdbServer::nb(dir.path());
    let args = daemon_args(dir.path(), &nb.unix_remote());
    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
    for round in 0..6 {
        let daemon = start(dir.path(), &args, &[]);
        let channel = plain_channel(daemon.grpc_port()).await;
        if round == 0 {
            create_subnet(&channel).await;
        }
        // Every acknowledged change survived the last kill.
        {
            let names = vip_names(&channel).await;
            let known = acknowledged.lock().unwrap().clone();
            for (name, exists) in &known.vips {
                assert_eq!(names.contains(name), *exists, "round {round}: vip {name}");
            }
            let mut pods = PodServiceClient::new(channel.clone());
            for (name, exists) in &known.pods {
                let found = pods
                    .get_pod(pb::GetPodRequest {
                        namespace: "default".into(),
                        name: name.clone(),
                    })
                    .await
                    .is_ok();
                assert_eq!(found, *exists, "round {round}: pod {name}");
            }
        }
        let workers: Vec<_> = (0..4)
            .map(|worker| {
                let channel = channel.clone();
                let acknowledged = acknowledged.clone();
                let seed = rng.gen::<u64>();
                tokio::spawn(async move {
                    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
                    let mut vips = VipServiceClient::new(channel.clone());
                    let mut pods = PodServiceClient::new(channel);
                    loop {
                        let (kind, name) = if rng.gen_bool(0.7) {
                            ("vip", format!("vip-{worker}-{}", rng.gen_range(0..40)))
                        } else {
                            ("pod", format!("pod-{worker}-{}", rng.gen_range(0..10)))
                        };
                        let create = rng.gen_bool(0.6);
                        acknowledged.lock().unwrap().in_flight.insert(name.clone());
                        let outcome = match (kind, create) {
                            ("vip", true) => vips
                                .create_vip(pb::CreateVipRequest { vip: Some(aap(&name)) })
                                .await
                                .map(|_| ()),
                            ("vip", false) => vips
                                .delete_vip(pb::DeleteVipRequest {
                                    name: name.clone(),
                                    revision: 0,
                                })
                                .await
                                .map(|_| ()),
                            (_, true) => pods
                                .bind_pod(pb::BindPodRequest {
                                    namespace: "default".into(),
                                    name: name.clone(),
                                    nics: vec![pb::NicRequest {
                                        subnet: "ovn-default".into(),
                                        interface: "eth0".into(),
                                        ..Default::default()
                                    }],
                                    ..Default::default()
                                })
                                .await
                                .map(|_| ()),
                            (_, false) => pods
                                .unbind_pod(pb::UnbindPodRequest {
                                    namespace: "default".into(),
                                    name: name.clone(),
                                    owner_gone: true,
                                    ..Default::default()
                                })
                                .await
                                .map(|_| ()),
                        };
                        let mut known = acknowledged.lock().unwrap();
                        known.in_flight.remove(&name);
                        let map = if kind == "vip" {
                            &mut known.vips
                        } else {
                            &mut known.pods
                        };
                        match outcome {
                            Ok(()) => {
                                map.insert(name, create);
                                known.acks += 1;
                            }
                            // The daemon died with the request in flight: it may or may not
                            // have been done.
                            Err(status)
                                if matches!(
                                    status.code(),
                                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                                ) =>
                            {
                                map.remove(&name);
                            }
                            Err(_) => {}
                        }
                    }
                })
            })
            .collect();
        // Kept: the kill comes at a random moment under load; that is the test. The moment is
        // counted in acknowledgements (then a random delay), not in time alone, so a loaded
        // machine still kills under load, not before the first request got through.
        let target = acknowledged.lock().unwrap().acks + rng.gen_range(10..60);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while acknowledged.lock().unwrap().acks < target && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..300))).await;
        drop(daemon); // SIGKILL
        for worker in workers {
            worker.abort();
            let _ = worker.await;
        }
        let mut known = acknowledged.lock().unwrap();
        for name in std::mem::take(&mut known.in_flight) {
            known.vips.remove(&name);
            known.pods.remove(&name);
        }
    }
    assert!(
        acknowledged.lock().unwrap().vips.len() >= 40,
        "the load was too light to mean anything"
    );

    // A last start: NB converges to the store; then the audit finds nothing wrong at all
    // (no address or MAC with two owners, no NB row missing or orphaned).
    let mut daemon = start(dir.path(), &args, &[]);
    let channel = plain_channel(daemon.grpc_port()).await;
    let expected: usize = {
        let known = acknowledged.lock().unwrap().clone();
        let names = vip_names(&channel).await;
        for (name, exists) in &known.vips {
            assert_eq!(names.contains(name), *exists, "final: vip {name}");
        }
        names.len() * 2
    };
    wait_until_async("NB to converge", Duration::from_secs(15), || {
        virtual_ports(&nb).len() == expected
    })
    .await;
    daemon.signal("TERM");
    assert_eq!(daemon.wait(Duration::from_secs(15)).code(), Some(0));
    let (code, stdout, stderr) = run_binary(
        &[
            "check",
            &format!("--data-dir={}", dir.path().join("data").display()),
            &format!("--ovn-nb={}", nb.unix_remote()),
        ],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
}

/// A load generator: creates AAP VIPs one after another until stopped, recording what was
/// acknowledged and when.
struct Load {
    acknowledged: Arc<Mutex<Vec<(String, Instant)>>>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(channel: Channel, prefix: &'static str, pause: Duration) -> Load {
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let task = {
            let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
            tokio::spawn(async move {
                let mut vips = VipServiceClient::new(channel);
                for index in 0.. {
                    if stop.is_cancelled() {
                        break;
                    }
                    let name = format!("{prefix}-{index}");
                    vips.create_vip(pb::CreateVipRequest { vip: Some(aap(&name)) })
                        .await
                        .expect("the API acknowledges whatever NB does");
                    acknowledged.lock().unwrap().push((name, Instant::now()));
                    // Kept: the load's pace.
                    tokio::time::sleep(pause).await;
                }
            })
        };
        Load {
            acknowledged,
            stop,
            task,
        }
    }

    async fn finish(self) -> Vec<(String, Instant)> {
        self.stop.cancel();
        self.task.await.expect("load");
        Arc::try_unwrap(self.acknowledged)
            .map(|list| list.into_inner().unwrap())
            .unwrap_or_default()
    }

    fn count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }
}

async fn ready_reason(vips: &mut VipServiceClient<Channel>, name: &str) -> (bool, String) {
    let status = vips
        .get_vip(pb::GetVipRequest { name: name.into() })
        .await
        .expect("get")
        .into_inner()
        .status
        .expect("status");
    let reason = status.conditions.first().map(|c| c.reason.clone()).unwrap_or_default();
    (status.ready, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nb_gone_for_30_seconds_under_load_then_converges_within_5_seconds() {
    let mut daemon = common::TestDaemon::start().await;
    let channel = daemon.channel().await;
    create_subnet(&channel).await;
    let mut vips = VipServiceClient::new(channel.clone());
    let load = Load::start(channel.clone(), "load", Duration::from_millis(20));
    // Under load before the outage: a good number of VIPs acknowledged and in NB.
    wait_until_async("50 acknowledged VIPs in NB", Duration::from_secs(20), || {
        load.count() >= 50 && virtual_ports(&daemon.nb).len() >= 100
    })
    .await;

    daemon.nb.kill();
    let outage = Instant::now();
    let before = load.count();
    // Throughout the outage: acknowledgements go on, and no VIP created meanwhile is Ready.
    while outage.elapsed() < Duration::from_secs(30) {
        // Kept: the outage lasts 30 s by definition; it is looked at every 3 s.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let latest = load.acknowledged.lock().unwrap().last().cloned();
        if let Some((name, at)) = latest {
            if at > outage + Duration::from_millis(500) {
                let (ready, reason) = ready_reason(&mut vips, &name).await;
                assert!(!ready, "{name} Ready while NB is down");
                assert_eq!(reason, "NBUnavailable", "{name}");
            }
        }
    }
    let during = load.count() - before;
    assert!(during >= 300, "only {during} acknowledgements in 30 s without NB");

    daemon.nb.start();
    let back = Instant::now();
    let acknowledged = load.finish().await;
    let expected = acknowledged.len() * 2;
    wait_until_async("NB to converge after the outage", Duration::from_secs(5), || {
        virtual_ports(&daemon.nb).len() == expected
    })
    .await;
    let converged = back.elapsed();
    let ports: BTreeSet<String> = virtual_ports(&daemon.nb).into_iter().collect();
    for (name, _) in &acknowledged {
        assert!(ports.contains(name), "{name} missing from NB");
    }
    for (name, _) in acknowledged.iter().rev().take(5) {
        common::wait_for(
            &format!("{name} Ready after NB returned"),
            Duration::from_secs(2),
            || {
                let (mut vips, name) = (vips.clone(), name.clone());
                async move {
                    match ready_reason(&mut vips, &name).await {
                        (true, _) => Ok(()),
                        (false, reason) => Err(reason),
                    }
                }
            },
        )
        .await;
    }
    eprintln!(
        "NB outage: {} acknowledged during 30 s without NB; converged {converged:?} after it returned",
        during
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_leader_killed_under_load_followed_within_5_seconds_nothing_lost_or_duplicated() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = NbCluster::start(dir.path());
    let mut config = ovn_vipd::daemon::DaemonConfig::new(
        ovn_vipd::ovsdb::Remote::parse_list(&cluster.remotes()).unwrap(),
        dir.path().join("data"),
        vec![ovn_vipd::api::Listen::Tcp(([127, 0, 0, 1], 0).into())],
    );
    let mut bound = common::report_grpc_bound(&mut config);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let daemon = tokio::spawn(ovn_vipd::daemon::run(config, shutdown.clone()));
    let channel = plain_channel(common::bound_port(&mut bound).await).await;
    create_subnet(&channel).await;
    let load = Load::start(channel.clone(), "raft", Duration::from_millis(10));
    // Under load before the kill: a good number of VIPs acknowledged.
    wait_until_async("50 acknowledged VIPs", Duration::from_secs(20), || load.count() >= 50).await;

    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    cluster.members[leader].kill();
    let killed = Instant::now();
    let survivor = (leader + 1) % 3;
    // The first VIP acknowledged after the kill reaches NB through the new leader.
    let acknowledged_after = || {
        load.acknowledged
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, at)| *at > killed)
            .map(|(name, _)| name.clone())
            .collect::<Vec<_>>()
    };
    let first_after = common::wait_for("an acknowledgement after the kill", Duration::from_secs(10), || {
        let first = acknowledged_after().first().cloned();
        async move { first.ok_or_else(|| "none yet".to_string()) }
    })
    .await;
    let members = &cluster.members;
    wait_until_async("a VIP made after the kill to reach NB", Duration::from_secs(5), || {
        virtual_ports(&members[survivor]).contains(&first_after)
    })
    .await;
    let followed = killed.elapsed();
    // The load goes on through the new leader for a while.
    wait_until_async("50 acknowledgements after the kill", Duration::from_secs(20), || {
        acknowledged_after().len() >= 50
    })
    .await;
    let acknowledged = load.finish().await;
    wait_until_async("NB to hold every VIP", Duration::from_secs(10), || {
        virtual_ports(&members[survivor]).len() >= acknowledged.len() * 2
    })
    .await;
    let ports = virtual_ports(&members[survivor]);
    let unique: BTreeSet<&String> = ports.iter().collect();
    assert_eq!(unique.len(), ports.len(), "a port twice");
    assert_eq!(
        ports.len(),
        acknowledged.len() * 2,
        "one port per VIP and family, no more"
    );
    for (name, _) in &acknowledged {
        assert!(unique.contains(name), "{name} lost");
    }
    let switches = members[survivor].nbctl(&["--bare", "--columns=name", "find", "logical_switch", "name=ovn-default"]);
    assert_eq!(
        switches.lines().filter(|line| !line.is_empty()).count(),
        1,
        "one switch"
    );
    eprintln!(
        "RAFT: leader killed; a VIP acknowledged after it reached NB {followed:?} later; {} VIPs, none lost",
        acknowledged.len()
    );
    shutdown.cancel();
    daemon.await.unwrap().unwrap();
}
