//! A VIP naming a subnet that does not exist yet (issue #17, references before their target):
//! accepted and stored without addresses, Ready=False `SubnetNotFound`; creating the subnet
//! allocates it in the subnet's own batch (what it requested, exactly), or leaves it pending
//! with the reason its request cannot be met. A bundle sent through raw gRPC in reverse
//! dependency order (rule → VIP → subnet) ends Ready with its NB rows, through tonic and through
//! grpcurl; a pending VIP survives a restart and a SIGKILL; a watch sees it ADDED pending, then
//! MODIFIED with its addresses.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::requests::{
    aap, bind_with_vip, create_rule, create_vip, switch_lb_vip, tcp_rule, vip, wait_for_rule_status,
    wait_for_vip_status, Clients,
};
use common::TestDaemon;
use ovn_vipd::api::proto::v1 as pb;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(15);

/// The Ready condition's reason, or "".
fn reason(status: &pb::VipStatus) -> &str {
    status
        .conditions
        .iter()
        .find(|condition| condition.r#type == "Ready")
        .map_or("", |condition| condition.reason.as_str())
}

fn message(status: &pb::VipStatus) -> &str {
    status
        .conditions
        .iter()
        .find(|condition| condition.r#type == "Ready")
        .map_or("", |condition| condition.message.as_str())
}

fn with_v4(vip: pb::Vip, v4ip: &str) -> pb::Vip {
    pb::Vip {
        v4ip: v4ip.into(),
        ..vip
    }
}

/// Waits until VIP `name` is Ready=False with `expected` as reason; returns its status.
async fn pending_with(clients: &Clients, name: &str, expected: &str) -> pb::VipStatus {
    let status = wait_for_vip_status(&clients.vips, name, expected, WAIT, |status| {
        !status.ready && reason(status) == expected
    })
    .await;
    assert!(
        status.v4ip.is_empty() && status.v6ip.is_empty() && status.mac.is_empty(),
        "{name}: a pending VIP holds nothing: {status:?}"
    );
    status
}

fn port_column(daemon: &TestDaemon, port: &str, column: &str) -> String {
    daemon
        .nb
        .nbctl(&["--if-exists", "get", "logical_switch_port", port, column])
        .trim()
        .to_string()
}

/// What a reverse-order bundle must end with: the rule Ready with the VIP's address as its
/// frontend in NB, the switch_lb_vip Ready, the AAP VIP's virtual port in NB with its address.
async fn bundle_ready(daemon: &TestDaemon, clients: &mut Clients, rule: &str, lb_vip: &str, aap_vip: &str) {
    let lb = wait_for_vip_status(&clients.vips, lb_vip, "Ready", WAIT, |status| status.ready).await;
    assert!(!lb.v4ip.is_empty(), "{lb:?}");
    let aap_status = wait_for_vip_status(&clients.vips, aap_vip, "Ready", WAIT, |status| status.ready).await;
    let rule_status = wait_for_rule_status(&clients.rules, rule, "Ready", WAIT, |status| status.ready).await;
    let frontend = format!("{}:80", lb.v4ip);
    assert!(rule_status.vips.contains(&frontend), "{rule_status:?}");
    let balancers = daemon.nb.nbctl(&["--bare", "--columns=vips", "find", "load_balancer"]);
    assert!(balancers.contains(&frontend), "NB balancers: {balancers}");
    assert_eq!(port_column(daemon, aap_vip, "type"), "virtual");
    let virtual_ip = port_column(daemon, aap_vip, "options:virtual-ip");
    assert_eq!(
        virtual_ip.trim_matches('"'),
        aap_status.v4ip,
        "virtual port of {aap_vip}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vip_naming_a_missing_subnet_waits_for_it_and_gets_what_it_requested() {
    let daemon = TestDaemon::start().await;
    let mut clients = daemon.clients().await;

    // Accepted before the subnet exists: stored without addresses, Ready=False SubnetNotFound.
    let answer = clients.create_vip(with_v4(vip("static", "later"), "10.16.0.121")).await;
    let status = answer.status.clone().unwrap_or_default();
    assert_eq!(reason(&status), "SubnetNotFound", "{answer:?}");
    assert!(message(&status).contains("subnet later"), "{answer:?}");
    assert!(status.v4ip.is_empty() && status.mac.is_empty(), "{answer:?}");
    assert_eq!(answer.v4ip, "10.16.0.121", "the request is kept as requested");
    clients.create_vip(aap("aap-early", "later")).await;
    clients.create_vip(with_v4(vip("outside", "later"), "10.99.0.5")).await;
    clients.create_vip(with_v4(vip("twin", "later"), "10.16.0.121")).await;
    clients
        .create_vip(pb::Vip {
            v6ip: "fd00::5".into(),
            ..vip("v6-wanted", "later")
        })
        .await;
    // A retry of the same creation answers the same.
    let again = clients.create_vip(with_v4(vip("static", "later"), "10.16.0.121")).await;
    assert_eq!(reason(&again.status.unwrap_or_default()), "SubnetNotFound");
    // Listed and gettable like any VIP.
    let listed = clients
        .vips
        .list_vips(pb::ListVipsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listed.vips.iter().map(|vip| vip.name.as_str()).collect();
    assert_eq!(names, ["aap-early", "outside", "static", "twin", "v6-wanted"]);
    pending_with(&clients, "aap-early", "SubnetNotFound").await;
    // No NB rows for it.
    assert_eq!(port_column(&daemon, "aap-early", "name"), "");

    // The subnet appears: each pending VIP is allocated in the subnet's batch, or stays pending
    // with why; the creation itself succeeds.
    clients.create_subnet("later", "10.16.0.0/16", "").await;
    let got = wait_for_vip_status(&clients.vips, "static", "Ready", WAIT, |status| status.ready).await;
    assert_eq!(got.v4ip, "10.16.0.121", "exactly what it requested");
    assert!(!got.mac.is_empty());
    wait_for_vip_status(&clients.vips, "aap-early", "Ready", WAIT, |status| status.ready).await;
    assert_eq!(port_column(&daemon, "aap-early", "type"), "virtual");
    let outside = pending_with(&clients, "outside", "AddressNotInSubnet").await;
    assert!(message(&outside).contains("10.99.0.5"), "{outside:?}");
    let twin = pending_with(&clients, "twin", "AddressTaken").await;
    assert!(message(&twin).contains("vip/static"), "{twin:?}");
    pending_with(&clients, "v6-wanted", "FamilyNotInSubnet").await;

    // BindPod must answer with an address: a pending VIP is refused like a missing one.
    let error = clients
        .pods
        .bind_pod(bind_with_vip("default", "early", "later", "twin"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
    assert!(error.message().contains("vip twin has no addresses yet"), "{error:?}");

    // Deleting a VIP tries the subnet's pending VIPs again with what it let go of: once
    // `static` is gone, `twin` gets the address in the same batch.
    clients
        .vips
        .delete_vip(pb::DeleteVipRequest {
            name: "static".into(),
            revision: 0,
        })
        .await
        .unwrap();
    let twin = wait_for_vip_status(&clients.vips, "twin", "Ready", WAIT, |status| status.ready).await;
    assert_eq!(twin.v4ip, "10.16.0.121");
    // UpdateSubnet with pending VIPs: they hold nothing, so widening exclude_ips never conflicts
    // with them; they are tried again, and one whose request is still unmet keeps its reason.
    clients
        .subnets
        .update_subnet(update_exclude_ips(
            "later",
            "10.16.0.0/16",
            &["10.16.0.200..10.16.0.210"],
        ))
        .await
        .expect("widening exclude_ips with pending VIPs");
    pending_with(&clients, "outside", "AddressNotInSubnet").await;

    // Deleting the subnet: pending VIPs do not block it (allocated ones do) and go back to
    // waiting for it.
    for name in ["twin", "aap-early"] {
        clients
            .vips
            .delete_vip(pb::DeleteVipRequest {
                name: name.into(),
                revision: 0,
            })
            .await
            .unwrap();
    }
    clients
        .subnets
        .delete_subnet(pb::DeleteSubnetRequest {
            name: "later".into(),
            ..Default::default()
        })
        .await
        .expect("pending VIPs do not block a subnet's deletion");
    pending_with(&clients, "outside", "SubnetNotFound").await;
    // A pending VIP is deleted like any other.
    clients
        .vips
        .delete_vip(pb::DeleteVipRequest {
            name: "outside".into(),
            revision: 0,
        })
        .await
        .unwrap();
    let error = clients
        .vips
        .get_vip(pb::GetVipRequest { name: "outside".into() })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    daemon.stop().await;
}

/// An UpdateSubnet of `name` (`cidr_v4` as it is) setting `exclude_ips`.
fn update_exclude_ips(name: &str, cidr_v4: &str, exclude_ips: &[&str]) -> pb::UpdateSubnetRequest {
    pb::UpdateSubnetRequest {
        subnet: Some(pb::Subnet {
            name: name.into(),
            cidr_v4: cidr_v4.into(),
            exclude_ips: exclude_ips.iter().map(|entry| entry.to_string()).collect(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["exclude_ips".into()],
        }),
    }
}

/// A subnet whose every dynamic address is excluded: a dynamic pending VIP stays pending
/// (`SubnetFull`) while a static one gets its (excluded) address, as Kube-OVN allows; a second
/// VIP asking for that address (after it in name order, the order pending VIPs are allocated
/// in) is `AddressTaken`. Narrowing exclude_ips (UpdateSubnet) lets the
/// dynamic one in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_of_the_subnet_tries_its_pending_vips_again() {
    let daemon = TestDaemon::start().await;
    let mut clients = daemon.clients().await;
    clients.create_vip(vip("dyn", "small")).await;
    clients.create_vip(with_v4(vip("first", "small"), "10.18.0.5")).await;
    clients.create_vip(with_v4(vip("second", "small"), "10.18.0.5")).await;
    clients
        .subnets
        .create_subnet(pb::CreateSubnetRequest {
            subnet: Some(pb::Subnet {
                name: "small".into(),
                cidr_v4: "10.18.0.0/29".into(),
                exclude_ips: vec!["10.18.0.2..10.18.0.6".into()],
                ..Default::default()
            }),
        })
        .await
        .expect("the subnet is created whatever its pending VIPs get");
    let first = wait_for_vip_status(&clients.vips, "first", "Ready", WAIT, |status| status.ready).await;
    assert_eq!(first.v4ip, "10.18.0.5");
    pending_with(&clients, "dyn", "SubnetFull").await;
    pending_with(&clients, "second", "AddressTaken").await;
    clients
        .subnets
        .update_subnet(update_exclude_ips("small", "10.18.0.0/29", &["10.18.0.2..10.18.0.4"]))
        .await
        .unwrap();
    let dyn_status = wait_for_vip_status(&clients.vips, "dyn", "Ready", WAIT, |status| status.ready).await;
    assert_eq!(
        dyn_status.v4ip, "10.18.0.6",
        "the one address neither excluded nor taken"
    );
    pending_with(&clients, "second", "AddressTaken").await;
    daemon.stop().await;
}

/// A pending VIP is tried again whenever its subnet gets room back: the deletion of a
/// switch-LB rule whose address frontend used the one free address, and the unbinding of a pod
/// that held an address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_addresses_go_to_pending_vips() {
    let daemon = TestDaemon::start().await;
    let mut clients = daemon.clients().await;
    let mut front = tcp_rule("front", "10.19.0.3", "app: web", 80, 8080);
    front.endpoints = vec!["10.19.0.50".into()];
    clients.rules.create_switch_lb_rule(create_rule(front)).await.unwrap();
    clients.create_vip(vip("dyn-a", "tiny")).await;
    clients.create_vip(vip("dyn-b", "tiny")).await;
    // Usable .2-.6; dynamic allocation may use .3 only, and the rule's frontend is there.
    clients
        .subnets
        .create_subnet(pb::CreateSubnetRequest {
            subnet: Some(pb::Subnet {
                name: "tiny".into(),
                cidr_v4: "10.19.0.0/29".into(),
                exclude_ips: vec!["10.19.0.2".into(), "10.19.0.4..10.19.0.6".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    pending_with(&clients, "dyn-a", "SubnetFull").await;
    pending_with(&clients, "dyn-b", "SubnetFull").await;
    // A pod takes .2 (a static request may name an excluded address); then .2 stops being
    // excluded: still no room, the pod holds it.
    let mut bind = common::requests::bind_with_vip("default", "holder", "tiny", "");
    bind.annotations.clear();
    bind.nics[0].ips = vec!["10.19.0.2".into()];
    clients.pods.bind_pod(bind).await.expect("bind holder");
    clients
        .subnets
        .update_subnet(update_exclude_ips("tiny", "10.19.0.0/29", &["10.19.0.4..10.19.0.6"]))
        .await
        .unwrap();
    pending_with(&clients, "dyn-a", "SubnetFull").await;
    // The rule goes: its frontend address goes to the first pending VIP.
    clients
        .rules
        .delete_switch_lb_rule(pb::DeleteSwitchLbRuleRequest {
            name: "front".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let a = wait_for_vip_status(&clients.vips, "dyn-a", "Ready", WAIT, |status| status.ready).await;
    assert_eq!(a.v4ip, "10.19.0.3");
    pending_with(&clients, "dyn-b", "SubnetFull").await;
    // The pod goes: its address goes to the other.
    clients
        .pods
        .unbind_pod(pb::UnbindPodRequest {
            namespace: "default".into(),
            name: "holder".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let b = wait_for_vip_status(&clients.vips, "dyn-b", "Ready", WAIT, |status| status.ready).await;
    assert_eq!(b.v4ip, "10.19.0.2");
    daemon.stop().await;
}

/// A bundle in reverse dependency order through raw gRPC (tonic), in file order: the rule, its
/// switch_lb_vip, an AAP VIP, then their subnet. Every call is accepted; it ends Ready with the
/// NB rows right. Before the subnet, the rule waits for its VIP (`VipNotReady`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverse_order_bundle_through_raw_grpc_ends_ready() {
    let daemon = TestDaemon::start().await;
    let mut clients = daemon.clients().await;
    // Health-checked: its source address is reserved when the VIP gets its addresses.
    let mut rule = tcp_rule("web", "web-vip", "app: web", 80, 8080);
    rule.endpoints = vec!["10.16.0.50".into()];
    rule.health_check = true;
    clients
        .rules
        .create_switch_lb_rule(create_rule(rule))
        .await
        .expect("rule first");
    clients
        .vips
        .create_vip(create_vip(switch_lb_vip("web-vip", "ovn-default")))
        .await
        .expect("VIP before its subnet");
    clients
        .vips
        .create_vip(create_vip(aap("vip-aap", "ovn-default")))
        .await
        .expect("AAP VIP before its subnet");
    // A rule created while its VIP is pending answers with why (not an empty status).
    let answered = clients
        .rules
        .create_switch_lb_rule(create_rule(tcp_rule("web-81", "web-vip", "app: web", 81, 8080)))
        .await
        .expect("a rule on a pending VIP")
        .into_inner()
        .status
        .unwrap_or_default();
    assert_eq!(
        answered.conditions.first().map(|c| c.reason.as_str()),
        Some("VipNotReady"),
        "{answered:?}"
    );
    assert!(
        answered.conditions[0].message.contains("subnet ovn-default"),
        "{answered:?}"
    );
    clients
        .rules
        .delete_switch_lb_rule(pb::DeleteSwitchLbRuleRequest {
            name: "web-81".into(),
            revision: 0,
        })
        .await
        .expect("delete web-81");
    let waiting = wait_for_rule_status(&clients.rules, "web", "VipNotReady", WAIT, |status| {
        status
            .conditions
            .first()
            .is_some_and(|condition| condition.reason == "VipNotReady")
    })
    .await
    .conditions[0]
        .message
        .clone();
    assert!(
        waiting.contains("web-vip") && waiting.contains("subnet ovn-default"),
        "{waiting}"
    );
    clients.create_subnet("ovn-default", "10.16.0.0/16", "").await;
    daemon.attach_router("ovn-default", "04:00:00:00:00:01", "10.16.0.1/16");
    bundle_ready(&daemon, &mut clients, "web", "web-vip", "vip-aap").await;
    let address = clients
        .vips
        .get_vip(pb::GetVipRequest { name: "web-vip".into() })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap_or_default()
        .v4ip;
    let checks = daemon
        .nb
        .nbctl(&["--bare", "--columns=vip", "list", "load_balancer_health_check"]);
    assert!(
        checks.contains(&format!("{address}:80")),
        "health check of the frontend: {checks}"
    );
    daemon.stop().await;
}

/// Runs `grpcurl -plaintext -d BODY ADDRESS METHOD` (GRPCURL names the binary; scripts/test sets
/// it); panics with its output when it fails.
fn grpcurl(daemon: &TestDaemon, body: &str, method: &str) -> String {
    let binary = std::env::var("GRPCURL")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/py/bin/grpcurl").into());
    let address = daemon.endpoint.trim_start_matches("http://").to_string();
    let output = Command::new(&binary)
        .args(["-plaintext", "-d", body, &address, method])
        .output()
        .unwrap_or_else(|error| panic!("run {binary}: {error} (scripts/test installs grpcurl)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "grpcurl {method} {body}: {text}");
    text
}

/// The same bundle through grpcurl, as a user would send a manifest's objects in file order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverse_order_bundle_through_grpcurl_ends_ready() {
    let daemon = TestDaemon::start().await;
    let mut clients = daemon.clients().await;
    grpcurl(
        &daemon,
        r#"{"rule": {"name": "web", "vip": "web-vip", "namespace": "default", "endpoints": ["10.17.0.50"],
            "ports": [{"name": "http", "port": 80, "target_port": 8080, "protocol": "PROTOCOL_TCP"}]}}"#,
        "ovnvip.v1.SwitchLbRuleService/CreateSwitchLbRule",
    );
    let answer = grpcurl(
        &daemon,
        r#"{"vip": {"name": "web-vip", "subnet": "blue", "type": "switch_lb_vip"}}"#,
        "ovnvip.v1.VipService/CreateVip",
    );
    assert!(answer.contains("SubnetNotFound"), "{answer}");
    grpcurl(
        &daemon,
        r#"{"vip": {"name": "vip-aap", "subnet": "blue", "namespace": "default", "selector": ["app: aap1"]}}"#,
        "ovnvip.v1.VipService/CreateVip",
    );
    grpcurl(
        &daemon,
        r#"{"subnet": {"name": "blue", "cidr_v4": "10.17.0.0/16"}}"#,
        "ovnvip.v1.SubnetService/CreateSubnet",
    );
    daemon.attach_router("blue", "04:00:00:00:00:02", "10.17.0.1/16");
    bundle_ready(&daemon, &mut clients, "web", "web-vip", "vip-aap").await;
    daemon.stop().await;
}

/// A pending VIP survives a restart with its request; `ovn-vipd check` is clean with it; the
/// subnet created after the restart gives it exactly what it asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_vip_survives_a_restart_and_check_is_clean() {
    let mut daemon = TestDaemon::start().await;
    let mut clients = daemon.clients().await;
    clients.create_vip(with_v4(aap("kept", "later"), "10.16.0.77")).await;
    daemon.stop_daemon_only().await;
    let (code, stdout, stderr) = common::process::run_binary(
        &[
            "check",
            &format!("--data-dir={}", daemon.dir.path().join("data").display()),
            &format!("--ovn-nb={}", daemon.nb.unix_remote()),
        ],
        &[],
    );
    assert_eq!(code, 0, "check with a pending VIP: {stdout}{stderr}");
    daemon.restart_daemon_only().await;
    let mut clients = daemon.clients().await;
    let status = pending_with(&clients, "kept", "SubnetNotFound").await;
    assert!(message(&status).contains("subnet later"), "{status:?}");
    let kept = clients
        .vips
        .get_vip(pb::GetVipRequest { name: "kept".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((kept.v4ip.as_str(), kept.namespace.as_str()), ("10.16.0.77", "default"));
    clients.create_subnet("later", "10.16.0.0/16", "").await;
    let status = wait_for_vip_status(&clients.vips, "kept", "Ready", WAIT, |status| status.ready).await;
    assert_eq!(status.v4ip, "10.16.0.77");
    assert_eq!(port_column(&daemon, "kept", "type"), "virtual");
    daemon.stop_daemon_only().await;
    let (code, stdout, stderr) = common::process::run_binary(
        &[
            "check",
            &format!("--data-dir={}", daemon.dir.path().join("data").display()),
            &format!("--ovn-nb={}", daemon.nb.unix_remote()),
        ],
        &[],
    );
    assert_eq!(code, 0, "check after the allocation: {stdout}{stderr}");
}

async fn next_event(events: &mut tonic::Streaming<pb::VipEvent>) -> pb::VipEvent {
    tokio::time::timeout(WAIT, events.message())
        .await
        .expect("an event in time")
        .expect("stream")
        .expect("an event")
}

/// A watch sees the VIP ADDED without addresses (pending), then MODIFIED with them once its
/// subnet is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sees_the_vip_added_pending_then_modified_with_its_addresses() {
    let daemon = TestDaemon::start().await;
    let mut clients = daemon.clients().await;
    let mut events = clients
        .vips
        .watch_vips(pb::WatchVipsRequest {
            name: "watched".into(),
            revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    clients.create_vip(vip("watched", "later")).await;
    let first = next_event(&mut events).await;
    assert_eq!(first.r#type(), pb::vip_event::Type::Added, "{first:?}");
    let status = first.vip.clone().unwrap_or_default().status.unwrap_or_default();
    assert!(status.v4ip.is_empty(), "{first:?}");
    assert_eq!(reason(&status), "SubnetNotFound", "{first:?}");
    let pending_revision = first.vip.as_ref().map_or(0, |vip| vip.revision);
    clients.create_subnet("later", "10.16.0.0/16", "").await;
    let allocated = loop {
        let event = next_event(&mut events).await;
        let status = event.vip.clone().unwrap_or_default().status.unwrap_or_default();
        if !status.v4ip.is_empty() {
            break event;
        }
    };
    assert_eq!(allocated.r#type(), pb::vip_event::Type::Modified, "{allocated:?}");
    let vip = allocated.vip.unwrap_or_default();
    assert!(vip.revision > pending_revision, "{vip:?}");
    assert!(!vip.status.unwrap_or_default().mac.is_empty());
    daemon.stop().await;
}

const CRASH_SUBNETS: usize = 200;
const CRASH_VIPS: usize = 8;

/// The crash test's child: for subnet k = where the store left off, creates CRASH_VIPS VIPs
/// naming subnet `s<k>` (pending), printing each acknowledgement, then the subnet, then the next.
#[test]
#[ignore = "the crash test's child process; started by a_subnet_and_its_pending_vips_land_together_through_sigkill"]
fn pending_crash_child() {
    let Ok(dir) = std::env::var("PENDING_CRASH_CHILD_DIR") else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (registry, _) = ovn_vipd::registry::Registry::open(std::path::Path::new(&dir)).unwrap();
        let start = registry.list_subnets().len();
        println!("READY");
        for k in start..CRASH_SUBNETS {
            for index in 0..CRASH_VIPS {
                let name = format!("s{k}-v{index}");
                let spec = ovn_vipd::model::VipSpec {
                    name: name.clone(),
                    namespace: String::new(),
                    subnet: format!("s{k}"),
                    vip_type: ovn_vipd::model::VipType::Reserved,
                    v4ip: (index == 0).then(|| std::net::Ipv4Addr::new(10, (k % 250) as u8, (k / 250) as u8, 9)),
                    v6ip: None,
                    mac: None,
                    selector: Default::default(),
                };
                registry.create_vip(spec).await.unwrap();
                println!("ACK vip {name}");
            }
            let subnet = ovn_vipd::model::Subnet {
                name: format!("s{k}"),
                logical_switch: format!("s{k}"),
                cidr_v4: Some(format!("10.{}.{}.0/24", k % 250, k / 250).parse().unwrap()),
                cidr_v6: None,
                gateway_v4: None,
                gateway_v6: None,
                exclude_ips: vec![],
                strategy: ovn_vipd::model::Strategy::Random,
                vpc: ovn_vipd::model::DEFAULT_VPC.into(),
            };
            registry.create_subnet(subnet).await.unwrap();
            println!("ACK subnet s{k}");
        }
    });
}

/// SIGKILL at random moments while VIPs are created before their subnet and the subnet after:
/// every acknowledged VIP and subnet is there after a restart; a subnet and the allocation of
/// its pending VIPs land together (a present subnet has every VIP naming it allocated, a missing
/// one every VIP naming it pending); the consistency check stays clean.
#[test]
fn a_subnet_and_its_pending_vips_land_together_through_sigkill() {
    if std::env::var("PENDING_CRASH_CHILD_DIR").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<String> = Vec::new();
    let logs = tempfile::tempdir().unwrap();
    for round in 0..8 {
        let stderr_path = logs.path().join(format!("child-{round}.log"));
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "pending_crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PENDING_CRASH_CHILD_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let reader_lines = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                reader_lines.lock().unwrap().push(line);
            }
        });
        let exited = common::wait_for_blocking("the child to be ready", Duration::from_secs(60), || {
            if lines.lock().unwrap().iter().any(|line| line.ends_with("READY")) {
                Ok(None)
            } else if let Ok(Some(status)) = child.try_wait() {
                Ok(Some(status))
            } else {
                Err(lines.lock().unwrap().join("\n"))
            }
        });
        if let Some(status) = exited {
            panic!(
                "round {round}: the child exited ({status}) before it was ready: {}{}",
                lines.lock().unwrap().join("\n"),
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        // Kept: the random moment of the kill is the test.
        std::thread::sleep(Duration::from_millis(rand::random::<u64>() % 300 + 30));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        for line in lines.lock().unwrap().iter() {
            if let Some(what) = line.strip_prefix("ACK ") {
                acked.push(what.to_string());
            }
        }

        let (registry, report) = ovn_vipd::registry::Registry::open(dir.path()).unwrap();
        assert!(report.is_clean(), "round {round}: {:?}", report.problems);
        assert!(registry.check().unwrap().is_clean(), "round {round}");
        let subnets: std::collections::BTreeSet<String> = registry
            .list_subnets()
            .into_iter()
            .map(|(subnet, _)| subnet.name)
            .collect();
        let vips = registry.list_vips();
        for what in &acked {
            match what.split_once(' ') {
                Some(("vip", name)) => assert!(
                    vips.iter().any(|vip| vip.spec.name == name),
                    "round {round}: acknowledged vip {name} lost"
                ),
                Some(("subnet", name)) => {
                    assert!(subnets.contains(name), "round {round}: acknowledged subnet {name} lost")
                }
                _ => {}
            }
        }
        for vip in &vips {
            let subnet_there = subnets.contains(&vip.spec.subnet);
            assert_eq!(
                vip.is_allocated(),
                subnet_there,
                "round {round}: {} with subnet {} present={subnet_there}: {vip:?}",
                vip.spec.name,
                vip.spec.subnet
            );
            if let (Some(requested), true) = (vip.spec.v4ip, subnet_there) {
                assert_eq!(vip.v4ip, Some(requested), "round {round}: {}", vip.spec.name);
            }
            if !subnet_there {
                assert_eq!(
                    vip.pending.as_ref().map(|pending| pending.reason.as_str()),
                    Some("SubnetNotFound")
                );
            }
        }
    }
    assert!(
        acked.iter().filter(|what| what.starts_with("subnet")).count() >= 2,
        "the kills came too early to test anything: {acked:?}"
    );
}
