//! Pods on two hosts (`common::chassis`): the central services and the daemon in the root
//! namespace, two chassis joined by Geneve, every pod made by `ovn-vipd-cni` running on its
//! chassis and reaching the daemon over TCP with mTLS. Connectivity (ping, TCP) and SB's port
//! bindings are the judges. Needs root; CI runs it as root. One whole OVN at a time on the
//! machine (`TwoChassis` holds `ovn::lock`).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::chassis::TwoChassis;
use common::ovn::{connect_many, Pod, PodSpec};
use common::wait_until;
use ovn_vipd::api::proto::v1 as pb;

/// ovn-controller needs a few seconds to program flows after a change.
const FLOWS: Duration = Duration::from_secs(30);

fn create_vip(two: &TwoChassis, vip: pb::Vip) -> pb::VipStatus {
    let mut vips = pb::vip_service_client::VipServiceClient::new(two.channel());
    two.runtime
        .block_on(vips.create_vip(pb::CreateVipRequest { vip: Some(vip) }))
        .expect("create vip")
        .into_inner()
        .status
        .expect("status")
}

fn wait_ready(two: &TwoChassis, name: &str) {
    wait_until(&format!("{name} ready"), Duration::from_secs(15), || {
        let mut vips = pb::vip_service_client::VipServiceClient::new(two.channel());
        two.runtime
            .block_on(vips.get_vip(pb::GetVipRequest { name: name.into() }))
            .expect("get vip")
            .into_inner()
            .status
            .is_some_and(|status| status.ready)
    });
}

/// The AAP set-up both the test and the measurement use: a dual-stack subnet with a router to a
/// second subnet, an AAP VIP for `app: aap1`, parent-1 on chassis 1, parent-2 on chassis 2, a
/// stranger (not selected) on chassis 2, a same-subnet client on each chassis and a routed
/// client on chassis 2.
struct AapScene {
    parents: [Pod; 2],
    stranger: Pod,
    /// Same subnet, chassis 1 and 2.
    clients: [Pod; 2],
    /// Another subnet, through the router, chassis 2.
    routed: Pod,
    /// (address, prefix, SB port) per family.
    families: Vec<(String, u8, String)>,
}

fn aap_scene(two: &mut TwoChassis) -> AapScene {
    two.create_subnet(common::subnet_request("aap", "10.16.0.0/24", "fd00:10:16::/64"));
    two.create_subnet(common::subnet_request("routed", "10.26.0.0/24", "fd00:10:26::/64"));
    two.add_router_port("aap", "04:00:00:00:16:01", &["10.16.0.1/24", "fd00:10:16::1/64"]);
    two.add_router_port("routed", "04:00:00:00:26:01", &["10.26.0.1/24", "fd00:10:26::1/64"]);
    let vip = create_vip(
        two,
        pb::Vip {
            name: "vip-aap".into(),
            subnet: "aap".into(),
            namespace: "default".into(),
            selector: vec!["app: aap1".into()],
            ..Default::default()
        },
    );
    let parent = |name: &str, app: &str| {
        PodSpec::new(name, "aap")
            .label("app", app)
            .annotation("ovn.kubernetes.io/aaps", "vip-aap")
    };
    let parent1 = two.add_pod(parent("parent-1", "aap1"), 1);
    let parent2 = two.add_pod(parent("parent-2", "aap1"), 2);
    let stranger = two.add_pod(parent("stranger", "other"), 2);
    let client1 = two.add_pod(PodSpec::new("client-1", "aap"), 1);
    let client2 = two.add_pod(PodSpec::new("client-2", "aap"), 2);
    let routed = two.add_pod(PodSpec::new("routed", "routed"), 2);
    wait_ready(two, "vip-aap");
    for (pod, chassis) in [(&parent1, 1), (&parent2, 2), (&client1, 1), (&routed, 2)] {
        let port = format!("{}.default", pod.spec.name);
        wait_until(&format!("{port} bound on chassis {chassis}"), FLOWS, || {
            two.bound_chassis(&port) == Some(chassis)
        });
    }
    AapScene {
        parents: [parent1, parent2],
        stranger,
        clients: [client1, client2],
        routed,
        families: vec![
            (vip.v4ip.clone(), 24, "vip-aap".to_string()),
            (vip.v6ip.clone(), 64, "vip-aap:ipv6".to_string()),
        ],
    }
}

impl AapScene {
    fn everyone_reaches(&self, address: &str) -> bool {
        self.clients
            .iter()
            .chain([&self.routed])
            .all(|client| client.ping(address))
    }

    /// SB binds the VIP's port to `holder` on its chassis, every client reaches the address,
    /// and the same-subnet clients hold the holder's MAC for it.
    fn held_by(&self, two: &TwoChassis, holder: usize, port: &str, address: &str) -> bool {
        let parent = &self.parents[holder];
        two.virtual_parent(port) == format!("{}.default", parent.spec.name)
            && two.bound_chassis(port) == Some(holder as u8 + 1)
            && self.everyone_reaches(address)
            && self
                .clients
                .iter()
                .all(|client| client.neighbour_mac(address) == Some(parent.mac()))
    }
}

/// Issue 15, 3 (AAP): keepalived-style failover between pods on different chassis in both
/// families; clients on both chassis and a routed client follow; a pod the selector does not
/// choose cannot take the address.
#[test]
fn aap_vip_fails_over_between_pods_on_two_chassis() {
    let mut two = TwoChassis::start();
    let scene = aap_scene(&mut two);

    // The overlay works across chassis and through the router, and nobody answers for the VIP.
    let [parent1, parent2] = &scene.parents;
    for v6 in [false, true] {
        let family = if v6 { "IPv6" } else { "IPv4" };
        wait_until(&format!("client-1@1 reaches parent-2@2 over {family}"), FLOWS, || {
            scene.clients[0].ping(&parent2.ip(v6))
        });
        wait_until(&format!("client-2@2 reaches parent-1@1 over {family}"), FLOWS, || {
            scene.clients[1].ping(&parent1.ip(v6))
        });
        wait_until(&format!("routed@2 reaches parent-1@1 over {family}"), FLOWS, || {
            scene.routed.ping(&parent1.ip(v6))
        });
    }
    for (address, _, port) in &scene.families {
        assert!(
            !scene.clients[0].ping(address),
            "{address} answered before anyone claimed it"
        );
        assert_eq!(two.virtual_parent(port), "", "{port}");
    }

    // parent-1 (chassis 1) claims it, then it moves to parent-2 (chassis 2) and back.
    for (from, to) in [(None, 0), (Some(0), 1), (Some(1), 0)] {
        for (address, prefix, _) in &scene.families {
            if let Some(from) = from {
                scene.parents[from].release(address, *prefix);
            }
            scene.parents[to].claim(address, *prefix);
        }
        for (address, _, port) in &scene.families {
            wait_until(
                &format!("{address} held by parent-{} on chassis {}", to + 1, to + 1),
                FLOWS,
                || scene.held_by(&two, to, port, address),
            );
        }
    }

    // The stranger (chassis 2, not selected) announces the address too: nothing moves, for
    // as long as it keeps trying.
    for (address, prefix, _) in &scene.families {
        scene.stranger.claim(address, *prefix);
    }
    // Its announcements are out: IPv6's NA goes when duplicate address detection ends (here it
    // fails, parent-1 holds the address, and then no NA is sent at all).
    let v6 = &scene.families[1].0;
    wait_until("the stranger's DAD to end", FLOWS, || {
        let shown = scene
            .stranger
            .exec_ok(&["ip", "-6", "addr", "show", "dev", "eth0", "to", v6]);
        !shown.contains("tentative") || shown.contains("dadfailed")
    });
    // Barrier (datapath): packets the stranger sends after its announcements reach client-2 on
    // its chassis, so the announcements went through the pipeline first.
    wait_until("the stranger reaches client-2", FLOWS, || {
        scene.stranger.ping(&scene.clients[1].ip(false)) && scene.stranger.ping(&scene.clients[1].ip(true))
    });
    for (address, _, port) in &scene.families {
        assert_eq!(two.virtual_parent(port), "parent-1.default", "{port}");
        assert_eq!(two.bound_chassis(port), Some(1), "{port}");
        assert_eq!(
            scene.clients[1].neighbour_mac(address),
            Some(parent1.mac()),
            "{address}"
        );
    }
    for (address, _, _) in &scene.families {
        assert!(scene.everyone_reaches(address), "{address}");
    }
    // Barrier (ovn-controller on chassis 2, the stranger's): a takeover by parent-2 there,
    // announced after the stranger's, goes through the same packet-in path; once SB shows it, a
    // claim by the stranger would have been written before.
    for (address, prefix, _) in &scene.families {
        parent1.release(address, *prefix);
        parent2.claim(address, *prefix);
    }
    for (address, _, port) in &scene.families {
        wait_until(&format!("{address} held by parent-2 after the stranger"), FLOWS, || {
            scene.held_by(&two, 1, port, address)
        });
    }
    // SB's log (debug level) has every transaction: the stranger was never a virtual parent.
    let sb_log = two.sb.log();
    assert!(
        sb_log.contains("\"virtual_parent\":\"parent-2.default\""),
        "SB log lacks the writes it should show"
    );
    assert!(
        !sb_log.contains("\"virtual_parent\":\"stranger.default\""),
        "the stranger was made virtual parent at some point"
    );
}

/// Issue 15, 3 (switch LB): backends on both chassis, clients on both; a backend's chassis
/// loses the pod (CNI DEL there) and every connection goes to the rest.
#[test]
fn switch_lb_spreads_over_backends_on_both_chassis_and_forgets_a_deleted_one() {
    let mut two = TwoChassis::start();
    two.create_subnet(common::subnet_request("lb", "10.17.0.0/24", ""));
    // The VIP's ARP answer is the router port's MAC (OVN-NOTES.md).
    two.add_router_port("lb", "04:00:00:00:17:01", &["10.17.0.1/24"]);
    let vip = create_vip(
        &two,
        pb::Vip {
            name: "slr-vip".into(),
            subnet: "lb".into(),
            r#type: "switch_lb_vip".into(),
            ..Default::default()
        },
    );
    let web1 = two.add_pod(PodSpec::new("web-1", "lb").label("app", "web"), 1);
    let web2 = two.add_pod(PodSpec::new("web-2", "lb").label("app", "web"), 2);
    let clients = [
        two.add_pod(PodSpec::new("client-1", "lb"), 1),
        two.add_pod(PodSpec::new("client-2", "lb"), 2),
    ];
    two.serve_name(&web1, 8080);
    two.serve_name(&web2, 8080);
    let mut rules = pb::switch_lb_rule_service_client::SwitchLbRuleServiceClient::new(two.channel());
    let rule = common::requests::tcp_rule("slr-web", "slr-vip", "app: web", 80, 8080);
    two.runtime
        .block_on(rules.create_switch_lb_rule(common::requests::create_rule(rule)))
        .expect("create rule");
    let backends = || {
        two.nbctl(&["--if-exists", "get", "load_balancer", "slr-web-tcp", "vips"])
            .trim()
            .to_string()
    };
    wait_until("both backends in the load balancer", Duration::from_secs(10), || {
        let vips = backends();
        vips.contains(&web1.ip(false)) && vips.contains(&web2.ip(false))
    });
    wait_ready(&two, "slr-vip");

    let both = BTreeSet::from(["web-1".to_string(), "web-2".to_string()]);
    for client in &clients {
        let answered_by_both = |within: Duration| {
            let mut seen = BTreeSet::new();
            let deadline = Instant::now() + within;
            while seen != both && Instant::now() < deadline {
                seen.extend(
                    connect_many(client, &vip.v4ip, 80, 10)
                        .into_iter()
                        .filter(|a| !a.is_empty()),
                );
            }
            seen == both
        };
        if !answered_by_both(Duration::from_secs(15)) {
            // OVN 23.03.1's ovn-controller sometimes misses a new switch load balancer in its
            // incremental processing (see `WholeOvn::recompute_flows`); NB must already be right.
            eprintln!(
                "switch LB: {} not answered by both after 15 s; recompute",
                client.spec.name
            );
            assert!(two.recompute_flows(), "ovn-controller recompute");
            assert!(
                answered_by_both(FLOWS),
                "{}: connections answered by both backends\nNB: {}",
                client.spec.name,
                two.nbctl(&["list", "load_balancer"])
            );
        }
    }

    // web-1 goes away through CNI DEL on chassis 1: every connection from both chassis is
    // answered by web-2 (on chassis 2).
    two.delete_pod(&web1);
    wait_until("web-1 out of the load balancer", Duration::from_secs(10), || {
        !backends().contains(&web1.ip(false))
    });
    let only_web2 = |client: &Pod, within: Duration| {
        let deadline = Instant::now() + within;
        loop {
            let answers = connect_many(client, &vip.v4ip, 80, 10);
            if answers.iter().all(|answer| answer == "web-2") {
                return true;
            }
            assert!(
                !answers.iter().any(|answer| answer == "web-1"),
                "web-1 answered after its CNI DEL: {answers:?}"
            );
            if Instant::now() >= deadline {
                return false;
            }
        }
    };
    for client in &clients {
        if !only_web2(client, Duration::from_secs(15)) {
            eprintln!(
                "switch LB: {} still failing after the backend's removal; recompute",
                client.spec.name
            );
            assert!(two.recompute_flows(), "ovn-controller recompute");
            assert!(only_web2(client, FLOWS), "{}: connections still fail", client.spec.name);
        }
        let answers = connect_many(client, &vip.v4ip, 80, 20);
        assert!(
            answers.iter().all(|answer| answer == "web-2"),
            "{}: {answers:?}",
            client.spec.name
        );
    }
}

/// Issue 15, 3 (scenario 3): a pod using a VIP is deleted on chassis 1 and re-created on
/// chassis 2 with the same address and MAC, and is reachable there from both chassis.
#[test]
fn pod_using_a_vip_moves_from_chassis_1_to_chassis_2() {
    let mut two = TwoChassis::start();
    two.create_subnet(common::subnet_request("vipnet", "10.18.0.0/24", ""));
    let vip = create_vip(
        &two,
        pb::Vip {
            name: "pod-vip".into(),
            subnet: "vipnet".into(),
            ..Default::default()
        },
    );
    let web0 = PodSpec::new("web-0", "vipnet")
        .annotation("ovn.kubernetes.io/vip", "pod-vip")
        .owner("StatefulSet");
    let clients = [
        two.add_pod(PodSpec::new("client-1", "vipnet"), 1),
        two.add_pod(PodSpec::new("client-2", "vipnet"), 2),
    ];
    let first = two.add_pod(web0.clone(), 1);
    assert_eq!((first.ip(false), first.mac()), (vip.v4ip.clone(), vip.mac.clone()));
    wait_until("web-0 bound on chassis 1", FLOWS, || {
        two.bound_chassis("web-0.default") == Some(1)
    });
    for client in &clients {
        wait_until(
            &format!("{} reaches web-0 on chassis 1", client.spec.name),
            FLOWS,
            || client.ping(&vip.v4ip),
        );
    }

    two.delete_pod(&first);
    wait_until("web-0 unbound from chassis 1", FLOWS, || {
        two.bound_chassis("web-0.default").is_none()
    });
    let second = two.add_pod(web0, 2);
    assert_ne!(second.container_id, first.container_id);
    assert_eq!((second.ip(false), second.mac()), (vip.v4ip.clone(), vip.mac.clone()));
    wait_until("web-0 bound on chassis 2", FLOWS, || {
        two.bound_chassis("web-0.default") == Some(2)
    });
    for client in &clients {
        wait_until(
            &format!("{} reaches web-0 on chassis 2", client.spec.name),
            FLOWS,
            || client.ping(&vip.v4ip),
        );
        assert_eq!(client.neighbour_mac(&vip.v4ip), Some(vip.mac.clone()));
    }

    // TLS is really on: the plugin of a chassis without its client certificate is refused by the
    // daemon (try again later), and its ADD leaves no binding.
    let uncertified = two.sandbox(PodSpec::new("uncertified", "vipnet"), 2);
    let mut conf = two.net_conf(&uncertified.spec, 2);
    for key in ["tlsCertificate", "tlsPrivateKey"] {
        conf.as_object_mut().expect("object").remove(key);
    }
    let refused = two.cni_with("ADD", &uncertified, &conf);
    assert!(!refused.success, "{}", refused.stdout);
    assert_eq!(refused.json["code"], 11, "{}", refused.stdout);
    let mut pods = pb::pod_service_client::PodServiceClient::new(two.channel());
    let known = two.runtime.block_on(pods.get_pod(pb::GetPodRequest {
        namespace: "default".into(),
        name: "uncertified".into(),
    }));
    assert_eq!(
        known.map(drop).map_err(|status| status.code()),
        Err(tonic::Code::NotFound)
    );
}
