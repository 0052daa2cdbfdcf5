//! Bad input, generated: random bytes and random JSON into the OVSDB client's parsers, and random
//! (and random-byte-decoded) protobuf requests into every mutating RPC of a running daemon. Nothing
//! may panic, every refusal carries a client-error code, a refused request changes nothing, and an
//! oversized message is refused by size.

mod common;

use bytes::BytesMut;
use ovn_vipd::api::proto::v1 as pb;
use ovn_vipd::ovsdb::codec::JsonCodec;
use ovn_vipd::ovsdb::{Cache, DatabaseSchema, Value};
use pb::pod_service_client::PodServiceClient;
use pb::subnet_service_client::SubnetServiceClient;
use pb::switch_lb_rule_service_client::SwitchLbRuleServiceClient;
use pb::vip_service_client::VipServiceClient;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;
use serde_json::Value as Json;
use tokio_util::codec::Decoder;
use tonic::transport::Channel;

fn json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Json::Number).unwrap_or(Json::Null)),
        prop_oneof![
            Just("set".to_string()),
            Just("map".to_string()),
            Just("uuid".to_string()),
            Just("named-uuid".to_string()),
            Just("insert".to_string()),
            Just("modify".to_string()),
            Just("initial".to_string()),
            Just("Logical_Switch_Port".to_string()),
            Just("name".to_string()),
            Just("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".to_string()),
            ".{0,12}",
        ]
        .prop_map(Json::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("Logical_Switch_Port".to_string()),
                    Just("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".to_string()),
                    Just("insert".to_string()),
                    Just("modify".to_string()),
                    Just("name".to_string()),
                    Just("external_ids".to_string()),
                    Just("error".to_string()),
                    ".{0,8}",
                ],
                inner,
                0..5
            )
            .prop_map(|map| Json::Object(map.into_iter().collect())),
        ]
    })
}

fn nb_schema() -> DatabaseSchema {
    let text = std::fs::read_to_string(common::NB_SCHEMA).expect("NB schema (package ovn-central)");
    DatabaseSchema::parse(&serde_json::from_str(&text).unwrap()).unwrap()
}

#[test]
fn the_ovsdb_parsers_take_random_bytes_and_json_without_panicking() {
    let schema = nb_schema();
    let mut runner = TestRunner::new(Config {
        cases: 2000,
        ..Config::default()
    });
    // The framing codec, fed random bytes in random pieces.
    runner
        .run(
            &(prop::collection::vec(any::<u8>(), 0..512), 1usize..64),
            |(bytes, piece)| {
                let mut codec = JsonCodec::new();
                let mut buffer = BytesMut::new();
                for chunk in bytes.chunks(piece) {
                    buffer.extend_from_slice(chunk);
                    while let Ok(Some(frame)) = codec.decode(&mut buffer) {
                        let _ = serde_json::from_slice::<Json>(&frame);
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    // JSON-shaped bytes too: valid frames must come out whole.
    runner
        .run(&json(), |value| {
            let text = serde_json::to_vec(&value).unwrap();
            let mut codec = JsonCodec::new();
            let mut buffer = BytesMut::from(&text[..]);
            buffer.extend_from_slice(b" ");
            if value.is_object() || value.is_array() {
                let frame = codec.decode(&mut buffer).expect("a valid value frames").expect("whole");
                prop_assert_eq!(serde_json::from_slice::<Json>(&frame).unwrap(), value);
            }
            Ok(())
        })
        .unwrap();
    // The data model, transact replies, schemas and monitor updates, fed random JSON.
    runner
        .run(&json(), |value| {
            let _ = Value::from_json(&value);
            let _ = ovn_vipd::ovsdb::operation::parse_transact_reply(&[], &value, Some(&schema));
            let _ = DatabaseSchema::parse(&value);
            let mut cache = Cache::new();
            let _ = cache.apply_update2(&schema, &value);
            let wrapped =
                serde_json::json!({ "Logical_Switch_Port": { "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0": value } });
            let _ = cache.apply_update2(&schema, &wrapped);
            Ok(())
        })
        .unwrap();
}

/// How many objects the daemon holds, to prove a refused request changed nothing.
async fn census(channel: &Channel) -> (usize, usize, usize, usize) {
    let subnets = SubnetServiceClient::new(channel.clone())
        .list_subnets(pb::ListSubnetsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .subnets
        .len();
    let vips = VipServiceClient::new(channel.clone())
        .list_vips(pb::ListVipsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .vips
        .len();
    let pods = PodServiceClient::new(channel.clone())
        .list_pods(pb::ListPodsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .pods
        .len();
    let rules = SwitchLbRuleServiceClient::new(channel.clone())
        .list_switch_lb_rules(pb::ListSwitchLbRulesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .rules
        .len();
    (subnets, vips, pods, rules)
}

/// A refusal must be the client's fault, said so; anything else is a daemon bug.
fn assert_client_error(status: &tonic::Status, what: &str) {
    assert!(
        matches!(
            status.code(),
            tonic::Code::InvalidArgument
                | tonic::Code::NotFound
                | tonic::Code::AlreadyExists
                | tonic::Code::FailedPrecondition
                | tonic::Code::ResourceExhausted
                | tonic::Code::OutOfRange
        ),
        "{what}: {status:?}"
    );
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("ovn-default".to_string()),
        Just("default".to_string()),
        Just("10.16.0.7".to_string()),
        Just("fd00:10:16::7".to_string()),
        Just("10.16.0.0/16".to_string()),
        Just("00:00:00:00:00:07".to_string()),
        Just("switch_lb_vip".to_string()),
        Just("app: web".to_string()),
        "[a-z0-9.-]{1,20}",
        ".{0,40}",
    ]
}

#[derive(Debug, Clone)]
enum Request {
    Subnet(pb::CreateSubnetRequest),
    Vip(pb::CreateVipRequest),
    Pod(pb::BindPodRequest),
    Rule(pb::CreateSwitchLbRuleRequest),
}

fn structured() -> impl Strategy<Value = Request> {
    let subnet = (text(), text(), text(), text(), prop::collection::vec(text(), 0..3)).prop_map(
        |(name, cidr_v4, cidr_v6, gateway, exclude_ips)| {
            Request::Subnet(pb::CreateSubnetRequest {
                subnet: Some(pb::Subnet {
                    name,
                    cidr_v4,
                    cidr_v6,
                    gateway_v4: gateway,
                    exclude_ips,
                    ..Default::default()
                }),
            })
        },
    );
    // Mostly plausible VIPs, so that acceptance is exercised too, with one field at a time gone wrong.
    let mostly = |good: &'static str| prop_oneof![3 => Just(good.to_string()), 1 => text()];
    let vip = (
        prop_oneof![3 => "[a-z][a-z0-9-]{0,10}", 1 => text()],
        mostly(""),
        mostly("ovn-default"),
        mostly(""),
        mostly(""),
        mostly(""),
        prop::collection::vec(text(), 0..2),
    )
        .prop_map(|(name, namespace, subnet, vip_type, v4ip, mac_address, selector)| {
            Request::Vip(pb::CreateVipRequest {
                vip: Some(pb::Vip {
                    name,
                    namespace,
                    subnet,
                    r#type: vip_type,
                    v4ip,
                    mac_address,
                    selector,
                    ..Default::default()
                }),
            })
        });
    let pod = (text(), text(), text(), text(), text(), any::<i32>()).prop_map(
        |(namespace, name, subnet, annotation, interface, owner_kind)| {
            Request::Pod(pb::BindPodRequest {
                namespace,
                name,
                annotations: [("ovn.kubernetes.io/vip".to_string(), annotation)]
                    .into_iter()
                    .collect(),
                owner_kind,
                nics: vec![pb::NicRequest {
                    subnet,
                    interface,
                    ..Default::default()
                }],
                ..Default::default()
            })
        },
    );
    let rule = (text(), text(), text(), any::<u32>(), any::<u32>(), any::<i32>()).prop_map(
        |(name, vip, endpoint, port, target_port, protocol)| {
            Request::Rule(pb::CreateSwitchLbRuleRequest {
                rule: Some(pb::SwitchLbRule {
                    name,
                    vip,
                    endpoints: vec![endpoint],
                    ports: vec![pb::LbPort {
                        name: "p".into(),
                        port,
                        target_port,
                        protocol,
                    }],
                    ..Default::default()
                }),
            })
        },
    );
    prop_oneof![subnet, vip, pod, rule]
}

/// Random bytes, decoded as each request type (prost skips what it does not know).
fn decoded() -> impl Strategy<Value = Request> {
    (0..4u8, prop::collection::vec(any::<u8>(), 0..200)).prop_filter_map("undecodable", |(kind, bytes)| {
        let bytes = bytes.as_slice();
        match kind {
            0 => pb::CreateSubnetRequest::decode(bytes).ok().map(Request::Subnet),
            1 => pb::CreateVipRequest::decode(bytes).ok().map(Request::Vip),
            2 => pb::BindPodRequest::decode(bytes).ok().map(Request::Pod),
            _ => pb::CreateSwitchLbRuleRequest::decode(bytes).ok().map(Request::Rule),
        }
    })
}

async fn send(channel: &Channel, request: Request) -> Result<(), tonic::Status> {
    match request {
        Request::Subnet(request) => SubnetServiceClient::new(channel.clone())
            .create_subnet(request)
            .await
            .map(|_| ()),
        Request::Vip(request) => VipServiceClient::new(channel.clone())
            .create_vip(request)
            .await
            .map(|_| ()),
        Request::Pod(request) => PodServiceClient::new(channel.clone())
            .bind_pod(request)
            .await
            .map(|_| ()),
        Request::Rule(request) => SwitchLbRuleServiceClient::new(channel.clone())
            .create_switch_lb_rule(request)
            .await
            .map(|_| ()),
    }
}

#[test]
fn random_requests_get_client_error_codes_and_change_nothing_when_refused() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let daemon = runtime.block_on(common::TestDaemon::start_with(true));
    let channel = runtime.block_on(daemon.channel());
    runtime.block_on(async {
        SubnetServiceClient::new(channel.clone())
            .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/16", "fd00:10:16::/64"))
            .await
            .unwrap();
    });
    let mut runner = TestRunner::new(Config {
        cases: 400,
        ..Config::default()
    });
    let accepted = std::cell::Cell::new(0);
    let strategy = prop_oneof![structured(), decoded()];
    runner
        .run(&strategy, |request| {
            runtime.block_on(async {
                let before = census(&channel).await;
                match send(&channel, request.clone()).await {
                    Ok(()) => accepted.set(accepted.get() + 1),
                    Err(status) => {
                        assert_client_error(&status, &format!("{request:?}"));
                        assert_eq!(
                            census(&channel).await,
                            before,
                            "{request:?} was refused but changed state"
                        );
                    }
                }
            });
            Ok(())
        })
        .unwrap();
    eprintln!("random requests: {} of 400 accepted", accepted.get());

    // Oversized: refused by size, and the daemon serves on.
    runtime.block_on(async {
        let before = census(&channel).await;
        let huge = pb::CreateVipRequest {
            vip: Some(pb::Vip {
                name: "x".repeat(5 * 1024 * 1024),
                subnet: "ovn-default".into(),
                ..Default::default()
            }),
        };
        let status = VipServiceClient::new(channel.clone())
            .max_encoding_message_size(64 * 1024 * 1024)
            .create_vip(huge)
            .await
            .expect_err("5 MiB is refused");
        assert_client_error(&status, "oversized request");
        let long_name = pb::CreateVipRequest {
            vip: Some(pb::Vip {
                name: "x".repeat(100_000),
                subnet: "ovn-default".into(),
                ..Default::default()
            }),
        };
        let status = VipServiceClient::new(channel.clone())
            .create_vip(long_name)
            .await
            .expect_err("a 100,000-character name is refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        // No wait needed: the refusal was answered, and a call answers only once what it changed
        // is durable; the census's Lists come after it.
        assert_eq!(census(&channel).await, before);
    });
    drop(daemon);
}
