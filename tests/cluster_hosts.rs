//! Three central hosts (`common::central`: network namespaces, each with an NB RAFT member, an
//! `OVN_VIPD` RAFT member and an `ovn-vipd` daemon), with clients creating, deleting, binding
//! and unbinding through all three daemons' addresses the whole time (src/client.rs, as
//! `vipctl` and `ovn-vipd-cni` use it), while hosts are killed, cut off and restarted
//! (issue #14). Needs root. "Two standalone daemons on one NB" is `tests/one_active.rs`.
//!
//! After each fault: every acknowledged change is there, no address or MAC has two owners, NB
//! holds exactly the ports of what the daemons hold, every daemon's replica agrees, and
//! `ovn-vipd check` is clean.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::central::{Central, Mode, CLUSTER_DATABASE, NB_DATABASE};
use common::wait_until_async;
use ovn_vipd::api::proto::v1 as pb;
use ovn_vipd::client::Daemons;
use pb::pod_service_client::PodServiceClient;
use pb::subnet_service_client::SubnetServiceClient;
use pb::vip_service_client::VipServiceClient;
use tonic::{Code, Status};

const SUBNET: &str = "ovn-default";
/// Pods live in their own namespace, so that no VIP (AAP VIPs are in `default`) applies to them.
const POD_NAMESPACE: &str = "work";
/// The issue's goal for a takeover: writes served again within this after the active dies.
const TAKEOVER_GOAL: Duration = Duration::from_secs(3);

/// Harness calls block (processes, `wait_until`): off the runtime's workers.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// One client call.
#[derive(Clone, Debug)]
enum Op {
    CreateVip(String),
    DeleteVip(String),
    Bind(String),
    Unbind(String),
}

/// What the clients were told: acknowledged state and every acknowledgement's time.
#[derive(Default, Debug)]
struct Ledger {
    vips: BTreeSet<String>,
    pods: BTreeSet<String>,
    /// Each acknowledged call: when its last attempt started, when it was acknowledged.
    acks: Vec<(Instant, Instant)>,
    calls: u64,
    /// Attempts answered by a failure a client retries (UNAVAILABLE, a broken connection).
    retried: u64,
    /// Anything else: a test failure.
    errors: Vec<String>,
}

fn vip(name: &str) -> pb::Vip {
    pb::Vip {
        name: name.into(),
        subnet: SUBNET.into(),
        namespace: "default".into(),
        ..Default::default()
    }
}

fn bind_request(name: &str) -> pb::BindPodRequest {
    pb::BindPodRequest {
        namespace: POD_NAMESPACE.into(),
        name: name.into(),
        nics: vec![pb::NicRequest {
            subnet: SUBNET.into(),
            interface: "eth0".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// One attempt of `op`; `retry`: an earlier attempt may have landed, so "already exists" /
/// "not found" is its result, not an error.
async fn attempt(daemons: &mut Daemons, op: &Op, retry: bool) -> Result<(), Status> {
    let result = match op {
        Op::CreateVip(name) => daemons
            .call(
                pb::CreateVipRequest { vip: Some(vip(name)) },
                |channel, request| async move { VipServiceClient::new(channel).create_vip(request).await },
            )
            .await
            .map(|_| ()),
        Op::DeleteVip(name) => daemons
            .call(
                pb::DeleteVipRequest {
                    name: name.clone(),
                    ..Default::default()
                },
                |channel, request| async move { VipServiceClient::new(channel).delete_vip(request).await },
            )
            .await
            .map(|_| ()),
        Op::Bind(name) => daemons
            .call(bind_request(name), |channel, request| async move {
                PodServiceClient::new(channel).bind_pod(request).await
            })
            .await
            .map(|_| ()),
        Op::Unbind(name) => daemons
            .call(
                pb::UnbindPodRequest {
                    namespace: POD_NAMESPACE.into(),
                    name: name.clone(),
                    ..Default::default()
                },
                |channel, request| async move { PodServiceClient::new(channel).unbind_pod(request).await },
            )
            .await
            .map(|_| ()),
    };
    match (result, op) {
        (Err(status), Op::CreateVip(_)) if retry && status.code() == Code::AlreadyExists => Ok(()),
        (Err(status), Op::DeleteVip(_)) if retry && status.code() == Code::NotFound => Ok(()),
        (result, _) => result,
    }
}

/// Codes a client retries: the daemon was gone, a standby, or the connection broke.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Aborted
    )
}

/// Sends `op` until it is acknowledged (or `give_up` passes); records it in the ledger.
async fn perform(
    daemons: &mut Daemons,
    settings: &ovn_vipd::client::Settings,
    ledger: &Mutex<Ledger>,
    op: Op,
    give_up: Duration,
) -> bool {
    let start = Instant::now();
    let mut retry = false;
    loop {
        let sent = Instant::now();
        let result = attempt(daemons, &op, retry).await;
        {
            let mut ledger = ledger.lock().unwrap();
            ledger.calls += 1;
            match result {
                Ok(()) => {
                    ledger.acks.push((sent, Instant::now()));
                    match &op {
                        Op::CreateVip(name) => ledger.vips.insert(name.clone()),
                        Op::DeleteVip(name) => ledger.vips.remove(name),
                        Op::Bind(name) => ledger.pods.insert(name.clone()),
                        Op::Unbind(name) => ledger.pods.remove(name),
                    };
                    return true;
                }
                Err(status) if retryable(status.code()) && start.elapsed() < give_up => {
                    ledger.retried += 1;
                    retry = true;
                }
                Err(status) => {
                    ledger
                        .errors
                        .push(format!("{op:?} after {:?}: {status:?}", start.elapsed()));
                    return false;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // `Daemons::call` moves on by itself after UNAVAILABLE answers and refused
        // connections, but a request that timed out on a daemon cut off mid-call is returned
        // as it is and the client stays with that daemon: connect again, as a new vipctl or
        // CNI invocation would (the list in the same order; the cut-off one does not answer).
        if let Ok(fresh) = Daemons::connect(settings.clone()).await {
            *daemons = fresh;
        }
    }
}

/// Clients creating, binding, deleting and unbinding through all three addresses.
struct Workload {
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    /// `clients` clients, client k starting at host k % 3 + 1 (each is given all three).
    async fn start(central: &Central, clients: usize) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let mut tasks = Vec::new();
        for client in 0..clients {
            let first = client % 3 + 1;
            let mut daemons = central.client(first, Duration::from_secs(2)).await;
            let mut settings = central.client_settings(Duration::from_secs(2));
            settings.addresses.rotate_left(first - 1);
            let stop = stop.clone();
            let ledger = ledger.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let mut ops = vec![
                        Op::CreateVip(format!("c{client}-{i}")),
                        Op::Bind(format!("p{client}-{i}")),
                    ];
                    // Every third round takes back what was made two rounds before.
                    if i % 3 == 2 {
                        ops.push(Op::DeleteVip(format!("c{client}-{}", i - 2)));
                        ops.push(Op::Unbind(format!("p{client}-{}", i - 2)));
                    }
                    for op in ops {
                        if !perform(&mut daemons, &settings, &ledger, op, Duration::from_secs(60)).await {
                            return;
                        }
                    }
                    i += 1;
                }
            }));
        }
        Workload { stop, ledger, tasks }
    }

    fn acks(&self) -> usize {
        self.ledger.lock().unwrap().acks.len()
    }

    /// Waits for `more` acknowledgements from now.
    async fn wait_for_acks(&self, more: usize, timeout: Duration) {
        let target = self.acks() + more;
        wait_until_async(&format!("{more} more acknowledged writes"), timeout, || {
            self.acks() >= target
        })
        .await;
    }

    /// From `moment` to the first acknowledgement of a call sent after it (so served by a
    /// daemon alive after `moment`; an upper bound by one call), waiting up to `timeout`.
    async fn first_ack_after(&self, moment: Instant, timeout: Duration) -> Duration {
        let mut found = None;
        wait_until_async("an acknowledged write", timeout, || {
            found = self
                .ledger
                .lock()
                .unwrap()
                .acks
                .iter()
                .filter(|(sent, _)| *sent >= moment)
                .map(|(_, acked)| *acked)
                .min();
            found.is_some()
        })
        .await;
        found.map(|ack| ack - moment).unwrap_or_default()
    }

    /// Stops the clients (each finishes its call) and returns what they were told.
    async fn finish(self) -> Ledger {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("client task");
        }
        Arc::try_unwrap(self.ledger)
            .map(|ledger| ledger.into_inner().unwrap())
            .unwrap_or_else(|_| panic!("ledger still shared"))
    }
}

async fn create_subnet(central: &Central) {
    let mut daemons = central.client(1, Duration::from_secs(20)).await;
    daemons
        .call(
            common::subnet_request(SUBNET, "10.16.0.0/16", ""),
            |channel, request| async move { SubnetServiceClient::new(channel).create_subnet(request).await },
        )
        .await
        .expect("create the subnet");
}

/// Every VIP and pod one daemon serves (reads are served by every daemon).
async fn list_all(daemons: &mut Daemons) -> Result<(Vec<pb::Vip>, Vec<pb::Pod>), Status> {
    let mut vips = Vec::new();
    let mut token = String::new();
    loop {
        let page = VipServiceClient::new(daemons.channel())
            .list_vips(pb::ListVipsRequest {
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        vips.extend(page.vips);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut pods = Vec::new();
    let mut token = String::new();
    loop {
        let page = PodServiceClient::new(daemons.channel())
            .list_pods(pb::ListPodsRequest {
                namespace: POD_NAMESPACE.into(),
                page_size: 1000,
                page_token: token.clone(),
            })
            .await?
            .into_inner();
        pods.extend(page.pods);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    Ok((vips, pods))
}

fn names(vips: &[pb::Vip], pods: &[pb::Pod]) -> (BTreeSet<String>, BTreeSet<String>) {
    (
        vips.iter().map(|vip| vip.name.clone()).collect(),
        pods.iter()
            .filter(|pod| pod.bound)
            .map(|pod| pod.name.clone())
            .collect(),
    )
}

/// The NB ports the daemon made (`external_ids:vendor=ovn-vipd`).
fn nb_ports(central: &Central) -> BTreeSet<String> {
    central
        .nbctl(&[
            "--bare",
            "--columns=name",
            "find",
            "logical_switch_port",
            "external_ids:vendor=ovn-vipd",
        ])
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

/// The end of every test: the acknowledged state is exactly what the daemons hold, on the
/// active and (clustered) on every replica; no address or MAC has two owners; NB converged;
/// `ovn-vipd check` clean on every host's store.
async fn verify(central: &mut Central, ledger: &Ledger) {
    assert!(
        ledger.errors.is_empty(),
        "calls that failed for good: {:#?}",
        ledger.errors
    );
    let active = blocking(|| central.wait_for_active(Duration::from_secs(30)));
    let mut daemons = central.client(active, Duration::from_secs(10)).await;
    let (vips, pods) = list_all(&mut daemons).await.expect("list on the active");
    let (vip_names, pod_names) = names(&vips, &pods);
    assert_eq!(vip_names, ledger.vips, "VIPs: the active's against the acknowledged");
    assert_eq!(pod_names, ledger.pods, "pods: the active's against the acknowledged");

    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    let mut own = |key: String, owner: String| {
        if let Some(first) = owners.insert(key.clone(), owner.clone()) {
            panic!("{key} has two owners: {first} and {owner}");
        }
    };
    let mut expected_ports = BTreeSet::new();
    for vip in &vips {
        let status = vip.status.clone().unwrap_or_default();
        assert!(!status.v4ip.is_empty(), "{} has no address: {status:?}", vip.name);
        own(format!("address {}", status.v4ip), format!("vip {}", vip.name));
        if !status.mac.is_empty() {
            own(format!("MAC {}", status.mac), format!("vip {}", vip.name));
        }
        expected_ports.insert(vip.name.clone());
    }
    for pod in pods.iter().filter(|pod| pod.bound) {
        for nic in &pod.nics {
            for address in &nic.addresses {
                let address = address.split('/').next().unwrap_or_default();
                own(format!("address {address}"), format!("pod {}", pod.name));
            }
            own(format!("MAC {}", nic.mac), format!("pod {}", pod.name));
            expected_ports.insert(nic.port_name.clone());
        }
    }

    let mut last = BTreeSet::new();
    let converged = blocking(|| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            last = nb_ports(central);
            if last == expected_ports {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    });
    assert!(
        converged,
        "NB never held exactly the daemons' ports: missing {:?}, extra {:?}\n{}",
        expected_ports.difference(&last).collect::<Vec<_>>(),
        last.difference(&expected_ports).collect::<Vec<_>>(),
        central.logs()
    );

    if central.mode == Mode::Clustered {
        // Every daemon's replica catches up (reads are served from it).
        for number in 1..=3 {
            let address = central.host(number).grpc_address();
            let mut settings = central.client_settings(Duration::from_secs(1));
            settings.addresses = ovn_vipd::client::Address::parse_list(&address).unwrap();
            let mut one = Daemons::connect(settings).await.expect("connect to one daemon");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let seen = list_all(&mut one).await.map(|(vips, pods)| names(&vips, &pods));
                if let Ok((seen_vips, seen_pods)) = &seen {
                    if *seen_vips == ledger.vips && *seen_pods == ledger.pods {
                        break;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "host {number}'s replica never caught up: {} VIPs / {} pods expected, it serves {:?}",
                    ledger.vips.len(),
                    ledger.pods.len(),
                    seen.map(|(vips, pods)| (vips.len(), pods.len()))
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    // `check` opens the store exclusively: stop the daemons, then check each store against NB.
    let checked: Vec<usize> = if central.mode == Mode::Clustered {
        vec![1, 2, 3]
    } else {
        vec![active]
    };
    // The standbys first: a standalone standby that outlived the active would take over with
    // its own (empty) store and remove the active's rows from NB.
    for number in (1..=3).filter(|number| *number != active).chain([active]) {
        blocking(|| central.stop_daemon(number));
    }
    for number in checked {
        let (code, stdout, stderr) = blocking(|| central.check(number));
        assert!(
            code == 0 && stdout.contains("clean: store, IPAM and NB agree"),
            "ovn-vipd check on host {number}'s store: exit {code}\n{stdout}{stderr}"
        );
    }
}

/// The harness itself, without the clustered mode: both RAFT clusters elect a leader over the
/// hosts' links, standalone daemons on the three-member NB run across the namespaces (one
/// active through the NB lock, clients and vipctl reach it with the list of all three), and
/// the faults do what they say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_runs_raft_members_and_standalone_daemons_on_three_hosts() {
    let mut central = blocking(|| Central::start(Mode::Standalone));
    for database in [NB_DATABASE, CLUSTER_DATABASE] {
        let leader = blocking(|| central.wait_for_leader(database, Duration::from_secs(10)));
        let status = central.host(leader).nb.cluster_status() + &central.host(leader).cluster.cluster_status();
        assert!(status.contains("Election timer: 500"), "{status}");
        let servers = central.judge(database).cluster_status();
        for number in 1..=3 {
            assert!(
                servers.contains(&format!("10.251.0.{number}:")),
                "{database} has no member on host {number}: {servers}"
            );
        }
    }
    let active = blocking(|| central.wait_for_active(Duration::from_secs(20)));
    create_subnet(&central).await;
    // A client that starts at a standby finds the active.
    let standby = active % 3 + 1;
    let mut daemons = central.client(standby, Duration::from_secs(10)).await;
    let settings = central.client_settings(Duration::from_secs(10));
    let ledger = Mutex::new(Ledger::default());
    assert!(
        perform(
            &mut daemons,
            &settings,
            &ledger,
            Op::CreateVip("va".into()),
            Duration::from_secs(10)
        )
        .await
    );
    blocking(|| {
        common::wait_until("va in NB", Duration::from_secs(20), || {
            nb_ports(&central).contains("va")
        })
    });
    let (code, stdout, stderr) = blocking(|| central.vipctl(&["get", "vip", "va"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("va"), "{stdout}");

    // A cut link: the host's RAFT members drop out of the others' view, a leader stays.
    blocking(|| central.cut_link(active));
    let leader = blocking(|| {
        common::wait_until("an NB leader off the cut host", Duration::from_secs(20), || {
            central.leader(NB_DATABASE).is_some_and(|leader| leader != active)
        });
        central.leader(NB_DATABASE).unwrap_or_default()
    });
    assert_ne!(leader, active);
    blocking(|| central.restore_link(active));

    // SIGKILL of every process of a host: the others elect leaders and a daemon is active.
    blocking(|| central.kill_host(active));
    assert!(central.host(active).daemon.pid().is_none());
    let next = blocking(|| central.wait_for_active(Duration::from_secs(30)));
    assert_ne!(next, active);
    for database in [NB_DATABASE, CLUSTER_DATABASE] {
        let leader = blocking(|| central.wait_for_leader(database, Duration::from_secs(20)));
        assert_ne!(leader, active, "{database}");
    }
    blocking(|| central.start_host(active));
    blocking(|| {
        let member = &central.host(active).nb;
        common::wait_until("the restarted NB member rejoins", Duration::from_secs(30), || {
            member.cluster_status().contains("Status: cluster member")
        })
    });
}

/// The clients and the final checks on standalone daemons without a fault: creating,
/// binding, deleting and unbinding through all three addresses (two of them standbys) is
/// served by the active, and everything it acknowledged is in its store and in NB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_all_three_addresses_are_served_by_the_standalone_active() {
    let mut central = blocking(|| Central::start(Mode::Standalone));
    create_subnet(&central).await;
    let workload = Workload::start(&central, 3).await;
    workload.wait_for_acks(60, Duration::from_secs(60)).await;
    let ledger = workload.finish().await;
    verify(&mut central, &ledger).await;
}

/// SIGKILL every process of the active's host while clients write through all three
/// addresses: writes are served again within 3 s, nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_active_host_writes_are_served_again_within_3_s() {
    let mut central = blocking(|| Central::start(Mode::Clustered));
    create_subnet(&central).await;
    let workload = Workload::start(&central, 3).await;
    workload.wait_for_acks(30, Duration::from_secs(60)).await;
    let active = blocking(|| central.wait_for_active(Duration::from_secs(10)));
    let killed = Instant::now();
    blocking(|| central.kill_host(active));
    let takeover = workload.first_ack_after(killed, Duration::from_secs(30)).await;
    let next = blocking(|| central.wait_for_active(Duration::from_secs(10)));
    assert_ne!(next, active);
    eprintln!("takeover: first acknowledged write {takeover:?} after the SIGKILL of host {active}");
    assert!(
        takeover <= TAKEOVER_GOAL,
        "writes were served again only {takeover:?} after the active's host died\n{}",
        central.logs()
    );
    workload.wait_for_acks(30, Duration::from_secs(60)).await;
    // The host comes back (members on their files, the daemon on its store) as a standby.
    blocking(|| central.start_host(active));
    workload.wait_for_acks(30, Duration::from_secs(60)).await;
    let ledger = workload.finish().await;
    eprintln!(
        "{} calls, {} retried, {} acknowledged",
        ledger.calls,
        ledger.retried,
        ledger.acks.len()
    );
    verify(&mut central, &ledger).await;
}

/// The active's host cut off: it stops writing within its lock timeout and another takes
/// over; what it is asked meanwhile (by a client on its own host) never lands; back on the
/// link it is a standby and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_host_cut_off_is_fenced_and_comes_back_as_a_standby() {
    let mut central = blocking(|| Central::start(Mode::Clustered));
    create_subnet(&central).await;
    let workload = Workload::start(&central, 3).await;
    workload.wait_for_acks(30, Duration::from_secs(60)).await;
    let old = blocking(|| central.wait_for_active(Duration::from_secs(10)));
    let cut = Instant::now();
    blocking(|| central.cut_link(old));

    // A client on the cut host itself (it still reaches its daemon over the host's address)
    // keeps asking for a change the whole time.
    let address = central.host(old).grpc_address();
    let netns = central.host(old).netns.clone();
    let stray = std::thread::spawn(move || {
        let mut outcomes = Vec::new();
        let file = std::env::temp_dir().join(format!("vipd-ce-stray-{}.yaml", std::process::id()));
        std::fs::write(
            &file,
            format!(
                "apiVersion: kubeovn.io/v1\nkind: Vip\nmetadata:\n  name: stray\nspec:\n  subnet: {SUBNET}\n  namespace: default\n"
            ),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            let output = std::process::Command::new("ip")
                .args(["netns", "exec", &netns, common::central::VIPCTL, "--server", &address])
                .args(["--timeout", "3", "apply", "-f"])
                .arg(&file)
                .output()
                .expect("vipctl");
            outcomes.push((
                output.status.code(),
                String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr),
            ));
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = std::fs::remove_file(&file);
        outcomes
    });

    // It says it is no longer active (seen from inside its host) within its lock timeout.
    let host = central.host(old);
    // The lock lasts as long as the session: ovsdb-server drops a silent one after its
    // inactivity probe (5 s idle, then 5 s for the echo), and a leader cut off from its cluster
    // steps down within two election timers.
    let lock_timeout = Duration::from_secs(10);
    let mut seen = None;
    let stepped = blocking(|| {
        let deadline = Instant::now() + lock_timeout;
        while Instant::now() < deadline {
            seen = host.metrics_inside();
            if seen
                .as_deref()
                .and_then(|text| common::central::sample(text, "ovn_vipd_active"))
                == Some(0.0)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    });
    assert!(
        stepped,
        "the cut-off daemon still says it is active after {lock_timeout:?}: {:?}\n{}",
        seen.map(|text| text
            .lines()
            .filter(|line| line.starts_with("ovn_vipd_active"))
            .collect::<Vec<_>>()
            .join("\n")),
        central.logs()
    );
    let stepped_down = cut.elapsed();
    let next = blocking(|| central.wait_for_active(Duration::from_secs(20)));
    assert_ne!(next, old);
    workload.wait_for_acks(20, Duration::from_secs(30)).await;
    eprintln!("cut off: the old active stepped down after {stepped_down:?}; host {next} is active");
    let outcomes = stray.join().expect("stray client");
    for (code, text) in &outcomes {
        assert_ne!(*code, Some(0), "the cut-off daemon acknowledged a change: {text}");
    }

    blocking(|| central.restore_link(old));
    // Back: a standby (the active stays where it is) that catches up.
    blocking(|| {
        common::wait_until("the old active back as a standby", Duration::from_secs(30), || {
            central.host(old).metric("ovn_vipd_active") == Some(0.0)
        })
    });
    assert_eq!(blocking(|| central.actives()), vec![next]);
    workload.wait_for_acks(30, Duration::from_secs(60)).await;
    let ledger = workload.finish().await;
    // What it was asked while cut off never landed, in either database.
    assert!(!ledger.vips.contains("stray"));
    let stray_rows = central
        .judge(CLUSTER_DATABASE)
        .transact(r#"{"op":"select","table":"Vip","where":[["name","==","stray"]],"columns":["name"]}"#);
    assert!(!stray_rows.contains("stray"), "{stray_rows}");
    assert!(!blocking(|| nb_ports(&central)).contains("stray"));
    // Its writes in flight at the cut were refused, not acknowledged: its cluster member lost
    // the quorum (a cut-off leader steps down; a follower cannot commit), so nothing it sent
    // committed, and its next lock is only granted behind the new active's. (A refused `assert`
    // itself, a deposed active writing on a session that lost the lock, is in tests/cluster.rs
    // and tests/one_active.rs: a cut link gives the old active no session to send it on.)
    let log = central.host(old).daemon.log_text();
    let refused: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("cluster transaction failed; its changes are refused"))
        .collect();
    eprintln!("the old active's refused writes:\n{}", refused.join("\n"));
    assert!(
        !refused.is_empty(),
        "the old active's log shows no refused write:\n{log}"
    );
    verify(&mut central, &ledger).await;
}

/// The `OVN_VIPD` leader's member SIGKILLed while the active holds the lock (locks live in one
/// ovsdb-server process, not in RAFT): writes are served again within 3 s, exactly one daemon is
/// active, nothing acknowledged is lost; the member comes back and rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_database_leader_killed_under_load_loses_nothing() {
    let mut central = blocking(|| Central::start(Mode::Clustered));
    create_subnet(&central).await;
    let workload = Workload::start(&central, 3).await;
    workload.wait_for_acks(30, Duration::from_secs(60)).await;
    let active = blocking(|| central.wait_for_active(Duration::from_secs(10)));
    let leader = blocking(|| central.wait_for_leader(CLUSTER_DATABASE, Duration::from_secs(10)));
    let killed = Instant::now();
    blocking(|| central.hosts[leader - 1].cluster.kill());
    let served = workload.first_ack_after(killed, Duration::from_secs(30)).await;
    let next = blocking(|| central.wait_for_leader(CLUSTER_DATABASE, Duration::from_secs(20)));
    assert_ne!(next, leader);
    eprintln!(
        "OVN_VIPD leader on host {leader} killed (active on host {active}): new leader on host {next}, \
         writes served again after {served:?}"
    );
    assert!(
        served <= TAKEOVER_GOAL,
        "writes were served again only after {served:?}\n{}",
        central.logs()
    );
    workload.wait_for_acks(30, Duration::from_secs(60)).await;
    blocking(|| {
        central.start_host(leader);
        let member = &central.host(leader).cluster;
        common::wait_until("the killed member rejoins", Duration::from_secs(30), || {
            member.cluster_status().contains("Status: cluster member")
        });
    });
    workload.wait_for_acks(30, Duration::from_secs(60)).await;
    assert_eq!(blocking(|| central.actives()).len(), 1);
    let ledger = workload.finish().await;
    verify(&mut central, &ledger).await;
}

/// Rolling restart of all three daemons under load: the clients see only retried calls,
/// nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_all_three_loses_nothing() {
    let mut central = blocking(|| Central::start(Mode::Clustered));
    create_subnet(&central).await;
    let workload = Workload::start(&central, 3).await;
    workload.wait_for_acks(30, Duration::from_secs(60)).await;
    // Standbys first, the active last, as an operator would; each waits for the last to serve.
    let active = blocking(|| central.wait_for_active(Duration::from_secs(10)));
    let mut order: Vec<usize> = (1..=3).filter(|number| *number != active).collect();
    order.push(active);
    for number in order {
        blocking(|| central.restart_daemon(number));
        blocking(|| central.wait_for_active(Duration::from_secs(30)));
        workload.wait_for_acks(20, Duration::from_secs(60)).await;
    }
    let ledger = workload.finish().await;
    eprintln!(
        "{} calls, {} retried, {} acknowledged",
        ledger.calls,
        ledger.retried,
        ledger.acks.len()
    );
    verify(&mut central, &ledger).await;
}

/// A restarted standby resumes its replica from its last transaction id (log and metric),
/// and one started on an empty data directory downloads it in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_standby_resumes_its_replica() {
    let mut central = blocking(|| Central::start(Mode::Clustered));
    create_subnet(&central).await;
    let workload = Workload::start(&central, 2).await;
    workload.wait_for_acks(40, Duration::from_secs(60)).await;
    let active = blocking(|| central.wait_for_active(Duration::from_secs(10)));
    let standby = active % 3 + 1;
    let log = central.host(standby).daemon.log.clone();
    let before = std::fs::read_to_string(&log).unwrap_or_default().len();
    blocking(|| central.restart_daemon(standby));
    let resumed = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text[before.min(text.len())..].to_string()
    };
    blocking(|| {
        common::wait_until("the standby's replica to resume", Duration::from_secs(30), || {
            resumed().contains("replica resumed from transaction")
        })
    });
    let after = resumed();
    assert!(!after.contains("replica downloaded in full"), "{after}");
    assert_eq!(
        central
            .host(standby)
            .metric("ovn_vipd_replica_syncs_total{kind=\"resumed\"}"),
        Some(1.0)
    );
    assert_eq!(
        central
            .host(standby)
            .metric("ovn_vipd_replica_syncs_total{kind=\"full\"}")
            .unwrap_or(0.0),
        0.0
    );
    // The contrast: an empty data directory is downloaded in full.
    let other = 6 - active - standby;
    blocking(|| central.stop_daemon(other));
    std::fs::remove_dir_all(central.host(other).data_dir()).expect("remove the data directory");
    let before = std::fs::read_to_string(&central.host(other).daemon.log)
        .unwrap_or_default()
        .len();
    blocking(|| central.start_daemon(other));
    let log = central.host(other).daemon.log.clone();
    blocking(|| {
        common::wait_until("the empty replica downloaded in full", Duration::from_secs(30), || {
            std::fs::read_to_string(&log).unwrap_or_default()[before..].contains("replica downloaded in full")
        })
    });
    assert_eq!(
        central
            .host(other)
            .metric("ovn_vipd_replica_syncs_total{kind=\"full\"}"),
        Some(1.0)
    );
    let ledger = workload.finish().await;
    verify(&mut central, &ledger).await;
}
