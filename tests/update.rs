//! UpdateVip and UpdateSubnet (AIP-134 field masks) through the real daemon, with ovn-nbctl as
//! the judge of the NB rows that follow.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{wait_until_async, TestDaemon};
use ovn_vipd::api::proto::v1 as pb;
use prost_types::FieldMask;
use tonic::Code;

fn get(daemon: &TestDaemon, args: &[&str]) -> String {
    let mut all = vec!["--if-exists", "get"];
    all.extend_from_slice(args);
    daemon.nb.nbctl(&all).trim().to_string()
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|path| path.to_string()).collect(),
    })
}

fn assert_invalid(error: &tonic::Status, fragment: &str) {
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert!(error.message().contains(fragment), "{fragment} not named: {error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_selector_moves_virtual_parents_and_port_security_and_addresses_stay() {
    let daemon = TestDaemon::start().await;
    let common::requests::Clients {
        mut subnets,
        mut vips,
        mut pods,
        ..
    } = daemon.clients().await;
    subnets
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/16", ""))
        .await
        .expect("subnet");
    let created = vips
        .create_vip(pb::CreateVipRequest {
            vip: Some(pb::Vip {
                name: "vip-aap".into(),
                subnet: "ovn-default".into(),
                namespace: "default".into(),
                selector: vec!["app: aap1".into()],
                ..Default::default()
            }),
        })
        .await
        .expect("vip")
        .into_inner();
    let address = created.status.clone().unwrap_or_default().v4ip;
    let bind = |name: &str, app: &str| pb::BindPodRequest {
        namespace: "default".into(),
        name: name.into(),
        labels: HashMap::from([("app".to_string(), app.to_string())]),
        annotations: HashMap::from([("ovn.kubernetes.io/aaps".to_string(), "vip-aap".to_string())]),
        nics: vec![pb::NicRequest {
            subnet: "ovn-default".into(),
            interface: "eth0".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    pods.bind_pod(bind("one", "aap1")).await.expect("bind one");
    pods.bind_pod(bind("two", "aap2")).await.expect("bind two");
    wait_until_async("pod one as the parent", Duration::from_secs(10), || {
        get(&daemon, &["logical_switch_port", "vip-aap", "options:virtual-parents"]).trim_matches('"') == "one.default"
            && get(&daemon, &["logical_switch_port", "one.default", "port_security"]).contains(&address)
    })
    .await;

    // The selector changes: parents and port security follow.
    let updated = vips
        .update_vip(pb::UpdateVipRequest {
            vip: Some(pb::Vip {
                name: "vip-aap".into(),
                selector: vec!["app: aap2".into()],
                ..Default::default()
            }),
            update_mask: mask(&["selector"]),
        })
        .await
        .expect("update selector")
        .into_inner();
    assert_eq!(updated.selector, ["app: aap2"]);
    assert_eq!(
        updated.status.clone().unwrap_or_default().v4ip,
        address,
        "the address stays"
    );
    wait_until_async("pod two as the parent", Duration::from_secs(10), || {
        get(&daemon, &["logical_switch_port", "vip-aap", "options:virtual-parents"]).trim_matches('"') == "two.default"
            && get(&daemon, &["logical_switch_port", "two.default", "port_security"]).contains(&address)
            && !get(&daemon, &["logical_switch_port", "one.default", "port_security"]).contains(&address)
    })
    .await;

    // An address change is refused, naming the field, and changes nothing.
    let before = daemon.nb.nbctl(&["list", "logical_switch_port", "vip-aap"]);
    for (label, request) in [
        (
            "explicit mask",
            pb::UpdateVipRequest {
                vip: Some(pb::Vip {
                    name: "vip-aap".into(),
                    v4ip: "10.16.0.200".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["v4ip"]),
            },
        ),
        (
            "implied mask",
            pb::UpdateVipRequest {
                vip: Some(pb::Vip {
                    name: "vip-aap".into(),
                    v4ip: "10.16.0.200".into(),
                    selector: vec!["app: aap1".into()],
                    ..Default::default()
                }),
                update_mask: None,
            },
        ),
        (
            "MAC",
            pb::UpdateVipRequest {
                vip: Some(pb::Vip {
                    name: "vip-aap".into(),
                    mac_address: "00:00:00:00:00:01".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["mac_address"]),
            },
        ),
        (
            "unknown path",
            pb::UpdateVipRequest {
                vip: Some(pb::Vip {
                    name: "vip-aap".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["colour"]),
            },
        ),
    ] {
        let error = vips.update_vip(request).await.expect_err(label);
        let field = match label {
            "explicit mask" | "implied mask" => "v4ip",
            "MAC" => "mac_address",
            _ => "colour",
        };
        assert_invalid(&error, field);
    }
    let now = vips
        .get_vip(pb::GetVipRequest { name: "vip-aap".into() })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(now.selector, ["app: aap2"], "a refused update changes nothing");
    assert_eq!(now.status.clone().unwrap_or_default().v4ip, address);
    assert_eq!(daemon.nb.nbctl(&["list", "logical_switch_port", "vip-aap"]), before);

    // What Get returned goes back whole with "*" (its addresses equal), namespace changes.
    let mut whole = now.clone();
    whole.namespace = "other".into();
    let moved = vips
        .update_vip(pb::UpdateVipRequest {
            vip: Some(whole),
            update_mask: mask(&["*"]),
        })
        .await
        .expect("update *")
        .into_inner();
    assert_eq!(moved.namespace, "other");
    wait_until_async("no parent in namespace other", Duration::from_secs(10), || {
        !get(&daemon, &["logical_switch_port", "two.default", "port_security"]).contains(&address)
    })
    .await;
    let error = vips
        .update_vip(pb::UpdateVipRequest {
            vip: Some(pb::Vip {
                name: "ghost".into(),
                ..Default::default()
            }),
            update_mask: mask(&["selector"]),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclude_ips_widen_unless_an_allocated_address_falls_in_and_cidrs_stay() {
    let daemon = TestDaemon::start().await;
    let common::requests::Clients {
        mut subnets, mut vips, ..
    } = daemon.clients().await;
    subnets
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/24", ""))
        .await
        .expect("subnet");
    vips.create_vip(pb::CreateVipRequest {
        vip: Some(pb::Vip {
            name: "held".into(),
            subnet: "ovn-default".into(),
            v4ip: "10.16.0.50".into(),
            ..Default::default()
        }),
    })
    .await
    .expect("vip");

    // Widening over the held address: refused, naming it, nothing changes.
    let error = subnets
        .update_subnet(pb::UpdateSubnetRequest {
            subnet: Some(pb::Subnet {
                name: "ovn-default".into(),
                exclude_ips: vec!["10.16.0.40..10.16.0.60".into()],
                ..Default::default()
            }),
            update_mask: mask(&["exclude_ips"]),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
    assert!(
        error.message().contains("10.16.0.50") && error.message().contains("held"),
        "{error:?}"
    );
    // Issue #13: the holder must let go first.
    assert_eq!(
        tonic_types::StatusExt::get_details_error_info(&error).map(|info| info.reason),
        Some("ADDRESS_TAKEN".to_string())
    );
    let unchanged = subnets
        .get_subnet(pb::GetSubnetRequest {
            name: "ovn-default".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert!(unchanged.exclude_ips.is_empty());

    // Widening elsewhere, and the strategy: taken, and dynamic allocation honours both.
    let updated = subnets
        .update_subnet(pb::UpdateSubnetRequest {
            subnet: Some(pb::Subnet {
                name: "ovn-default".into(),
                exclude_ips: vec!["10.16.0.2..10.16.0.49".into()],
                strategy: pb::AllocationStrategy::Sequential as i32,
                ..Default::default()
            }),
            update_mask: None,
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.exclude_ips, ["10.16.0.2..10.16.0.49"]);
    assert_eq!(updated.strategy, pb::AllocationStrategy::Sequential as i32);
    let status = updated.status.unwrap_or_default();
    // 254 usable: the gateway, 48 excluded and 1 held are not free.
    assert_eq!((status.v4_used, status.v4_free), (1, 253 - 48 - 1), "{status:?}");
    let next = vips
        .create_vip(pb::CreateVipRequest {
            vip: Some(pb::Vip {
                name: "next".into(),
                subnet: "ovn-default".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("dynamic vip")
        .into_inner();
    assert_eq!(
        next.status.unwrap_or_default().v4ip,
        "10.16.0.51",
        "sequential, past the exclusion"
    );
    let held = vips
        .get_vip(pb::GetVipRequest { name: "held".into() })
        .await
        .expect("held")
        .into_inner();
    assert_eq!(held.status.unwrap_or_default().v4ip, "10.16.0.50");

    // CIDRs and gateways are immutable.
    for (path, subnet) in [
        (
            "cidr_v4",
            pb::Subnet {
                name: "ovn-default".into(),
                cidr_v4: "10.17.0.0/24".into(),
                ..Default::default()
            },
        ),
        (
            "gateway_v4",
            pb::Subnet {
                name: "ovn-default".into(),
                gateway_v4: "10.16.0.254".into(),
                ..Default::default()
            },
        ),
    ] {
        let error = subnets
            .update_subnet(pb::UpdateSubnetRequest {
                subnet: Some(subnet.clone()),
                update_mask: mask(&[path]),
            })
            .await
            .unwrap_err();
        assert_invalid(&error, path);
        let error = subnets
            .update_subnet(pb::UpdateSubnetRequest {
                subnet: Some(subnet),
                update_mask: None,
            })
            .await
            .unwrap_err();
        assert_invalid(&error, path);
    }
    // An update without a name is bad input naming the field, as a create answers (it was
    // NotFound `subnet "" not found`); the same for a VIP.
    let error = subnets
        .update_subnet(pb::UpdateSubnetRequest {
            subnet: Some(pb::Subnet {
                exclude_ips: vec!["10.16.0.9".into()],
                ..Default::default()
            }),
            update_mask: mask(&["exclude_ips"]),
        })
        .await
        .unwrap_err();
    assert_invalid(&error, "subnet.name: must not be empty");
    let error = vips
        .update_vip(pb::UpdateVipRequest {
            vip: Some(pb::Vip::default()),
            update_mask: mask(&["selector"]),
        })
        .await
        .unwrap_err();
    assert_invalid(&error, "vip.name: must not be empty");
    // The same CIDR and effective gateway sent back (as Get shows them) are no change.
    let current = subnets
        .get_subnet(pb::GetSubnetRequest {
            name: "ovn-default".into(),
        })
        .await
        .expect("get")
        .into_inner();
    subnets
        .update_subnet(pb::UpdateSubnetRequest {
            subnet: Some(current),
            update_mask: mask(&["*"]),
        })
        .await
        .expect("Get's answer sent back whole");
    daemon.stop().await;
}
