//! Issue #16: inputs the field has met, each with its right value, through the real daemon and a
//! real NB ovsdb-server (ovn-nbctl as judge where NB is concerned).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{wait_until_async, TestDaemon};
use ovn_vipd::api::proto::v1 as pb;
use pb::pod_service_client::PodServiceClient;
use pb::subnet_service_client::SubnetServiceClient;
use pb::switch_lb_rule_service_client::SwitchLbRuleServiceClient;
use pb::vip_service_client::VipServiceClient;
use tonic::transport::Channel;
use tonic::Code;

#[allow(dead_code)]
struct Clients {
    subnets: SubnetServiceClient<Channel>,
    vips: VipServiceClient<Channel>,
    pods: PodServiceClient<Channel>,
    rules: SwitchLbRuleServiceClient<Channel>,
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

/// Case 5: IPv6 subnets longer than /64 (Kube-OVN's default is a /112) are accepted, with the
/// gateway anywhere in the range (no broadcast in IPv6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case5_ipv6_subnet_longer_than_64() {
    let daemon = TestDaemon::start().await;
    let mut c = clients(&daemon).await;
    let mut request = common::subnet_request("v6gw112", "", "190:255::1:0/112");
    request.subnet.as_mut().unwrap().gateway_v6 = "190:255::1:ffff".into();
    let created = c.subnets.create_subnet(request).await.unwrap().into_inner();
    assert_eq!(created.cidr_v6, "190:255::1:0/112");
    assert_eq!(created.gateway_v6, "190:255::1:ffff");
    assert_eq!(created.status.unwrap().v6_free, 65_534);
    let vip = c
        .vips
        .create_vip(pb::CreateVipRequest {
            vip: Some(pb::Vip {
                name: "v".into(),
                subnet: "v6gw112".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
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
            .delete_subnet(pb::DeleteSubnetRequest { name })
            .await
            .unwrap();
    }
    daemon.stop().await;
}
