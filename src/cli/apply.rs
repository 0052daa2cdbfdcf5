//! When an object already is what a manifest asks for. `apply` reads each object first: one that
//! exists with the same spec is reported `unchanged` and nothing is sent. Pure functions, so the
//! comparison is testable without a daemon.
//!
//! The comparison is of specs as the daemon understands them: defaults filled in (a subnet's
//! logical switch and gateways, a port's target port, the ClientIP timeout), addresses and
//! CIDRs in canonical text, selectors as one label map, lists whose order means nothing as sets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use super::manifest::{normalize_mac, selector_map};
use crate::api::proto::v1 as pb;

/// The ClientIP affinity timeout the daemon uses when none is given (Kubernetes' default).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// What `apply` did with one object, as printed after its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Unchanged,
    /// A switch-LB rule whose spec was replaced.
    Configured,
    /// A pod bound (or bound again) by the daemon.
    Bound,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Unchanged => "unchanged",
            Outcome::Configured => "configured",
            Outcome::Bound => "bound",
        }
    }
}

pub fn subnet_unchanged(requested: &pb::Subnet, existing: &pb::Subnet) -> bool {
    let logical_switch = |subnet: &pb::Subnet| {
        if subnet.logical_switch.is_empty() {
            subnet.name.clone()
        } else {
            subnet.logical_switch.clone()
        }
    };
    requested.name == existing.name
        && logical_switch(requested) == logical_switch(existing)
        && cidr(&requested.cidr_v4) == cidr(&existing.cidr_v4)
        && cidr(&requested.cidr_v6) == cidr(&existing.cidr_v6)
        && gateway(&requested.gateway_v4, &requested.cidr_v4) == gateway(&existing.gateway_v4, &existing.cidr_v4)
        && gateway(&requested.gateway_v6, &requested.cidr_v6) == gateway(&existing.gateway_v6, &existing.cidr_v6)
        && text_set(&requested.exclude_ips) == text_set(&existing.exclude_ips)
        && requested.strategy == existing.strategy
        && vpc(&requested.vpc) == vpc(&existing.vpc)
}

/// A subnet's VPC with the daemon's default filled in.
fn vpc(name: &str) -> &str {
    if name.is_empty() {
        "ovn-cluster"
    } else {
        name
    }
}

pub fn vip_unchanged(requested: &pb::Vip, existing: &pb::Vip) -> bool {
    requested.name == existing.name
        && requested.namespace == existing.namespace
        && requested.subnet == existing.subnet
        && requested.r#type == existing.r#type
        && address(&requested.v4ip) == address(&existing.v4ip)
        && address(&requested.v6ip) == address(&existing.v6ip)
        && mac(&requested.mac_address) == mac(&existing.mac_address)
        && selector_map(&requested.selector, &requested.selector_labels)
            == selector_map(&existing.selector, &existing.selector_labels)
}

pub fn rule_unchanged(requested: &pb::SwitchLbRule, existing: &pb::SwitchLbRule) -> bool {
    requested.name == existing.name
        && vip_reference(&requested.vip) == vip_reference(&existing.vip)
        && requested.namespace == existing.namespace
        && selector_map(&requested.selector, &requested.selector_labels)
            == selector_map(&existing.selector, &existing.selector_labels)
        && address_set(&requested.endpoints) == address_set(&existing.endpoints)
        && ports(&requested.ports) == ports(&existing.ports)
        && affinity(requested) == affinity(existing)
        && requested.health_check == existing.health_check
}

/// A pod is unchanged when it is bound with the same labels, annotations, owner and NICs.
pub fn pod_unchanged(requested: &pb::BindPodRequest, existing: &pb::Pod) -> bool {
    let requested_nics: Vec<(&str, &str)> = requested
        .nics
        .iter()
        .map(|nic| (nic.subnet.as_str(), nic.interface.as_str()))
        .collect();
    let existing_nics: Vec<(&str, &str)> = existing
        .nics
        .iter()
        .map(|nic| (nic.subnet.as_str(), nic.interface.as_str()))
        .collect();
    existing.bound
        && requested.namespace == existing.namespace
        && requested.name == existing.name
        && sorted(&requested.labels) == sorted(&existing.labels)
        && sorted(&requested.annotations) == sorted(&existing.annotations)
        && requested.owner_name == existing.owner_name
        && requested.owner_kind == existing.owner_kind
        && requested_nics == existing_nics
}

fn cidr(text: &str) -> Option<IpNet> {
    text.trim().parse().ok()
}

fn address(text: &str) -> Option<IpAddr> {
    text.trim().parse().ok()
}

/// The gateway, or the subnet's default: the first address after the network address.
fn gateway(text: &str, cidr_text: &str) -> Option<IpAddr> {
    address(text).or_else(|| {
        cidr(cidr_text).and_then(|net| match net {
            IpNet::V4(net) => u32::from(net.network()).checked_add(1).map(|ip| IpAddr::V4(ip.into())),
            IpNet::V6(net) => u128::from(net.network()).checked_add(1).map(|ip| IpAddr::V6(ip.into())),
        })
    })
}

fn mac(text: &str) -> Option<String> {
    normalize_mac(text.trim())
}

/// A VIP name as given, an address in canonical form.
fn vip_reference(text: &str) -> String {
    address(text).map_or_else(|| text.trim().to_string(), |ip| ip.to_string())
}

fn text_set(items: &[String]) -> BTreeSet<String> {
    items.iter().map(|item| item.trim().to_string()).collect()
}

fn address_set(items: &[String]) -> BTreeSet<String> {
    items.iter().map(|item| vip_reference(item)).collect()
}

fn ports(ports: &[pb::LbPort]) -> Vec<(String, u32, u32, i32)> {
    ports
        .iter()
        .map(|port| {
            let target = if port.target_port == 0 {
                port.port
            } else {
                port.target_port
            };
            (port.name.clone(), port.port, target, port.protocol)
        })
        .collect()
}

/// `None` without affinity, else the effective ClientIP timeout.
fn affinity(rule: &pb::SwitchLbRule) -> Option<u32> {
    let timeout = if rule.session_affinity_timeout == 0 {
        DEFAULT_AFFINITY_TIMEOUT
    } else {
        rule.session_affinity_timeout
    };
    (rule.session_affinity == pb::SessionAffinity::ClientIp as i32).then_some(timeout)
}

fn sorted(map: &HashMap<String, String>) -> BTreeMap<&str, &str> {
    map.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::manifest::manifests_to_requests;
    use crate::cli::ApplyRequest;

    fn one(text: &str) -> ApplyRequest {
        match manifests_to_requests(text) {
            Ok(mut requests) if requests.len() == 1 => requests.remove(0),
            other => panic!("expected one request, got {other:?}"),
        }
    }

    #[test]
    fn a_subnet_as_the_daemon_returns_it_is_unchanged() {
        let ApplyRequest::Subnet(requested) = one(
            "apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata: {name: ovn-default}\n\
             spec: {cidrBlock: 10.16.0.0/16, excludeIps: [10.16.0.2..10.16.0.10]}\n",
        ) else {
            panic!("not a subnet")
        };
        // The daemon fills in the logical switch and the gateway, and adds the status.
        let existing = pb::Subnet {
            logical_switch: "ovn-default".into(),
            gateway_v4: "10.16.0.1".into(),
            status: Some(pb::SubnetStatus::default()),
            vpc: "ovn-cluster".into(),
            ..requested.clone()
        };
        assert!(subnet_unchanged(&requested, &existing));
        let other_vpc = pb::Subnet {
            vpc: "vpc1".into(),
            ..existing.clone()
        };
        assert!(!subnet_unchanged(&requested, &other_vpc));
        let moved = pb::Subnet {
            gateway_v4: "10.16.0.254".into(),
            ..existing.clone()
        };
        assert!(!subnet_unchanged(&requested, &moved));
        let other_excludes = pb::Subnet {
            exclude_ips: vec!["10.16.0.2".into()],
            ..existing
        };
        assert!(!subnet_unchanged(&requested, &other_excludes));
    }

    #[test]
    fn a_vip_compares_selector_forms_and_addresses_canonically() {
        let ApplyRequest::Vip(requested) = one(
            "apiVersion: kubeovn.io/v1\nkind: Vip\nmetadata: {name: vip-aap}\n\
             spec: {subnet: ovn-default, namespace: default, selector: [\"app: aap1\"], macAddress: 00:00:00:F0:DB:25}\n",
        ) else {
            panic!("not a VIP")
        };
        let existing = pb::Vip {
            selector: Vec::new(),
            selector_labels: [("app".to_string(), "aap1".to_string())].into(),
            mac_address: "00:00:00:f0:db:25".into(),
            status: Some(pb::VipStatus {
                v4ip: "10.16.0.12".into(),
                ..Default::default()
            }),
            ..requested.clone()
        };
        assert!(vip_unchanged(&requested, &existing));
        let static_address = pb::Vip {
            v4ip: "10.16.0.121".into(),
            ..existing
        };
        assert!(
            !vip_unchanged(&requested, &static_address),
            "a dynamic VIP is not a static one"
        );
    }

    #[test]
    fn a_rule_compares_defaults_filled_in() {
        let ApplyRequest::SwitchLbRule(requested) = one(
            "apiVersion: kubeovn.io/v1\nkind: SwitchLBRule\nmetadata: {name: slr}\n\
             spec: {vip: slr-01, sessionAffinity: ClientIP, endpoints: [10.16.0.5, 10.16.0.4], ports: [{name: dns, port: 53, protocol: UDP}]}\n",
        ) else {
            panic!("not a rule")
        };
        let mut existing = requested.clone();
        existing.endpoints.reverse();
        existing.ports[0].target_port = 53;
        existing.session_affinity_timeout = DEFAULT_AFFINITY_TIMEOUT;
        assert!(rule_unchanged(&requested, &existing));
        existing.ports[0].target_port = 5353;
        assert!(!rule_unchanged(&requested, &existing));
    }

    #[test]
    fn a_pod_is_unchanged_only_while_bound_as_asked() {
        let ApplyRequest::Pod(requested) = one(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: busybox, labels: {app: aap1}, annotations: {ovn.kubernetes.io/aaps: vip-aap}}\n",
        ) else {
            panic!("not a pod")
        };
        let existing = pb::Pod {
            namespace: requested.namespace.clone(),
            name: requested.name.clone(),
            labels: requested.labels.clone(),
            annotations: requested.annotations.clone(),
            owner_kind: requested.owner_kind,
            owner_name: requested.owner_name.clone(),
            nics: vec![pb::BoundNic {
                interface: "eth0".into(),
                subnet: "ovn-default".into(),
                port_name: "busybox.default".into(),
                addresses: vec!["10.16.0.7/16".into()],
                ..Default::default()
            }],
            bound: true,
            revision: 0,
        };
        assert!(pod_unchanged(&requested, &existing));
        assert!(!pod_unchanged(
            &requested,
            &pb::Pod {
                bound: false,
                ..existing.clone()
            }
        ));
        assert!(!pod_unchanged(
            &requested,
            &pb::Pod {
                labels: HashMap::new(),
                ..existing
            }
        ));
    }
}
