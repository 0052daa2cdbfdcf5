//! Kube-OVN manifests to API requests. Pure: no I/O, so every manifest a user may hand to
//! `vipctl apply` is testable without a daemon.
//!
//! Accepted, several per file separated by `---` (and `kind: List` with `items`, as `vipctl get
//! -o yaml` prints lists):
//! - `kubeovn.io/v1` `Subnet`: `cidrBlock` (one CIDR, or an IPv4 and an IPv6 CIDR separated by
//!   a comma), `gateway` (comma list, one per family), `excludeIps`, `vpc`; and two fields of our own,
//!   `logicalSwitch` and `allocationStrategy` (`Random` or `Sequential`).
//! - `kubeovn.io/v1` `Vip`: `subnet`, `type`, `namespace`, `v4ip`, `v6ip`, `macAddress`,
//!   `selector` (Kube-OVN's `["key: value"]`, or a label map).
//! - `kubeovn.io/v1` `SwitchLBRule`: `vip`, `namespace`, `selector`, `endpoints`, `ports`,
//!   `sessionAffinity` (`ClientIP` or `None`), Kubernetes' `sessionAffinityConfig.clientIP.
//!   timeoutSeconds`, and `healthCheck` of our own.
//! - `v1` `Pod`: bound the way a CNI plugin would bind it, with one NIC `eth0` in the subnet of
//!   its `ovn.kubernetes.io/logical_switch` annotation, else `ovn-default`; the owner kind
//!   and name come from `metadata.ownerReferences` (the controller's).
//!
//! Fields ovn-vipd has no use for (`provider`, `natOutgoing`, a pod's `containers`, ...) are
//! ignored; fields it uses are checked for type and syntax, and the first problem is reported
//! with the document and field it is in.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use super::Kind;
use crate::api::proto::v1 as pb;

/// The `apiVersion` of Kube-OVN's resources.
pub const KUBE_OVN_API_VERSION: &str = "kubeovn.io/v1";
/// Pod annotation naming the subnet of the pod's primary NIC (Kube-OVN's).
pub const ANNOTATION_LOGICAL_SWITCH: &str = "ovn.kubernetes.io/logical_switch";
/// Kube-OVN's default subnet, where pods go unless an annotation says otherwise.
pub const DEFAULT_SUBNET: &str = "ovn-default";
/// The namespace of a pod manifest without one.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The interface name of a pod's primary NIC.
pub const PRIMARY_INTERFACE: &str = "eth0";
/// The longest ClientIP affinity Kubernetes accepts, in seconds.
const MAX_AFFINITY_TIMEOUT: i64 = 86_400;

/// One object of a manifest, as the request that creates it.
#[derive(Debug, Clone, PartialEq)]
pub enum ApplyRequest {
    Subnet(pb::Subnet),
    Vip(pb::Vip),
    SwitchLbRule(pb::SwitchLbRule),
    /// A pod, bound as a CNI plugin would.
    Pod(pb::BindPodRequest),
}

impl ApplyRequest {
    pub fn kind(&self) -> Kind {
        match self {
            ApplyRequest::Subnet(_) => Kind::Subnet,
            ApplyRequest::Vip(_) => Kind::Vip,
            ApplyRequest::SwitchLbRule(_) => Kind::Slr,
            ApplyRequest::Pod(_) => Kind::Pod,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            ApplyRequest::Subnet(subnet) => &subnet.name,
            ApplyRequest::Vip(vip) => &vip.name,
            ApplyRequest::SwitchLbRule(rule) => &rule.name,
            ApplyRequest::Pod(pod) => &pod.name,
        }
    }

    /// The namespace for pods, which are named within one; empty for the other kinds.
    pub fn namespace(&self) -> &str {
        match self {
            ApplyRequest::Pod(pod) => &pod.namespace,
            _ => "",
        }
    }
}

impl fmt::Display for ApplyRequest {
    /// `vip/vip-dynamic-01`, as kubectl names objects in its output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind().as_str(), self.name())
    }
}

/// Where in the input an object is: its document (1-based) and, inside a `List`, its item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub document: usize,
    pub item: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(item) = self.item {
            write!(f, " item {item}")?;
        }
        Ok(())
    }
}

/// A manifest that cannot be applied: where, which object, which field, and what is wrong.
/// Displays as `document 2 (Vip vip-x): spec.v4ip: invalid IPv4 address "10.16.0.999"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    pub location: Location,
    /// The object's `kind`, when it could be read.
    pub kind: Option<String>,
    /// The object's `metadata.name`, when it could be read.
    pub name: Option<String>,
    /// The path of the offending field, e.g. `spec.ports[0].port`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.location)?;
        match (&self.kind, &self.name) {
            (Some(kind), Some(name)) => write!(f, " ({kind} {name})")?,
            (Some(kind), None) => write!(f, " ({kind})")?,
            (None, Some(name)) => write!(f, " ({name})")?,
            (None, None) => {}
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What is wrong with one field of an object.
#[derive(Debug)]
struct FieldError {
    field: String,
    message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Parses every document of `text` into the requests that create its objects, in order. Empty
/// documents are skipped. Fails on the first problem, so nothing is sent for a bad file.
pub fn manifests_to_requests(text: &str) -> Result<Vec<ApplyRequest>, ManifestError> {
    let mut requests = Vec::new();
    let mut seen: HashMap<(Kind, String, String), Location> = HashMap::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let location = Location {
            document: index + 1,
            item: None,
        };
        let value = Value::deserialize(document).map_err(|error| ManifestError {
            location,
            kind: None,
            name: None,
            field: None,
            message: format!("not valid YAML: {error}"),
        })?;
        if value.is_null() {
            continue;
        }
        let objects = if value.get("kind").and_then(Value::as_str) == Some("List") {
            list_items(&value, location)?
        } else {
            vec![(location, &value)]
        };
        for (location, object) in objects {
            let request = object_to_request(object).map_err(|error| ManifestError {
                location,
                kind: object.get("kind").and_then(Value::as_str).map(str::to_string),
                name: object
                    .get("metadata")
                    .and_then(|metadata| metadata.get("name"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                field: Some(error.field),
                message: error.message,
            })?;
            let key = (
                request.kind(),
                request.namespace().to_string(),
                request.name().to_string(),
            );
            if let Some(first) = seen.get(&key) {
                return Err(ManifestError {
                    location,
                    kind: object.get("kind").and_then(Value::as_str).map(str::to_string),
                    name: Some(request.name().to_string()),
                    field: Some("metadata.name".into()),
                    message: format!("{request} already appears in {first}"),
                });
            }
            seen.insert(key, location);
            requests.push(request);
        }
    }
    Ok(requests)
}

/// The objects of a `kind: List` document.
fn list_items(value: &Value, location: Location) -> Result<Vec<(Location, &Value)>, ManifestError> {
    match value.get("items") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Sequence(items)) => Ok(items
            .iter()
            .enumerate()
            .filter(|(_, item)| !item.is_null())
            .map(|(index, item)| {
                (
                    Location {
                        document: location.document,
                        item: Some(index + 1),
                    },
                    item,
                )
            })
            .collect()),
        Some(other) => Err(ManifestError {
            location,
            kind: Some("List".into()),
            name: None,
            field: Some("items".into()),
            message: format!("must be a list, not {}", describe(other)),
        }),
    }
}

fn object_to_request(value: &Value) -> Result<ApplyRequest, FieldError> {
    let object = Object::root(value)?;
    let kind = object.required_string("kind")?;
    let api_version = object.required_string("apiVersion")?;
    let expected_version = match kind.as_str() {
        "Subnet" | "Vip" | "SwitchLBRule" => KUBE_OVN_API_VERSION,
        "Pod" => "v1",
        other => {
            return Err(FieldError::new(
                "kind",
                format!("{other:?} is not supported (use Subnet, Vip, SwitchLBRule, Pod or List)"),
            ))
        }
    };
    if api_version != expected_version {
        return Err(FieldError::new(
            "apiVersion",
            format!("{api_version:?} is not supported for {kind} (use {expected_version})"),
        ));
    }
    match kind.as_str() {
        "Subnet" => subnet(&object).map(ApplyRequest::Subnet),
        "Vip" => vip(&object).map(ApplyRequest::Vip),
        "SwitchLBRule" => switch_lb_rule(&object).map(ApplyRequest::SwitchLbRule),
        _ => pod(&object).map(ApplyRequest::Pod),
    }
}

fn subnet(object: &Object) -> Result<pb::Subnet, FieldError> {
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
fn check_exclude_ip(text: &str) -> Result<(), String> {
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

fn vip(object: &Object) -> Result<pb::Vip, FieldError> {
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

fn switch_lb_rule(object: &Object) -> Result<pb::SwitchLbRule, FieldError> {
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
fn port_number(port: &Object, key: &str) -> Result<Option<u32>, FieldError> {
    match port.integer(key)? {
        None => Ok(None),
        Some(number) if (1..=65535).contains(&number) => Ok(Some(number as u32)),
        Some(number) => Err(FieldError::new(
            port.path(key),
            format!("{number} is not a port (1-65535)"),
        )),
    }
}

fn pod(object: &Object) -> Result<pb::BindPodRequest, FieldError> {
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

fn metadata_name(object: &Object) -> Result<String, FieldError> {
    let metadata = object.required_object("metadata")?;
    let name = metadata.required_string("name")?.trim().to_string();
    check_label(&metadata.path("name"), &name)?;
    Ok(name)
}

/// Kube-OVN's selector (`["key: value"]`) and label-map forms, as the API's two fields. A list
/// entry written without quotes (`- app: aap1`) is YAML for a one-entry map and is accepted as
/// one; so is a map, with or without `matchLabels`.
fn selector(spec: &Object) -> Result<(Vec<String>, HashMap<String, String>), FieldError> {
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

fn label_map(map: &Mapping, field: &str) -> Result<HashMap<String, String>, FieldError> {
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
fn check_label(field: &str, name: &str) -> Result<(), FieldError> {
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

fn comma_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(str::to_string)
        .collect()
}

/// How a YAML value is named in messages.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// A mapping of a manifest and its path, so every error names the field it is about.
struct Object<'a> {
    map: &'a Mapping,
    /// `""` for the document itself, else e.g. `spec` or `spec.ports[0]`.
    path: String,
}

impl<'a> Object<'a> {
    fn root(value: &'a Value) -> Result<Object<'a>, FieldError> {
        match value {
            Value::Mapping(map) => Ok(Object {
                map,
                path: String::new(),
            }),
            other => Err(FieldError::new(
                "(document)",
                format!(
                    "must be a mapping with apiVersion, kind, metadata and spec, not {}",
                    describe(other)
                ),
            )),
        }
    }

    fn path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`; an explicit `null` counts as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|value| !value.is_null())
    }

    fn object(&self, key: &str) -> Result<Option<Object<'a>>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Mapping(map)) => Ok(Some(Object {
                map,
                path: self.path(key),
            })),
            Some(other) => Err(FieldError::new(
                self.path(key),
                format!("must be a mapping, not {}", describe(other)),
            )),
        }
    }

    fn required_object(&self, key: &str) -> Result<Object<'a>, FieldError> {
        self.object(key)?
            .ok_or_else(|| FieldError::new(self.path(key), "is required"))
    }

    fn string(&self, key: &str) -> Result<Option<String>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(FieldError::new(
                self.path(key),
                format!("must be a string, not {} (quote it)", describe(other)),
            )),
        }
    }

    fn required_string(&self, key: &str) -> Result<String, FieldError> {
        match self.string(key)? {
            Some(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
            _ => Err(FieldError::new(self.path(key), "is required")),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, FieldError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(index, item)| match item {
                    Value::String(text) => Ok(text.trim().to_string()),
                    other => Err(FieldError::new(
                        format!("{}[{index}]", self.path(key)),
                        format!("must be a string, not {}", describe(other)),
                    )),
                })
                .collect(),
            Some(other) => Err(FieldError::new(
                self.path(key),
                format!("must be a list, not {}", describe(other)),
            )),
        }
    }

    fn string_map(&self, key: &str) -> Result<HashMap<String, String>, FieldError> {
        match self.get(key) {
            None => Ok(HashMap::new()),
            Some(Value::Mapping(map)) => label_map(map, &self.path(key)),
            Some(other) => Err(FieldError::new(
                self.path(key),
                format!("must be a mapping, not {}", describe(other)),
            )),
        }
    }

    /// A list of mappings, e.g. `ports`.
    fn objects(&self, key: &str) -> Result<Vec<Object<'a>>, FieldError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    let path = format!("{}[{index}]", self.path(key));
                    match item {
                        Value::Mapping(map) => Ok(Object { map, path }),
                        other => Err(FieldError::new(
                            path,
                            format!("must be a mapping, not {}", describe(other)),
                        )),
                    }
                })
                .collect(),
            Some(other) => Err(FieldError::new(
                self.path(key),
                format!("must be a list, not {}", describe(other)),
            )),
        }
    }

    fn integer(&self, key: &str) -> Result<Option<i64>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(number)) => number
                .as_i64()
                .map(Some)
                .ok_or_else(|| FieldError::new(self.path(key), format!("{number} is not an integer"))),
            Some(other) => Err(FieldError::new(
                self.path(key),
                format!("must be an integer, not {}", describe(other)),
            )),
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(value)) => Ok(Some(*value)),
            Some(other) => Err(FieldError::new(
                self.path(key),
                format!("must be true or false, not {}", describe(other)),
            )),
        }
    }
}

/// The selector of a request or a stored object as one label map, whichever form it was in.
pub fn selector_map(strings: &[String], labels: &HashMap<String, String>) -> BTreeMap<String, String> {
    let mut selector: BTreeMap<String, String> = strings
        .iter()
        .filter_map(|text| text.split_once(':'))
        .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
        .collect();
    selector.extend(labels.iter().map(|(key, value)| (key.clone(), value.clone())));
    selector
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP_PAGE: &str = include_str!("../../tests/fixtures/vip-zh-manifests.yaml");
    const KUBE_OVN_OBJECTS: &str = include_str!("../../tests/fixtures/kube-ovn-objects.yaml");

    fn parse(text: &str) -> Vec<ApplyRequest> {
        match manifests_to_requests(text) {
            Ok(requests) => requests,
            Err(error) => panic!("{error}"),
        }
    }

    fn error(text: &str) -> String {
        match manifests_to_requests(text) {
            Ok(requests) => panic!("accepted: {requests:?}"),
            Err(error) => error.to_string(),
        }
    }

    fn vip(request: &ApplyRequest) -> &pb::Vip {
        match request {
            ApplyRequest::Vip(vip) => vip,
            other => panic!("not a VIP: {other:?}"),
        }
    }

    fn pod(request: &ApplyRequest) -> &pb::BindPodRequest {
        match request {
            ApplyRequest::Pod(pod) => pod,
            other => panic!("not a pod: {other:?}"),
        }
    }

    #[test]
    fn every_example_of_the_vip_page_applies_unchanged() {
        let requests = parse(VIP_PAGE);
        let names: Vec<String> = requests.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "vip/vip-dynamic-01",
                "vip/static-vip01",
                "vip/vip-aap",
                "pod/busybox",
                "vip/slr-01",
                "vip/pod-use-vip",
                "pod/static-ip"
            ]
        );

        // 1.1: a dynamic reservation.
        let dynamic = vip(&requests[0]);
        assert_eq!(
            *dynamic,
            pb::Vip {
                name: "vip-dynamic-01".into(),
                subnet: "ovn-default".into(),
                ..Default::default()
            }
        );
        // 1.2: a static one (the page has a trailing blank after `ovn-default`).
        let fixed = vip(&requests[1]);
        assert_eq!(
            (fixed.subnet.as_str(), fixed.v4ip.as_str()),
            ("ovn-default", "10.16.0.121")
        );
        // 1.3: an AAP VIP and the pod that carries it.
        let aap = vip(&requests[2]);
        assert_eq!(aap.namespace, "default");
        assert_eq!(aap.selector, ["app: aap1"]);
        let busybox = pod(&requests[3]);
        assert_eq!(busybox.namespace, "default");
        assert_eq!(busybox.labels.get("app").map(String::as_str), Some("aap1"));
        assert_eq!(
            busybox.annotations.get("ovn.kubernetes.io/aaps").map(String::as_str),
            Some("vip-aap")
        );
        assert_eq!(busybox.owner_kind, pb::OwnerKind::Other as i32);
        assert_eq!(
            busybox.nics,
            [pb::NicRequest {
                subnet: "ovn-default".into(),
                interface: "eth0".into(),
                ..Default::default()
            }]
        );
        // 2: a switch-LB frontend.
        assert_eq!(vip(&requests[4]).r#type, "switch_lb_vip");
        // 3: a pod that takes a VIP as its address (the annotation has a YAML comment).
        let static_ip = pod(&requests[6]);
        assert_eq!(
            static_ip.annotations.get("ovn.kubernetes.io/vip").map(String::as_str),
            Some("pod-use-vip")
        );
    }

    #[test]
    fn kube_ovn_subnets_and_rules_map_what_applies() {
        let requests = parse(KUBE_OVN_OBJECTS);
        let [ApplyRequest::Subnet(single), ApplyRequest::Subnet(dual), ApplyRequest::SwitchLbRule(by_selector), ApplyRequest::SwitchLbRule(by_endpoints)] =
            requests.as_slice()
        else {
            panic!("unexpected requests: {requests:?}")
        };
        assert_eq!(
            *single,
            pb::Subnet {
                name: "ovn-default".into(),
                cidr_v4: "10.16.0.0/16".into(),
                gateway_v4: "10.16.0.1".into(),
                exclude_ips: vec!["10.16.0.1".into()],
                // The fixture names Kube-OVN's default VPC.
                vpc: "ovn-cluster".into(),
                ..Default::default()
            }
        );
        assert_eq!(
            (
                dual.cidr_v4.as_str(),
                dual.cidr_v6.as_str(),
                dual.gateway_v4.as_str(),
                dual.gateway_v6.as_str()
            ),
            ("10.17.0.0/16", "fd00:10:17::/64", "10.17.0.1", "fd00:10:17::1")
        );
        assert_eq!(
            dual.exclude_ips,
            ["10.17.0.2..10.17.0.10", "10.17.255.0/24", "fd00:10:17::2"]
        );

        assert_eq!(by_selector.name, "cjh-slr-nginx");
        assert_eq!(by_selector.vip, "1.1.1.1");
        assert_eq!(by_selector.selector, ["app:nginx"]);
        assert_eq!(by_selector.session_affinity, pb::SessionAffinity::ClientIp as i32);
        assert_eq!(
            by_selector.ports,
            [pb::LbPort {
                name: "dns".into(),
                port: 8888,
                target_port: 80,
                protocol: pb::Protocol::Tcp as i32
            }]
        );
        assert_eq!(by_endpoints.vip, "slr-01");
        assert_eq!(by_endpoints.endpoints, ["192.168.0.101", "192.168.0.102"]);
        assert_eq!(by_endpoints.ports[0].protocol, pb::Protocol::Udp as i32);
        assert_eq!(by_endpoints.session_affinity, pb::SessionAffinity::None as i32);
    }

    #[test]
    fn our_own_fields_and_the_other_selector_forms() {
        let requests = parse(
            "apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata: {name: net1}\n\
             spec: {cidrBlock: 'fd00:20::/64', logicalSwitch: ls-net1, allocationStrategy: Sequential}\n\
             ---\n\
             apiVersion: kubeovn.io/v1\nkind: Vip\nmetadata: {name: unquoted}\n\
             spec: {subnet: net1, namespace: default, selector: [{app: aap1}], v6ip: 'FD00:20::10', macAddress: 00-00-00-F0-DB-25}\n\
             ---\n\
             apiVersion: kubeovn.io/v1\nkind: SwitchLBRule\nmetadata: {name: sticky}\n\
             spec:\n  vip: slr-01\n  selector: {matchLabels: {app: web}}\n  sessionAffinity: ClientIP\n\
             \x20 sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n  healthCheck: true\n\
             \x20 ports: [{port: 80, protocol: sctp}]\n\
             ---\n\
             apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-0\n  namespace: apps\n\
             \x20 annotations: {ovn.kubernetes.io/logical_switch: net1}\n\
             \x20 ownerReferences: [{kind: ReplicaSet}, {kind: StatefulSet, controller: true}]\n",
        );
        let [ApplyRequest::Subnet(subnet), ApplyRequest::Vip(vip), ApplyRequest::SwitchLbRule(rule), ApplyRequest::Pod(pod)] =
            requests.as_slice()
        else {
            panic!("unexpected requests: {requests:?}")
        };
        assert_eq!(subnet.logical_switch, "ls-net1");
        assert_eq!(subnet.strategy, pb::AllocationStrategy::Sequential as i32);
        assert_eq!(vip.selector_labels.get("app").map(String::as_str), Some("aap1"));
        assert_eq!(vip.v6ip, "fd00:20::10");
        assert_eq!(vip.mac_address, "00:00:00:f0:db:25");
        assert_eq!(rule.selector_labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(rule.session_affinity_timeout, 60);
        assert!(rule.health_check);
        assert_eq!((rule.ports[0].port, rule.ports[0].target_port), (80, 0));
        assert_eq!(rule.ports[0].protocol, pb::Protocol::Sctp as i32);
        assert_eq!(pod.namespace, "apps");
        assert_eq!(pod.owner_kind, pb::OwnerKind::StatefulSet as i32);
        assert_eq!(pod.nics[0].subnet, "net1");
    }

    #[test]
    fn empty_documents_and_lists() {
        let text = format!("---\n# nothing here\n---\n{VIP_PAGE}\n---\n");
        assert_eq!(parse(&text).len(), 7);
        let list = "apiVersion: v1\nkind: List\nitems:\n\
                    - {apiVersion: kubeovn.io/v1, kind: Vip, metadata: {name: a}, spec: {subnet: ovn-default}}\n\
                    - {apiVersion: kubeovn.io/v1, kind: Vip, metadata: {name: b}, spec: {subnet: ovn-default, v4ip: 10.16.0.300}}\n";
        assert_eq!(
            error(list),
            "document 1 item 2 (Vip b): spec.v4ip: invalid IPv4 address \"10.16.0.300\""
        );
        assert!(parse("").is_empty());
    }

    #[test]
    fn malformed_manifests_name_the_document_and_the_field() {
        let vip = |name: &str, spec: &str| {
            format!("apiVersion: kubeovn.io/v1\nkind: Vip\nmetadata: {{name: {name}}}\nspec: {spec}\n")
        };
        let second = |document: String| format!("{}---\n{document}", vip("ok", "{subnet: ovn-default}"));
        let cases = [
            (
                second(vip("vip-x", "{subnet: ovn-default, v4ip: 10.16.0.999}")),
                "document 2 (Vip vip-x): spec.v4ip: invalid IPv4 address \"10.16.0.999\"",
            ),
            (
                vip("v", "{subnet: ovn-default, v6ip: 10.16.0.9}"),
                "document 1 (Vip v): spec.v6ip: invalid IPv6 address \"10.16.0.9\"",
            ),
            (vip("v", "{type: \"\"}"), "document 1 (Vip v): spec.subnet: is required"),
            (
                vip("v", "{subnet: [ovn-default]}"),
                "document 1 (Vip v): spec.subnet: must be a string, not a list (quote it)",
            ),
            (
                vip("v", "{subnet: ovn-default, type: lb}"),
                "document 1 (Vip v): spec.type: \"lb\" is not a VIP type (use \"\" or \"switch_lb_vip\")",
            ),
            (
                vip("v", "{subnet: ovn-default, macAddress: 00:00:00:f0:db}"),
                "document 1 (Vip v): spec.macAddress: invalid MAC address \"00:00:00:f0:db\"",
            ),
            (
                vip("v", "{subnet: ovn-default, namespace: default, selector: [\"app\"]}"),
                "document 1 (Vip v): spec.selector[0]: \"app\" must look like \"key: value\"",
            ),
            (
                vip("v", "{subnet: ovn-default, selector: [\"app: aap1\"]}"),
                "document 1 (Vip v): spec.namespace: is required with a selector: only pods of this namespace may carry the VIP",
            ),
            (
                vip("Vip_1", "{subnet: ovn-default}"),
                "document 1 (Vip Vip_1): metadata.name: \"Vip_1\" is not a DNS-1123 label (at most 63 lower-case letters, \
                 digits and '-', starting and ending with a letter or digit)",
            ),
            (
                "apiVersion: kubeovn.io/v1\nkind: Vip\nspec: {subnet: ovn-default}\n".to_string(),
                "document 1 (Vip): metadata: is required",
            ),
            (
                "apiVersion: kubeovn.io/v1\nkind: Service\nmetadata: {name: s}\n".to_string(),
                "document 1 (Service s): kind: \"Service\" is not supported (use Subnet, Vip, SwitchLBRule, Pod or List)",
            ),
            (
                "apiVersion: kubeovn.io/v2\nkind: Vip\nmetadata: {name: v}\n".to_string(),
                "document 1 (Vip v): apiVersion: \"kubeovn.io/v2\" is not supported for Vip (use kubeovn.io/v1)",
            ),
            (
                "kind: Vip\nmetadata: {name: v}\n".to_string(),
                "document 1 (Vip v): apiVersion: is required",
            ),
            (
                second("- just\n- a list\n".to_string()),
                "document 2: (document): must be a mapping with apiVersion, kind, metadata and spec, not a list",
            ),
            (
                second(vip("ok", "{subnet: ovn-default}")),
                "document 2 (Vip ok): metadata.name: vip/ok already appears in document 1",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(error(&text), expected, "for:\n{text}");
        }
    }

    #[test]
    fn malformed_subnets_and_rules() {
        let subnet =
            |spec: &str| format!("apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata: {{name: s}}\nspec: {spec}\n");
        let rule = |spec: &str| {
            format!("apiVersion: kubeovn.io/v1\nkind: SwitchLBRule\nmetadata: {{name: r}}\nspec: {spec}\n")
        };
        let cases = [
            (subnet("{protocol: IPv4}"), "document 1 (Subnet s): spec.cidrBlock: is required"),
            (
                subnet("{cidrBlock: 10.16.0.1/16}"),
                "document 1 (Subnet s): spec.cidrBlock: \"10.16.0.1/16\" is not a network address (did you mean 10.16.0.0/16?)",
            ),
            (
                subnet("{cidrBlock: '10.16.0.0/16,10.17.0.0/16'}"),
                "document 1 (Subnet s): spec.cidrBlock: at most one IPv4 and one IPv6 CIDR, separated by a comma",
            ),
            (
                subnet("{cidrBlock: 10.16.0.0/16, gateway: 10.17.0.1}"),
                "document 1 (Subnet s): spec.gateway: 10.17.0.1 is outside 10.16.0.0/16",
            ),
            (
                subnet("{cidrBlock: 10.16.0.0/16, gateway: 'fd00::1'}"),
                "document 1 (Subnet s): spec.gateway: fd00::1 is IPv6 but cidrBlock has no IPv6 CIDR",
            ),
            (
                subnet("{cidrBlock: 10.16.0.0/16, excludeIps: [10.16.0.1, 10.16.0.20..10.16.0.10]}"),
                "document 1 (Subnet s): spec.excludeIps[1]: \"10.16.0.20..10.16.0.10\" ends before it starts",
            ),
            (
                subnet("{cidrBlock: 10.16.0.0/16, excludeIps: [10.16.0.x]}"),
                "document 1 (Subnet s): spec.excludeIps[0]: \"10.16.0.x\" is not an address, a range \"a..b\" or a CIDR",
            ),
            (rule("{vip: slr-01}"), "document 1 (SwitchLBRule r): spec.ports: at least one port is required"),
            (
                rule("{vip: slr-01, ports: [{port: 70000}]}"),
                "document 1 (SwitchLBRule r): spec.ports[0].port: 70000 is not a port (1-65535)",
            ),
            (
                rule("{vip: slr-01, ports: [{port: \"80\"}]}"),
                "document 1 (SwitchLBRule r): spec.ports[0].port: must be an integer, not a string",
            ),
            (
                rule("{vip: slr-01, ports: [{port: 80, protocol: HTTP}]}"),
                "document 1 (SwitchLBRule r): spec.ports[0].protocol: must be TCP, UDP or SCTP",
            ),
            (
                rule("{vip: slr-01, ports: [{port: 80}], sessionAffinity: clientip}"),
                "document 1 (SwitchLBRule r): spec.sessionAffinity: must be ClientIP or None",
            ),
            (
                rule("{vip: slr-01, ports: [{port: 80}], endpoints: [10.16.0.5, web]}"),
                "document 1 (SwitchLBRule r): spec.endpoints[1]: invalid IP address \"web\"",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(error(&text), expected, "for:\n{text}");
        }
    }

    #[test]
    fn invalid_yaml_names_its_document() {
        let text = format!("{VIP_PAGE}---\nkind: Vip\nspec: [unclosed\n");
        let message = error(&text);
        assert!(message.starts_with("document 8: not valid YAML: "), "{message}");
    }

    #[test]
    fn pod_labels_must_be_strings() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {version: 1}}\n";
        assert_eq!(
            error(text),
            "document 1 (Pod p): metadata.labels.version: must be a string, not a number (quote it)"
        );
    }
}
