//! The gRPC API through the generated tonic client, against the real daemon.

mod common;

use std::collections::HashMap;

use common::requests::{vip, Clients};
use common::TestDaemon;
use ovn_vipd::api::proto::v1 as pb;
use pb::subnet_service_client::SubnetServiceClient;
use tonic::Code;

fn bind(
    namespace: &str,
    name: &str,
    nics: &[(&str, &str)],
    annotations: &[(&str, &str)],
    owner: pb::OwnerKind,
) -> pb::BindPodRequest {
    pb::BindPodRequest {
        namespace: namespace.into(),
        name: name.into(),
        labels: HashMap::new(),
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        owner_kind: owner as i32,
        owner_name: String::new(),
        nics: nics
            .iter()
            .map(|(subnet, interface)| pb::NicRequest {
                subnet: subnet.to_string(),
                interface: interface.to_string(),
                ..Default::default()
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vip_scenario_the_api_decides() {
    let daemon = TestDaemon::start().await;
    let mut c = daemon.clients().await;
    c.create_subnet("ovn-default", "10.16.0.0/16", "fd00:10:16::/64").await;
    c.create_subnet("tiny", "10.99.0.0/30", "").await;

    // 1.1 automatic: an address of each family and a MAC.
    let dynamic = c.create_vip(vip("vip-dynamic-01", "ovn-default")).await;
    let status = dynamic.status.clone().unwrap();
    assert!(
        status.v4ip.starts_with("10.16.") && status.v6ip.starts_with("fd00:10:16:"),
        "{status:?}"
    );
    assert!(!status.ready, "not ready before the NB sync exists");
    assert_eq!(status.conditions[0].reason, "Pending");
    // Idempotent retry returns the same VIP; another spec under the name is ALREADY_EXISTS.
    let again = c.create_vip(vip("vip-dynamic-01", "ovn-default")).await;
    assert_eq!(again.status.unwrap().v4ip, status.v4ip);
    let mut different = vip("vip-dynamic-01", "ovn-default");
    different.v4ip = "10.16.0.200".into();
    let error = c
        .vips
        .create_vip(pb::CreateVipRequest { vip: Some(different) })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::AlreadyExists);

    // 1.2 static, dual-stack with a given MAC.
    let mut fixed = vip("static-vip01", "ovn-default");
    fixed.v4ip = "10.16.0.121".into();
    fixed.v6ip = "fd00:10:16:0:0::121".into();
    fixed.mac_address = "00:00:00:F0:DB:26".into();
    let fixed = c
        .vips
        .create_vip(pb::CreateVipRequest { vip: Some(fixed) })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(
        (fixed.v4ip.as_str(), fixed.v6ip.as_str(), fixed.mac.as_str()),
        ("10.16.0.121", "fd00:10:16::121", "00:00:00:f0:db:26")
    );
    let mut clash = vip("clash", "ovn-default");
    clash.v4ip = "10.16.0.121".into();
    let error = c
        .vips
        .create_vip(pb::CreateVipRequest { vip: Some(clash) })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(reason(&error), "ADDRESS_TAKEN");
    assert!(
        error.message().contains("already owned by vip/static-vip01"),
        "{}",
        error.message()
    );

    // 1.3 AAP: namespace and Kube-OVN selector strings; the parents follow the pods.
    let mut aap = vip("vip-aap", "ovn-default");
    aap.namespace = "default".into();
    aap.selector = vec!["app: aap1".into()];
    c.vips
        .create_vip(pb::CreateVipRequest { vip: Some(aap) })
        .await
        .unwrap();
    let mut parent = bind(
        "default",
        "busybox",
        &[("ovn-default", "eth0")],
        &[("ovn.kubernetes.io/aaps", "vip-aap")],
        pb::OwnerKind::Other,
    );
    parent.labels.insert("app".into(), "aap1".into());
    c.pods.bind_pod(parent).await.unwrap();
    let mut stranger = bind(
        "default",
        "stranger",
        &[("ovn-default", "eth0")],
        &[("ovn.kubernetes.io/aaps", "vip-aap")],
        pb::OwnerKind::Other,
    );
    stranger.labels.insert("app".into(), "other".into());
    c.pods.bind_pod(stranger).await.unwrap();
    let aap = c
        .vips
        .get_vip(pb::GetVipRequest { name: "vip-aap".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(aap.status.unwrap().parents, vec!["busybox.default".to_string()]);
    assert_eq!(aap.selector, vec!["app: aap1".to_string()]);

    // 2 switch_lb_vip and a rule on it.
    let mut slr_vip = vip("slr-01", "ovn-default");
    slr_vip.r#type = "switch_lb_vip".into();
    assert_eq!(
        c.vips
            .create_vip(pb::CreateVipRequest { vip: Some(slr_vip) })
            .await
            .unwrap()
            .into_inner()
            .r#type,
        "switch_lb_vip"
    );
    let rule = pb::SwitchLbRule {
        session_affinity: pb::SessionAffinity::ClientIp as i32,
        ..common::requests::tcp_rule("slr-web", "slr-01", "app: web", 80, 8080)
    };
    let created = c
        .rules
        .create_switch_lb_rule(pb::CreateSwitchLbRuleRequest { rule: Some(rule) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.session_affinity_timeout, 10_800);

    // 3 a pod uses a VIP as its fixed address; 3.1 a StatefulSet pod keeps it.
    c.create_vip(vip("pod-use-vip", "ovn-default")).await;
    let held = c
        .vips
        .get_vip(pb::GetVipRequest {
            name: "pod-use-vip".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let request = bind(
        "default",
        "web-0",
        &[("ovn-default", "eth0")],
        &[("ovn.kubernetes.io/vip", "pod-use-vip")],
        pb::OwnerKind::StatefulSet,
    );
    let pod = c.pods.bind_pod(request.clone()).await.unwrap().into_inner();
    assert_eq!(pod.nics[0].port_name, "web-0.default");
    assert_eq!(
        pod.nics[0].addresses,
        vec![format!("{}/16", held.v4ip), format!("{}/64", held.v6ip)]
    );
    assert_eq!(pod.nics[0].mac, held.mac);
    assert_eq!(
        pod.nics[0].gateways,
        vec!["10.16.0.1".to_string(), "fd00:10:16::1".to_string()]
    );
    // A retry of the same bind is the same answer.
    assert_eq!(
        c.pods.bind_pod(request.clone()).await.unwrap().into_inner().nics,
        pod.nics
    );
    let holder = c
        .vips
        .get_vip(pb::GetVipRequest {
            name: "pod-use-vip".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .holder
        .unwrap();
    assert_eq!((holder.namespace.as_str(), holder.name.as_str()), ("default", "web-0"));
    let thief = bind(
        "default",
        "thief",
        &[("ovn-default", "eth0")],
        &[("ovn.kubernetes.io/vip", "pod-use-vip")],
        pb::OwnerKind::Other,
    );
    let error = c.pods.bind_pod(thief).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(error.message(), "vip pod-use-vip is in use by pod default/web-0");
    assert_eq!(
        reason(&error),
        "IN_USE",
        "a client tells 'wait for the holder' from 'retry'"
    );
    c.pods
        .unbind_pod(pb::UnbindPodRequest {
            namespace: "default".into(),
            name: "web-0".into(),
            owner_gone: false,
            ..Default::default()
        })
        .await
        .unwrap();
    let recreated = c.pods.bind_pod(request).await.unwrap().into_inner();
    assert_eq!(recreated.nics, pod.nics);

    // A full subnet is RESOURCE_EXHAUSTED: a /30 has one address besides its gateway.
    c.create_vip(vip("tiny-1", "tiny")).await;
    let error = c
        .vips
        .create_vip(pb::CreateVipRequest {
            vip: Some(vip("tiny-2", "tiny")),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::ResourceExhausted);
    assert!(error.message().contains("subnet full"), "{}", error.message());

    // Deleting a used subnet is refused, naming what uses it.
    let error = c
        .subnets
        .delete_subnet(pb::DeleteSubnetRequest {
            name: "tiny".into(),
            revision: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(error.message().contains("vip tiny-1"), "{}", error.message());
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_the_right_code_and_change_nothing() {
    let daemon = TestDaemon::start().await;
    let mut c = daemon.clients().await;
    c.create_subnet("ovn-default", "10.16.0.0/16", "").await;
    c.create_vip(vip("existing", "ovn-default")).await;
    // Let the NB sync settle the VIP's status first: the snapshot below must only move if a
    // refused request changed something.
    common::wait_for("the VIP to become ready", std::time::Duration::from_secs(5), || {
        let mut vips = c.vips.clone();
        async move {
            let status = vips
                .get_vip(pb::GetVipRequest {
                    name: "existing".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            if status.as_ref().is_some_and(|status| status.ready) {
                Ok(())
            } else {
                Err(format!("{status:?}"))
            }
        }
    })
    .await;

    let with = |edit: fn(&mut pb::Vip)| {
        let mut request = vip("new-vip", "ovn-default");
        edit(&mut request);
        request
    };
    let vip_cases: Vec<(&str, pb::Vip, Code, &str)> = vec![
        (
            "empty name",
            with(|v| v.name.clear()),
            Code::InvalidArgument,
            "vip.name: must not be empty",
        ),
        (
            "upper-case name",
            with(|v| v.name = "Vip".into()),
            Code::InvalidArgument,
            "DNS-1123",
        ),
        (
            "dotted name",
            with(|v| v.name = "busybox.default".into()),
            Code::InvalidArgument,
            "DNS-1123",
        ),
        (
            "long name",
            with(|v| v.name = "a".repeat(64)),
            Code::InvalidArgument,
            "at most 63",
        ),
        (
            "bad v4",
            with(|v| v.v4ip = "10.16.0.999".into()),
            Code::InvalidArgument,
            "vip.v4ip",
        ),
        (
            "v6 in v4 field",
            with(|v| v.v4ip = "fd00::1".into()),
            Code::InvalidArgument,
            "not an IPv4 address",
        ),
        (
            "bad v6",
            with(|v| v.v6ip = "fd00:::1".into()),
            Code::InvalidArgument,
            "vip.v6ip",
        ),
        (
            "outside CIDR",
            with(|v| v.v4ip = "10.17.0.5".into()),
            Code::InvalidArgument,
            "outside the subnet's CIDR",
        ),
        (
            "gateway",
            with(|v| v.v4ip = "10.16.0.1".into()),
            Code::InvalidArgument,
            "gateway",
        ),
        (
            "network address",
            with(|v| v.v4ip = "10.16.0.0".into()),
            Code::InvalidArgument,
            "network address",
        ),
        (
            "broadcast",
            with(|v| v.v4ip = "10.16.255.255".into()),
            Code::InvalidArgument,
            "broadcast",
        ),
        (
            "v6 in a v4-only subnet",
            with(|v| v.v6ip = "fd00::5".into()),
            Code::InvalidArgument,
            "no IPv6 CIDR",
        ),
        (
            "bad MAC",
            with(|v| v.mac_address = "00:00:00:00:00".into()),
            Code::InvalidArgument,
            "invalid MAC",
        ),
        (
            "multicast MAC",
            with(|v| v.mac_address = "01:00:5e:00:00:01".into()),
            Code::InvalidArgument,
            "multicast",
        ),
        (
            "zero MAC",
            with(|v| v.mac_address = "00:00:00:00:00:00".into()),
            Code::InvalidArgument,
            "all-zero",
        ),
        (
            "bad type",
            with(|v| v.r#type = "lb".into()),
            Code::InvalidArgument,
            "vip.type",
        ),
        (
            "bad selector",
            with(|v| {
                v.namespace = "default".into();
                v.selector = vec!["app".into()];
            }),
            Code::InvalidArgument,
            "key: value",
        ),
        (
            "selector without namespace",
            with(|v| v.selector = vec!["app: a".into()]),
            Code::InvalidArgument,
            "vip.namespace",
        ),
        (
            "bad selector key",
            with(|v| {
                v.namespace = "default".into();
                v.selector = vec!["a b: c".into()];
            }),
            Code::InvalidArgument,
            "label key",
        ),
        (
            // Issue #16 case 9: "a:b:c" was stored as `a: b:c`, a value no label can hold.
            "selector value with ':'",
            with(|v| {
                v.namespace = "default".into();
                v.selector = vec!["a:b:c".into()];
            }),
            Code::InvalidArgument,
            "vip.selector[0]",
        ),
        (
            "selector name part over 63 characters",
            with(|v| {
                v.namespace = "default".into();
                v.selector = vec![format!("example.com/{}: x", "n".repeat(64))];
            }),
            Code::InvalidArgument,
            "label key",
        ),
        (
            "selector prefix not a DNS-1123 subdomain",
            with(|v| {
                v.namespace = "default".into();
                v.selector = vec!["Example_com/app: x".into()];
            }),
            Code::InvalidArgument,
            "label key",
        ),
        (
            "selector label value starting with '-'",
            with(|v| {
                v.namespace = "default".into();
                v.selector_labels = HashMap::from([("app".to_string(), "-web".to_string())]);
            }),
            Code::InvalidArgument,
            "vip.selector_labels[app]",
        ),
        // A missing subnet is no refusal: the VIP waits for it (tests/pending_vips.rs).
        (
            "existing name, other spec",
            with(|v| {
                v.name = "existing".into();
                v.v4ip = "10.16.3.3".into();
            }),
            Code::AlreadyExists,
            "already exists",
        ),
    ];
    let before = snapshot(&mut c).await;
    let mut checked = 0;
    for (label, request, code, fragment) in vip_cases {
        let error = c
            .vips
            .create_vip(pb::CreateVipRequest { vip: Some(request) })
            .await
            .unwrap_err();
        assert_refused(label, &error, code, fragment);
        checked += 1;
    }
    let error = c.vips.create_vip(pb::CreateVipRequest { vip: None }).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "missing vip");
    checked += 1;

    let subnet_cases: Vec<(&str, pb::CreateSubnetRequest, Code, &str)> = vec![
        (
            "no CIDR",
            common::subnet_request("s1", "", ""),
            Code::InvalidArgument,
            "needs cidr_v4, cidr_v6",
        ),
        (
            "bad CIDR",
            common::subnet_request("s1", "10.0.0.0/33", ""),
            Code::InvalidArgument,
            "subnet.cidr_v4",
        ),
        (
            "prefix too long",
            common::subnet_request("s1", "10.0.0.0/31", ""),
            Code::InvalidArgument,
            "/8 to /30",
        ),
        (
            "host bits",
            common::subnet_request("s1", "10.0.0.1/24", ""),
            Code::InvalidArgument,
            "host bits",
        ),
        (
            "v6 too long",
            common::subnet_request("s1", "", "fd00::/128"),
            Code::InvalidArgument,
            "/8 to /127",
        ),
        (
            "existing, other spec",
            common::subnet_request("ovn-default", "10.17.0.0/16", ""),
            Code::AlreadyExists,
            "already exists",
        ),
    ];
    for (label, request, code, fragment) in subnet_cases {
        let error = c.subnets.create_subnet(request).await.unwrap_err();
        assert_refused(label, &error, code, fragment);
        checked += 1;
    }
    let mut bad_exclude = common::subnet_request("s1", "10.0.0.0/24", "");
    bad_exclude.subnet.as_mut().unwrap().exclude_ips = vec!["10.0.0.9..10.0.0.1".into()];
    let error = c.subnets.create_subnet(bad_exclude).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error.message().contains("start is after its end"),
        "{}",
        error.message()
    );
    checked += 1;

    let pod_cases: Vec<(&str, pb::BindPodRequest, Code, &str)> = vec![
        (
            "no NICs",
            bind("default", "p", &[], &[], pb::OwnerKind::Other),
            Code::InvalidArgument,
            "at least one NIC",
        ),
        (
            "bad interface",
            bind(
                "default",
                "p",
                &[("ovn-default", "this-name-is-too-long")],
                &[],
                pb::OwnerKind::Other,
            ),
            Code::InvalidArgument,
            "interface",
        ),
        (
            "duplicate interface",
            bind(
                "default",
                "p",
                &[("ovn-default", "eth0"), ("ovn-default", "eth0")],
                &[],
                pb::OwnerKind::Other,
            ),
            Code::InvalidArgument,
            "appears twice",
        ),
        (
            "unknown subnet",
            bind("default", "p", &[("nope", "eth0")], &[], pb::OwnerKind::Other),
            Code::FailedPrecondition,
            "subnet nope does not exist",
        ),
        (
            "unknown vip",
            bind(
                "default",
                "p",
                &[("ovn-default", "eth0")],
                &[("ovn.kubernetes.io/vip", "ghost")],
                pb::OwnerKind::Other,
            ),
            Code::FailedPrecondition,
            "vip ghost does not exist",
        ),
        (
            "bad namespace",
            bind("Default", "p", &[("ovn-default", "eth0")], &[], pb::OwnerKind::Other),
            Code::InvalidArgument,
            "namespace",
        ),
        (
            // Issue #16 case 9: pod labels follow Kubernetes label syntax too.
            "pod label value with ':'",
            {
                let mut request = bind("default", "p", &[("ovn-default", "eth0")], &[], pb::OwnerKind::Other);
                request.labels.insert("app".into(), "b:c".into());
                request
            },
            Code::InvalidArgument,
            "labels[app]",
        ),
        (
            "pod label key with a space",
            {
                let mut request = bind("default", "p", &[("ovn-default", "eth0")], &[], pb::OwnerKind::Other);
                request.labels.insert("my app".into(), "web".into());
                request
            },
            Code::InvalidArgument,
            "label key",
        ),
        (
            "annotation key not a qualified name",
            bind(
                "default",
                "p",
                &[("ovn-default", "eth0")],
                &[("ovn.kubernetes.io/", "x")],
                pb::OwnerKind::Other,
            ),
            Code::InvalidArgument,
            "annotation key",
        ),
    ];
    for (label, request, code, fragment) in pod_cases {
        let error = c.pods.bind_pod(request).await.unwrap_err();
        assert_refused(label, &error, code, fragment);
        checked += 1;
    }
    let mut unknown_owner = bind("default", "p", &[("ovn-default", "eth0")], &[], pb::OwnerKind::Other);
    unknown_owner.owner_kind = 42;
    assert_eq!(
        c.pods.bind_pod(unknown_owner).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    checked += 1;

    let rule = |edit: fn(&mut pb::SwitchLbRule)| {
        let mut rule = pb::SwitchLbRule {
            name: "r".into(),
            vip: "10.16.0.50".into(),
            ports: vec![pb::LbPort {
                name: "http".into(),
                port: 80,
                target_port: 8080,
                protocol: 0,
            }],
            ..Default::default()
        };
        edit(&mut rule);
        pb::CreateSwitchLbRuleRequest { rule: Some(rule) }
    };
    let rule_cases: Vec<(&str, pb::CreateSwitchLbRuleRequest, Code, &str)> = vec![
        (
            "port 0",
            rule(|r| r.ports[0].port = 0),
            Code::InvalidArgument,
            "not a port",
        ),
        (
            "port too big",
            rule(|r| r.ports[0].port = 70000),
            Code::InvalidArgument,
            "not a port",
        ),
        (
            "target too big",
            rule(|r| r.ports[0].target_port = 65536),
            Code::InvalidArgument,
            "target_port",
        ),
        (
            "unknown protocol",
            rule(|r| r.ports[0].protocol = 9),
            Code::InvalidArgument,
            "unknown protocol",
        ),
        (
            "no ports",
            rule(|r| r.ports.clear()),
            Code::InvalidArgument,
            "at least one port",
        ),
        (
            "bad endpoint",
            rule(|r| r.endpoints = vec!["10.16.0.x".into()]),
            Code::InvalidArgument,
            "endpoints[0]",
        ),
        // A rule may name a VIP before it exists, with or without health checks: no refusal
        // (tests/references.rs).
        (
            "too many endpoints",
            rule(|r| r.endpoints = vec!["10.16.0.9".into(); 1025]),
            Code::InvalidArgument,
            "at most 1024",
        ),
    ];
    for (label, request, code, fragment) in rule_cases {
        let error = c.rules.create_switch_lb_rule(request).await.unwrap_err();
        assert_refused(label, &error, code, fragment);
        checked += 1;
    }
    // Not found, for each kind.
    assert_eq!(
        c.vips
            .get_vip(pb::GetVipRequest { name: "ghost".into() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        c.vips
            .delete_vip(pb::DeleteVipRequest {
                name: "ghost".into(),
                revision: 0
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        c.subnets
            .get_subnet(pb::GetSubnetRequest { name: "ghost".into() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        c.rules
            .get_switch_lb_rule(pb::GetSwitchLbRuleRequest { name: "ghost".into() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    checked += 4;
    assert!(checked >= 30, "only {checked} bad inputs checked");

    // Nothing the refusals touched changed.
    assert_eq!(snapshot(&mut c).await, before);
    // The field violations travel as google.rpc.BadRequest details.
    let error = c
        .vips
        .create_vip(pb::CreateVipRequest {
            vip: Some(with(|v| v.v4ip = "x".into())),
        })
        .await
        .unwrap_err();
    use tonic_types::StatusExt;
    let details = error.get_error_details();
    let bad_request = details.bad_request().expect("BadRequest details");
    assert_eq!(bad_request.field_violations[0].field, "vip.v4ip");
    // Refusals decided by IPAM name the field the same way.
    let error = c
        .vips
        .create_vip(pb::CreateVipRequest {
            vip: Some(with(|v| v.v4ip = "10.16.0.1".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(
        error
            .get_error_details()
            .bad_request()
            .expect("BadRequest")
            .field_violations[0]
            .field,
        "vip.v4ip"
    );
    daemon.stop().await;
}

/// A refusal has the expected code and says what is wrong.
/// The `google.rpc.ErrorInfo` reason of a refusal ("" when it has none).
fn reason(error: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    error
        .get_details_error_info()
        .map(|info| {
            assert_eq!(info.domain, "ovnvip.v1");
            info.reason
        })
        .unwrap_or_default()
}

fn assert_refused(label: &str, error: &tonic::Status, code: Code, fragment: &str) {
    assert_eq!(error.code(), code, "{label}: {}", error.message());
    if fragment.ends_with("does not exist") {
        assert_eq!(
            reason(error),
            "REFERENCE_NOT_FOUND",
            "{label}: a missing reference may appear later"
        );
    }
    assert!(
        error.message().contains(fragment),
        "{label}: {:?} lacks {fragment:?}",
        error.message()
    );
}

async fn snapshot(c: &mut Clients) -> String {
    let subnets = c
        .subnets
        .list_subnets(pb::ListSubnetsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let vips = c
        .vips
        .list_vips(pb::ListVipsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let pods = c
        .pods
        .list_pods(pb::ListPodsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let rules = c
        .rules
        .list_switch_lb_rules(pb::ListSwitchLbRulesRequest::default())
        .await
        .unwrap()
        .into_inner();
    format!("{subnets:?}{vips:?}{pods:?}{rules:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_starts_with_the_current_state_then_streams_changes() {
    let daemon = TestDaemon::start().await;
    let mut c = daemon.clients().await;
    c.create_subnet("ovn-default", "10.16.0.0/16", "").await;
    c.create_vip(vip("before", "ovn-default")).await;
    let mut stream = c
        .vips
        .watch_vips(pb::WatchVipsRequest {
            name: String::new(),
            revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    /// The next ADDED or DELETED event; MODIFIED ones (status written by the NB sync) are skipped.
    async fn next(stream: &mut tonic::Streaming<pb::VipEvent>) -> pb::VipEvent {
        loop {
            let event = tokio::time::timeout(std::time::Duration::from_secs(5), stream.message()).await;
            let event = event
                .expect("an event in time")
                .expect("stream ok")
                .expect("stream open");
            if event.r#type != pb::vip_event::Type::Modified as i32 {
                return event;
            }
        }
    }
    let first = next(&mut stream).await;
    assert_eq!(
        (first.r#type, first.vip.unwrap().name.as_str()),
        (pb::vip_event::Type::Added as i32, "before")
    );
    c.create_vip(vip("after", "ovn-default")).await;
    let added = next(&mut stream).await;
    assert_eq!(
        (added.r#type, added.vip.unwrap().name.as_str()),
        (pb::vip_event::Type::Added as i32, "after")
    );
    c.vips
        .delete_vip(pb::DeleteVipRequest {
            name: "before".into(),
            revision: 0,
        })
        .await
        .unwrap();
    let deleted = next(&mut stream).await;
    assert_eq!(
        (deleted.r#type, deleted.vip.unwrap().name.as_str()),
        (pb::vip_event::Type::Deleted as i32, "before")
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_is_0660_and_serves_the_same_api() {
    use std::os::unix::fs::PermissionsExt;
    let daemon = TestDaemon::start().await;
    // The TCP listener can be up before the unix one (a loaded machine showed it).
    common::wait_until_async("the unix socket", std::time::Duration::from_secs(10), || {
        daemon.socket.exists()
    })
    .await;
    let mode = std::fs::metadata(&daemon.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode {mode:o}");
    let endpoint = format!("unix://{}", daemon.socket.display());
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut subnets = SubnetServiceClient::new(channel.clone());
    subnets
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/16", ""))
        .await
        .unwrap();
    // What one listener wrote, the other sees.
    let mut over_tcp = daemon.clients().await;
    let listed = over_tcp
        .subnets
        .list_subnets(pb::ListSubnetsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.subnets.len(), 1);
    daemon.stop().await;
}

/// One CNI attachment of a pod, as the plugin binds it: one NIC, maybe static addresses.
fn attach(name: &str, subnet: &str, interface: &str, ips: &[&str], mac: &str, container: &str) -> pb::BindPodRequest {
    pb::BindPodRequest {
        namespace: "runtime".into(),
        name: name.into(),
        nics: vec![pb::NicRequest {
            subnet: subnet.into(),
            interface: interface.into(),
            ips: ips.iter().map(|ip| ip.to_string()).collect(),
            mac: mac.into(),
            network: format!("net-{subnet}"),
            container_id: container.into(),
            node: "node-1".into(),
        }],
        ..Default::default()
    }
}

fn unbind_nic(name: &str, interface: &str) -> pb::UnbindPodRequest {
    pb::UnbindPodRequest {
        namespace: "runtime".into(),
        name: name.into(),
        interface: interface.into(),
        ..Default::default()
    }
}

/// Issue 19, daemon side: a pod gains a NIC per attachment and loses one per DEL (the pod goes
/// with its last), static addresses are allocated or refused (never replaced), a VIP can come
/// with a later attachment, StatefulSet pods keep their addresses per NIC, and each NIC records
/// its CNI attachment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_gain_and_lose_nics_per_attachment_with_static_addresses() {
    let daemon = TestDaemon::start().await;
    let mut c = daemon.clients().await;
    for (name, cidr) in [("sa", "10.16.0.0/16"), ("sb", "10.17.0.0/16")] {
        c.create_subnet(name, cidr, "").await;
    }
    let mut first = attach("m1", "sa", "eth0", &["10.16.5.5"], "02:00:00:00:05:05", "c1");
    first.labels.insert("app".into(), "web".into());
    let pod = c.pods.bind_pod(first.clone()).await.unwrap().into_inner();
    assert_eq!(pod.nics[0].addresses, vec!["10.16.5.5/16".to_string()]);
    assert_eq!(pod.nics[0].mac, "02:00:00:00:05:05");
    assert_eq!(
        (
            pod.nics[0].network.as_str(),
            pod.nics[0].container_id.as_str(),
            pod.nics[0].node.as_str()
        ),
        ("net-sa", "c1", "node-1")
    );
    assert_eq!(pod.nics[0].port_name, "m1.runtime");

    let mut second = attach("m1", "sb", "eth1", &[], "", "c1");
    second.labels.insert("tier".into(), "db".into());
    let pod = c.pods.bind_pod(second.clone()).await.unwrap().into_inner();
    assert_eq!(pod.nics.len(), 2, "{pod:?}");
    assert_eq!(
        pod.nics[0].addresses,
        vec!["10.16.5.5/16".to_string()],
        "eth0 untouched"
    );
    assert_eq!(pod.nics[1].subnet, "sb");
    assert_eq!(pod.nics[1].port_name, "m1.runtime.eth1");
    assert_eq!(pod.labels.len(), 2, "labels of both attachments: {:?}", pod.labels);
    // A retry of either attachment answers the same.
    assert_eq!(c.pods.bind_pod(second.clone()).await.unwrap().into_inner(), pod);
    assert_eq!(c.pods.bind_pod(first.clone()).await.unwrap().into_inner(), pod);

    // Refusals change nothing.
    // `snapshot` with each pod's labels in order (a proto map is a HashMap).
    async fn ordered(c: &mut Clients) -> String {
        let pods = c
            .pods
            .list_pods(pb::ListPodsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .pods;
        let pods: Vec<_> = pods
            .into_iter()
            .map(|mut pod| {
                let labels: std::collections::BTreeMap<_, _> = std::mem::take(&mut pod.labels).into_iter().collect();
                (labels, pod)
            })
            .collect();
        let subnets = c
            .subnets
            .list_subnets(pb::ListSubnetsRequest::default())
            .await
            .unwrap()
            .into_inner();
        format!("{subnets:?}{pods:?}")
    }
    let before = ordered(&mut c).await;
    let cases: Vec<(&str, pb::BindPodRequest, Code, &str)> = vec![
        (
            "interface in another subnet",
            attach("m1", "sa", "eth1", &[], "", "c1"),
            Code::AlreadyExists,
            "eth1 in subnet sb",
        ),
        (
            "another address for a bound NIC",
            attach("m1", "sa", "eth0", &["10.16.6.6"], "", "c1"),
            Code::FailedPrecondition,
            "10.16.6.6 was asked for, it holds 10.16.5.5",
        ),
        (
            "another MAC for a bound NIC",
            attach("m1", "sa", "eth0", &[], "02:00:00:00:06:06", "c1"),
            Code::FailedPrecondition,
            "it holds 02:00:00:00:05:05",
        ),
        (
            "address taken",
            attach("m2", "sa", "eth0", &["10.16.5.5"], "", "c2"),
            Code::FailedPrecondition,
            "10.16.5.5 is already owned",
        ),
        (
            "MAC taken",
            attach("m2", "sa", "eth0", &[], "02:00:00:00:05:05", "c2"),
            Code::FailedPrecondition,
            "is already owned",
        ),
        (
            "outside the subnet",
            attach("m2", "sa", "eth0", &["10.99.0.5"], "", "c2"),
            Code::InvalidArgument,
            "outside",
        ),
        (
            "the gateway",
            attach("m2", "sa", "eth0", &["10.16.0.1"], "", "c2"),
            Code::InvalidArgument,
            "gateway",
        ),
        (
            "not an address",
            attach("m2", "sa", "eth0", &["10.16.x.5"], "", "c2"),
            Code::InvalidArgument,
            "nics[0].ips[0]",
        ),
        (
            "two of a family",
            attach("m2", "sa", "eth0", &["10.16.7.7", "10.16.7.8"], "", "c2"),
            Code::InvalidArgument,
            "one address per family",
        ),
        (
            "not a MAC",
            attach("m2", "sa", "eth0", &[], "02:00", "c2"),
            Code::InvalidArgument,
            "nics[0].mac",
        ),
        (
            "a half attachment",
            attach("m2", "sa", "eth0", &[], "", "").tap(|r| r.nics[0].container_id = String::new()),
            Code::InvalidArgument,
            "both network and container_id",
        ),
    ];
    for (label, request, code, fragment) in cases {
        let error = c.pods.bind_pod(request).await.unwrap_err();
        assert_refused(label, &error, code, fragment);
    }
    assert_eq!(ordered(&mut c).await, before, "a refused bind changed something");

    // One NIC goes; its address is free again; the pod goes with its last NIC.
    assert!(
        c.pods
            .unbind_pod(unbind_nic("m1", "eth0"))
            .await
            .unwrap()
            .into_inner()
            .found
    );
    let pod = c
        .pods
        .get_pod(pb::GetPodRequest {
            namespace: "runtime".into(),
            name: "m1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pod.nics.len(), 1);
    assert_eq!(pod.nics[0].interface, "eth1");
    assert!(
        !c.pods
            .unbind_pod(unbind_nic("m1", "eth0"))
            .await
            .unwrap()
            .into_inner()
            .found,
        "idempotent"
    );
    let taker = c
        .pods
        .bind_pod(attach("m2", "sa", "eth0", &["10.16.5.5"], "02:00:00:00:05:05", "c2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(taker.nics[0].addresses, vec!["10.16.5.5/16".to_string()]);
    // eth0 again: a new NIC of the bound pod, not its primary port name.
    let pod = c
        .pods
        .bind_pod(attach("m1", "sa", "eth0", &[], "", "c1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pod.nics.len(), 2);
    assert!(pod.nics.iter().any(|nic| nic.port_name == "m1.runtime.eth0"), "{pod:?}");
    for interface in ["eth1", "eth0"] {
        assert!(
            c.pods
                .unbind_pod(unbind_nic("m1", interface))
                .await
                .unwrap()
                .into_inner()
                .found
        );
    }
    let gone = c
        .pods
        .get_pod(pb::GetPodRequest {
            namespace: "runtime".into(),
            name: "m1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // A VIP named by a later attachment goes to the new NIC in its subnet, and back with it.
    c.create_vip(vip("vip-b", "sb")).await;
    c.pods
        .bind_pod(attach("v1", "sa", "eth0", &[], "", "c3"))
        .await
        .unwrap();
    let mut with_vip = attach("v1", "sb", "eth1", &[], "", "c3");
    with_vip
        .annotations
        .insert("ovn.kubernetes.io/vip".into(), "vip-b".into());
    let pod = c.pods.bind_pod(with_vip).await.unwrap().into_inner();
    assert_eq!(pod.nics[1].vip, "vip-b");
    let holder = |v: pb::Vip| v.status.and_then(|s| s.holder).map(|h| h.name);
    let held = c
        .vips
        .get_vip(pb::GetVipRequest { name: "vip-b".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(holder(held), Some("v1".to_string()));
    c.pods.unbind_pod(unbind_nic("v1", "eth1")).await.unwrap();
    let free = c
        .vips
        .get_vip(pb::GetVipRequest { name: "vip-b".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(holder(free), None, "the VIP went with its NIC");
    c.pods.unbind_pod(unbind_nic("v1", "eth0")).await.unwrap();

    // A StatefulSet pod keeps its addresses per NIC; unbound once no attachment is left.
    let mut sts = attach("s1", "sa", "eth0", &[], "", "c4");
    sts.owner_kind = pb::OwnerKind::StatefulSet as i32;
    let mut sts1 = attach("s1", "sb", "eth1", &[], "", "c4");
    sts1.owner_kind = pb::OwnerKind::StatefulSet as i32;
    c.pods.bind_pod(sts).await.unwrap();
    let bound = c.pods.bind_pod(sts1).await.unwrap().into_inner();
    c.pods.unbind_pod(unbind_nic("s1", "eth0")).await.unwrap();
    let get = pb::GetPodRequest {
        namespace: "runtime".into(),
        name: "s1".into(),
    };
    let half = c.pods.get_pod(get.clone()).await.unwrap().into_inner();
    assert!(half.bound);
    assert_eq!(half.nics[0].addresses, bound.nics[0].addresses, "kept");
    assert_eq!(half.nics[0].container_id, "", "the attachment is forgotten");
    c.pods.unbind_pod(unbind_nic("s1", "eth1")).await.unwrap();
    let kept = c.pods.get_pod(get).await.unwrap().into_inner();
    assert!(!kept.bound);
    assert_eq!(kept.nics.len(), 2);
    daemon.stop().await;
}

trait Tap: Sized {
    fn tap(mut self, change: impl FnOnce(&mut Self)) -> Self {
        change(&mut self);
        self
    }
}
impl Tap for pb::BindPodRequest {}
