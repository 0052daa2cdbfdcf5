//! NB sync against a real NB ovsdb-server, with ovn-nbctl as the independent judge.

// Requests keep `..Default::default()` even where every field is set: protobuf messages grow fields.
#![allow(clippy::needless_update)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{wait_until_async, TestDaemon};
use ovn_vipd::api::proto::v1 as pb;
use pb::vip_service_client::VipServiceClient;

fn get(daemon: &TestDaemon, args: &[&str]) -> String {
    let mut all = vec!["--if-exists", "get"];
    all.extend_from_slice(args);
    daemon.nb.nbctl(&all).trim().to_string()
}

async fn ready(vips: &mut VipServiceClient<tonic::transport::Channel>, name: &str) -> pb::VipStatus {
    common::requests::wait_for_vip_status(vips, name, "to become ready", Duration::from_secs(5), |status| {
        status.ready
    })
    .await
}

/// Waits until the VIP's Ready condition has `reason`.
async fn wait_for_reason(vips: &mut VipServiceClient<tonic::transport::Channel>, name: &str, reason: &str) {
    common::requests::wait_for_vip_status(
        vips,
        name,
        &format!("reason {reason:?}"),
        Duration::from_secs(5),
        |status| {
            status
                .conditions
                .first()
                .is_some_and(|condition| condition.reason == reason)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aap_vips_become_virtual_ports_and_parents_get_port_security() {
    let daemon = TestDaemon::start().await;
    let common::requests::Clients {
        mut subnets,
        mut vips,
        mut pods,
        ..
    } = daemon.clients().await;
    // A foreign row that must stay byte-identical, and one named like a VIP.
    daemon.nb.nbctl(&[
        "ls-add",
        "foreign-sw",
        "--",
        "lsp-add",
        "foreign-sw",
        "foreign-port",
        "--",
        "lsp-set-addresses",
        "foreign-port",
        "00:00:00:00:00:99 192.168.9.9",
    ]);
    daemon.nb.nbctl(&["lsp-add", "foreign-sw", "vip-taken"]);
    let foreign_before = daemon.nb.nbctl(&["list", "logical_switch_port", "foreign-port"]);

    subnets
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/16", "fd00:10:16::/64"))
        .await
        .unwrap();
    let aap = pb::Vip {
        name: "vip-aap".into(),
        subnet: "ovn-default".into(),
        namespace: "default".into(),
        selector: vec!["app: aap1".into()],
        ..Default::default()
    };
    let created = vips
        .create_vip(pb::CreateVipRequest { vip: Some(aap) })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let bind = |name: &str, app: &str| pb::BindPodRequest {
        namespace: "default".into(),
        name: name.into(),
        labels: HashMap::from([("app".to_string(), app.to_string())]),
        annotations: HashMap::from([("ovn.kubernetes.io/aaps".to_string(), "vip-aap".to_string())]),
        owner_kind: 0,
        owner_name: String::new(),
        nics: vec![pb::NicRequest {
            subnet: "ovn-default".into(),
            interface: "eth0".into(),
            ..Default::default()
        }],
    };
    pods.bind_pod(bind("busybox", "aap1")).await.unwrap();
    pods.bind_pod(bind("busybox2", "aap1")).await.unwrap();
    pods.bind_pod(bind("stranger", "other")).await.unwrap();

    let status = ready(&mut vips, "vip-aap").await;
    assert_eq!(
        status.parents,
        vec!["busybox.default".to_string(), "busybox2.default".to_string()]
    );
    wait_until_async("the virtual ports", Duration::from_secs(5), || {
        get(&daemon, &["logical_switch_port", "vip-aap", "options:virtual-parents"])
            == "\"busybox.default,busybox2.default\""
    })
    .await;
    // One virtual port per family.
    assert_eq!(get(&daemon, &["logical_switch_port", "vip-aap", "type"]), "virtual");
    assert_eq!(
        get(&daemon, &["logical_switch_port", "vip-aap", "options:virtual-ip"]),
        format!("\"{}\"", created.v4ip)
    );
    assert_eq!(
        get(&daemon, &["logical_switch_port", "vip-aap:ipv6", "options:virtual-ip"]),
        format!("\"{}\"", created.v6ip)
    );
    assert!(get(&daemon, &["logical_switch_port", "vip-aap", "external_ids:vendor"]).contains("ovn-vipd"));
    // The parents' port security carries the VIP's addresses; the stranger's does not.
    let parent_security = get(&daemon, &["logical_switch_port", "busybox.default", "port_security"]);
    assert!(
        parent_security.contains(&created.v4ip) && parent_security.contains(&created.v6ip),
        "{parent_security}"
    );
    let stranger_security = get(&daemon, &["logical_switch_port", "stranger.default", "port_security"]);
    assert!(!stranger_security.contains(&created.v4ip), "{stranger_security}");
    assert!(daemon
        .nb
        .nbctl(&["show", "ovn-default"])
        .contains("port stranger.default"));

    // Drift: an edit and a deletion are put back, driven by the monitor.
    daemon.nb.nbctl(&[
        "set",
        "logical_switch_port",
        "vip-aap",
        "options:virtual-ip=10.16.99.99",
    ]);
    daemon.nb.nbctl(&["lsp-del", "vip-aap:ipv6"]);
    wait_until_async("drift repaired", Duration::from_secs(5), || {
        get(&daemon, &["logical_switch_port", "vip-aap", "options:virtual-ip"]) == format!("\"{}\"", created.v4ip)
            && !get(&daemon, &["logical_switch_port", "vip-aap:ipv6", "options:virtual-ip"]).is_empty()
    })
    .await;

    // A VIP whose port name is taken by a foreign row: Conflict, and the row is left alone.
    let taken = pb::Vip {
        name: "vip-taken".into(),
        subnet: "ovn-default".into(),
        namespace: "default".into(),
        ..Default::default()
    };
    vips.create_vip(pb::CreateVipRequest { vip: Some(taken) })
        .await
        .unwrap();
    wait_for_reason(&mut vips, "vip-taken", "Conflict").await;
    assert_eq!(get(&daemon, &["logical_switch_port", "vip-taken", "type"]), "\"\"");

    // Deleting the VIP removes its ports and its addresses from the parents' port security.
    vips.delete_vip(pb::DeleteVipRequest {
        name: "vip-aap".into(),
        revision: 0,
    })
    .await
    .unwrap();
    wait_until_async("the VIP's rows gone", Duration::from_secs(5), || {
        get(&daemon, &["logical_switch_port", "vip-aap", "type"]).is_empty()
            && get(&daemon, &["logical_switch_port", "vip-aap:ipv6", "type"]).is_empty()
            && !get(&daemon, &["logical_switch_port", "busybox.default", "port_security"]).contains(&created.v4ip)
    })
    .await;
    assert_eq!(
        daemon.nb.nbctl(&["list", "logical_switch_port", "foreign-port"]),
        foreign_before
    );
    assert!(daemon.nb.nbctl(&["show", "foreign-sw"]).contains("vip-taken"));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_system_sends_nothing_and_garbage_is_collected() {
    let daemon = TestDaemon::start().await;
    // An owned port nothing wants (as if its VIP was deleted while the daemon was down).
    daemon.nb.nbctl(&[
        "ls-add",
        "leftover-sw",
        "--",
        "set",
        "logical_switch",
        "leftover-sw",
        "external_ids:vendor=ovn-vipd",
    ]);
    daemon.nb.nbctl(&[
        "ls-add",
        "kept-sw",
        "--",
        "lsp-add",
        "kept-sw",
        "orphan",
        "--",
        "set",
        "logical_switch_port",
        "orphan",
        "external_ids:vendor=ovn-vipd",
    ]);
    daemon.nb.nbctl(&["lsp-add", "kept-sw", "not-ours"]);
    wait_until_async("garbage collected", Duration::from_secs(5), || {
        get(&daemon, &["logical_switch_port", "orphan", "name"]).is_empty()
            && !daemon.nb.nbctl(&["ls-list"]).contains("leftover-sw")
    })
    .await;
    assert!(
        daemon.nb.nbctl(&["show", "kept-sw"]).contains("not-ours"),
        "a foreign port is never collected"
    );
    assert!(
        daemon.nb.nbctl(&["ls-list"]).contains("kept-sw"),
        "a foreign switch is never deleted"
    );
    // Once in sync, passes (periodic or triggered by unrelated NB changes) send nothing. Counted
    // between two barriers: an owned orphan port the daemon must collect, whose collection shows
    // it has handled every NB update before it (NB sends them in order).
    let transactions = || {
        daemon.nb.log().matches("\"method\":\"transact\"").count()
            + daemon.nb.log().matches("method=\"transact\"").count()
    };
    daemon.nb_barrier("kept-sw", "marker-before").await;
    let before = transactions();
    daemon
        .nb
        .nbctl(&["set", "logical_switch", "kept-sw", "external_ids:touched=yes"]);
    daemon.nb_barrier("kept-sw", "marker-after").await;
    let after = transactions();
    // ovn-nbctl's change, the marker's creation and its collection: nothing for the change.
    assert_eq!(
        after - before,
        3,
        "the daemon sent a transaction with nothing to change:\n{}",
        daemon.nb.log()
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_lb_vips_and_rules_become_router_mac_ports_and_load_balancers() {
    let daemon = TestDaemon::start().await;
    let common::requests::Clients {
        mut subnets,
        mut vips,
        mut pods,
        mut rules,
    } = daemon.clients().await;
    subnets
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/16", ""))
        .await
        .unwrap();
    let slr_vip = pb::Vip {
        name: "slr-01".into(),
        subnet: "ovn-default".into(),
        r#type: "switch_lb_vip".into(),
        ..Default::default()
    };
    let vip_ip = vips
        .create_vip(pb::CreateVipRequest { vip: Some(slr_vip) })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .v4ip;
    // No router port on the switch yet: not ready, and why.
    wait_for_reason(&mut vips, "slr-01", "NoRouterPort").await;
    // A router with a port in the subnet: the VIP's port answers ARP with the router port's MAC.
    daemon.nb.nbctl(&[
        "lr-add",
        "router",
        "--",
        "lrp-add",
        "router",
        "router-ovn-default",
        "04:00:00:00:00:01",
        "10.16.0.1/16",
    ]);
    daemon.nb.nbctl(&[
        "lsp-add",
        "ovn-default",
        "ovn-default-router",
        "--",
        "lsp-set-type",
        "ovn-default-router",
        "router",
        "--",
        "lsp-set-addresses",
        "ovn-default-router",
        "router",
        "--",
        "lsp-set-options",
        "ovn-default-router",
        "router-port=router-ovn-default",
    ]);
    // Issue #16: with a router but no rule, nothing answers for the VIP yet: not Ready.
    wait_for_reason(&mut vips, "slr-01", "NoRule").await;
    // Issue #16 case 2: the VIP's port is a reservation record only. Its addresses would be a
    // second L2 destination for the router MAC; the router answers ARP/ND for the VIP instead.
    assert_eq!(get(&daemon, &["logical_switch_port", "slr-01", "addresses"]), "[]");

    // A rule with an explicit endpoint and selector backends, ClientIP affinity.
    let bind = |name: &str| pb::BindPodRequest {
        namespace: "default".into(),
        name: name.into(),
        labels: HashMap::from([("app".to_string(), "web".to_string())]),
        annotations: HashMap::new(),
        owner_kind: 0,
        owner_name: String::new(),
        nics: vec![pb::NicRequest {
            subnet: "ovn-default".into(),
            interface: "eth0".into(),
            ..Default::default()
        }],
    };
    let web1 = pods.bind_pod(bind("web-1")).await.unwrap().into_inner();
    let web1_ip = web1.nics[0].addresses[0].split('/').next().unwrap().to_string();
    let rule = pb::SwitchLbRule {
        name: "slr-web".into(),
        vip: "slr-01".into(),
        namespace: "default".into(),
        selector: vec!["app: web".into()],
        endpoints: vec!["10.16.0.200".into()],
        ports: vec![pb::LbPort {
            name: "http".into(),
            port: 80,
            target_port: 8080,
            protocol: pb::Protocol::Tcp as i32,
        }],
        session_affinity: pb::SessionAffinity::ClientIp as i32,
        session_affinity_timeout: 60,
        health_check: true,
        ..Default::default()
    };
    rules
        .create_switch_lb_rule(pb::CreateSwitchLbRuleRequest { rule: Some(rule) })
        .await
        .unwrap();
    // A rule serves it: the router answers for it, Ready.
    ready(&mut vips, "slr-01").await;
    let vips_of = |daemon: &TestDaemon| get(daemon, &["load_balancer", "slr-web-tcp", "vips"]);
    wait_until_async("the load balancer", Duration::from_secs(5), || {
        vips_of(&daemon).contains(&web1_ip)
    })
    .await;
    let lb = vips_of(&daemon);
    assert!(
        lb.contains(&format!("\"{vip_ip}:80\"")) && lb.contains("10.16.0.200:8080"),
        "{lb}"
    );
    assert_eq!(
        get(&daemon, &["load_balancer", "slr-web-tcp", "options:affinity_timeout"]),
        "\"60\""
    );
    assert_eq!(
        get(&daemon, &["load_balancer", "slr-web-tcp", "selection_fields"]),
        "[ip_src]"
    );
    assert!(
        get(&daemon, &["logical_switch", "ovn-default", "load_balancer"]).len() > 2,
        "attached to the switch"
    );
    // ... and to the subnet's router, whose port then answers ARP/ND for the VIP (the router row
    // is otherwise untouched).
    let lb_uuid = daemon
        .nb
        .nbctl(&["--bare", "--columns=_uuid", "find", "load_balancer", "name=slr-web-tcp"])
        .trim()
        .to_string();
    assert_eq!(
        get(&daemon, &["logical_router", "router", "load_balancer"]),
        format!("[{lb_uuid}]")
    );
    // Someone detaching it from the router: the daemon attaches it again.
    daemon.nb.nbctl(&["lr-lb-del", "router", &lb_uuid]);
    wait_until_async("re-attached to the router", Duration::from_secs(5), || {
        get(&daemon, &["logical_router", "router", "load_balancer"]) == format!("[{lb_uuid}]")
    })
    .await;
    // Health checks: one per VIP entry, and each pod backend mapped to its port and the source
    // address the daemon reserved in the subnet (explicit endpoints without a port are not).
    wait_until_async("health checks", Duration::from_secs(5), || {
        get(&daemon, &["load_balancer", "slr-web-tcp", "ip_port_mappings"]).contains("web-1.default:10.16.")
    })
    .await;
    let checks = daemon
        .nb
        .nbctl(&["--bare", "--columns=vip", "list", "load_balancer_health_check"]);
    assert_eq!(checks.trim(), format!("{vip_ip}:80"));
    let mappings = get(&daemon, &["load_balancer", "slr-web-tcp", "ip_port_mappings"]);
    assert!(!mappings.contains("10.16.0.200"), "{mappings}");
    // The rule's status says what NB holds for it.
    let status = rules
        .get_switch_lb_rule(pb::GetSwitchLbRuleRequest { name: "slr-web".into() })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert!(status.ready, "{status:?}");
    assert_eq!(status.vips, vec![format!("{vip_ip}:80")]);
    assert!(
        status.backends.contains(&web1_ip) && status.backends.contains(&"10.16.0.200".to_string()),
        "{status:?}"
    );
    // Backends follow pods binding and unbinding.
    let web2 = pods.bind_pod(bind("web-2")).await.unwrap().into_inner();
    let web2_ip = web2.nics[0].addresses[0].split('/').next().unwrap().to_string();
    wait_until_async("web-2 added", Duration::from_secs(5), || {
        vips_of(&daemon).contains(&web2_ip)
    })
    .await;
    pods.unbind_pod(pb::UnbindPodRequest {
        namespace: "default".into(),
        name: "web-1".into(),
        owner_gone: false,
        ..Default::default()
    })
    .await
    .unwrap();
    wait_until_async("web-1 removed", Duration::from_secs(5), || {
        !vips_of(&daemon).contains(&web1_ip)
    })
    .await;
    // Deleting the rule removes its balancer.
    rules
        .delete_switch_lb_rule(pb::DeleteSwitchLbRuleRequest {
            name: "slr-web".into(),
            revision: 0,
        })
        .await
        .unwrap();
    wait_until_async("the balancer gone", Duration::from_secs(5), || {
        !daemon
            .nb
            .nbctl(&["--bare", "--columns=name", "list", "load_balancer"])
            .contains("slr-web")
    })
    .await;
    assert_eq!(get(&daemon, &["logical_switch", "ovn-default", "load_balancer"]), "[]");
    assert_eq!(get(&daemon, &["logical_router", "router", "load_balancer"]), "[]");
    assert_eq!(
        daemon
            .nb
            .nbctl(&["--bare", "--columns=vip", "list", "load_balancer_health_check"])
            .trim(),
        ""
    );
    // Its VIP is no longer served: not Ready again.
    wait_for_reason(&mut vips, "slr-01", "NoRule").await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nb_outage_requests_are_accepted_and_nb_converges_when_it_returns() {
    let mut daemon = TestDaemon::start().await;
    let common::requests::Clients {
        mut subnets, mut vips, ..
    } = daemon.clients().await;
    subnets
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/16", ""))
        .await
        .unwrap();
    let aap = |name: &str| pb::Vip {
        name: name.into(),
        subnet: "ovn-default".into(),
        namespace: "default".into(),
        ..Default::default()
    };
    vips.create_vip(pb::CreateVipRequest {
        vip: Some(aap("before")),
    })
    .await
    .unwrap();
    ready(&mut vips, "before").await;

    daemon.nb.kill();
    // The API keeps accepting and storing changes; status says why nothing reaches NB.
    for index in 0..20 {
        vips.create_vip(pb::CreateVipRequest {
            vip: Some(aap(&format!("during-{index}"))),
        })
        .await
        .unwrap();
    }
    vips.delete_vip(pb::DeleteVipRequest {
        name: "before".into(),
        revision: 0,
    })
    .await
    .unwrap();
    wait_for_reason(&mut vips, "during-0", "NBUnavailable").await;

    daemon.nb.start();
    for index in 0..20 {
        ready(&mut vips, &format!("during-{index}")).await;
    }
    let names = daemon
        .nb
        .nbctl(&["--bare", "--columns=name", "list", "logical_switch_port"]);
    let mut ports: Vec<&str> = names.lines().filter(|line| !line.is_empty()).collect();
    ports.sort();
    assert_eq!(
        ports.len(),
        20,
        "every VIP once, none twice, and the deleted one gone: {ports:?}"
    );
    assert!(!ports.contains(&"before"));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ovn_northd_accepts_what_the_daemon_writes() {
    let daemon = TestDaemon::start().await;
    let sb = common::OvsdbServer::standalone(
        daemon.dir.path(),
        "sb",
        std::path::Path::new("/usr/share/ovn/ovn-sb.ovsschema"),
    );
    let northd = common::Northd::start(daemon.dir.path(), &daemon.nb, &sb);
    let common::requests::Clients {
        mut subnets,
        mut vips,
        mut pods,
        mut rules,
    } = daemon.clients().await;
    subnets
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/16", ""))
        .await
        .unwrap();
    let aap = pb::Vip {
        name: "vip-aap".into(),
        subnet: "ovn-default".into(),
        namespace: "default".into(),
        selector: vec!["app: aap1".into()],
        ..Default::default()
    };
    vips.create_vip(pb::CreateVipRequest { vip: Some(aap) }).await.unwrap();
    pods.bind_pod(pb::BindPodRequest {
        namespace: "default".into(),
        name: "busybox".into(),
        labels: HashMap::from([("app".to_string(), "aap1".to_string())]),
        annotations: HashMap::from([("ovn.kubernetes.io/aaps".to_string(), "vip-aap".to_string())]),
        owner_kind: 0,
        owner_name: String::new(),
        nics: vec![pb::NicRequest {
            subnet: "ovn-default".into(),
            interface: "eth0".into(),
            ..Default::default()
        }],
    })
    .await
    .unwrap();
    rules
        .create_switch_lb_rule(pb::CreateSwitchLbRuleRequest {
            rule: Some(pb::SwitchLbRule {
                name: "slr-dns".into(),
                vip: "10.16.0.50".into(),
                endpoints: vec!["10.16.0.8".into()],
                ports: vec![pb::LbPort {
                    name: "dns".into(),
                    port: 53,
                    target_port: 53,
                    protocol: pb::Protocol::Udp as i32,
                }],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    ready(&mut vips, "vip-aap").await;
    let sbctl = |args: &[&str]| {
        let db = format!("--db={}", sb.unix_remote());
        let mut all = vec![db.as_str()];
        all.extend_from_slice(args);
        common::run("ovn-sbctl", &all)
    };
    wait_until_async("SB Port_Binding type=virtual", Duration::from_secs(15), || {
        sbctl(&[
            "--bare",
            "--columns=logical_port,type",
            "find",
            "port_binding",
            "type=virtual",
        ])
        .contains("vip-aap")
    })
    .await;
    wait_until_async("the load balancer in SB", Duration::from_secs(15), || {
        sbctl(&["--bare", "--columns=name", "list", "load_balancer"]).contains("slr-dns-udp")
    })
    .await;
    drop(northd);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_using_vips_and_multi_nic_parents_in_nb() {
    let daemon = TestDaemon::start().await;
    let common::requests::Clients {
        mut subnets,
        mut vips,
        mut pods,
        ..
    } = daemon.clients().await;
    for (name, cidr) in [("ovn-default", "10.16.0.0/16"), ("net2", "10.17.0.0/16")] {
        subnets
            .create_subnet(common::subnet_request(name, cidr, ""))
            .await
            .unwrap();
    }
    // 3 / 3.1: the pod's port carries exactly the VIP's address and MAC, across re-creation.
    let held = vips
        .create_vip(pb::CreateVipRequest {
            vip: Some(pb::Vip {
                name: "pod-use-vip".into(),
                subnet: "ovn-default".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let sts = pb::BindPodRequest {
        namespace: "default".into(),
        name: "web-0".into(),
        labels: HashMap::new(),
        annotations: HashMap::from([("ovn.kubernetes.io/vip".to_string(), "pod-use-vip".to_string())]),
        owner_kind: pb::OwnerKind::StatefulSet as i32,
        owner_name: String::new(),
        nics: vec![pb::NicRequest {
            subnet: "ovn-default".into(),
            interface: "eth0".into(),
            ..Default::default()
        }],
    };
    pods.bind_pod(sts.clone()).await.unwrap();
    let expected = format!("[\"{} {}\"]", held.mac, held.v4ip);
    wait_until_async("the pod's port", Duration::from_secs(5), || {
        get(&daemon, &["logical_switch_port", "web-0.default", "addresses"]) == expected
    })
    .await;
    pods.unbind_pod(pb::UnbindPodRequest {
        namespace: "default".into(),
        name: "web-0".into(),
        owner_gone: false,
        ..Default::default()
    })
    .await
    .unwrap();
    wait_until_async("the port removed with the pod", Duration::from_secs(5), || {
        get(&daemon, &["logical_switch_port", "web-0.default", "addresses"]).is_empty()
    })
    .await;
    pods.bind_pod(sts).await.unwrap();
    wait_until_async("the same address again", Duration::from_secs(5), || {
        get(&daemon, &["logical_switch_port", "web-0.default", "addresses"]) == expected
    })
    .await;

    // Multi-NIC: the parent is the pod's port in the VIP's subnet.
    let aap = pb::Vip {
        name: "vip-net2".into(),
        subnet: "net2".into(),
        namespace: "default".into(),
        selector: vec!["app: aap1".into()],
        ..Default::default()
    };
    let aap_ip = vips
        .create_vip(pb::CreateVipRequest { vip: Some(aap) })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .v4ip;
    pods.bind_pod(pb::BindPodRequest {
        namespace: "default".into(),
        name: "multi".into(),
        labels: HashMap::from([("app".to_string(), "aap1".to_string())]),
        annotations: HashMap::from([("ovn.kubernetes.io/aaps".to_string(), "vip-net2".to_string())]),
        owner_kind: 0,
        owner_name: String::new(),
        nics: vec![
            pb::NicRequest {
                subnet: "ovn-default".into(),
                interface: "eth0".into(),
                ..Default::default()
            },
            pb::NicRequest {
                subnet: "net2".into(),
                interface: "net1".into(),
                ..Default::default()
            },
        ],
    })
    .await
    .unwrap();
    wait_until_async("the second NIC as parent", Duration::from_secs(5), || {
        get(&daemon, &["logical_switch_port", "vip-net2", "options:virtual-parents"]).trim_matches('"')
            == "multi.default.net1"
    })
    .await;
    assert!(get(&daemon, &["logical_switch_port", "multi.default.net1", "port_security"]).contains(&aap_ip));
    assert!(!get(&daemon, &["logical_switch_port", "multi.default", "port_security"]).contains(&aap_ip));
    assert!(daemon.nb.nbctl(&["show", "net2"]).contains("multi.default.net1"));
    daemon.stop().await;
}

/// Incremental passes reconcile only what each change affects; after a long random sequence of
/// VIP, pod and rule changes, NB must be exactly what a full pass computes from the store (the
/// audit compares them and finds nothing, and a full pass would send nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_passes_leave_nb_exactly_as_a_full_pass_would() {
    use rand::{Rng, SeedableRng};
    let daemon = TestDaemon::start().await;
    let common::requests::Clients {
        mut subnets,
        mut vips,
        mut pods,
        mut rules,
    } = daemon.clients().await;
    subnets
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/16", "fd00:10:16::/64"))
        .await
        .unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let apps = ["a", "b"];
    let mut existing = std::collections::BTreeSet::new();
    let (mut binds, mut parents_lost) = (0, 0);
    for step in 0..200 {
        let index = rng.gen_range(0..8);
        let app = apps[rng.gen_range(0..apps.len())];
        let choice = if step < 16 { step % 2 * 3 } else { rng.gen_range(0..8) };
        match choice {
            0 | 1 => {
                let created = vips
                    .create_vip(pb::CreateVipRequest {
                        vip: Some(pb::Vip {
                            name: format!("vip-{index}"),
                            subnet: "ovn-default".into(),
                            namespace: "default".into(),
                            selector: vec![format!("app: {app}")],
                            ..Default::default()
                        }),
                    })
                    .await;
                if created.is_ok() {
                    existing.insert(format!("vip-{index}"));
                }
            }
            2 => {
                if vips
                    .delete_vip(pb::DeleteVipRequest {
                        name: format!("vip-{index}"),
                        revision: 0,
                    })
                    .await
                    .is_ok()
                {
                    existing.remove(&format!("vip-{index}"));
                }
            }
            3 | 4 | 7 => {
                let aaps: Vec<String> = existing.iter().filter(|_| rng.gen_bool(0.5)).cloned().collect();
                // A pod is re-bound with new labels and annotations after an unbind.
                let _ = pods
                    .unbind_pod(pb::UnbindPodRequest {
                        namespace: "default".into(),
                        name: format!("pod-{index}"),
                        owner_gone: true,
                        ..Default::default()
                    })
                    .await;
                let bound = pods
                    .bind_pod(pb::BindPodRequest {
                        namespace: "default".into(),
                        name: format!("pod-{index}"),
                        labels: HashMap::from([("app".to_string(), app.to_string())]),
                        annotations: HashMap::from([("ovn.kubernetes.io/aaps".to_string(), aaps.join(","))]),
                        owner_kind: 0,
                        owner_name: String::new(),
                        nics: vec![pb::NicRequest {
                            subnet: "ovn-default".into(),
                            interface: "eth0".into(),
                            ..Default::default()
                        }],
                    })
                    .await;
                binds += usize::from(bound.is_ok());
            }
            5 => {
                let pod = pods
                    .get_pod(pb::GetPodRequest {
                        namespace: "default".into(),
                        name: format!("pod-{index}"),
                    })
                    .await;
                let was_parent = match pod {
                    Ok(pod) => {
                        let port = format!("pod-{index}.default");
                        let all = vips
                            .list_vips(pb::ListVipsRequest::default())
                            .await
                            .unwrap()
                            .into_inner();
                        all.vips
                            .iter()
                            .any(|vip| vip.status.as_ref().is_some_and(|status| status.parents.contains(&port)))
                            && pod.into_inner().nics.len() == 1
                    }
                    Err(_) => false,
                };
                let _ = pods
                    .unbind_pod(pb::UnbindPodRequest {
                        namespace: "default".into(),
                        name: format!("pod-{index}"),
                        owner_gone: true,
                        ..Default::default()
                    })
                    .await;
                parents_lost += usize::from(was_parent);
            }
            _ => {
                let rule = pb::SwitchLbRule {
                    name: format!("slr-{}", index % 3),
                    vip: format!("10.16.100.{}", index % 3 + 1),
                    namespace: "default".into(),
                    selector: vec![format!("app: {app}")],
                    ports: vec![pb::LbPort {
                        name: "http".into(),
                        port: 80,
                        target_port: 8080,
                        protocol: pb::Protocol::Tcp as i32,
                    }],
                    health_check: rng.gen_bool(0.5),
                    ..Default::default()
                };
                if rng.gen_bool(0.25) {
                    let _ = rules
                        .delete_switch_lb_rule(pb::DeleteSwitchLbRuleRequest {
                            name: rule.name.clone(),
                            revision: 0,
                        })
                        .await;
                } else if rules
                    .update_switch_lb_rule(pb::UpdateSwitchLbRuleRequest {
                        rule: Some(rule.clone()),
                    })
                    .await
                    .is_err()
                {
                    let _ = rules
                        .create_switch_lb_rule(pb::CreateSwitchLbRuleRequest { rule: Some(rule) })
                        .await;
                }
            }
        }
        if step % 20 == 0 {
            // Kept: let some passes run in between, so changes arrive both alone and in bursts.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(
        binds >= 30 && parents_lost >= 3,
        "the sequence exercised too little: {binds} binds, {parents_lost} parents unbound"
    );
    // Barrier: the daemon has handled everything sent before (the API calls were answered
    // first, NB changes come in order), so the incremental passes are done.
    daemon.nb_barrier("ovn-default", "marker-quiet").await;
    let data_dir = daemon.dir.path().join("data");
    let remote = ovn_vipd::ovsdb::Remote::parse_list(&daemon.nb.unix_remote()).unwrap();
    let mut daemon = daemon;
    daemon.stop_daemon_only().await;
    let report = ovn_vipd::check::run(
        ovn_vipd::check::CheckOptions {
            data_dir: &data_dir,
            ovn_nb: remote,
            nb_tls: None,
            repair: false,
            nb_timeout: Duration::from_secs(10),
        },
        |_| {},
    )
    .await
    .unwrap();
    if !report.is_clean() {
        let (registry, _) = ovn_vipd::registry::Registry::open(&data_dir.join("store")).unwrap();
        for pod in registry.list_pods() {
            eprintln!(
                "POD {} bound={} labels={:?} annotations={:?} ports={:?}",
                pod.key(),
                pod.bound,
                pod.spec.labels,
                pod.spec.annotations,
                pod.nics.iter().map(|n| &n.port_name).collect::<Vec<_>>()
            );
        }
        for vip in registry.list_vips() {
            eprintln!("VIP {} selector={:?}", vip.spec.name, vip.spec.selector);
        }
        eprintln!(
            "NB {}",
            daemon
                .nb
                .nbctl(&["--columns=name,options,port_security", "list", "logical_switch_port"])
        );
    }
    assert!(
        report.is_clean(),
        "NB differs from a full pass: {:?} {:?} {:?}",
        report.nb,
        report.conflicts,
        report.store
    );
}
