//! The kinds of a manifest: a Kube-OVN `Subnet`, `Vip`, `SwitchLBRule` or a `Pod`, each
//! read into the API request that creates it, with the checks of its fields.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde_norway::{Mapping, Value};

use super::object::{describe, Object};
use super::*;

pub(super) fn subnet(object: &Object) -> Result<pb::Subnet, FieldError> {
    let name = metadata_name(object)?;
    let spec = object.required_object("spec")?;
    let cidr_field = spec.path("cidrBlock");
    let mut cidr_v4: Option<IpNet> = None;
    let mut cidr_v6: Option<IpNet> = None;
    for text in comma_list(&spec.required_string("cidrBlock")?) {
        let net: IpNet = text
            .parse()
            .map_err(|_| FieldError::new(&cidr_field, format!("invalid CIDR {text:?}")))?;
        if net != net.trunc() {
            return Err(FieldError::new(
                &cidr_field,
                format!("{text:?} is not a network address (did you mean {}?)", net.trunc()),
            ));
        }
        let slot = match net {
            IpNet::V4(_) => &mut cidr_v4,
            IpNet::V6(_) => &mut cidr_v6,
        };
        if slot.is_some() {
            return Err(FieldError::new(
                &cidr_field,
                "at most one IPv4 and one IPv6 CIDR, separated by a comma",
            ));
        }
        *slot = Some(net);
    }

    let gateway_field = spec.path("gateway");
    let mut gateway_v4: Option<IpAddr> = None;
    let mut gateway_v6: Option<IpAddr> = None;
    for text in comma_list(&spec.string("gateway")?.unwrap_or_default()) {
        let gateway: IpAddr = text
            .parse()
            .map_err(|_| FieldError::new(&gateway_field, format!("invalid IP address {text:?}")))?;
        let (cidr, slot, family) = match gateway {
            IpAddr::V4(_) => (cidr_v4, &mut gateway_v4, "IPv4"),
            IpAddr::V6(_) => (cidr_v6, &mut gateway_v6, "IPv6"),
        };
        match cidr {
            None => {
                return Err(FieldError::new(
                    &gateway_field,
                    format!("{gateway} is {family} but cidrBlock has no {family} CIDR"),
                ))
            }
            Some(cidr) if !cidr.contains(&gateway) => {
                return Err(FieldError::new(&gateway_field, format!("{gateway} is outside {cidr}")))
            }
            Some(_) => {}
        }
        if slot.is_some() {
            return Err(FieldError::new(
                &gateway_field,
                format!("more than one {family} gateway"),
            ));
        }
        *slot = Some(gateway);
    }

    let exclude_ips = spec.strings("excludeIps")?;
    for (index, text) in exclude_ips.iter().enumerate() {
        check_exclude_ip(text)
            .map_err(|message| FieldError::new(format!("{}[{index}]", spec.path("excludeIps")), message))?;
    }

    let logical_switch = spec.string("logicalSwitch")?.unwrap_or_default();
    let vpc = spec.string("vpc")?.unwrap_or_default();
    let strategy = match spec
        .string("allocationStrategy")?
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "random" => pb::AllocationStrategy::Random,
        "sequential" => pb::AllocationStrategy::Sequential,
        _ => {
            return Err(FieldError::new(
                spec.path("allocationStrategy"),
                "must be Random or Sequential",
            ))
        }
    };
    let text = |value: Option<_>| value.map(|value: IpNet| value.to_string()).unwrap_or_default();
    let address = |value: Option<IpAddr>| value.map(|value| value.to_string()).unwrap_or_default();
    Ok(pb::Subnet {
        name,
        logical_switch,
        cidr_v4: text(cidr_v4),
        cidr_v6: text(cidr_v6),
        gateway_v4: address(gateway_v4),
        gateway_v6: address(gateway_v6),
        exclude_ips,
        strategy: strategy as i32,
        status: None,
        vpc,
        revision: 0,
    })
}

/// Kube-OVN's `excludeIps` entries: an address, an inclusive range `a..b`, or a CIDR.
pub(super) fn check_exclude_ip(text: &str) -> Result<(), String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not an address, a range \"a..b\" or a CIDR");
    if let Some((start, end)) = text.split_once("..") {
        let start: IpAddr = start.trim().parse().map_err(|_| bad())?;
        let end: IpAddr = end.trim().parse().map_err(|_| bad())?;
        if start.is_ipv4() != end.is_ipv4() {
            return Err(format!("{text:?} mixes IPv4 and IPv6"));
        }
        if start > end {
            return Err(format!("{text:?} ends before it starts"));
        }
        Ok(())
    } else if text.contains('/') {
        text.parse::<IpNet>().map(|_| ()).map_err(|_| bad())
    } else {
        text.parse::<IpAddr>().map(|_| ()).map_err(|_| bad())
    }
}

pub(super) fn vip(object: &Object) -> Result<pb::Vip, FieldError> {
    let name = metadata_name(object)?;
    let spec = object.required_object("spec")?;
    let subnet = spec.required_string("subnet")?;
    check_label(&spec.path("subnet"), &subnet)?;
    let vip_type = spec.string("type")?.unwrap_or_default();
    if !matches!(vip_type.as_str(), "" | "switch_lb_vip") {
        return Err(FieldError::new(
            spec.path("type"),
            format!("{vip_type:?} is not a VIP type (use \"\" or \"switch_lb_vip\")"),
        ));
    }
    let namespace = spec.string("namespace")?.unwrap_or_default();
    if !namespace.is_empty() {
        check_label(&spec.path("namespace"), &namespace)?;
    }
    let v4ip = match spec.string("v4ip")?.unwrap_or_default().trim() {
        "" => String::new(),
        text => text
            .parse::<Ipv4Addr>()
            .map_err(|_| FieldError::new(spec.path("v4ip"), format!("invalid IPv4 address {text:?}")))?
            .to_string(),
    };
    let v6ip = match spec.string("v6ip")?.unwrap_or_default().trim() {
        "" => String::new(),
        text => text
            .parse::<Ipv6Addr>()
            .map_err(|_| FieldError::new(spec.path("v6ip"), format!("invalid IPv6 address {text:?}")))?
            .to_string(),
    };
    let mac_address = match spec.string("macAddress")?.unwrap_or_default().trim() {
        "" => String::new(),
        text => normalize_mac(text)
            .ok_or_else(|| FieldError::new(spec.path("macAddress"), format!("invalid MAC address {text:?}")))?,
    };
    let (selector, selector_labels) = selector(&spec)?;
    if (!selector.is_empty() || !selector_labels.is_empty()) && namespace.is_empty() {
        return Err(FieldError::new(
            spec.path("namespace"),
            "is required with a selector: only pods of this namespace may carry the VIP",
        ));
    }
    Ok(pb::Vip {
        name,
        namespace,
        subnet,
        r#type: vip_type,
        v4ip,
        v6ip,
        mac_address,
        selector,
        selector_labels,
        status: None,
        revision: 0,
    })
}

pub(super) fn switch_lb_rule(object: &Object) -> Result<pb::SwitchLbRule, FieldError> {
    let name = metadata_name(object)?;
    let spec = object.required_object("spec")?;
    let vip = spec.required_string("vip")?;
    if vip.parse::<IpAddr>().is_err() {
        check_label(&spec.path("vip"), &vip)?;
    }
    let namespace = spec.string("namespace")?.unwrap_or_default();
    if !namespace.is_empty() {
        check_label(&spec.path("namespace"), &namespace)?;
    }
    let (selector, selector_labels) = selector(&spec)?;
    let endpoints = spec.strings("endpoints")?;
    for (index, endpoint) in endpoints.iter().enumerate() {
        if endpoint.trim().parse::<IpAddr>().is_err() {
            return Err(FieldError::new(
                format!("{}[{index}]", spec.path("endpoints")),
                format!("invalid IP address {endpoint:?}"),
            ));
        }
    }
    let port_objects = spec.objects("ports")?;
    if port_objects.is_empty() {
        return Err(FieldError::new(spec.path("ports"), "at least one port is required"));
    }
    let mut ports = Vec::new();
    for port in &port_objects {
        let number = port_number(port, "port")?.ok_or_else(|| FieldError::new(port.path("port"), "is required"))?;
        let target_port = port_number(port, "targetPort")?.unwrap_or(0);
        let protocol = match port
            .string("protocol")?
            .unwrap_or_default()
            .to_ascii_uppercase()
            .as_str()
        {
            "" | "TCP" => pb::Protocol::Tcp,
            "UDP" => pb::Protocol::Udp,
            "SCTP" => pb::Protocol::Sctp,
            _ => return Err(FieldError::new(port.path("protocol"), "must be TCP, UDP or SCTP")),
        };
        ports.push(pb::LbPort {
            name: port.string("name")?.unwrap_or_default(),
            port: number,
            target_port,
            protocol: protocol as i32,
        });
    }
    let session_affinity = match spec.string("sessionAffinity")?.unwrap_or_default().as_str() {
        "" | "None" => pb::SessionAffinity::None,
        "ClientIP" => pb::SessionAffinity::ClientIp,
        _ => {
            return Err(FieldError::new(
                spec.path("sessionAffinity"),
                "must be ClientIP or None",
            ))
        }
    };
    let mut session_affinity_timeout = 0;
    if let Some(config) = spec.object("sessionAffinityConfig")? {
        if let Some(client_ip) = config.object("clientIP")? {
            if let Some(seconds) = client_ip.integer("timeoutSeconds")? {
                if !(1..=MAX_AFFINITY_TIMEOUT).contains(&seconds) {
                    return Err(FieldError::new(
                        client_ip.path("timeoutSeconds"),
                        format!("{seconds} is not between 1 and {MAX_AFFINITY_TIMEOUT}"),
                    ));
                }
                session_affinity_timeout = seconds as u32;
            }
        }
    }
    Ok(pb::SwitchLbRule {
        name,
        vip,
        namespace,
        selector,
        selector_labels,
        endpoints,
        ports,
        session_affinity: session_affinity as i32,
        session_affinity_timeout,
        health_check: spec.boolean("healthCheck")?.unwrap_or(false),
        status: None,
        revision: 0,
    })
}

/// A port number field: an integer from 1 to 65535, or absent.
pub(super) fn port_number(port: &Object, key: &str) -> Result<Option<u32>, FieldError> {
    match port.integer(key)? {
        None => Ok(None),
        Some(number) if (1..=65535).contains(&number) => Ok(Some(number as u32)),
        Some(number) => Err(FieldError::new(
            port.path(key),
            format!("{number} is not a port (1-65535)"),
        )),
    }
}

pub(super) fn pod(object: &Object) -> Result<pb::BindPodRequest, FieldError> {
    let name = metadata_name(object)?;
    let metadata = object.required_object("metadata")?;
    let namespace = metadata
        .string("namespace")?
        .filter(|namespace| !namespace.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    check_label(&metadata.path("namespace"), &namespace)?;
    let labels = metadata.string_map("labels")?;
    let annotations = metadata.string_map("annotations")?;
    let owner_references = metadata.objects("ownerReferences")?;
    let mut owner = None;
    let mut owner_name = String::new();
    for reference in &owner_references {
        if reference.boolean("controller")?.unwrap_or(false) || owner.is_none() {
            owner = Some(reference.string("kind")?.unwrap_or_default());
            owner_name = reference.string("name")?.unwrap_or_default();
        }
    }
    let owner_kind = match owner.as_deref() {
        Some("StatefulSet") => pb::OwnerKind::StatefulSet,
        Some("VirtualMachineInstance" | "VirtualMachine") => pb::OwnerKind::VirtualMachine,
        _ => pb::OwnerKind::Other,
    };
    let subnet = annotations
        .get(ANNOTATION_LOGICAL_SWITCH)
        .map(|subnet| subnet.trim().to_string())
        .filter(|subnet| !subnet.is_empty())
        .unwrap_or_else(|| DEFAULT_SUBNET.to_string());
    check_label(
        &format!("{}[{ANNOTATION_LOGICAL_SWITCH}]", metadata.path("annotations")),
        &subnet,
    )?;
    Ok(pb::BindPodRequest {
        namespace,
        name,
        labels,
        annotations,
        owner_kind: owner_kind as i32,
        owner_name,
        nics: vec![pb::NicRequest {
            subnet,
            interface: PRIMARY_INTERFACE.to_string(),
            ..Default::default()
        }],
    })
}

pub(super) fn metadata_name(object: &Object) -> Result<String, FieldError> {
    let metadata = object.required_object("metadata")?;
    let name = metadata.required_string("name")?.trim().to_string();
    check_label(&metadata.path("name"), &name)?;
    Ok(name)
}

/// Kube-OVN's selector (`["key: value"]`) and label-map forms, as the API's two fields. A list
/// entry written without quotes (`- app: aap1`) is YAML for a one-entry map and is accepted as
/// one; so is a map, with or without `matchLabels`.
pub(super) fn selector(spec: &Object) -> Result<(Vec<String>, HashMap<String, String>), FieldError> {
    let field = spec.path("selector");
    let mut strings = Vec::new();
    let mut labels = HashMap::new();
    match spec.get("selector") {
        None => {}
        Some(Value::Sequence(items)) => {
            for (index, item) in items.iter().enumerate() {
                let item_field = format!("{field}[{index}]");
                match item {
                    Value::String(text) => match text.split_once(':') {
                        Some((key, _)) if !key.trim().is_empty() => strings.push(text.trim().to_string()),
                        _ => {
                            return Err(FieldError::new(
                                item_field,
                                format!("{text:?} must look like \"key: value\""),
                            ))
                        }
                    },
                    Value::Mapping(map) => labels.extend(label_map(map, &item_field)?),
                    other => {
                        return Err(FieldError::new(
                            item_field,
                            format!("must be a string \"key: value\", not {}", describe(other)),
                        ))
                    }
                }
            }
        }
        Some(Value::Mapping(map)) => match map.get("matchLabels") {
            Some(Value::Mapping(match_labels)) => {
                labels.extend(label_map(match_labels, &format!("{field}.matchLabels"))?)
            }
            _ => labels.extend(label_map(map, &field)?),
        },
        Some(other) => {
            return Err(FieldError::new(
                field,
                format!("must be a list of \"key: value\" strings, not {}", describe(other)),
            ))
        }
    }
    Ok((strings, labels))
}

pub(super) fn label_map(map: &Mapping, field: &str) -> Result<HashMap<String, String>, FieldError> {
    let mut labels = HashMap::new();
    for (key, value) in map {
        let Some(key) = key.as_str() else {
            return Err(FieldError::new(
                field,
                format!("keys must be strings, not {}", describe(key)),
            ));
        };
        let Some(value) = value.as_str() else {
            return Err(FieldError::new(
                format!("{field}.{key}"),
                format!("must be a string, not {} (quote it)", describe(value)),
            ));
        };
        labels.insert(key.to_string(), value.to_string());
    }
    Ok(labels)
}

/// A DNS-1123 label, which the daemon requires of every name.
pub(super) fn check_label(field: &str, name: &str) -> Result<(), FieldError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "{name:?} is not a DNS-1123 label (at most 63 lower-case letters, digits and '-', \
                 starting and ending with a letter or digit)"
            ),
        ))
    }
}

/// `00:00:00:F0:DB:25` or `00-00-00-f0-db-25` as `00:00:00:f0:db:25`; `None` if not a MAC.
pub fn normalize_mac(text: &str) -> Option<String> {
    let separator = if text.contains('-') { '-' } else { ':' };
    let octets: Vec<&str> = text.split(separator).collect();
    let valid = octets.len() == 6
        && octets
            .iter()
            .all(|octet| octet.len() == 2 && octet.bytes().all(|b| b.is_ascii_hexdigit()));
    valid.then(|| octets.join(":").to_ascii_lowercase())
}

pub(super) fn comma_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(str::to_string)
        .collect()
}
