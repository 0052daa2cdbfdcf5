//! Clients and request builders shared by the API tests: one builder per message shape, so a
//! field added to the proto is filled in one place (`..Default::default()` keeps the rest).
#![allow(dead_code)]
// Requests keep `..Default::default()` even where every field is set: protobuf messages grow fields.
#![allow(clippy::needless_update)]

use ovn_vipd::api::proto::v1 as pb;
use pb::pod_service_client::PodServiceClient;
use pb::subnet_service_client::SubnetServiceClient;
use pb::switch_lb_rule_service_client::SwitchLbRuleServiceClient;
use pb::vip_service_client::VipServiceClient;
use tonic::transport::Channel;

/// A client of each service, on one channel.
#[derive(Clone)]
pub struct Clients {
    pub subnets: SubnetServiceClient<Channel>,
    pub vips: VipServiceClient<Channel>,
    pub pods: PodServiceClient<Channel>,
    pub rules: SwitchLbRuleServiceClient<Channel>,
}

impl Clients {
    pub fn new(channel: Channel) -> Clients {
        Clients {
            subnets: SubnetServiceClient::new(channel.clone()),
            vips: VipServiceClient::new(channel.clone()),
            pods: PodServiceClient::new(channel.clone()),
            rules: SwitchLbRuleServiceClient::new(channel),
        }
    }
}

impl Clients {
    /// Creates a subnet (empty CIDRs left out; see [`super::subnet_request`]); panics if refused.
    pub async fn create_subnet(&mut self, name: &str, cidr_v4: &str, cidr_v6: &str) -> pb::Subnet {
        self.subnets
            .create_subnet(super::subnet_request(name, cidr_v4, cidr_v6))
            .await
            .unwrap_or_else(|status| panic!("create subnet {name}: {status}"))
            .into_inner()
    }

    /// Creates `vip`; panics if refused.
    pub async fn create_vip(&mut self, vip: pb::Vip) -> pb::Vip {
        let name = vip.name.clone();
        self.vips
            .create_vip(create_vip(vip))
            .await
            .unwrap_or_else(|status| panic!("create vip {name}: {status}"))
            .into_inner()
    }
}

/// A VIP in `subnet` with no namespace: a reserved address.
pub fn vip(name: &str, subnet: &str) -> pb::Vip {
    pb::Vip {
        name: name.into(),
        subnet: subnet.into(),
        ..Default::default()
    }
}

/// An AAP VIP in `subnet` for pods of the namespace `default`.
pub fn aap(name: &str, subnet: &str) -> pb::Vip {
    pb::Vip {
        namespace: "default".into(),
        ..vip(name, subnet)
    }
}

pub fn create_vip(vip: pb::Vip) -> pb::CreateVipRequest {
    pb::CreateVipRequest { vip: Some(vip) }
}

/// A switch-LB rule `name` on `vip` (a VIP name or an address) for the pods of namespace
/// `default` that `selector` ("key: value") chooses, with one TCP port `http`: `port` → `target_port`.
pub fn tcp_rule(name: &str, vip: &str, selector: &str, port: u32, target_port: u32) -> pb::SwitchLbRule {
    pb::SwitchLbRule {
        name: name.into(),
        vip: vip.into(),
        namespace: "default".into(),
        selector: vec![selector.into()],
        ports: vec![pb::LbPort {
            name: "http".into(),
            port,
            target_port,
            protocol: pb::Protocol::Tcp as i32,
        }],
        ..Default::default()
    }
}

pub fn create_rule(rule: pb::SwitchLbRule) -> pb::CreateSwitchLbRuleRequest {
    pb::CreateSwitchLbRuleRequest { rule: Some(rule) }
}

/// Waits (up to `timeout`) until VIP `name`'s status passes `ok` (`what` names that state) and
/// returns that status; the last status seen is in the panic message.
pub async fn wait_for_vip_status(
    vips: &VipServiceClient<Channel>,
    name: &str,
    what: &str,
    timeout: std::time::Duration,
    ok: impl Fn(&pb::VipStatus) -> bool,
) -> pb::VipStatus {
    let ok = &ok;
    super::wait_for(&format!("{name} {what}"), timeout, || {
        let (mut vips, name) = (vips.clone(), name.to_string());
        async move {
            let status = vips
                .get_vip(pb::GetVipRequest { name })
                .await
                .expect("get vip")
                .into_inner()
                .status
                .expect("status");
            if ok(&status) {
                Ok(status)
            } else {
                Err(format!("{status:?}"))
            }
        }
    })
    .await
}

/// A switch_lb_vip VIP (answered by the router's MAC) in `subnet`.
pub fn switch_lb_vip(name: &str, subnet: &str) -> pb::Vip {
    pb::Vip {
        r#type: "switch_lb_vip".into(),
        ..vip(name, subnet)
    }
}

/// A BindPod request for `namespace/name` with one NIC `eth0` on `subnet`, whose
/// `ovn.kubernetes.io/vip` annotation names `vip` (the pod takes that VIP's address and MAC).
pub fn bind_with_vip(namespace: &str, name: &str, subnet: &str, vip: &str) -> pb::BindPodRequest {
    pb::BindPodRequest {
        namespace: namespace.into(),
        name: name.into(),
        annotations: [("ovn.kubernetes.io/vip".to_string(), vip.to_string())].into(),
        nics: vec![pb::NicRequest {
            subnet: subnet.into(),
            interface: "eth0".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Waits (up to `timeout`) until switch-LB rule `name`'s status passes `ok` (`what` names that
/// state) and returns that status; the last status seen is in the panic message.
pub async fn wait_for_rule_status(
    rules: &SwitchLbRuleServiceClient<Channel>,
    name: &str,
    what: &str,
    timeout: std::time::Duration,
    ok: impl Fn(&pb::SwitchLbRuleStatus) -> bool,
) -> pb::SwitchLbRuleStatus {
    let ok = &ok;
    super::wait_for(&format!("rule {name} {what}"), timeout, || {
        let (mut rules, name) = (rules.clone(), name.to_string());
        async move {
            let status = rules
                .get_switch_lb_rule(pb::GetSwitchLbRuleRequest { name })
                .await
                .expect("get rule")
                .into_inner()
                .status
                .unwrap_or_default();
            if ok(&status) {
                Ok(status)
            } else {
                Err(format!("{status:?}"))
            }
        }
    })
    .await
}
