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

mod kinds;
mod object;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Deserialize;
use serde_norway::Value;

use super::Kind;
use crate::api::proto::v1 as pb;
pub use kinds::normalize_mac;
use kinds::{pod, subnet, switch_lb_rule, vip};
use object::{describe, Object};

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
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
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

    const VIP_PAGE: &str = include_str!("../../../tests/fixtures/vip-zh-manifests.yaml");
    const KUBE_OVN_OBJECTS: &str = include_str!("../../../tests/fixtures/kube-ovn-objects.yaml");

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
