//! Revisions (like Kubernetes' resourceVersion), optimistic concurrency (ABORTED on a stale
//! revision) and watches of every kind resumed from a revision, through the real daemon; the
//! change log's retention on a real sled store.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::TestDaemon;
use ovn_vipd::api::proto::v1 as pb;
use pb::pod_service_client::PodServiceClient;
use pb::subnet_service_client::SubnetServiceClient;
use pb::switch_lb_rule_service_client::SwitchLbRuleServiceClient;
use pb::vip_service_client::VipServiceClient;
use tonic::Code;

struct Clients {
    subnets: SubnetServiceClient<tonic::transport::Channel>,
    vips: VipServiceClient<tonic::transport::Channel>,
    pods: PodServiceClient<tonic::transport::Channel>,
    rules: SwitchLbRuleServiceClient<tonic::transport::Channel>,
}

async fn clients(daemon: &TestDaemon) -> Clients {
    let channel = daemon.channel().await;
    Clients {
        subnets: SubnetServiceClient::new(channel.clone()),
        vips: VipServiceClient::new(channel.clone()),
        pods: PodServiceClient::new(channel.clone()),
        rules: SwitchLbRuleServiceClient::new(channel),
    }
}

fn vip(name: &str, selector: &str) -> pb::Vip {
    pb::Vip {
        name: name.into(),
        subnet: "ovn-default".into(),
        namespace: "default".into(),
        selector: vec![selector.into()],
        ..Default::default()
    }
}

fn slb_vip(name: &str) -> pb::Vip {
    pb::Vip {
        name: name.into(),
        subnet: "ovn-default".into(),
        r#type: "switch_lb_vip".into(),
        ..Default::default()
    }
}

fn rule(name: &str, vip: &str, port: u32) -> pb::SwitchLbRule {
    pb::SwitchLbRule {
        name: name.into(),
        vip: vip.into(),
        namespace: "default".into(),
        selector: vec!["app: web".into()],
        ports: vec![pb::LbPort {
            name: "http".into(),
            port,
            target_port: 8080,
            protocol: pb::Protocol::Tcp as i32,
        }],
        ..Default::default()
    }
}

fn bind(name: &str) -> pb::BindPodRequest {
    pb::BindPodRequest {
        namespace: "default".into(),
        name: name.into(),
        labels: HashMap::from([("app".to_string(), "other".to_string())]),
        nics: vec![pb::NicRequest {
            subnet: "ovn-default".into(),
            interface: "eth0".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn unbind(name: &str, revision: u64) -> pb::UnbindPodRequest {
    pb::UnbindPodRequest {
        namespace: "default".into(),
        name: name.into(),
        revision,
        ..Default::default()
    }
}

fn assert_aborted(error: &tonic::Status, current: u64) {
    assert_eq!(error.code(), Code::Aborted, "{error:?}");
    assert!(
        error.message().starts_with("revision: ") && error.message().contains(&format!("at revision {current},")),
        "the field and the current revision {current} named: {error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_carries_a_revision_and_a_stale_one_changes_nothing() {
    let mut daemon = TestDaemon::start().await;
    let mut c = clients(&daemon).await;
    let subnet = c
        .subnets
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/16", ""))
        .await
        .unwrap()
        .into_inner();
    assert!(subnet.revision > 0, "{subnet:?}");

    // VIP: revisions grow with each change; Get and List say the same.
    let created = c
        .vips
        .create_vip(pb::CreateVipRequest {
            vip: Some(vip("vip-a", "app: one")),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.revision > subnet.revision, "{created:?}");
    let mut change = vip("vip-a", "app: two");
    change.revision = created.revision;
    let updated = c
        .vips
        .update_vip(pb::UpdateVipRequest {
            vip: Some(change),
            update_mask: None,
        })
        .await
        .expect("an update at the current revision")
        .into_inner();
    assert!(updated.revision > created.revision);
    let mut stale = vip("vip-a", "app: three");
    stale.revision = created.revision;
    let error = c
        .vips
        .update_vip(pb::UpdateVipRequest {
            vip: Some(stale),
            update_mask: None,
        })
        .await
        .unwrap_err();
    assert_aborted(&error, updated.revision);
    let got = c
        .vips
        .get_vip(pb::GetVipRequest { name: "vip-a".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.selector.clone(), got.revision),
        (vec!["app: two".to_string()], updated.revision)
    );
    let listed = c
        .vips
        .list_vips(pb::ListVipsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.vips[0].revision, updated.revision);
    assert!(listed.revision >= updated.revision);
    let error = c
        .vips
        .delete_vip(pb::DeleteVipRequest {
            name: "vip-a".into(),
            revision: created.revision,
        })
        .await
        .unwrap_err();
    assert_aborted(&error, updated.revision);
    c.vips
        .get_vip(pb::GetVipRequest { name: "vip-a".into() })
        .await
        .expect("a stale delete deletes nothing");

    // Subnet.
    let error = c
        .subnets
        .update_subnet(pb::UpdateSubnetRequest {
            subnet: Some(pb::Subnet {
                name: "ovn-default".into(),
                exclude_ips: vec!["10.16.0.200".into()],
                revision: subnet.revision + 1_000,
                ..Default::default()
            }),
            update_mask: None,
        })
        .await
        .unwrap_err();
    assert_aborted(&error, subnet.revision);
    let got = c
        .subnets
        .get_subnet(pb::GetSubnetRequest {
            name: "ovn-default".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.exclude_ips.is_empty() && got.revision == subnet.revision, "{got:?}");
    let error = c
        .subnets
        .delete_subnet(pb::DeleteSubnetRequest {
            name: "ovn-default".into(),
            revision: subnet.revision + 1,
        })
        .await
        .unwrap_err();
    assert_aborted(&error, subnet.revision);

    // Switch-LB rule.
    c.vips
        .create_vip(pb::CreateVipRequest {
            vip: Some(slb_vip("slb")),
        })
        .await
        .unwrap();
    let created_rule = c
        .rules
        .create_switch_lb_rule(pb::CreateSwitchLbRuleRequest {
            rule: Some(rule("web", "slb", 80)),
        })
        .await
        .unwrap()
        .into_inner();
    let mut change = rule("web", "slb", 81);
    change.revision = created_rule.revision;
    let updated_rule = c
        .rules
        .update_switch_lb_rule(pb::UpdateSwitchLbRuleRequest { rule: Some(change) })
        .await
        .unwrap()
        .into_inner();
    let mut stale = rule("web", "slb", 82);
    stale.revision = created_rule.revision;
    let error = c
        .rules
        .update_switch_lb_rule(pb::UpdateSwitchLbRuleRequest { rule: Some(stale) })
        .await
        .unwrap_err();
    assert_aborted(&error, updated_rule.revision);
    let error = c
        .rules
        .delete_switch_lb_rule(pb::DeleteSwitchLbRuleRequest {
            name: "web".into(),
            revision: created_rule.revision,
        })
        .await
        .unwrap_err();
    assert_aborted(&error, updated_rule.revision);
    let got = c
        .rules
        .get_switch_lb_rule(pb::GetSwitchLbRuleRequest { name: "web".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((got.ports[0].port, got.revision), (81, updated_rule.revision));

    // Pod: a stale unbind keeps the pod bound.
    let pod = c.pods.bind_pod(bind("p1")).await.unwrap().into_inner();
    assert!(pod.revision > updated_rule.revision);
    let error = c.pods.unbind_pod(unbind("p1", pod.revision - 1)).await.unwrap_err();
    assert_aborted(&error, pod.revision);
    let got = c
        .pods
        .get_pod(pb::GetPodRequest {
            namespace: "default".into(),
            name: "p1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.bound && got.revision == pod.revision);

    // Revisions are stored with the objects: the same after a restart, and the counter goes on.
    daemon.stop_daemon_only().await;
    daemon.restart_daemon_only().await;
    let mut c = clients(&daemon).await;
    let got = c
        .vips
        .get_vip(pb::GetVipRequest { name: "vip-a".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.revision, updated.revision);
    let found = c
        .pods
        .unbind_pod(unbind("p1", pod.revision))
        .await
        .unwrap()
        .into_inner();
    assert!(found.found);
    let next = c
        .vips
        .create_vip(pb::CreateVipRequest {
            vip: Some(vip("vip-b", "app: one")),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        next.revision > pod.revision + 1,
        "{} after {}",
        next.revision,
        pod.revision
    );
    daemon.stop().await;
}

/// Runs `vipctl ARGS` until it has printed `count` lines (10 s at most), then stops it.
fn vipctl_watch(daemon: &TestDaemon, args: &[&str], count: usize) -> Vec<String> {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vipctl"))
        .args(["--server", &daemon.endpoint])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run vipctl");
    let stdout = child.stdout.take().expect("stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lines.len() < count {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match receiver.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

/// Reads events until `expected` have come (and a short while after, for any extra), keeping
/// those after `after`, as (type, key, revision) without repeats (one event per object: what
/// changed after `after`, status changes included, folds into it).
async fn collect<E>(
    stream: &mut tonic::Streaming<E>,
    after: u64,
    expected: usize,
    read: impl Fn(&E) -> (i32, String, u64),
) -> BTreeSet<(i32, String)>
where
    E: prost::Message + Default + 'static,
{
    let mut seen: BTreeSet<(i32, String, u64)> = BTreeSet::new();
    let mut deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut full = false;
    loop {
        let event = match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => break,
            Ok(event) => event.expect("stream ok").expect("stream open"),
        };
        let (event_type, key, revision) = read(&event);
        if revision > after {
            seen.insert((event_type, key, revision));
        }
        if !full && seen.len() >= expected {
            full = true;
            deadline = tokio::time::Instant::now() + Duration::from_millis(700);
        }
    }
    let keys: BTreeSet<(i32, String)> = seen.iter().map(|(t, k, _)| (*t, k.clone())).collect();
    assert_eq!(keys.len(), seen.len(), "one event per changed object: {seen:?}");
    keys
}

const ADDED: i32 = pb::EventType::Added as i32;
const MODIFIED: i32 = pb::EventType::Modified as i32;
const DELETED: i32 = pb::EventType::Deleted as i32;

fn set(items: &[(i32, &str)]) -> BTreeSet<(i32, String)> {
    items.iter().map(|(t, k)| (*t, k.to_string())).collect()
}

/// Every VIP's and rule's status as (name, ready, reason).
async fn statuses(c: &mut Clients) -> BTreeSet<(String, bool, String)> {
    let reason = |conditions: &[pb::Condition]| conditions.first().map(|c| c.reason.clone()).unwrap_or_default();
    let mut out = BTreeSet::new();
    for vip in c
        .vips
        .list_vips(pb::ListVipsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .vips
    {
        let status = vip.status.unwrap_or_default();
        out.insert((format!("vip/{}", vip.name), status.ready, reason(&status.conditions)));
    }
    let rules = c
        .rules
        .list_switch_lb_rules(pb::ListSwitchLbRulesRequest::default())
        .await
        .unwrap();
    for rule in rules.into_inner().rules {
        let status = rule.status.unwrap_or_default();
        out.insert((format!("slr/{}", rule.name), false, reason(&status.conditions)));
    }
    out
}

/// Waits until the NB sync has given every VIP and rule a status and no status changed for a
/// while, so that what a watch reports next comes from the test's own changes.
async fn settle(c: &mut Clients) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut last = statuses(c).await;
    let mut same = 0;
    while same < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "statuses never settled: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        let now = statuses(c).await;
        same = if now == last && now.iter().all(|(_, _, reason)| !reason.is_empty()) {
            same + 1
        } else {
            0
        };
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumed_from_a_revision_sees_exactly_the_changes_after_it() {
    let daemon = TestDaemon::start().await;
    let mut c = clients(&daemon).await;
    c.subnets
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/16", ""))
        .await
        .unwrap();
    daemon.attach_router("ovn-default", "04:00:00:00:00:01", "10.16.0.1/16");
    for (name, selector) in [("vip-a", "app: one"), ("vip-b", "app: one"), ("vip-same", "app: one")] {
        c.vips
            .create_vip(pb::CreateVipRequest {
                vip: Some(vip(name, selector)),
            })
            .await
            .unwrap();
    }
    for name in ["slb-1", "slb-2", "slb-3"] {
        c.vips
            .create_vip(pb::CreateVipRequest {
                vip: Some(slb_vip(name)),
            })
            .await
            .unwrap();
    }
    for (name, vip) in [("r1", "slb-1"), ("r2", "slb-2")] {
        c.rules
            .create_switch_lb_rule(pb::CreateSwitchLbRuleRequest {
                rule: Some(rule(name, vip, 80)),
            })
            .await
            .unwrap();
    }
    c.pods.bind_pod(bind("p1")).await.unwrap();
    c.pods.bind_pod(bind("p2")).await.unwrap();
    settle(&mut c).await;

    // The revision a client listed at; then changes of every kind.
    let since = c
        .vips
        .list_vips(pb::ListVipsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .revision;
    c.subnets
        .create_subnet(common::subnet_request("second", "10.17.0.0/16", ""))
        .await
        .unwrap();
    c.subnets
        .update_subnet(pb::UpdateSubnetRequest {
            subnet: Some(pb::Subnet {
                name: "ovn-default".into(),
                exclude_ips: vec!["10.16.0.250".into()],
                ..Default::default()
            }),
            update_mask: None,
        })
        .await
        .unwrap();
    c.vips
        .create_vip(pb::CreateVipRequest {
            vip: Some(vip("vip-c", "app: one")),
        })
        .await
        .unwrap();
    // Changed twice: one event, in its last state.
    for selector in ["app: two", "app: three"] {
        c.vips
            .update_vip(pb::UpdateVipRequest {
                vip: Some(vip("vip-a", selector)),
                update_mask: None,
            })
            .await
            .unwrap();
    }
    c.vips
        .delete_vip(pb::DeleteVipRequest {
            name: "vip-b".into(),
            revision: 0,
        })
        .await
        .unwrap();
    c.rules
        .create_switch_lb_rule(pb::CreateSwitchLbRuleRequest {
            rule: Some(rule("r3", "slb-3", 80)),
        })
        .await
        .unwrap();
    c.rules
        .update_switch_lb_rule(pb::UpdateSwitchLbRuleRequest {
            rule: Some(rule("r1", "slb-1", 81)),
        })
        .await
        .unwrap();
    c.rules
        .delete_switch_lb_rule(pb::DeleteSwitchLbRuleRequest {
            name: "r2".into(),
            revision: 0,
        })
        .await
        .unwrap();
    c.pods.bind_pod(bind("p3")).await.unwrap();
    c.pods.unbind_pod(unbind("p1", 0)).await.unwrap();
    // The status changes these bring (slb-2 loses its rule, r1 and r3 get synced) are changes
    // after `since` too: they fold into the events of the same objects, or come as MODIFIED.
    settle(&mut c).await;

    let mut subnets = c
        .subnets
        .watch_subnets(pb::WatchRequest { revision: since })
        .await
        .unwrap()
        .into_inner();
    let seen = collect(&mut subnets, since, 2, |event: &pb::SubnetEvent| {
        let subnet = event.subnet.clone().unwrap_or_default();
        (event.r#type, subnet.name, event.revision)
    })
    .await;
    assert_eq!(seen, set(&[(ADDED, "second"), (MODIFIED, "ovn-default")]));

    let mut vips = every_vip_watch(&mut c.vips, since).await;
    let seen = collect(&mut vips, since, 5, |event: &pb::VipEvent| {
        let vip = event.vip.clone().unwrap_or_default();
        // A status change has a revision of its own; the VIP keeps its spec's.
        assert!(vip.revision <= event.revision, "{event:?}");
        if vip.name == "vip-a" {
            assert_eq!(vip.selector, vec!["app: three".to_string()], "the last state");
        }
        (event.r#type, vip.name, event.revision)
    })
    .await;
    assert_eq!(
        seen,
        set(&[
            (ADDED, "vip-c"),
            (MODIFIED, "vip-a"),
            (DELETED, "vip-b"),
            (MODIFIED, "slb-2"),
            (MODIFIED, "slb-3")
        ]),
        "status changes too: slb-2 lost its rule r2 (Ready=False NoRule), slb-3 got r3 (Ready)"
    );

    let mut rules = c
        .rules
        .watch_switch_lb_rules(pb::WatchRequest { revision: since })
        .await
        .unwrap()
        .into_inner();
    let seen = collect(&mut rules, since, 3, |event: &pb::SwitchLbRuleEvent| {
        let rule = event.rule.clone().unwrap_or_default();
        (event.r#type, rule.name, event.revision)
    })
    .await;
    assert_eq!(seen, set(&[(ADDED, "r3"), (MODIFIED, "r1"), (DELETED, "r2")]));

    let mut pods = c
        .pods
        .watch_pods(pb::WatchRequest { revision: since })
        .await
        .unwrap()
        .into_inner();
    let seen = collect(&mut pods, since, 2, |event: &pb::PodEvent| {
        let pod = event.pod.clone().unwrap_or_default();
        (event.r#type, format!("{}/{}", pod.namespace, pod.name), event.revision)
    })
    .await;
    assert_eq!(seen, set(&[(ADDED, "default/p3"), (DELETED, "default/p1")]));

    // vipctl watch KIND --since REV prints the same, one line per event.
    let since_text = since.to_string();
    let lines = tokio::task::block_in_place(|| vipctl_watch(&daemon, &["watch", "slr", "--since", &since_text], 3));
    let mut printed: Vec<String> = lines
        .iter()
        .map(|line| line.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect();
    printed.sort();
    assert_eq!(
        printed,
        ["ADDED slr/r3", "DELETED slr/r2", "MODIFIED slr/r1"],
        "{lines:?}"
    );

    // The resumed VIP watch follows live changes too.
    c.vips
        .delete_vip(pb::DeleteVipRequest {
            name: "vip-c".into(),
            revision: 0,
        })
        .await
        .unwrap();
    let seen = collect(&mut vips, since, 1, |event: &pb::VipEvent| {
        let vip = event.vip.clone().unwrap_or_default();
        (event.r#type, vip.name, event.revision)
    })
    .await;
    assert!(seen.contains(&(DELETED, "vip-c".to_string())), "{seen:?}");

    // A revision newer than the current one is OUT_OF_RANGE, naming the field.
    let current = c
        .pods
        .list_pods(pb::ListPodsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .revision;
    let error = c
        .subnets
        .watch_subnets(pb::WatchRequest {
            revision: current + 100,
        })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(error.code(), Code::OutOfRange, "{error:?}");
    assert!(
        error.message().starts_with("revision: ") && error.message().contains("in the future"),
        "{error:?}"
    );
    daemon.stop().await;
}

/// The change log keeps the newest changes only: a revision older than it is refused (the API
/// answers OUT_OF_RANGE), also after a restart, while one it still covers is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_older_than_the_change_log_is_refused() {
    use ovn_vipd::model::{Strategy, Subnet, VipSpec, VipType};
    let dir = tempfile::tempdir().unwrap();
    let subnet = Subnet {
        name: "ovn-default".into(),
        logical_switch: "ovn-default".into(),
        cidr_v4: Some("10.16.0.0/16".parse().unwrap()),
        cidr_v6: None,
        gateway_v4: None,
        gateway_v6: None,
        exclude_ips: Vec::new(),
        strategy: Strategy::Random,
        vpc: ovn_vipd::model::DEFAULT_VPC.into(),
    };
    {
        let (registry, _) = ovn_vipd::registry::Registry::open(dir.path()).unwrap();
        registry.store().set_change_log_retained(5);
        registry.create_subnet(subnet).await.unwrap();
        for index in 0..10 {
            registry
                .create_vip(VipSpec {
                    name: format!("vip-{index}"),
                    namespace: String::new(),
                    subnet: "ovn-default".into(),
                    vip_type: VipType::Reserved,
                    v4ip: None,
                    v6ip: None,
                    mac: None,
                    selector: Default::default(),
                })
                .await
                .unwrap();
        }
        let store = registry.store();
        assert_eq!(store.revision(), 11);
        let too_old = store.changes_since(2).unwrap().unwrap_err();
        assert_eq!((too_old.why, too_old.oldest, too_old.current), ("too old", 6, 11));
        let (changes, current) = store.changes_since(6).unwrap().unwrap();
        assert_eq!(current, 11);
        assert_eq!(
            changes.iter().map(|change| change.revision).collect::<Vec<_>>(),
            vec![7, 8, 9, 10, 11]
        );
        registry.flush().unwrap();
    }
    let (registry, _) = ovn_vipd::registry::Registry::open(dir.path()).unwrap();
    let store = registry.store();
    assert_eq!(store.revision(), 11);
    assert_eq!(store.revision_of(ovn_vipd::store::Kind::Vip, "vip-9"), Some(11));
    assert_eq!(store.changes_since(5).unwrap().unwrap_err().why, "too old");
    assert_eq!(store.changes_since(6).unwrap().unwrap().0.len(), 5);
}

/// `vipctl watch` follows until stopped; when the daemon ends the stream (a shutdown), vipctl
/// says so and exits non-zero (it exited 0 in silence, as if the watch were done).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vipctl_watch_says_when_the_daemon_ended_it_and_exits_non_zero() {
    use std::io::BufRead as _;
    let mut daemon = TestDaemon::start().await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vipctl"))
        .args(["--server", &daemon.endpoint, "watch", "subnet"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run vipctl");
    // The stream is open once the first event (the default subnet, or a marker) came; create
    // one so there is always an event.
    let common::requests::Clients { mut subnets, .. } = daemon.clients().await;
    subnets
        .create_subnet(common::subnet_request("watched", "10.77.0.0/24", ""))
        .await
        .expect("subnet");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("an event");
    assert!(line.contains("subnet/"), "{line}");
    daemon.stop_daemon_only().await;
    let output = tokio::task::block_in_place(|| child.wait_with_output()).expect("vipctl ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exit {:?}, stderr {stderr}", output.status);
    assert!(stderr.contains("the daemon ended the watch"), "{stderr}");
    // It names where to resume: the highest revision the stream carried.
    assert!(stderr.contains("watch again with --since "), "{stderr}");
    assert!(!stderr.contains("watch again with --since 0"), "{stderr}");
}

/// A status change (not stored) has a revision of its own, so a watch resumed after a revision
/// sees the status changes after it: an SLB VIP without a rule is Ready=False NoRule; a rule
/// naming it makes it Ready, with no change to the VIP itself. (It was missed for good: status
/// changes repeated the VIP's revision.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumed_from_a_revision_sees_the_status_changes_after_it() {
    let daemon = TestDaemon::start().await;
    let mut c = clients(&daemon).await;
    c.subnets
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/16", ""))
        .await
        .unwrap();
    daemon.attach_router("ovn-default", "04:00:00:00:00:01", "10.16.0.1/16");
    let mut live = c
        .vips
        .watch_vips(pb::WatchVipsRequest {
            name: "t1".into(),
            revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let created = c
        .vips
        .create_vip(pb::CreateVipRequest {
            vip: Some(slb_vip("t1")),
        })
        .await
        .unwrap()
        .into_inner();
    // The live watch: ADDED, then the NB sync's Ready=False NoRule with a newer revision.
    let mut since = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, live.message())
            .await
            .expect("NoRule reported")
            .unwrap()
            .unwrap();
        let vip = event.vip.clone().unwrap_or_default();
        assert_eq!(
            vip.revision, created.revision,
            "a status change keeps the VIP's revision"
        );
        assert!(event.revision >= since, "events in revision order: {event:?}");
        since = event.revision;
        let status = vip.status.unwrap_or_default();
        if status.conditions.first().is_some_and(|c| c.reason == "NoRule") {
            assert!(!status.ready);
            assert!(event.revision > created.revision, "a revision of its own: {event:?}");
            break;
        }
    }
    drop(live);

    // A rule makes t1 Ready: a status change only.
    c.rules
        .create_switch_lb_rule(pb::CreateSwitchLbRuleRequest {
            rule: Some(rule("r1", "t1", 80)),
        })
        .await
        .unwrap();
    common::wait_for("t1 Ready", Duration::from_secs(10), || {
        let mut vips = c.vips.clone();
        async move {
            let vip = vips
                .get_vip(pb::GetVipRequest { name: "t1".into() })
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            vip.status
                .filter(|s| s.ready)
                .map(|_| ())
                .ok_or("not ready".to_string())
        }
    })
    .await;

    // Resumed after the NoRule event: exactly one event for t1, MODIFIED, Ready, after it.
    let mut resumed = c
        .vips
        .watch_vips(pb::WatchVipsRequest {
            name: "t1".into(),
            revision: since,
        })
        .await
        .unwrap()
        .into_inner();
    let event = tokio::time::timeout(Duration::from_secs(5), resumed.message())
        .await
        .expect("the status change after the revision is replayed")
        .unwrap()
        .unwrap();
    assert_eq!(event.r#type, pb::vip_event::Type::Modified as i32, "{event:?}");
    assert!(event.revision > since, "{event:?}");
    let vip = event.vip.unwrap_or_default();
    assert!(vip.status.unwrap_or_default().ready);
    assert_eq!(
        vip.revision, created.revision,
        "the VIP's own revision: its spec did not change"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(700), resumed.message())
            .await
            .is_err(),
        "nothing else changed t1"
    );

    // The rule's own status (NoBackends: no pod matches) is a change of the rule after its creation.
    let mut rules = c
        .rules
        .watch_switch_lb_rules(pb::WatchRequest { revision: since })
        .await
        .unwrap()
        .into_inner();
    let event = tokio::time::timeout(Duration::from_secs(5), rules.message())
        .await
        .expect("the rule replayed")
        .unwrap()
        .unwrap();
    assert_eq!(event.r#type, ADDED, "{event:?}");
    let rule = event.rule.unwrap_or_default();
    assert!(
        event.revision > rule.revision,
        "its status change is the later one: {}",
        event.revision
    );
    assert_eq!(
        rule.status
            .unwrap_or_default()
            .conditions
            .first()
            .map(|c| c.reason.clone()),
        Some("NoBackends".into()),
        "no pod has app: web"
    );
    daemon.stop().await;
}

/// Status revisions survive a restart as revisions never handed out again (the durable floor),
/// and a watch resumed from the earlier run's last revision sees every VIP again: statuses are
/// recomputed after a start, so each one is a change after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_revisions_go_on_above_status_revisions_and_a_resumed_watch_sees_every_status() {
    let mut daemon = TestDaemon::start().await;
    let mut c = clients(&daemon).await;
    c.subnets
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/16", ""))
        .await
        .unwrap();
    daemon.attach_router("ovn-default", "04:00:00:00:00:01", "10.16.0.1/16");
    for name in ["s1", "s2"] {
        c.vips
            .create_vip(pb::CreateVipRequest {
                vip: Some(slb_vip(name)),
            })
            .await
            .unwrap();
    }
    settle(&mut c).await;
    // The newest revision a client saw: the last status change's.
    let mut watch = every_vip_watch(&mut c.vips, 1).await;
    let mut seen = 0;
    while let Ok(Some(Ok(event))) = tokio::time::timeout(Duration::from_millis(700), watch.message())
        .await
        .map(|m| m.transpose())
    {
        seen = seen.max(event.revision);
    }
    drop(watch);
    let listed = c
        .vips
        .list_vips(pb::ListVipsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .revision;
    assert_eq!(seen, listed, "the list's revision counts status changes too");
    let stored = listed_vip_revision(&mut c, "s2").await;
    assert!(seen > stored, "NoRule came after s2 was stored: {seen} > {stored}");

    // Two clean restarts: revisions go on where they were (a gap of a floor block at each would
    // have pushed `seen` out of the change log's window after a few).
    for _ in 0..2 {
        daemon.stop_daemon_only().await;
        daemon.restart_daemon_only().await;
    }
    let mut c = clients(&daemon).await;
    let created = c
        .vips
        .create_vip(pb::CreateVipRequest {
            vip: Some(slb_vip("s3")),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        created.revision < seen + 100,
        "no gap after clean restarts: {} after {seen}",
        created.revision
    );
    assert!(
        created.revision > seen,
        "revision {} handed out again (seen {seen})",
        created.revision
    );
    settle(&mut c).await;
    let mut resumed = every_vip_watch(&mut c.vips, seen).await;
    let got = collect(&mut resumed, seen, 3, |event: &pb::VipEvent| {
        let vip = event.vip.clone().unwrap_or_default();
        assert!(
            vip.status.as_ref().is_some_and(|s| !s.conditions.is_empty()),
            "{event:?}"
        );
        (event.r#type, vip.name, event.revision)
    })
    .await;
    assert_eq!(got, set(&[(MODIFIED, "s1"), (MODIFIED, "s2"), (ADDED, "s3")]));
    daemon.stop().await;
}

async fn listed_vip_revision(c: &mut Clients, name: &str) -> u64 {
    c.vips
        .get_vip(pb::GetVipRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
        .revision
}

/// The store alone: status revisions come from the one counter, interleave with stored changes
/// in `changes_since`, and the floor keeps a reopened store's counter above them even when no
/// stored change followed them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_revisions_share_the_counter_and_stay_above_the_floor_after_reopening() {
    use ovn_vipd::store::{ChangeType, Kind};
    let dir = tempfile::tempdir().unwrap();
    let subnet = ovn_vipd::model::Subnet {
        name: "ovn-default".into(),
        logical_switch: "ovn-default".into(),
        cidr_v4: Some("10.16.0.0/16".parse().unwrap()),
        cidr_v6: None,
        gateway_v4: None,
        gateway_v6: None,
        exclude_ips: Vec::new(),
        strategy: ovn_vipd::model::Strategy::Random,
        vpc: ovn_vipd::model::DEFAULT_VPC.into(),
    };
    let after_status;
    {
        let (registry, _) = ovn_vipd::registry::Registry::open(dir.path()).unwrap();
        registry.create_subnet(subnet).await.unwrap();
        let store = registry.store();
        assert_eq!(store.revision(), 1);
        store.log_status(Kind::Vip, &["a", "b"]).unwrap();
        assert_eq!(store.revision(), 3);
        let (changes, current) = store.changes_since(0).unwrap().unwrap();
        assert_eq!(current, 3);
        let read: Vec<_> = changes
            .iter()
            .map(|c| (c.revision, c.kind, c.key.as_str(), c.change))
            .collect();
        assert_eq!(
            read,
            vec![
                (1, Kind::Subnet, "ovn-default", ChangeType::Added),
                (2, Kind::Vip, "a", ChangeType::Modified),
                (3, Kind::Vip, "b", ChangeType::Modified),
            ]
        );
        assert_eq!(store.changes_since(2).unwrap().unwrap().0.len(), 1);
        // From STATUS_BULK keys on: one revision, read as a change of every stored VIP.
        for name in ["v1", "v2"] {
            registry
                .create_vip(ovn_vipd::model::VipSpec {
                    name: name.into(),
                    namespace: String::new(),
                    subnet: "ovn-default".into(),
                    vip_type: ovn_vipd::model::VipType::Reserved,
                    v4ip: None,
                    v6ip: None,
                    mac: None,
                    selector: Default::default(),
                })
                .await
                .unwrap();
        }
        let before = store.revision();
        let many: Vec<String> = (0..ovn_vipd::store::STATUS_BULK).map(|i| format!("x{i}")).collect();
        let keys: Vec<&str> = many.iter().map(String::as_str).collect();
        store.log_status(Kind::Vip, &keys).unwrap();
        assert_eq!(store.revision(), before + 1, "one revision for the bulk");
        let (changes, _) = store.changes_since(before).unwrap().unwrap();
        let mut read: Vec<_> = changes
            .iter()
            .map(|c| (c.revision, c.key.as_str(), c.change == ChangeType::Modified))
            .collect();
        read.sort();
        assert_eq!(
            read,
            vec![(before + 1, "v1", true), (before + 1, "v2", true)],
            "every stored VIP"
        );
        after_status = store.revision();
        // No flush of the registry: the floor was made durable before the revisions were given.
    }
    let (registry, _) = ovn_vipd::registry::Registry::open(dir.path()).unwrap();
    let store = registry.store();
    assert_eq!(store.revision(), after_status, "a clean close leaves no gap");
    // The earlier run's status log is gone with it (statuses are recomputed): a watch after
    // revision 1 now sees stored changes only (the two VIPs), until the NB sync sets statuses.
    let keys: Vec<_> = store
        .changes_since(1)
        .unwrap()
        .unwrap()
        .0
        .into_iter()
        .map(|c| (c.key, c.change == ChangeType::Added))
        .collect();
    assert_eq!(keys, vec![("v1".to_string(), true), ("v2".to_string(), true)]);
}

/// When `daemon::run` returns, the store is closed: watch streams still open at shutdown (they
/// hold the registry until their task runs again) no longer keep its file lock, so whoever opens
/// the store next in this process (a restart, `ovn-vipd check`) finds it free. (`StoreInUse`
/// was met once by a check right after a stop.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_free_when_the_daemon_returns_even_with_watches_open() {
    let mut daemon = TestDaemon::start().await;
    for round in 0..5 {
        let mut c = clients(&daemon).await;
        let mut open = Vec::new();
        for _ in 0..16 {
            open.push(
                c.vips
                    .watch_vips(pb::WatchVipsRequest::default())
                    .await
                    .unwrap()
                    .into_inner(),
            );
        }
        daemon.stop_daemon_only().await;
        let opened = ovn_vipd::registry::Registry::open(&daemon.dir.path().join("data").join("store"));
        assert!(opened.is_ok(), "round {round}: {:?}", opened.err());
        drop(opened);
        drop(open);
        daemon.restart_daemon_only().await;
    }
    daemon.stop().await;
}

/// NB going away marks every VIP NBUnavailable: from STATUS_BULK VIPs on that is one status
/// revision for all of them (it used to take the change log's whole retention at scale), and a
/// watch resumed from before it reports every VIP once, NBUnavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_status_changes_at_once_take_one_revision_and_a_resumed_watch_sees_every_vip() {
    let mut daemon = TestDaemon::start_with(true).await;
    let c = clients(&daemon).await;
    let mut subnets = c.subnets.clone();
    subnets
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/16", ""))
        .await
        .unwrap();
    let count = ovn_vipd::store::STATUS_BULK + 10;
    let mut writers = Vec::new();
    for writer in 0..16 {
        let mut vips = c.vips.clone();
        writers.push(tokio::spawn(async move {
            for index in (writer..count).step_by(16) {
                vips.create_vip(pb::CreateVipRequest {
                    vip: Some(pb::Vip {
                        name: format!("bulk-{index:04}"),
                        subnet: "ovn-default".into(),
                        ..Default::default()
                    }),
                })
                .await
                .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let mut vips = c.vips.clone();
    let ready = |vips: Vec<pb::Vip>| {
        vips.iter()
            .filter(|vip| vip.status.as_ref().is_some_and(|s| s.ready))
            .count()
    };
    common::wait_for("every VIP Ready", Duration::from_secs(60), || {
        let mut vips = vips.clone();
        async move {
            let n = ready(every_vip(&mut vips).await);
            (n == count).then_some(()).ok_or(format!("{n} ready"))
        }
    })
    .await;

    // A rule, on a VIP with addresses: Pending in the answer until the NB sync has looked at it.
    vips.create_vip(pb::CreateVipRequest {
        vip: Some(slb_vip("lb")),
    })
    .await
    .unwrap();
    let mut rules = c.rules.clone();
    let answered = rules
        .create_switch_lb_rule(pb::CreateSwitchLbRuleRequest {
            rule: Some(rule("lb-rule", "lb", 80)),
        })
        .await
        .unwrap()
        .into_inner();
    let reason = |status: Option<pb::SwitchLbRuleStatus>| {
        status
            .unwrap_or_default()
            .conditions
            .first()
            .map(|c| c.reason.clone())
            .unwrap_or_default()
    };
    assert_eq!(reason(answered.status), "Pending");
    common::wait_for("the rule looked at", Duration::from_secs(10), || {
        let mut rules = rules.clone();
        async move {
            let got = rules
                .get_switch_lb_rule(pb::GetSwitchLbRuleRequest { name: "lb-rule".into() })
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            let reason = reason(got.status);
            (reason != "Pending").then_some(()).ok_or(reason)
        }
    })
    .await;
    let since = vips
        .list_vips(pb::ListVipsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .revision;
    let count = count + 1;

    daemon.nb.kill();
    common::wait_for("every VIP NBUnavailable", Duration::from_secs(30), || {
        let mut vips = vips.clone();
        async move {
            (ready(every_vip(&mut vips).await) == 0)
                .then_some(())
                .ok_or("still ready".to_string())
        }
    })
    .await;
    let now = vips
        .list_vips(pb::ListVipsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .revision;
    // One status revision per bulk change, not one per VIP: the NB error's message may change
    // once (the connection closed, then refused), and each change marks every VIP again.
    assert!(
        now > since && now <= since + 3,
        "{} status revisions for {count} VIPs",
        now - since
    );

    let mut resumed = every_vip_watch(&mut vips, since).await;
    let mut seen: HashMap<String, u64> = HashMap::new();
    while seen.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(10), resumed.message())
            .await
            .expect("every VIP reported")
            .unwrap()
            .unwrap();
        assert_eq!(event.r#type, pb::vip_event::Type::Modified as i32);
        assert!(
            event.revision > since && event.revision <= since + 3,
            "{}",
            event.revision
        );
        let vip = event.vip.unwrap_or_default();
        let reason = vip
            .status
            .unwrap_or_default()
            .conditions
            .first()
            .map(|c| c.reason.clone());
        assert_eq!(reason.as_deref(), Some("NBUnavailable"), "{}", vip.name);
        // Again only for a later bulk change.
        let last = seen.insert(vip.name.clone(), event.revision);
        assert!(
            last.is_none_or(|last| last < event.revision),
            "{} twice at one revision",
            vip.name
        );
    }
    // The rule's balancer is in NB too: not Ready while NB is away.
    let got = rules
        .get_switch_lb_rule(pb::GetSwitchLbRuleRequest { name: "lb-rule".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reason(got.status), "NBUnavailable");
    daemon.nb.start();
    daemon.stop().await;
}

/// Every VIP, page by page.
async fn every_vip(vips: &mut VipServiceClient<tonic::transport::Channel>) -> Vec<pb::Vip> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = vips
            .list_vips(pb::ListVipsRequest {
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.vips);
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

/// A watch of every VIP after `revision`.
async fn every_vip_watch(
    vips: &mut VipServiceClient<tonic::transport::Channel>,
    revision: u64,
) -> tonic::Streaming<pb::VipEvent> {
    vips.watch_vips(pb::WatchVipsRequest {
        name: String::new(),
        revision,
    })
    .await
    .unwrap()
    .into_inner()
}
