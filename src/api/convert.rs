//! Conversions between protobuf messages and domain types, with validation: a request that
//! fails here changes nothing.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tonic::Status;

use super::error::Violations;
use super::proto::v1 as pb;
use crate::model::{
    Attachment, Condition, LbPort, MacAddr, NicSpec, OwnerKind, Pod, PodSpec, Protocol, Strategy, Subnet, SwitchLbRule,
    Vip, VipSpec, VipType,
};
use crate::registry::SubnetUsage;

pub const MAX_NAME: usize = 63;
pub const MAX_LIST: usize = 1024;
pub const MAX_MAP: usize = 256;
pub const MAX_VALUE: usize = 4096;
pub const MAX_NICS: usize = 16;
/// Kubernetes' limit on a pod's annotations: keys and values together at most 256 KiB
/// (k8s.io/apimachinery `TotalAnnotationSizeLimitB`).
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
pub const MAX_PORTS: usize = 128;

/// A DNS-1123 label: what Kubernetes requires of names, and what keeps a VIP's port name from
/// ever colliding with a pod port (`<pod>.<namespace>` contains a dot).
pub fn check_name(violations: &mut Violations, field: &str, name: &str) {
    if name.is_empty() {
        violations.add(field, "must not be empty");
        return;
    }
    if name.len() > MAX_NAME {
        violations.add(field, format!("must be at most {MAX_NAME} characters"));
        return;
    }
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let valid_ends =
        name.starts_with(|c: char| c.is_ascii_alphanumeric()) && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid_chars || !valid_ends {
        violations.add(field, format!("{name:?} must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit"));
    }
}

/// Kubernetes' name part of a qualified name or a label value: at most 63 characters of
/// `[A-Za-z0-9._-]`, starting and ending with a letter or digit (k8s.io/apimachinery
/// `validation.IsQualifiedName` / `IsValidLabelValue`).
fn is_label_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A DNS-1123 subdomain: at most 253 characters, dot-separated DNS-1123 labels.
fn is_dns1123_subdomain(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && label.starts_with(|c: char| c.is_ascii_alphanumeric())
                && label.ends_with(|c: char| c.is_ascii_alphanumeric())
        })
}

/// A Kubernetes qualified name (label and annotation keys): an optional DNS-1123 subdomain
/// prefix (≤ 253 characters) and `/`, then a name of ≤ 63 characters of `[A-Za-z0-9._-]`
/// starting and ending with a letter or digit.
/// `what` names the key in the message ("label key", "annotation key").
pub fn check_qualified_name(violations: &mut Violations, field: &str, what: &str, key: &str) {
    let valid = match key.split_once('/') {
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && is_label_name(name),
        None => is_label_name(key),
    };
    if !valid {
        violations.add(
            field,
            format!(
                "{:?} is not a valid {what} (a Kubernetes qualified name): an optional DNS-1123 subdomain prefix of at most 253 characters and '/', then at most 63 characters of [A-Za-z0-9._-] starting and ending with a letter or digit",
                shown(key)
            ),
        );
    }
}

/// A Kubernetes label value: empty, or at most 63 characters of `[A-Za-z0-9._-]` starting and
/// ending with a letter or digit.
pub fn check_label_value(violations: &mut Violations, field: &str, value: &str) {
    if !value.is_empty() && !is_label_name(value) {
        violations.add(
            field,
            format!(
                "{:?} is not a Kubernetes label value: empty, or at most 63 characters of [A-Za-z0-9._-] starting and ending with a letter or digit",
                shown(value)
            ),
        );
    }
}

fn check_labels(violations: &mut Violations, field: &str, labels: &std::collections::HashMap<String, String>) {
    for (key, value) in labels {
        check_qualified_name(violations, &format!("{field}[{}]", shown(key)), "label key", key);
        check_label_value(violations, &format!("{field}[{}]", shown(key)), value);
    }
}

/// A piece of a request as an error message shows it: at most 64 characters, so a huge key
/// cannot make a huge status.
fn shown(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// Parts of one request that must be distinct: every later part equal to an earlier one is a
/// violation at both field paths, each naming the other, so nothing is dropped silently.
fn refuse_collisions<K: Ord>(
    violations: &mut Violations,
    parts: impl IntoIterator<Item = (K, String)>,
    what: impl Fn(&K) -> String,
) {
    // Enough to say what is wrong; a list of a thousand copies must not make a huge status.
    const MAX_REPORTED: usize = 16;
    let mut seen: BTreeMap<K, String> = BTreeMap::new();
    let mut reported = 0;
    for (key, field) in parts {
        match seen.get(&key) {
            Some(_) if reported >= MAX_REPORTED => {}
            Some(first) => {
                reported += 1;
                let described = what(&key);
                violations.add(first.clone(), format!("{described}: collides with {field}"));
                violations.add(field.clone(), format!("{described}: collides with {first}"));
            }
            None => {
                seen.insert(key, field);
            }
        }
    }
}

/// Merges Kube-OVN's `["key: value"]` selector strings with a label map; a key given twice is
/// refused at both places.
fn selector(
    violations: &mut Violations,
    field: &str,
    strings: &[String],
    labels: &std::collections::HashMap<String, String>,
) -> BTreeMap<String, String> {
    let mut selector = BTreeMap::new();
    if strings.len() + labels.len() > MAX_MAP {
        violations.add(field, format!("at most {MAX_MAP} entries"));
        return selector;
    }
    let string_keys = strings.iter().enumerate().filter_map(|(index, text)| {
        text.split_once(':')
            .map(|(key, _)| (key.trim().to_string(), format!("{field}[{index}]")))
    });
    let label_keys = labels
        .keys()
        .map(|key| (key.clone(), format!("{field}_labels[{}]", shown(key))));
    refuse_collisions(violations, string_keys.chain(label_keys), |key| {
        format!("label key {:?} appears twice", shown(key))
    });
    for (index, text) in strings.iter().enumerate() {
        match text.split_once(':') {
            Some((key, value)) if !key.trim().is_empty() => {
                check_qualified_name(violations, &format!("{field}[{index}]"), "label key", key.trim());
                check_label_value(violations, &format!("{field}[{index}]"), value.trim());
                selector.insert(key.trim().to_string(), value.trim().to_string());
            }
            _ => violations.add(
                format!("{field}[{index}]"),
                format!("{:?} must look like \"key: value\"", shown(text)),
            ),
        }
    }
    for (key, value) in labels {
        check_qualified_name(violations, &format!("{field}_labels[{}]", shown(key)), "label key", key);
        check_label_value(violations, &format!("{field}_labels[{}]", shown(key)), value);
        selector.insert(key.clone(), value.clone());
    }
    selector
}

fn optional_v4(violations: &mut Violations, field: &str, text: &str) -> Option<Ipv4Addr> {
    if text.is_empty() {
        return None;
    }
    text.trim()
        .parse()
        .map_err(|_| violations.add(field, format!("{text:?} is not an IPv4 address")))
        .ok()
}

fn optional_v6(violations: &mut Violations, field: &str, text: &str) -> Option<Ipv6Addr> {
    if text.is_empty() {
        return None;
    }
    text.trim()
        .parse()
        .map_err(|_| violations.add(field, format!("{text:?} is not an IPv6 address")))
        .ok()
}

fn optional_mac(violations: &mut Violations, field: &str, text: &str) -> Option<MacAddr> {
    if text.is_empty() {
        return None;
    }
    match text.trim().parse::<MacAddr>() {
        Ok(mac) if mac.is_multicast() => {
            violations.add(field, format!("{text} is a multicast MAC address"));
            None
        }
        Ok(mac) if mac.is_zero() => {
            violations.add(field, "the all-zero MAC address cannot be used");
            None
        }
        Ok(mac) => Some(mac),
        Err(error) => {
            violations.add(field, error.to_string());
            None
        }
    }
}

pub fn subnet_from_proto(subnet: pb::Subnet) -> Result<Subnet, Status> {
    let mut violations = Violations::new();
    check_name(&mut violations, "subnet.name", &subnet.name);
    let cidr_v4 = if subnet.cidr_v4.is_empty() {
        None
    } else {
        subnet
            .cidr_v4
            .trim()
            .parse()
            .map_err(|_| violations.add("subnet.cidr_v4", format!("{:?} is not an IPv4 CIDR", subnet.cidr_v4)))
            .ok()
    };
    let cidr_v6 = if subnet.cidr_v6.is_empty() {
        None
    } else {
        subnet
            .cidr_v6
            .trim()
            .parse()
            .map_err(|_| violations.add("subnet.cidr_v6", format!("{:?} is not an IPv6 CIDR", subnet.cidr_v6)))
            .ok()
    };
    if subnet.cidr_v4.is_empty() && subnet.cidr_v6.is_empty() {
        violations.add("subnet.cidr_v4", "a subnet needs cidr_v4, cidr_v6, or both");
    }
    if !subnet.vpc.is_empty() {
        check_name(&mut violations, "subnet.vpc", &subnet.vpc);
    }
    let gateway_v4 = optional_v4(&mut violations, "subnet.gateway_v4", &subnet.gateway_v4);
    let gateway_v6 = optional_v6(&mut violations, "subnet.gateway_v6", &subnet.gateway_v6);
    if subnet.exclude_ips.len() > MAX_LIST {
        violations.add("subnet.exclude_ips", format!("at most {MAX_LIST} entries"));
    }
    if !subnet.logical_switch.is_empty() && subnet.logical_switch.len() > MAX_VALUE {
        violations.add("subnet.logical_switch", format!("at most {MAX_VALUE} bytes"));
    }
    let strategy = match pb::AllocationStrategy::try_from(subnet.strategy) {
        Ok(pb::AllocationStrategy::Sequential) => Strategy::Sequential,
        Ok(pb::AllocationStrategy::Random) => Strategy::Random,
        Err(_) => {
            violations.add("subnet.strategy", format!("unknown strategy {}", subnet.strategy));
            Strategy::Random
        }
    };
    violations.into_result()?;
    Ok(Subnet {
        logical_switch: if subnet.logical_switch.is_empty() {
            subnet.name.clone()
        } else {
            subnet.logical_switch
        },
        name: subnet.name,
        cidr_v4,
        cidr_v6,
        gateway_v4,
        gateway_v6,
        exclude_ips: subnet.exclude_ips,
        strategy,
        vpc: if subnet.vpc.is_empty() {
            crate::model::DEFAULT_VPC.to_string()
        } else {
            subnet.vpc
        },
    })
}

pub fn subnet_to_proto(
    subnet: &Subnet,
    usage: SubnetUsage,
    gateways: (Option<Ipv4Addr>, Option<Ipv6Addr>),
) -> pb::Subnet {
    let saturate = |value: u128| u64::try_from(value).unwrap_or(u64::MAX);
    pb::Subnet {
        name: subnet.name.clone(),
        logical_switch: subnet.logical_switch.clone(),
        cidr_v4: subnet.cidr_v4.map(|net| net.to_string()).unwrap_or_default(),
        cidr_v6: subnet.cidr_v6.map(|net| net.to_string()).unwrap_or_default(),
        gateway_v4: gateways.0.map(|ip| ip.to_string()).unwrap_or_default(),
        gateway_v6: gateways.1.map(|ip| ip.to_string()).unwrap_or_default(),
        exclude_ips: subnet.exclude_ips.clone(),
        strategy: match subnet.strategy {
            Strategy::Random => pb::AllocationStrategy::Random as i32,
            Strategy::Sequential => pb::AllocationStrategy::Sequential as i32,
        },
        vpc: subnet.vpc.clone(),
        status: Some(pb::SubnetStatus {
            v4_used: saturate(usage.used_v4),
            v4_free: saturate(usage.free_v4),
            v6_used: saturate(usage.used_v6),
            v6_free: saturate(usage.free_v6),
        }),
        revision: 0,
    }
}

pub fn vip_spec_from_proto(vip: pb::Vip) -> Result<VipSpec, Status> {
    let mut violations = Violations::new();
    check_name(&mut violations, "vip.name", &vip.name);
    check_name(&mut violations, "vip.subnet", &vip.subnet);
    if !vip.namespace.is_empty() {
        check_name(&mut violations, "vip.namespace", &vip.namespace);
    }
    let vip_type = match vip.r#type.as_str() {
        "" => VipType::Reserved,
        "switch_lb_vip" => VipType::SwitchLbVip,
        other => {
            violations.add(
                "vip.type",
                format!("{other:?} is not a VIP type: use \"\" or \"switch_lb_vip\""),
            );
            VipType::Reserved
        }
    };
    let v4ip = optional_v4(&mut violations, "vip.v4ip", &vip.v4ip);
    let v6ip = optional_v6(&mut violations, "vip.v6ip", &vip.v6ip);
    let mac = optional_mac(&mut violations, "vip.mac_address", &vip.mac_address);
    let selector = selector(&mut violations, "vip.selector", &vip.selector, &vip.selector_labels);
    if !selector.is_empty() && vip.namespace.is_empty() {
        violations.add(
            "vip.namespace",
            "an AAP selector needs the namespace of the pods it selects",
        );
    }
    violations.into_result()?;
    Ok(VipSpec {
        name: vip.name,
        namespace: vip.namespace,
        subnet: vip.subnet,
        vip_type,
        v4ip,
        v6ip,
        mac,
        selector,
    })
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn conditions_to_proto(conditions: &[Condition]) -> Vec<pb::Condition> {
    conditions
        .iter()
        .map(|condition| pb::Condition {
            r#type: condition.condition_type.to_string(),
            status: if condition.status {
                "True".into()
            } else {
                "False".into()
            },
            reason: condition.reason.to_string(),
            message: condition.message.to_string(),
            last_transition_time: Some(timestamp(condition.last_transition_ms)),
        })
        .collect()
}

pub fn vip_to_proto(vip: &Vip, parents: Vec<String>) -> pb::Vip {
    let ready = vip
        .conditions
        .iter()
        .any(|condition| condition.condition_type == "Ready" && condition.status);
    pb::Vip {
        name: vip.spec.name.clone(),
        namespace: vip.spec.namespace.clone(),
        subnet: vip.spec.subnet.clone(),
        r#type: vip.spec.vip_type.as_str().to_string(),
        v4ip: vip.spec.v4ip.map(|ip| ip.to_string()).unwrap_or_default(),
        v6ip: vip.spec.v6ip.map(|ip| ip.to_string()).unwrap_or_default(),
        mac_address: vip.spec.mac.map(|mac| mac.to_string()).unwrap_or_default(),
        selector: vip
            .spec
            .selector
            .iter()
            .map(|(key, value)| format!("{key}: {value}"))
            .collect(),
        selector_labels: Default::default(),
        status: Some(pb::VipStatus {
            v4ip: vip.v4ip.map(|ip| ip.to_string()).unwrap_or_default(),
            v6ip: vip.v6ip.map(|ip| ip.to_string()).unwrap_or_default(),
            // What NB answers with: a switch_lb_vip is answered by the router port's MAC.
            // Empty while the VIP holds no addresses (pending, see its Ready condition).
            mac: if vip.is_allocated() {
                vip.nb_mac.unwrap_or(vip.mac).to_string()
            } else {
                String::new()
            },
            ready,
            conditions: conditions_to_proto(&vip.conditions),
            parents,
            holder: vip.holder.as_ref().map(|pod| pb::PodReference {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
            }),
        }),
        revision: 0,
    }
}

pub fn pod_spec_from_proto(request: pb::BindPodRequest) -> Result<PodSpec, Status> {
    let mut violations = Violations::new();
    check_name(&mut violations, "namespace", &request.namespace);
    check_name(&mut violations, "name", &request.name);
    if request.labels.len() > MAX_MAP {
        violations.add("labels", format!("at most {MAX_MAP} entries"));
    }
    check_labels(&mut violations, "labels", &request.labels);
    let annotation_bytes: usize = request
        .annotations
        .iter()
        .map(|(key, value)| key.len() + value.len())
        .sum();
    if annotation_bytes > MAX_ANNOTATIONS_BYTES {
        violations.add(
            "annotations",
            format!(
                "{annotation_bytes} bytes: keys and values together must be at most {MAX_ANNOTATIONS_BYTES} bytes (256 KiB, Kubernetes' limit)"
            ),
        );
    }
    for key in request.annotations.keys() {
        check_qualified_name(
            &mut violations,
            &format!("annotations[{}]", shown(key)),
            "annotation key",
            key,
        );
    }
    if request.nics.is_empty() {
        violations.add("nics", "a pod needs at least one NIC");
    }
    if request.nics.len() > MAX_NICS {
        violations.add("nics", format!("at most {MAX_NICS} NICs"));
    }
    refuse_collisions(
        &mut violations,
        request
            .nics
            .iter()
            .enumerate()
            .map(|(index, nic)| (nic.interface.clone(), format!("nics[{index}].interface"))),
        |interface| format!("{interface} appears twice"),
    );
    let mut static_addresses = Vec::with_capacity(request.nics.len());
    for (index, nic) in request.nics.iter().enumerate() {
        check_name(&mut violations, &format!("nics[{index}].subnet"), &nic.subnet);
        let valid_interface = !nic.interface.is_empty()
            && nic.interface.len() <= 15
            && nic
                .interface
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid_interface {
            violations.add(
                format!("nics[{index}].interface"),
                format!("{:?} is not a Linux interface name (1-15 characters)", nic.interface),
            );
        }
        let (v4, v6) = static_ips(&mut violations, index, &nic.ips);
        static_addresses.push((v4, v6, static_mac(&mut violations, index, &nic.mac)));
        if nic.network.len() > MAX_VALUE || nic.container_id.len() > MAX_VALUE || nic.node.len() > MAX_VALUE {
            violations.add(
                format!("nics[{index}].container_id"),
                format!("network, container_id and node are at most {MAX_VALUE} bytes"),
            );
        }
        if nic.network.is_empty() != nic.container_id.is_empty() {
            violations.add(
                format!("nics[{index}].container_id"),
                "an attachment needs both network and container_id, or neither",
            );
        }
    }
    let owner_kind = match pb::OwnerKind::try_from(request.owner_kind) {
        Ok(pb::OwnerKind::Other) => OwnerKind::Other,
        Ok(pb::OwnerKind::StatefulSet) => OwnerKind::StatefulSet,
        Ok(pb::OwnerKind::VirtualMachine) => OwnerKind::VirtualMachine,
        Err(_) => {
            violations.add("owner_kind", format!("unknown owner kind {}", request.owner_kind));
            OwnerKind::Other
        }
    };
    if !request.owner_name.is_empty() && !is_dns1123_subdomain(&request.owner_name) {
        violations.add(
            "owner_name",
            format!(
                "{:?} is not a DNS-1123 subdomain (a Kubernetes object name)",
                shown(&request.owner_name)
            ),
        );
    }
    violations.into_result()?;
    Ok(PodSpec {
        namespace: request.namespace,
        name: request.name,
        labels: request.labels.into_iter().collect(),
        annotations: request.annotations.into_iter().collect(),
        owner_kind,
        owner_name: request.owner_name,
        nics: request
            .nics
            .into_iter()
            .zip(static_addresses)
            .map(|(nic, (v4ip, v6ip, mac))| NicSpec {
                attachment: (!nic.container_id.is_empty()).then_some(Attachment {
                    network: nic.network,
                    container_id: nic.container_id,
                    node: nic.node,
                }),
                subnet: nic.subnet,
                interface: nic.interface,
                v4ip,
                v6ip,
                mac,
            })
            .collect(),
    })
}

/// `nics[i].ips`: addresses without prefix length, at most one per family.
fn static_ips(violations: &mut Violations, index: usize, ips: &[String]) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let (mut v4, mut v6) = (None, None);
    for (position, text) in ips.iter().enumerate() {
        let field = format!("nics[{index}].ips[{position}]");
        match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) if v4.is_none() => v4 = Some(ip),
            Ok(IpAddr::V6(ip)) if v6.is_none() => v6 = Some(ip),
            Ok(_) => violations.add(field, "at most one address per family"),
            Err(_) => violations.add(field, format!("{text:?} is not an IP address")),
        }
    }
    (v4, v6)
}

fn static_mac(violations: &mut Violations, index: usize, mac: &str) -> Option<MacAddr> {
    if mac.is_empty() {
        return None;
    }
    match mac.parse::<MacAddr>() {
        Ok(mac) => Some(mac),
        Err(_) => {
            violations.add(format!("nics[{index}].mac"), format!("{mac:?} is not a MAC address"));
            None
        }
    }
}

pub fn pod_to_proto(pod: &Pod, subnets: &BTreeMap<String, (Subnet, Option<Ipv4Addr>, Option<Ipv6Addr>)>) -> pb::Pod {
    pb::Pod {
        namespace: pod.spec.namespace.clone(),
        name: pod.spec.name.clone(),
        labels: pod.spec.labels.clone().into_iter().collect(),
        annotations: pod.spec.annotations.clone().into_iter().collect(),
        owner_kind: match pod.spec.owner_kind {
            OwnerKind::Other => pb::OwnerKind::Other as i32,
            OwnerKind::StatefulSet => pb::OwnerKind::StatefulSet as i32,
            OwnerKind::VirtualMachine => pb::OwnerKind::VirtualMachine as i32,
        },
        owner_name: pod.spec.owner_name.clone(),
        nics: pod
            .nics
            .iter()
            .map(|nic| {
                let subnet = subnets.get(&nic.subnet);
                let mut addresses = Vec::new();
                if let Some(ip) = nic.v4ip {
                    let prefix = subnet
                        .and_then(|(s, _, _)| s.cidr_v4)
                        .map_or(32, |net| net.prefix_len());
                    addresses.push(format!("{ip}/{prefix}"));
                }
                if let Some(ip) = nic.v6ip {
                    let prefix = subnet
                        .and_then(|(s, _, _)| s.cidr_v6)
                        .map_or(128, |net| net.prefix_len());
                    addresses.push(format!("{ip}/{prefix}"));
                }
                let gateways = subnet
                    .map(|(_, v4, v6)| {
                        v4.map(IpAddr::V4)
                            .into_iter()
                            .chain(v6.map(IpAddr::V6))
                            .map(|ip| ip.to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                let attachment = pod
                    .spec
                    .nics
                    .iter()
                    .find(|spec| spec.interface == nic.interface)
                    .and_then(|spec| spec.attachment.clone())
                    .unwrap_or_default();
                pb::BoundNic {
                    network: attachment.network,
                    container_id: attachment.container_id,
                    node: attachment.node,
                    interface: nic.interface.clone(),
                    subnet: nic.subnet.clone(),
                    port_name: nic.port_name.clone(),
                    addresses,
                    mac: nic.mac.to_string(),
                    gateways,
                    vip: nic.vip.clone().unwrap_or_default(),
                }
            })
            .collect(),
        bound: pod.bound,
        revision: 0,
    }
}

pub fn rule_from_proto(rule: pb::SwitchLbRule) -> Result<SwitchLbRule, Status> {
    let mut violations = Violations::new();
    check_name(&mut violations, "rule.name", &rule.name);
    if rule.vip.is_empty() {
        violations.add("rule.vip", "a VIP name or address is required");
    } else if rule.vip.parse::<IpAddr>().is_err() {
        check_name(&mut violations, "rule.vip", &rule.vip);
    }
    if !rule.namespace.is_empty() {
        check_name(&mut violations, "rule.namespace", &rule.namespace);
    }
    let selector = selector(&mut violations, "rule.selector", &rule.selector, &rule.selector_labels);
    if rule.endpoints.len() > MAX_LIST {
        violations.add("rule.endpoints", format!("at most {MAX_LIST} entries"));
    }
    let mut endpoints = Vec::new();
    let mut endpoint_fields = Vec::new();
    for (index, endpoint) in rule.endpoints.iter().enumerate() {
        match endpoint.trim().parse::<IpAddr>() {
            Ok(ip) => {
                endpoints.push(ip);
                endpoint_fields.push((ip, format!("rule.endpoints[{index}]")));
            }
            Err(_) => violations.add(
                format!("rule.endpoints[{index}]"),
                format!("{endpoint:?} is not an IP address"),
            ),
        }
    }
    refuse_collisions(&mut violations, endpoint_fields, |ip| {
        format!("endpoint {ip} appears twice")
    });
    if rule.ports.is_empty() {
        violations.add("rule.ports", "at least one port is required");
    }
    if rule.ports.len() > MAX_PORTS {
        violations.add("rule.ports", format!("at most {MAX_PORTS} ports"));
    }
    let mut ports = Vec::new();
    for (index, port) in rule.ports.iter().enumerate() {
        let in_range = |value: u32| (1..=65535).contains(&value);
        if !in_range(port.port) {
            violations.add(
                format!("rule.ports[{index}].port"),
                format!("{} is not a port (1-65535)", port.port),
            );
        }
        let target = if port.target_port == 0 {
            port.port
        } else {
            port.target_port
        };
        if !in_range(target) {
            violations.add(
                format!("rule.ports[{index}].target_port"),
                format!("{target} is not a port (1-65535)"),
            );
        }
        let protocol = match pb::Protocol::try_from(port.protocol) {
            Ok(pb::Protocol::Tcp) => Protocol::Tcp,
            Ok(pb::Protocol::Udp) => Protocol::Udp,
            Ok(pb::Protocol::Sctp) => Protocol::Sctp,
            Err(_) => {
                violations.add(
                    format!("rule.ports[{index}].protocol"),
                    format!("unknown protocol {}", port.protocol),
                );
                Protocol::Tcp
            }
        };
        ports.push(LbPort {
            name: port.name.clone(),
            port: port.port as u16,
            target_port: target as u16,
            protocol,
        });
    }
    // One load balancer VIP entry per (protocol, frontend port): a second one would overwrite the
    // first in NB's `vips` map. Port names, when given, name one port each (as in a Service).
    refuse_collisions(
        &mut violations,
        ports
            .iter()
            .enumerate()
            .map(|(index, port)| ((port.protocol.as_str(), port.port), format!("rule.ports[{index}].port"))),
        |(protocol, port)| format!("frontend port {protocol} {port} appears twice"),
    );
    refuse_collisions(
        &mut violations,
        ports
            .iter()
            .enumerate()
            .filter(|(_, port)| !port.name.is_empty())
            .map(|(index, port)| (port.name.clone(), format!("rule.ports[{index}].name"))),
        |name| format!("port name {name:?} appears twice"),
    );
    let session_affinity_timeout = match pb::SessionAffinity::try_from(rule.session_affinity) {
        Ok(pb::SessionAffinity::None) => None,
        Ok(pb::SessionAffinity::ClientIp) => Some(if rule.session_affinity_timeout == 0 {
            10_800
        } else {
            rule.session_affinity_timeout
        }),
        Err(_) => {
            violations.add(
                "rule.session_affinity",
                format!("unknown session affinity {}", rule.session_affinity),
            );
            None
        }
    };
    violations.into_result()?;
    Ok(SwitchLbRule {
        name: rule.name,
        vip: rule.vip,
        namespace: rule.namespace,
        selector,
        endpoints,
        ports,
        session_affinity_timeout,
        health_check: rule.health_check,
    })
}

pub fn rule_to_proto(rule: &SwitchLbRule, status: &crate::registry::RuleStatus) -> pb::SwitchLbRule {
    pb::SwitchLbRule {
        name: rule.name.clone(),
        vip: rule.vip.clone(),
        namespace: rule.namespace.clone(),
        selector: rule
            .selector
            .iter()
            .map(|(key, value)| format!("{key}: {value}"))
            .collect(),
        selector_labels: Default::default(),
        endpoints: rule.endpoints.iter().map(IpAddr::to_string).collect(),
        ports: rule
            .ports
            .iter()
            .map(|port| pb::LbPort {
                name: port.name.clone(),
                port: port.port as u32,
                target_port: port.target_port as u32,
                protocol: match port.protocol {
                    Protocol::Tcp => pb::Protocol::Tcp as i32,
                    Protocol::Udp => pb::Protocol::Udp as i32,
                    Protocol::Sctp => pb::Protocol::Sctp as i32,
                },
            })
            .collect(),
        session_affinity: if rule.session_affinity_timeout.is_some() {
            pb::SessionAffinity::ClientIp as i32
        } else {
            pb::SessionAffinity::None as i32
        },
        session_affinity_timeout: rule.session_affinity_timeout.unwrap_or(0),
        health_check: rule.health_check,
        status: Some(pb::SwitchLbRuleStatus {
            ready: status
                .conditions
                .iter()
                .any(|condition| condition.condition_type == "Ready" && condition.status),
            conditions: conditions_to_proto(&status.conditions),
            vips: status.vips.clone(),
            backends: status.backends.clone(),
        }),
        revision: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_ok(key: &str) -> bool {
        let mut violations = Violations::new();
        check_qualified_name(&mut violations, "k", "label key", key);
        violations.is_empty()
    }

    fn value_ok(value: &str) -> bool {
        let mut violations = Violations::new();
        check_label_value(&mut violations, "v", value);
        violations.is_empty()
    }

    /// The cases of k8s.io/apimachinery's `TestIsQualifiedName` and `TestIsValidLabelValue`.
    #[test]
    fn kubernetes_label_syntax() {
        for good in [
            "simple",
            "now-with-dashes",
            "1-starts-with-num",
            "1234",
            "simple/simple",
            "now-with-dashes/simple",
            "now-with-dashes/now-with-dashes",
            "now.with.dots/simple",
            "now-with.dashes-and.dots/simple",
            "1-num.2-num/3-num",
            "1234/5678",
            "1.2.3.4/5678",
            "Uppercase_Is_OK_123",
            "example.com/Uppercase_Is_OK_123",
            "requests.storage-foo",
        ] {
            assert!(key_ok(good), "{good}");
        }
        let long_name = "a".repeat(64);
        let long_prefix = format!("{}/b", "a".repeat(254));
        for bad in [
            "",
            "nospecialchars%^=@",
            "cantendwithadash-",
            "-cantstartwithadash-",
            "only/one/slash",
            "Example.com/abc",
            "example_com/abc",
            "example.com/",
            "/simple",
            long_name.as_str(),
            long_prefix.as_str(),
            "a b",
        ] {
            assert!(!key_ok(bad), "{bad:?}");
        }
        for good in [
            "",
            "simple",
            "now-with-dashes",
            "1-starts-with-num",
            "end-with-num-1",
            "1234",
            &"a".repeat(63),
        ] {
            assert!(value_ok(good), "{good}");
        }
        for bad in [
            "nospecialchars%^=@",
            "Tama-nui-te-rā",
            "-x",
            "x-",
            "b:c",
            &"a".repeat(64),
        ] {
            assert!(!value_ok(bad), "{bad:?}");
        }
    }

    /// Issue #16 case 9: `a:b:c` splits into key `a` and value `b:c`, which no label can hold.
    #[test]
    fn a_selector_that_can_never_match_is_refused() {
        let rule = pb::SwitchLbRule {
            name: "r".into(),
            vip: "lbv".into(),
            selector: vec!["a:b:c".into()],
            ports: vec![pb::LbPort {
                port: 80,
                ..Default::default()
            }],
            ..Default::default()
        };
        let error = rule_from_proto(rule).unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        assert!(error.message().contains("rule.selector[0]"), "{}", error.message());
        assert!(error.message().contains("label value"), "{}", error.message());
    }
}
