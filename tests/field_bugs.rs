//! Issue #16: inputs the field has met, each with its right value, through the real daemon and a
//! real NB ovsdb-server (ovn-nbctl as judge where NB is concerned).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{wait_until_async, TestDaemon};
use ovn_vipd::api::proto::v1 as pb;
use pb::switch_lb_rule_service_client::SwitchLbRuleServiceClient;
use pb::vip_service_client::VipServiceClient;
use tonic::transport::Channel;
use tonic::Code;

/// Case 5: IPv6 subnets longer than /64 (Kube-OVN's default is a /112) are accepted, with the
/// gateway anywhere in the range (no broadcast in IPv6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case5_ipv6_subnet_longer_than_64() {
    let daemon = TestDaemon::start().await;
    let mut c = daemon.clients().await;
    let mut request = common::subnet_request("v6gw112", "", "190:255::1:0/112");
    request.subnet.as_mut().unwrap().gateway_v6 = "190:255::1:ffff".into();
    let created = c.subnets.create_subnet(request).await.unwrap().into_inner();
    assert_eq!(created.cidr_v6, "190:255::1:0/112");
    assert_eq!(created.gateway_v6, "190:255::1:ffff");
    assert_eq!(created.status.unwrap().v6_free, 65_534);
    let vip = c
        .create_vip(pb::Vip {
            name: "v".into(),
            subnet: "v6gw112".into(),
            ..Default::default()
        })
        .await;
    let v6: std::net::Ipv6Addr = vip.status.unwrap().v6ip.parse().unwrap();
    assert!("190:255::1:0/112".parse::<ipnet::Ipv6Net>().unwrap().contains(&v6));
    assert_ne!(v6.to_string(), "190:255::1:ffff");
    for cidr in ["fd00:10:16::/112", "fd00:1::/120", "fd00:2::/126", "fd00:3::/127"] {
        let name = format!("s{}", cidr.len());
        c.subnets
            .create_subnet(common::subnet_request(&name, "", cidr))
            .await
            .unwrap_or_else(|error| panic!("{cidr}: {error}"));
        c.subnets
            .delete_subnet(pb::DeleteSubnetRequest { name, revision: 0 })
            .await
            .unwrap();
    }
    daemon.stop().await;
}

/// The field paths of a refusal's google.rpc.BadRequest details.
fn violation_fields(error: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    error
        .get_error_details()
        .bad_request()
        .map(|bad| bad.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// Case 8 and its kind: parts of one request that collide are refused with the paths of both
/// (frontend ports, endpoints, port names, selector keys, NIC interfaces); nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case8_colliding_parts_are_refused_with_both_paths() {
    let daemon = TestDaemon::start().await;
    let mut c = daemon.clients().await;
    c.create_subnet("ovn-default", "10.16.0.0/16", "").await;
    c.create_vip(common::requests::switch_lb_vip("lbv", "ovn-default"))
        .await;
    let port = |port: u32, target_port: u32, name: &str| pb::LbPort {
        name: name.into(),
        port,
        target_port,
        protocol: 0,
    };
    let rule = |ports: Vec<pb::LbPort>, endpoints: &[&str], selector: &[&str]| pb::CreateSwitchLbRuleRequest {
        rule: Some(pb::SwitchLbRule {
            name: "r".into(),
            vip: "lbv".into(),
            namespace: "default".into(),
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            selector: selector.iter().map(|s| s.to_string()).collect(),
            ports,
            ..Default::default()
        }),
    };
    let cases: Vec<(pb::CreateSwitchLbRuleRequest, [&str; 2])> = vec![
        (
            rule(vec![port(80, 8080, ""), port(80, 8081, "")], &["10.16.0.51"], &[]),
            ["rule.ports[0].port", "rule.ports[1].port"],
        ),
        (
            rule(
                vec![port(80, 8080, "http"), port(81, 8080, "http")],
                &["10.16.0.51"],
                &[],
            ),
            ["rule.ports[0].name", "rule.ports[1].name"],
        ),
        (
            rule(vec![port(80, 8080, "")], &["10.16.0.51", "10.16.0.51"], &[]),
            ["rule.endpoints[0]", "rule.endpoints[1]"],
        ),
        (
            rule(vec![port(80, 8080, "")], &[], &["app: web", "app: db"]),
            ["rule.selector[0]", "rule.selector[1]"],
        ),
    ];
    for (request, fields) in cases {
        let error = c.rules.create_switch_lb_rule(request).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{}", error.message());
        let got = violation_fields(&error);
        for field in fields {
            assert!(
                got.contains(&field.to_string()),
                "{field} missing from {got:?}: {}",
                error.message()
            );
        }
    }
    // The same frontend port on two protocols is two VIP entries, not a collision.
    let mut udp = port(80, 8080, "");
    udp.protocol = pb::Protocol::Udp as i32;
    c.rules
        .create_switch_lb_rule(rule(vec![port(80, 8080, ""), udp], &["10.16.0.51"], &[]))
        .await
        .unwrap();
    let rules = c
        .rules
        .list_switch_lb_rules(pb::ListSwitchLbRulesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rules.rules.len(), 1);

    let error = c
        .pods
        .bind_pod(pb::BindPodRequest {
            namespace: "default".into(),
            name: "p".into(),
            nics: vec![
                pb::NicRequest {
                    subnet: "ovn-default".into(),
                    interface: "eth0".into(),
                    ..Default::default()
                },
                pb::NicRequest {
                    subnet: "ovn-default".into(),
                    interface: "eth0".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    let got = violation_fields(&error);
    assert!(
        got.contains(&"nics[0].interface".to_string()) && got.contains(&"nics[1].interface".to_string()),
        "{got:?}"
    );
    daemon.stop().await;
}

/// Case 8's kind across requests: a second rule serving a frontend another rule already serves
/// would be a second load balancer with the same VIP entry; it is refused, naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case8_two_rules_on_one_frontend_are_refused() {
    let daemon = TestDaemon::start().await;
    let mut c = daemon.clients().await;
    c.create_subnet("ovn-default", "10.16.0.0/16", "").await;
    c.create_vip(common::requests::switch_lb_vip("lbv", "ovn-default"))
        .await;
    let rule = |name: &str, port: u32| pb::CreateSwitchLbRuleRequest {
        rule: Some(pb::SwitchLbRule {
            name: name.into(),
            vip: "lbv".into(),
            endpoints: vec!["10.16.0.51".into()],
            ports: vec![pb::LbPort {
                port,
                target_port: 8080,
                ..Default::default()
            }],
            ..Default::default()
        }),
    };
    c.rules.create_switch_lb_rule(rule("a", 80)).await.unwrap();
    let error = c.rules.create_switch_lb_rule(rule("b", 80)).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{}", error.message());
    assert!(
        error.message().contains("rule.ports[0].port") && error.message().contains("switch-lb rule a"),
        "{}",
        error.message()
    );
    // Issue #13: the frontend is taken by another rule, which must let go first.
    assert_eq!(error_reason(&error), "ADDRESS_TAKEN");
    c.rules.create_switch_lb_rule(rule("b", 81)).await.unwrap();
    daemon.stop().await;
}

/// Case 11: a pod naming many AAP VIPs binds; annotations follow Kubernetes' 256 KiB total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case11_many_aap_vips_follow_the_kubernetes_annotation_limit() {
    let daemon = TestDaemon::start().await;
    let mut c = daemon.clients().await;
    c.create_subnet("ovn-default", "10.16.0.0/16", "").await;
    let bind = |name: &str, annotations: HashMap<String, String>| pb::BindPodRequest {
        namespace: "default".into(),
        name: name.into(),
        annotations,
        nics: vec![pb::NicRequest {
            subnet: "ovn-default".into(),
            interface: "eth0".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    // 1,000 VIP names of 60 characters: about 61 KB, far over the old 4,096-byte cap.
    let names: Vec<String> = (0..1000)
        .map(|i| format!("aap-vip-{i:04}-{}", "x".repeat(47)))
        .collect();
    let aaps = names.join(",");
    assert!(aaps.len() > 60_000);
    let pod = c
        .pods
        .bind_pod(bind(
            "many",
            HashMap::from([("ovn.kubernetes.io/aaps".to_string(), aaps.clone())]),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pod.annotations["ovn.kubernetes.io/aaps"], aaps);
    // Exactly 256 KiB of keys and values is accepted; one byte more is refused.
    let key = "example.com/big";
    let exact = "v".repeat(256 * 1024 - key.len());
    c.pods
        .bind_pod(bind("exact", HashMap::from([(key.to_string(), exact.clone())])))
        .await
        .unwrap();
    let error = c
        .pods
        .bind_pod(bind("over", HashMap::from([(key.to_string(), format!("{exact}v"))])))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{}", error.message());
    assert_eq!(violation_fields(&error), vec!["annotations".to_string()]);
    assert!(error.message().contains("256 KiB"), "{}", error.message());
    daemon.stop().await;
}

/// Case 10: CIDRs overlapping within one VPC are refused; in different VPCs they may overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case10_overlapping_subnets_are_refused_within_one_vpc() {
    let daemon = TestDaemon::start().await;
    let mut c = daemon.clients().await;
    let created = c.create_subnet("ovn-default", "10.16.0.0/16", "fd00:10:16::/64").await;
    assert_eq!(created.vpc, "ovn-cluster", "the default VPC");
    let error = c
        .subnets
        .create_subnet(common::subnet_request("s6", "10.16.128.0/17", ""))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{}", error.message());
    assert!(
        error.message().contains("subnet.cidr_v4") && error.message().contains("ovn-default"),
        "{}",
        error.message()
    );
    // A wider one, and an IPv6 overlap, are refused too.
    for (v4, v6) in [("10.0.0.0/8", ""), ("10.99.0.0/16", "fd00:10:16::/112")] {
        let error = c
            .subnets
            .create_subnet(common::subnet_request("s7", v4, v6))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::FailedPrecondition, "{v4} {v6}: {}", error.message());
    }
    // Another VPC may reuse the range; a second subnet there may not overlap it.
    let mut other = common::subnet_request("vpc1-s6", "10.16.128.0/17", "");
    other.subnet.as_mut().unwrap().vpc = "vpc1".into();
    let created = c.subnets.create_subnet(other).await.unwrap().into_inner();
    assert_eq!(created.vpc, "vpc1");
    let mut clash = common::subnet_request("vpc1-s7", "10.16.200.0/24", "");
    clash.subnet.as_mut().unwrap().vpc = "vpc1".into();
    let error = c.subnets.create_subnet(clash).await.unwrap_err();
    assert!(error.message().contains("vpc1-s6"), "{}", error.message());
    // Adjacent ranges do not overlap.
    c.create_subnet("s8", "10.17.0.0/16", "").await;
    let listed = c
        .subnets
        .list_subnets(pb::ListSubnetsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.subnets.len(), 3);
    daemon.stop().await;
}

/// Case 3: a KubeVirt VM's new launcher pod (a new name every time) takes the VIP, addresses
/// and MACs its previous launcher pod kept, keyed by (owner kind, owner name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case3_a_vms_new_launcher_pod_takes_the_vms_vip() {
    let daemon = TestDaemon::start().await;
    let mut c = daemon.clients().await;
    c.create_subnet("ovn-default", "10.16.0.0/16", "fd00:10:16::/64").await;
    c.create_subnet("net2", "10.17.0.0/24", "").await;
    let vip = c
        .create_vip(pb::Vip {
            name: "vm1-vip".into(),
            subnet: "ovn-default".into(),
            ..Default::default()
        })
        .await
        .status
        .unwrap();
    let launcher = |name: &str, vm: &str| pb::BindPodRequest {
        namespace: "vms".into(),
        name: name.into(),
        annotations: HashMap::from([("ovn.kubernetes.io/vip".to_string(), "vm1-vip".to_string())]),
        owner_kind: pb::OwnerKind::VirtualMachine as i32,
        owner_name: vm.into(),
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
        ..Default::default()
    };
    let first = c
        .pods
        .bind_pod(launcher("virt-launcher-vm1-abcde", "vm1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.owner_name, "vm1");
    c.pods
        .unbind_pod(pb::UnbindPodRequest {
            namespace: "vms".into(),
            name: "virt-launcher-vm1-abcde".into(),
            owner_gone: false,
            ..Default::default()
        })
        .await
        .unwrap();
    // Another VM's launcher pod may not take it.
    let error = c
        .pods
        .bind_pod(launcher("virt-launcher-vm2-zzzzz", "vm2"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{}", error.message());
    assert!(
        error.message().contains("in use by pod vms/virt-launcher-vm1-abcde"),
        "{}",
        error.message()
    );

    let second = c
        .pods
        .bind_pod(launcher("virt-launcher-vm1-fghij", "vm1"))
        .await
        .unwrap()
        .into_inner();
    let eth0 = &second.nics[0];
    assert_eq!(eth0.vip, "vm1-vip");
    assert_eq!(
        eth0.addresses,
        vec![format!("{}/16", vip.v4ip), format!("{}/64", vip.v6ip)]
    );
    assert_eq!(eth0.mac, vip.mac);
    assert_eq!(eth0.port_name, "virt-launcher-vm1-fghij.vms");
    // The secondary NIC keeps its address and MAC too, under the new pod's port name.
    assert_eq!(second.nics[1].addresses, first.nics[1].addresses);
    assert_eq!(second.nics[1].mac, first.nics[1].mac);
    assert_eq!(second.nics[1].port_name, "virt-launcher-vm1-fghij.vms.net1");
    let holder = c
        .vips
        .get_vip(pb::GetVipRequest { name: "vm1-vip".into() })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .holder
        .unwrap();
    assert_eq!(
        (holder.namespace.as_str(), holder.name.as_str()),
        ("vms", "virt-launcher-vm1-fghij")
    );
    let error = c
        .pods
        .get_pod(pb::GetPodRequest {
            namespace: "vms".into(),
            name: "virt-launcher-vm1-abcde".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    // NB follows: the new pod's ports carry the kept addresses, the old ones are gone.
    let nb = &daemon.nb;
    wait_until_async("the new launcher pod's ports in NB", Duration::from_secs(10), || {
        let addresses = nb.nbctl(&[
            "--if-exists",
            "get",
            "logical_switch_port",
            "virt-launcher-vm1-fghij.vms",
            "addresses",
        ]);
        let old = nb.nbctl(&[
            "--if-exists",
            "get",
            "logical_switch_port",
            "virt-launcher-vm1-abcde.vms",
            "addresses",
        ]);
        addresses.contains(&vip.v4ip) && addresses.contains(&vip.mac) && old.trim().is_empty()
    })
    .await;
    daemon.stop().await;
}

/// Attaches a router port with `mac` and `network` to `switch` (made by the daemon), as an
/// operator would with ovn-nbctl.
async fn add_router_port(daemon: &TestDaemon, switch: &str, mac: &str, network: &str) {
    let nb = &daemon.nb;
    wait_until_async("the subnet's switch", Duration::from_secs(10), || {
        !nb.nbctl(&["--if-exists", "get", "logical_switch", switch, "name"])
            .trim()
            .is_empty()
    })
    .await;
    common::ovn::add_router_port_to(nb, "router", switch, mac, &[network]);
}

/// A rule's Ready condition once its reason is `reason`.
async fn rule_reason(
    rules: &mut SwitchLbRuleServiceClient<Channel>,
    name: &str,
    reason: &str,
) -> pb::SwitchLbRuleStatus {
    common::wait_for(&format!("{name}'s reason {reason:?}"), Duration::from_secs(5), || {
        let (mut rules, name) = (rules.clone(), name.to_string());
        async move {
            let status = rules
                .get_switch_lb_rule(pb::GetSwitchLbRuleRequest { name })
                .await
                .unwrap()
                .into_inner()
                .status
                .unwrap();
            if status
                .conditions
                .first()
                .is_some_and(|condition| condition.reason == reason)
            {
                Ok(status)
            } else {
                Err(format!("{status:?}"))
            }
        }
    })
    .await
}

/// Case 7 and its kind: a rule is Ready only when its frontend can be reached. On a VIP that is
/// not a switch_lb_vip nothing answers ARP for the address: not Ready (NotSwitchLbVip) and no
/// load balancer; on a switch_lb_vip whose switch has no router port: not Ready (NoRouterPort).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case7_a_rule_is_ready_only_when_its_frontend_is_reachable() {
    let daemon = TestDaemon::start().await;
    let mut c = daemon.clients().await;
    c.create_subnet("ovn-default", "10.16.0.0/16", "").await;
    let create_vip = |name: &str, vip_type: &str, v4ip: &str| pb::CreateVipRequest {
        vip: Some(pb::Vip {
            name: name.into(),
            subnet: "ovn-default".into(),
            r#type: vip_type.into(),
            v4ip: v4ip.into(),
            ..Default::default()
        }),
    };
    c.vips
        .create_vip(create_vip("static-vip01", "", "10.16.0.121"))
        .await
        .unwrap();
    c.vips
        .create_vip(create_vip("lb-vip01", "switch_lb_vip", "10.16.0.122"))
        .await
        .unwrap();
    let rule = |name: &str, vip: &str| pb::CreateSwitchLbRuleRequest {
        rule: Some(pb::SwitchLbRule {
            name: name.into(),
            vip: vip.into(),
            endpoints: vec!["10.16.0.50".into()],
            ports: vec![pb::LbPort {
                port: 80,
                target_port: 8080,
                ..Default::default()
            }],
            ..Default::default()
        }),
    };
    c.rules
        .create_switch_lb_rule(rule("static", "static-vip01"))
        .await
        .unwrap();
    c.rules.create_switch_lb_rule(rule("lb", "lb-vip01")).await.unwrap();
    let status = rule_reason(&mut c.rules, "static", "NotSwitchLbVip").await;
    assert!(!status.ready);
    assert!(status.conditions[0].message.contains("10.16.0.121"), "{status:?}");
    let status = rule_reason(&mut c.rules, "lb", "NoRouterPort").await;
    assert!(!status.ready);

    add_router_port(&daemon, "ovn-default", "04:00:00:00:00:01", "10.16.0.1/16").await;
    let status = rule_reason(&mut c.rules, "lb", "Synced").await;
    assert!(status.ready);
    assert_eq!(status.vips, vec!["10.16.0.122:80".to_string()]);
    // Case 2: the switch_lb_vip's port carries no addresses (no second L2 destination for the
    // router MAC); the router answers ARP/ND for the VIP, so the VIP reports the router port's
    // MAC, not its own allocated one.
    let nb = &daemon.nb;
    wait_until_async("the balancer on the router", Duration::from_secs(10), || {
        nb.nbctl(&["lr-lb-list", "router"]).contains("lb-tcp")
    })
    .await;
    assert_eq!(
        nb.nbctl(&["--if-exists", "get", "logical_switch_port", "lb-vip01", "addresses"])
            .trim(),
        "[]"
    );
    common::wait_for(
        "lb-vip01 to report the router port's MAC",
        Duration::from_secs(5),
        || {
            let mut vips = c.vips.clone();
            async move {
                let reported = vips
                    .get_vip(pb::GetVipRequest {
                        name: "lb-vip01".into(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .status
                    .unwrap()
                    .mac;
                if reported == "04:00:00:00:00:01" {
                    Ok(())
                } else {
                    Err(reported)
                }
            }
        },
    )
    .await;
    assert_eq!(
        nb.nbctl(&["get", "logical_router_port", "router-ovn-default", "mac"])
            .trim(),
        "\"04:00:00:00:00:01\""
    );
    // The reserved VIP's rule stays not Ready, and NB holds no balancer for it.
    let status = rule_reason(&mut c.rules, "static", "NotSwitchLbVip").await;
    assert!(!status.ready);
    assert!(daemon
        .nb
        .nbctl(&["--if-exists", "get", "load_balancer", "static-tcp", "vips"])
        .trim()
        .is_empty());
    assert!(!daemon
        .nb
        .nbctl(&["--if-exists", "get", "load_balancer", "lb-tcp", "vips"])
        .trim()
        .is_empty());
    daemon.stop().await;
}

/// Case 4 and its kind: what NB already uses on a managed switch outside the daemon's rows
/// (a foreign port's address and MAC, a router port's network, a foreign load balancer's VIP) is
/// never allocated, and `ovn-vipd check` reports an overlap that arises anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case4_addresses_nb_already_uses_are_never_allocated() {
    let mut daemon = TestDaemon::start().await;
    let mut c = daemon.clients().await;
    daemon.nb.nbctl(&[
        "ls-add",
        "sf",
        "--",
        "lsp-add",
        "sf",
        "nginx.default",
        "--",
        "lsp-set-addresses",
        "nginx.default",
        "3a:11:8e:0b:1f:6a 10.0.9.2",
    ]);
    let mut request = common::subnet_request("sf", "10.0.9.0/29", "");
    request.subnet.as_mut().unwrap().strategy = pb::AllocationStrategy::Sequential as i32;
    c.subnets.create_subnet(request).await.unwrap();
    let bind = |name: &str| pb::BindPodRequest {
        namespace: "default".into(),
        name: name.into(),
        nics: vec![pb::NicRequest {
            subnet: "sf".into(),
            interface: "eth0".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let address = |pod: &pb::Pod| pod.nics[0].addresses[0].clone();
    let nginx5 = c.pods.bind_pod(bind("nginx5")).await.unwrap().into_inner();
    assert_eq!(address(&nginx5), "10.0.9.3/29", "10.0.9.2 is nginx.default's");

    // A foreign load balancer on the switch: its VIP is skipped too.
    daemon.nb.nbctl(&[
        "lb-add",
        "foreign-lb",
        "10.0.9.4:80",
        "10.0.9.2:80",
        "--",
        "ls-lb-add",
        "sf",
        "foreign-lb",
    ]);
    let nb = &daemon.nb;
    wait_until_async("the foreign balancer on sf", Duration::from_secs(5), || {
        !nb.nbctl(&["ls-lb-list", "sf"]).trim().is_empty()
    })
    .await;
    // Barrier: the daemon has handled that NB change (not only NB has it).
    daemon.nb_barrier("sf", "marker-foreign-lb").await;
    let nginx6 = c.pods.bind_pod(bind("nginx6")).await.unwrap().into_inner();
    assert_eq!(address(&nginx6), "10.0.9.5/29", "10.0.9.4 is foreign-lb's VIP");

    // Asked for explicitly: refused, naming the NB user; the same for the foreign MAC.
    let vip = |v4ip: &str, mac: &str| pb::CreateVipRequest {
        vip: Some(pb::Vip {
            name: "v".into(),
            subnet: "sf".into(),
            v4ip: v4ip.into(),
            mac_address: mac.into(),
            ..Default::default()
        }),
    };
    let error = c.vips.create_vip(vip("10.0.9.2", "")).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{}", error.message());
    assert!(error.message().contains("NB port nginx.default"), "{}", error.message());
    let error = c.vips.create_vip(vip("", "3a:11:8e:0b:1f:6a")).await.unwrap_err();
    assert!(error.message().contains("NB port nginx.default"), "{}", error.message());

    // An overlap made behind the daemon's back (NB takes an address it already gave out) is
    // what `ovn-vipd check` reports.
    // (ovn-nbctl's lsp-set-addresses refuses the duplicate; a generic `set` does not check.)
    daemon.nb.nbctl(&[
        "lsp-add",
        "sf",
        "intruder",
        "--",
        "set",
        "logical_switch_port",
        "intruder",
        "addresses=\"0a:00:00:00:00:09 10.0.9.3\"",
    ]);
    let data_dir = daemon.dir.path().join("data");
    let remote = ovn_vipd::ovsdb::Remote::parse_list(&daemon.nb.unix_remote()).unwrap();
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
    assert!(!report.is_clean());
    assert_eq!(
        report.overlaps,
        vec!["subnet sf: 10.0.9.3 is allocated to pod/default/nginx5/eth0 and used by NB port intruder".to_string()],
        "{report:?}"
    );
}

/// Case 6: a rule naming its frontend by an address outside every managed subnet, as Kube-OVN
/// writes it, reaches NB: the load balancer goes on the switch of its backends and the rule is
/// Ready. An address frontend inside a subnet is written but not Ready (nothing answers ARP for
/// it; that part of the case is not done: such an address is not reserved yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case6_a_rule_given_by_address_reaches_nb() {
    let daemon = TestDaemon::start().await;
    let mut c = daemon.clients().await;
    c.create_subnet("ovn-default", "10.16.0.0/16", "").await;
    let mut addresses = Vec::new();
    for name in ["netshoot-1", "netshoot-2"] {
        let pod = c
            .pods
            .bind_pod(pb::BindPodRequest {
                namespace: "default".into(),
                name: name.into(),
                labels: HashMap::from([("app".to_string(), "netshoot".to_string())]),
                nics: vec![pb::NicRequest {
                    subnet: "ovn-default".into(),
                    interface: "eth0".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        addresses.push(pod.nics[0].addresses[0].split('/').next().unwrap().to_string());
    }
    let rule = |name: &str, vip: &str| pb::CreateSwitchLbRuleRequest {
        rule: Some(pb::SwitchLbRule {
            name: name.into(),
            vip: vip.into(),
            selector: vec!["app:netshoot".into()],
            ports: vec![pb::LbPort {
                port: 8888,
                target_port: 80,
                ..Default::default()
            }],
            ..Default::default()
        }),
    };
    c.rules.create_switch_lb_rule(rule("r", "1.1.1.1")).await.unwrap();
    let status = rule_reason(&mut c.rules, "r", "Synced").await;
    assert!(status.ready);
    assert_eq!(status.vips, vec!["1.1.1.1:8888".to_string()]);
    let nb = &daemon.nb;
    wait_until_async(
        "r-tcp on ovn-default with both backends",
        Duration::from_secs(10),
        || {
            let vips = nb.nbctl(&["--if-exists", "get", "load_balancer", "r-tcp", "vips"]);
            addresses.iter().all(|address| vips.contains(&format!("{address}:80")))
                && nb.nbctl(&["ls-lb-list", "ovn-default"]).contains("r-tcp")
        },
    )
    .await;

    c.rules
        .create_switch_lb_rule(rule("inside", "10.16.0.50"))
        .await
        .unwrap();
    // Inside a subnet without a router nothing can answer ARP/ND for it: written, not Ready.
    let status = rule_reason(&mut c.rules, "inside", "NoRouterPort").await;
    assert!(!status.ready);
    // With a router port the balancer goes on the router too, whose port answers for the
    // frontend: Ready.
    add_router_port(&daemon, "ovn-default", "04:00:00:00:00:01", "10.16.0.1/16").await;
    let status = rule_reason(&mut c.rules, "inside", "Synced").await;
    assert!(status.ready, "{status:?}");
    wait_until_async(
        "inside-tcp on the switch and the router",
        Duration::from_secs(10),
        || {
            nb.nbctl(&["ls-lb-list", "ovn-default"]).contains("inside-tcp")
                && nb.nbctl(&["lr-lb-list", "router"]).contains("inside-tcp")
        },
    )
    .await;
    // The frontend outside every subnet is not put on the router.
    assert!(!nb.nbctl(&["lr-lb-list", "router"]).contains("r-tcp"));

    // An address frontend inside a subnet is never given to a pod (case 4's kind), and a rule
    // may not take an address a pod holds.
    let mut small = common::subnet_request("small", "10.30.0.0/29", "");
    small.subnet.as_mut().unwrap().strategy = pb::AllocationStrategy::Sequential as i32;
    c.subnets.create_subnet(small).await.unwrap();
    c.rules
        .create_switch_lb_rule(rule("small-frontend", "10.30.0.2"))
        .await
        .unwrap();
    let pod = c
        .pods
        .bind_pod(pb::BindPodRequest {
            namespace: "default".into(),
            name: "small-1".into(),
            nics: vec![pb::NicRequest {
                subnet: "small".into(),
                interface: "eth0".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pod.nics[0].addresses[0], "10.30.0.3/29");
    let error = c
        .rules
        .create_switch_lb_rule(rule("taken", "10.30.0.3"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{}", error.message());
    assert_eq!(error_reason(&error), "ADDRESS_TAKEN");
    assert!(
        error.message().contains("pod/default/small-1/eth0"),
        "{}",
        error.message()
    );
    daemon.stop().await;
}

/// Binds pod `name` with label `app: <app>` on `subnet`; returns its IPv4 address.
async fn bind_labelled(c: &mut common::requests::Clients, name: &str, app: &str, subnet: &str) -> String {
    let pod = c
        .pods
        .bind_pod(pb::BindPodRequest {
            namespace: "default".into(),
            name: name.into(),
            labels: HashMap::from([("app".to_string(), app.to_string())]),
            nics: vec![pb::NicRequest {
                subnet: subnet.into(),
                interface: "eth0".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    pod.nics[0].addresses[0].split('/').next().unwrap().to_string()
}

/// Case 6, the rest, and routed clients: an address frontend outside every managed subnet with
/// backends on two switches goes on each of them (Ready, not `BackendsOnSeveralSwitches`); a
/// balancer also goes on every managed switch attached to the same router as its switches (a
/// routed client's own switch must balance: ovn-northd skips traffic entering a switch from a
/// router port), and on no other; health checks where no source address can exist are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case6_outside_frontend_goes_on_every_backend_switch_and_routed_clients_switches() {
    let daemon = TestDaemon::start().await;
    let mut c = daemon.clients().await;
    for (name, cidr) in [
        ("east", "10.21.0.0/24"),
        ("west", "10.22.0.0/24"),
        ("lone", "10.23.0.0/24"),
    ] {
        c.subnets
            .create_subnet(common::subnet_request(name, cidr, ""))
            .await
            .unwrap();
    }
    let east = bind_labelled(&mut c, "netshoot-east", "netshoot", "east").await;
    let west = bind_labelled(&mut c, "netshoot-west", "netshoot", "west").await;
    let rule = |name: &str, vip: &str, app: &str, health_check: bool| pb::CreateSwitchLbRuleRequest {
        rule: Some(pb::SwitchLbRule {
            name: name.into(),
            vip: vip.into(),
            selector: vec![format!("app:{app}")],
            ports: vec![pb::LbPort {
                port: 8888,
                target_port: 80,
                ..Default::default()
            }],
            health_check,
            ..Default::default()
        }),
    };
    c.rules
        .create_switch_lb_rule(rule("outside", "1.1.1.1", "netshoot", false))
        .await
        .unwrap();
    let status = rule_reason(&mut c.rules, "outside", "Synced").await;
    assert!(status.ready, "{status:?}");
    assert_eq!(status.backends, vec![east.clone(), west.clone()]);
    let nb = &daemon.nb;
    let on = |switch: &str, lb: &str| nb.nbctl(&["ls-lb-list", switch]).contains(lb);
    wait_until_async("outside-tcp on east and west", Duration::from_secs(10), || {
        on("east", "outside-tcp") && on("west", "outside-tcp")
    })
    .await;
    assert!(!on("lone", "outside-tcp"));

    // A switch_lb_vip in east once east and west share a router (lone has none).
    add_router_port(&daemon, "east", "04:00:00:00:21:01", "10.21.0.1/24").await;
    add_router_port(&daemon, "west", "04:00:00:00:22:01", "10.22.0.1/24").await;
    c.vips
        .create_vip(pb::CreateVipRequest {
            vip: Some(pb::Vip {
                name: "slb".into(),
                subnet: "east".into(),
                r#type: "switch_lb_vip".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    c.rules
        .create_switch_lb_rule(rule("slb-web", "slb", "netshoot", false))
        .await
        .unwrap();
    rule_reason(&mut c.rules, "slb-web", "Synced").await;
    wait_until_async(
        "slb-web-tcp on east (its subnet) and west (routed clients)",
        Duration::from_secs(10),
        || {
            on("east", "slb-web-tcp")
                && on("west", "slb-web-tcp")
                && nb.nbctl(&["lr-lb-list", "router"]).contains("slb-web-tcp")
        },
    )
    .await;
    assert!(!on("lone", "slb-web-tcp"));
    // The router moved the outside frontend's balancer nowhere else: still east and west.
    assert!(on("east", "outside-tcp") && on("west", "outside-tcp") && !on("lone", "outside-tcp"));

    // Health checks on a frontend outside every subnet: no source address can be reserved, so
    // the rule is refused rather than written without them.
    let error = c
        .rules
        .create_switch_lb_rule(rule("checked", "2.2.2.2", "netshoot", true))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{}", error.message());
    daemon.stop().await;
}

/// Case 7's kind, every other status that could claim too much: a switch_lb_vip is Ready only
/// while a rule serves it (before, nothing answers for it: the router answers ARP/ND for a
/// router's load-balancer VIPs only), so it is `NoRule`; a rule whose frontend has no backend of
/// its family is not Ready (`NoBackends`: connections to it fail) until a matching pod is bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_lb_vip_without_a_rule_and_a_rule_without_backends_are_not_ready() {
    let daemon = TestDaemon::start().await;
    let mut c = daemon.clients().await;
    c.subnets
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/16", ""))
        .await
        .unwrap();
    add_router_port(&daemon, "ovn-default", "04:00:00:00:00:01", "10.16.0.1/16").await;
    c.vips
        .create_vip(pb::CreateVipRequest {
            vip: Some(pb::Vip {
                name: "lonely".into(),
                subnet: "ovn-default".into(),
                r#type: "switch_lb_vip".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let rule = |name: &str, vip: &str, endpoints: &[&str]| pb::CreateSwitchLbRuleRequest {
        rule: Some(pb::SwitchLbRule {
            name: name.into(),
            vip: vip.into(),
            namespace: "default".into(),
            selector: vec!["app:web".into()],
            endpoints: endpoints.iter().map(|endpoint| endpoint.to_string()).collect(),
            ports: vec![pb::LbPort {
                port: 80,
                target_port: 8080,
                ..Default::default()
            }],
            ..Default::default()
        }),
    };
    assert!(!vip_reason(&mut c.vips, "lonely", "NoRule").await);
    c.rules
        .create_switch_lb_rule(rule("web", "lonely", &["10.16.0.50"]))
        .await
        .unwrap();
    assert!(vip_reason(&mut c.vips, "lonely", "Synced").await);
    c.rules
        .delete_switch_lb_rule(pb::DeleteSwitchLbRuleRequest {
            name: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!vip_reason(&mut c.vips, "lonely", "NoRule").await);

    c.rules
        .create_switch_lb_rule(rule("empty", "10.16.0.60", &[]))
        .await
        .unwrap();
    let status = rule_reason(&mut c.rules, "empty", "NoBackends").await;
    assert!(!status.ready);
    assert!(status.conditions[0].message.contains("10.16.0.60"), "{status:?}");
    let web = bind_labelled(&mut c, "web-0", "web", "ovn-default").await;
    let status = rule_reason(&mut c.rules, "empty", "Synced").await;
    assert!(status.ready);
    assert_eq!(status.backends, vec![web]);
    daemon.stop().await;
}

/// Waits until the VIP's Ready condition has `reason`; returns its readiness.
async fn vip_reason(vips: &mut VipServiceClient<Channel>, name: &str, reason: &str) -> bool {
    let status = common::requests::wait_for_vip_status(
        vips,
        name,
        &format!("reason {reason}"),
        Duration::from_secs(5),
        |status| {
            status
                .conditions
                .first()
                .is_some_and(|condition| condition.reason == reason)
        },
    )
    .await;
    status.ready
}

/// The `google.rpc.ErrorInfo` reason of a refusal ("" when it has none).
fn error_reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}
