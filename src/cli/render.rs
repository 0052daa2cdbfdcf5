//! What `vipctl get` prints: kubectl-style tables, and each object as a Kube-OVN manifest (with
//! its status) for `-o json` and `-o yaml`, so that what `get` prints `apply` accepts back.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

use super::manifest::{selector_map, KUBE_OVN_API_VERSION};
use crate::api::proto::v1 as pb;

/// Columns are separated by three spaces, as kubectl separates them.
const COLUMN_GAP: &str = "   ";

/// A table's header and rows.
pub type Rows = (Vec<&'static str>, Vec<Vec<String>>);

/// An aligned table: every column as wide as its widest cell, trailing blanks trimmed.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    PagedTable::default().page(headers, rows)
}

/// A table printed a page at a time, as a listing's pages arrive: the header comes with the
/// first page, and every column is as wide as its widest cell so far (a wider cell on a later
/// page widens its column from that page on; earlier pages are already printed).
#[derive(Debug, Default)]
pub struct PagedTable {
    widths: Vec<usize>,
    started: bool,
}

impl PagedTable {
    /// The lines of one page (with the header on the first).
    pub fn page(&mut self, headers: &[&str], rows: &[Vec<String>]) -> String {
        if self.widths.len() < headers.len() {
            self.widths.resize(headers.len(), 0);
        }
        for (width, header) in self.widths.iter_mut().zip(headers) {
            *width = (*width).max(header.chars().count());
        }
        for row in rows {
            for (width, cell) in self.widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut text = String::new();
        let header_row: Vec<String> = headers.iter().map(|header| header.to_string()).collect();
        let header = (!self.started).then_some(&header_row);
        self.started = true;
        for row in header.into_iter().chain(rows) {
            let mut line = String::new();
            for (index, (cell, width)) in row.iter().zip(&self.widths).enumerate() {
                if index > 0 {
                    line.push_str(COLUMN_GAP);
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', width.saturating_sub(cell.chars().count())));
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// The reason of the Ready condition, or nothing.
fn ready_reason(conditions: &[pb::Condition]) -> String {
    conditions
        .iter()
        .find(|condition| condition.r#type == "Ready")
        .map(|condition| condition.reason.clone())
        .unwrap_or_default()
}

/// The header and one row per object, as `vipctl get vip` prints them.
pub fn vip_rows(vips: &[pb::Vip], wide: bool) -> Rows {
    let mut headers = vec!["NAME", "NAMESPACE", "V4IP", "V6IP", "MAC", "SUBNET", "TYPE", "READY"];
    if wide {
        headers.extend(["PARENTS", "HOLDER", "REASON"]);
    }
    let rows: Vec<Vec<String>> = vips
        .iter()
        .map(|vip| {
            let status = vip.status.clone().unwrap_or_default();
            // What the VIP holds (its status), never what it asked for: a pending VIP's
            // requested address shown here read as a second owner of a held one.
            let mut row = vec![
                vip.name.clone(),
                vip.namespace.clone(),
                status.v4ip.clone(),
                status.v6ip.clone(),
                status.mac.clone(),
                vip.subnet.clone(),
                vip.r#type.clone(),
                status.ready.to_string(),
            ];
            if wide {
                row.push(status.parents.join(","));
                row.push(
                    status
                        .holder
                        .map(|holder| format!("{}/{}", holder.namespace, holder.name))
                        .unwrap_or_default(),
                );
                row.push(ready_reason(&status.conditions));
            }
            row
        })
        .collect();
    (headers, rows)
}

/// The header and one row per object, as `vipctl get subnet` prints them.
pub fn subnet_rows(subnets: &[pb::Subnet], wide: bool) -> Rows {
    let mut headers = vec![
        "NAME", "SWITCH", "V4CIDR", "V6CIDR", "GATEWAY", "EXCLUDED", "USED", "FREE",
    ];
    if wide {
        headers.push("STRATEGY");
    }
    let rows: Vec<Vec<String>> = subnets
        .iter()
        .map(|subnet| {
            let status = subnet.status.unwrap_or_default();
            // One count per family the subnet has, IPv4 first, as the gateways are listed.
            let per_family = |v4: u64, v6: u64| {
                let mut counts = Vec::new();
                if !subnet.cidr_v4.is_empty() {
                    counts.push(v4.to_string());
                }
                if !subnet.cidr_v6.is_empty() {
                    counts.push(v6.to_string());
                }
                counts.join(",")
            };
            let mut row = vec![
                subnet.name.clone(),
                or(&subnet.logical_switch, &subnet.name),
                subnet.cidr_v4.clone(),
                subnet.cidr_v6.clone(),
                join_present(&[&subnet.gateway_v4, &subnet.gateway_v6]),
                subnet.exclude_ips.join(","),
                per_family(status.v4_used, status.v6_used),
                per_family(status.v4_free, status.v6_free),
            ];
            if wide {
                row.push(strategy_name(subnet.strategy).to_string());
            }
            row
        })
        .collect();
    (headers, rows)
}

/// The header and one row per object, as `vipctl get rule` prints them.
pub fn rule_rows(rules: &[pb::SwitchLbRule], wide: bool) -> Rows {
    let mut headers = vec!["NAME", "VIP", "ADDRESSES", "PORTS", "BACKENDS", "READY"];
    if wide {
        headers.extend(["NAMESPACE", "SELECTOR", "AFFINITY", "HEALTHCHECK", "REASON"]);
    }
    let rows: Vec<Vec<String>> = rules
        .iter()
        .map(|rule| {
            let status = rule.status.clone().unwrap_or_default();
            let ports: Vec<String> = rule
                .ports
                .iter()
                .map(|port| {
                    let target = if port.target_port == 0 {
                        port.port
                    } else {
                        port.target_port
                    };
                    format!("{}:{}/{}", port.port, target, protocol_name(port.protocol))
                })
                .collect();
            let mut row = vec![
                rule.name.clone(),
                rule.vip.clone(),
                status.vips.join(","),
                ports.join(","),
                status.backends.join(","),
                status.ready.to_string(),
            ];
            if wide {
                row.push(rule.namespace.clone());
                row.push(selector_strings(&rule.selector, &rule.selector_labels).join(","));
                row.push(affinity_name(rule.session_affinity).to_string());
                row.push(rule.health_check.to_string());
                row.push(ready_reason(&status.conditions));
            }
            row
        })
        .collect();
    (headers, rows)
}

/// The header and one row per object, as `vipctl get pod` prints them.
pub fn pod_rows(pods: &[pb::Pod], wide: bool) -> Rows {
    let mut headers = vec!["NAME", "NAMESPACE", "OWNER", "IPS", "MAC", "SUBNET", "BOUND"];
    if wide {
        headers.extend(["PORTS", "VIPS", "GATEWAYS"]);
    }
    let rows: Vec<Vec<String>> = pods
        .iter()
        .map(|pod| {
            let per_nic = |field: fn(&pb::BoundNic) -> String| {
                pod.nics
                    .iter()
                    .map(field)
                    .filter(|text| !text.is_empty())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let mut row = vec![
                pod.name.clone(),
                pod.namespace.clone(),
                owner_name(pod.owner_kind).to_string(),
                per_nic(|nic| nic.addresses.join(",")),
                per_nic(|nic| nic.mac.clone()),
                per_nic(|nic| nic.subnet.clone()),
                pod.bound.to_string(),
            ];
            if wide {
                row.push(per_nic(|nic| nic.port_name.clone()));
                row.push(per_nic(|nic| nic.vip.clone()));
                row.push(per_nic(|nic| nic.gateways.join(",")));
            }
            row
        })
        .collect();
    (headers, rows)
}

/// Several objects as kubectl prints them: a `List`.
pub fn list_object(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

pub fn vip_object(vip: &pb::Vip) -> Value {
    let mut spec = Map::new();
    spec.insert("subnet".into(), json!(vip.subnet));
    spec.insert("type".into(), json!(vip.r#type));
    insert_text(&mut spec, "namespace", &vip.namespace);
    insert_text(&mut spec, "v4ip", &vip.v4ip);
    insert_text(&mut spec, "v6ip", &vip.v6ip);
    insert_text(&mut spec, "macAddress", &vip.mac_address);
    let selector = selector_strings(&vip.selector, &vip.selector_labels);
    if !selector.is_empty() {
        spec.insert("selector".into(), json!(selector));
    }
    let status = vip.status.clone().unwrap_or_default();
    json!({
        "apiVersion": KUBE_OVN_API_VERSION,
        "kind": "Vip",
        "metadata": {"name": vip.name},
        "spec": spec,
        "status": {
            "v4ip": status.v4ip,
            "v6ip": status.v6ip,
            "mac": status.mac,
            "ready": status.ready,
            "parents": status.parents,
            "holder": status.holder.map(|holder| json!({"namespace": holder.namespace, "name": holder.name})),
            "conditions": conditions(&status.conditions),
        },
    })
}

pub fn subnet_object(subnet: &pb::Subnet) -> Value {
    let mut spec = Map::new();
    spec.insert(
        "cidrBlock".into(),
        json!(join_present(&[&subnet.cidr_v4, &subnet.cidr_v6])),
    );
    let gateway = join_present(&[&subnet.gateway_v4, &subnet.gateway_v6]);
    insert_text(&mut spec, "gateway", &gateway);
    if !subnet.exclude_ips.is_empty() {
        spec.insert("excludeIps".into(), json!(subnet.exclude_ips));
    }
    insert_text(&mut spec, "logicalSwitch", &subnet.logical_switch);
    insert_text(&mut spec, "vpc", &subnet.vpc);
    spec.insert("allocationStrategy".into(), json!(strategy_name(subnet.strategy)));
    let status = subnet.status.unwrap_or_default();
    json!({
        "apiVersion": KUBE_OVN_API_VERSION,
        "kind": "Subnet",
        "metadata": {"name": subnet.name},
        "spec": spec,
        // Kube-OVN's names for the same counts.
        "status": {
            "v4usingIPs": status.v4_used,
            "v4availableIPs": status.v4_free,
            "v6usingIPs": status.v6_used,
            "v6availableIPs": status.v6_free,
        },
    })
}

pub fn rule_object(rule: &pb::SwitchLbRule) -> Value {
    let mut spec = Map::new();
    spec.insert("vip".into(), json!(rule.vip));
    insert_text(&mut spec, "namespace", &rule.namespace);
    let selector = selector_strings(&rule.selector, &rule.selector_labels);
    if !selector.is_empty() {
        spec.insert("selector".into(), json!(selector));
    }
    if !rule.endpoints.is_empty() {
        spec.insert("endpoints".into(), json!(rule.endpoints));
    }
    let ports: Vec<Value> = rule
        .ports
        .iter()
        .map(|port| {
            json!({
                "name": port.name,
                "port": port.port,
                "targetPort": if port.target_port == 0 { port.port } else { port.target_port },
                "protocol": protocol_name(port.protocol),
            })
        })
        .collect();
    spec.insert("ports".into(), json!(ports));
    spec.insert("sessionAffinity".into(), json!(affinity_name(rule.session_affinity)));
    if rule.session_affinity == pb::SessionAffinity::ClientIp as i32 && rule.session_affinity_timeout != 0 {
        spec.insert(
            "sessionAffinityConfig".into(),
            json!({"clientIP": {"timeoutSeconds": rule.session_affinity_timeout}}),
        );
    }
    spec.insert("healthCheck".into(), json!(rule.health_check));
    let status = rule.status.clone().unwrap_or_default();
    json!({
        "apiVersion": KUBE_OVN_API_VERSION,
        "kind": "SwitchLBRule",
        "metadata": {"name": rule.name},
        "spec": spec,
        "status": {
            "ready": status.ready,
            "vips": status.vips,
            "backends": status.backends,
            "conditions": conditions(&status.conditions),
        },
    })
}

pub fn pod_object(pod: &pb::Pod) -> Value {
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(pod.name));
    metadata.insert("namespace".into(), json!(pod.namespace));
    if !pod.labels.is_empty() {
        metadata.insert("labels".into(), json!(sorted(&pod.labels)));
    }
    if !pod.annotations.is_empty() {
        metadata.insert("annotations".into(), json!(sorted(&pod.annotations)));
    }
    let owner = match pb::OwnerKind::try_from(pod.owner_kind) {
        Ok(pb::OwnerKind::StatefulSet) => Some("StatefulSet"),
        Ok(pb::OwnerKind::VirtualMachine) => Some("VirtualMachineInstance"),
        _ => None,
    };
    if let Some(kind) = owner {
        metadata.insert(
            "ownerReferences".into(),
            json!([{"kind": kind, "name": pod.owner_name, "controller": true}]),
        );
    }
    let nics: Vec<Value> = pod
        .nics
        .iter()
        .map(|nic| {
            json!({
                "interface": nic.interface,
                "subnet": nic.subnet,
                "portName": nic.port_name,
                "addresses": nic.addresses,
                "mac": nic.mac,
                "gateways": nic.gateways,
                "vip": nic.vip,
            })
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "status": {"bound": pod.bound, "nics": nics},
    })
}

fn conditions(conditions: &[pb::Condition]) -> Vec<Value> {
    conditions
        .iter()
        .map(|condition| {
            json!({
                "type": condition.r#type,
                "status": condition.status,
                "reason": condition.reason,
                "message": condition.message,
                "lastTransitionTime": condition.last_transition_time.as_ref().map(ToString::to_string),
            })
        })
        .collect()
}

/// Both selector forms as Kube-OVN's `"key: value"` strings, sorted by key.
fn selector_strings(strings: &[String], labels: &HashMap<String, String>) -> Vec<String> {
    selector_map(strings, labels)
        .iter()
        .map(|(key, value)| format!("{key}: {value}"))
        .collect()
}

fn insert_text(map: &mut Map<String, Value>, key: &str, text: &str) {
    if !text.is_empty() {
        map.insert(key.into(), json!(text));
    }
}

fn or(first: &str, second: &str) -> String {
    if first.is_empty() { second } else { first }.to_string()
}

fn join_present(parts: &[&String]) -> String {
    parts
        .iter()
        .filter(|part| !part.is_empty())
        .map(|part| part.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn sorted(map: &HashMap<String, String>) -> BTreeMap<&String, &String> {
    map.iter().collect()
}

pub fn protocol_name(protocol: i32) -> &'static str {
    match pb::Protocol::try_from(protocol) {
        Ok(pb::Protocol::Tcp) => "TCP",
        Ok(pb::Protocol::Udp) => "UDP",
        Ok(pb::Protocol::Sctp) => "SCTP",
        Err(_) => "unknown",
    }
}

fn affinity_name(affinity: i32) -> &'static str {
    match pb::SessionAffinity::try_from(affinity) {
        Ok(pb::SessionAffinity::ClientIp) => "ClientIP",
        Ok(pb::SessionAffinity::None) => "None",
        Err(_) => "unknown",
    }
}

fn strategy_name(strategy: i32) -> &'static str {
    match pb::AllocationStrategy::try_from(strategy) {
        Ok(pb::AllocationStrategy::Random) => "Random",
        Ok(pb::AllocationStrategy::Sequential) => "Sequential",
        Err(_) => "unknown",
    }
}

fn owner_name(owner: i32) -> &'static str {
    match pb::OwnerKind::try_from(owner) {
        Ok(pb::OwnerKind::Other) => "",
        Ok(pb::OwnerKind::StatefulSet) => "StatefulSet",
        Ok(pb::OwnerKind::VirtualMachine) => "VirtualMachine",
        Err(_) => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::manifest::manifests_to_requests;
    use crate::cli::ApplyRequest;

    fn printed((headers, rows): Rows) -> String {
        table(&headers, &rows)
    }
    fn vip_table(vips: &[pb::Vip], wide: bool) -> String {
        printed(vip_rows(vips, wide))
    }
    fn subnet_table(subnets: &[pb::Subnet], wide: bool) -> String {
        printed(subnet_rows(subnets, wide))
    }
    fn rule_table(rules: &[pb::SwitchLbRule], wide: bool) -> String {
        printed(rule_rows(rules, wide))
    }
    fn pod_table(pods: &[pb::Pod], wide: bool) -> String {
        printed(pod_rows(pods, wide))
    }

    #[test]
    fn paged_table_prints_the_header_once_and_keeps_columns_as_wide_as_seen() {
        let mut paged = PagedTable::default();
        let first = paged.page(&["NAME", "V4IP"], &[vec!["a".into(), "10.0.0.1".into()]]);
        let second = paged.page(&["NAME", "V4IP"], &[vec!["b".into(), "10.0.0.2".into()]]);
        assert_eq!(first, "NAME   V4IP\na      10.0.0.1\n");
        assert_eq!(second, "b      10.0.0.2\n");
    }

    fn dynamic_vip() -> pb::Vip {
        pb::Vip {
            name: "vip-dynamic-01".into(),
            subnet: "ovn-default".into(),
            status: Some(pb::VipStatus {
                v4ip: "10.16.0.12".into(),
                mac: "00:00:00:f0:db:25".into(),
                ready: true,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn aap_vip() -> pb::Vip {
        pb::Vip {
            name: "vip-aap".into(),
            namespace: "default".into(),
            subnet: "dual".into(),
            selector: vec!["app: aap1".into()],
            status: Some(pb::VipStatus {
                v4ip: "10.17.0.100".into(),
                v6ip: "fd00:10:17::100".into(),
                mac: "00:00:00:e2:ab:0c".into(),
                parents: vec!["busybox.default".into(), "busybox2.default".into()],
                conditions: vec![pb::Condition {
                    r#type: "Ready".into(),
                    status: "False".into(),
                    reason: "Pending".into(),
                    message: "waiting for OVN NB".into(),
                    last_transition_time: Some(prost_types::Timestamp {
                        seconds: 1_700_000_000,
                        nanos: 0,
                    }),
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn vip_table_is_aligned_like_kubectl() {
        let expected = "\
NAME             NAMESPACE   V4IP          V6IP              MAC                 SUBNET        TYPE   READY
vip-dynamic-01               10.16.0.12                      00:00:00:f0:db:25   ovn-default          true
vip-aap          default     10.17.0.100   fd00:10:17::100   00:00:00:e2:ab:0c   dual                 false
";
        assert_eq!(vip_table(&[dynamic_vip(), aap_vip()], false), expected);
    }

    #[test]
    fn wide_vip_table_adds_parents_holder_and_reason() {
        let mut held = dynamic_vip();
        if let Some(status) = held.status.as_mut() {
            status.holder = Some(pb::PodReference {
                namespace: "default".into(),
                name: "static-ip".into(),
            });
        }
        let expected = "\
NAME             NAMESPACE   V4IP          V6IP              MAC                 SUBNET        TYPE   READY   PARENTS                            HOLDER              REASON
vip-dynamic-01               10.16.0.12                      00:00:00:f0:db:25   ovn-default          true                                       default/static-ip
vip-aap          default     10.17.0.100   fd00:10:17::100   00:00:00:e2:ab:0c   dual                 false   busybox.default,busybox2.default                       Pending
";
        assert_eq!(vip_table(&[held, aap_vip()], true), expected);
    }

    /// A pending VIP shows what it holds (nothing yet), not the address it asked for, which read
    /// as a second owner of the address another VIP holds; `-o wide` says why it waits.
    #[test]
    fn a_pending_vip_shows_no_address_and_its_reason() {
        let pending = pb::Vip {
            name: "q2".into(),
            subnet: "net4".into(),
            v4ip: "10.90.0.5".into(),
            status: Some(pb::VipStatus {
                conditions: vec![pb::Condition {
                    r#type: "Ready".into(),
                    status: "False".into(),
                    reason: "AddressTaken".into(),
                    message: "10.90.0.5 is held by vip q1".into(),
                    last_transition_time: None,
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let table = vip_table(std::slice::from_ref(&pending), true);
        assert!(!table.contains("10.90.0.5"), "{table}");
        assert!(
            table
                .lines()
                .nth(1)
                .is_some_and(|row| row.trim_end().ends_with("AddressTaken")),
            "{table}"
        );
    }

    #[test]
    fn subnet_table_counts_per_family() {
        let subnets = [
            pb::Subnet {
                name: "ovn-default".into(),
                logical_switch: "ovn-default".into(),
                cidr_v4: "10.16.0.0/16".into(),
                gateway_v4: "10.16.0.1".into(),
                exclude_ips: vec!["10.16.0.2..10.16.0.10".into()],
                status: Some(pb::SubnetStatus {
                    v4_used: 3,
                    v4_free: 65520,
                    ..Default::default()
                }),
                ..Default::default()
            },
            pb::Subnet {
                name: "dual".into(),
                logical_switch: "ls-dual".into(),
                cidr_v4: "10.17.0.0/24".into(),
                cidr_v6: "fd00:10:17::/64".into(),
                gateway_v4: "10.17.0.1".into(),
                gateway_v6: "fd00:10:17::1".into(),
                status: Some(pb::SubnetStatus {
                    v4_used: 1,
                    v4_free: 252,
                    v6_used: 1,
                    v6_free: u64::MAX,
                }),
                ..Default::default()
            },
        ];
        let expected = "\
NAME          SWITCH        V4CIDR         V6CIDR            GATEWAY                   EXCLUDED                USED   FREE
ovn-default   ovn-default   10.16.0.0/16                     10.16.0.1                 10.16.0.2..10.16.0.10   3      65520
dual          ls-dual       10.17.0.0/24   fd00:10:17::/64   10.17.0.1,fd00:10:17::1                           1,1    252,18446744073709551615
";
        assert_eq!(subnet_table(&subnets, false), expected);
    }

    #[test]
    fn rule_and_pod_tables() {
        let rule = pb::SwitchLbRule {
            name: "slr".into(),
            vip: "slr-01".into(),
            ports: vec![pb::LbPort {
                name: "dns".into(),
                port: 53,
                target_port: 5353,
                protocol: pb::Protocol::Udp as i32,
            }],
            status: Some(pb::SwitchLbRuleStatus {
                ready: true,
                vips: vec!["10.16.0.20".into()],
                backends: vec!["10.16.0.5".into(), "10.16.0.6".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let expected = "\
NAME   VIP      ADDRESSES    PORTS         BACKENDS              READY
slr    slr-01   10.16.0.20   53:5353/UDP   10.16.0.5,10.16.0.6   true
";
        assert_eq!(rule_table(std::slice::from_ref(&rule), false), expected);
        // -o wide ends with the Ready condition's reason, as for VIPs.
        let mut waiting = rule;
        if let Some(status) = waiting.status.as_mut() {
            status.ready = false;
            status.conditions = vec![pb::Condition {
                r#type: "Ready".into(),
                status: "False".into(),
                reason: "NoBackends".into(),
                ..Default::default()
            }];
        }
        let wide = rule_table(&[waiting], true);
        let header = wide.lines().next().unwrap_or_default();
        assert!(header.ends_with("HEALTHCHECK   REASON"), "{wide}");
        assert!(
            wide.lines().nth(1).is_some_and(|row| row.ends_with("NoBackends")),
            "{wide}"
        );

        let pod = pb::Pod {
            namespace: "default".into(),
            name: "web-0".into(),
            owner_kind: pb::OwnerKind::StatefulSet as i32,
            owner_name: "web".into(),
            nics: vec![pb::BoundNic {
                interface: "eth0".into(),
                subnet: "dual".into(),
                port_name: "web-0.default".into(),
                addresses: vec!["10.17.0.5/24".into(), "fd00:10:17::5/64".into()],
                mac: "00:00:00:aa:bb:cc".into(),
                gateways: vec!["10.17.0.1".into()],
                vip: String::new(),
                ..Default::default()
            }],
            bound: true,
            ..Default::default()
        };
        let expected = "\
NAME    NAMESPACE   OWNER         IPS                             MAC                 SUBNET   BOUND
web-0   default     StatefulSet   10.17.0.5/24,fd00:10:17::5/64   00:00:00:aa:bb:cc   dual     true
";
        assert_eq!(pod_table(&[pod], false), expected);
    }

    #[test]
    fn an_empty_list_is_just_the_header() {
        assert_eq!(
            vip_table(&[], false),
            "NAME   NAMESPACE   V4IP   V6IP   MAC   SUBNET   TYPE   READY\n"
        );
    }

    #[test]
    fn objects_print_as_manifests_that_apply_back() {
        let rule = pb::SwitchLbRule {
            name: "sticky".into(),
            vip: "1.1.1.1".into(),
            namespace: "default".into(),
            selector_labels: [("app".to_string(), "web".to_string())].into(),
            ports: vec![pb::LbPort {
                name: "http".into(),
                port: 80,
                target_port: 8080,
                protocol: pb::Protocol::Tcp as i32,
            }],
            session_affinity: pb::SessionAffinity::ClientIp as i32,
            session_affinity_timeout: 10_800,
            ..Default::default()
        };
        let subnet = pb::Subnet {
            name: "dual".into(),
            logical_switch: "dual".into(),
            cidr_v4: "10.17.0.0/24".into(),
            cidr_v6: "fd00:10:17::/64".into(),
            gateway_v4: "10.17.0.1".into(),
            gateway_v6: "fd00:10:17::1".into(),
            exclude_ips: vec!["10.17.0.2".into()],
            strategy: pb::AllocationStrategy::Sequential as i32,
            status: Some(pb::SubnetStatus::default()),
            vpc: "vpc1".into(),
            revision: 0,
        };
        let pod = pb::Pod {
            namespace: "default".into(),
            name: "busybox".into(),
            labels: [("app".to_string(), "aap1".to_string())].into(),
            annotations: [("ovn.kubernetes.io/aaps".to_string(), "vip-aap".to_string())].into(),
            owner_kind: pb::OwnerKind::VirtualMachine as i32,
            owner_name: "vm1".into(),
            nics: Vec::new(),
            bound: true,
            revision: 0,
        };
        let objects = vec![
            vip_object(&dynamic_vip()),
            vip_object(&aap_vip()),
            subnet_object(&subnet),
            rule_object(&rule),
            pod_object(&pod),
        ];
        let yaml = match serde_norway::to_string(&list_object(objects)) {
            Ok(yaml) => yaml,
            Err(error) => panic!("{error}"),
        };
        let requests = match manifests_to_requests(&yaml) {
            Ok(requests) => requests,
            Err(error) => panic!("{error}\n{yaml}"),
        };
        let [ApplyRequest::Vip(dynamic), ApplyRequest::Vip(aap), ApplyRequest::Subnet(subnet_back), ApplyRequest::SwitchLbRule(rule_back), ApplyRequest::Pod(pod_back)] =
            requests.as_slice()
        else {
            panic!("unexpected requests: {requests:?}\n{yaml}")
        };
        use crate::cli::apply::*;
        assert!(vip_unchanged(dynamic, &dynamic_vip()), "{yaml}");
        assert!(vip_unchanged(aap, &aap_vip()), "{yaml}");
        assert!(subnet_unchanged(subnet_back, &subnet), "{yaml}");
        assert!(rule_unchanged(rule_back, &rule), "{yaml}");
        assert_eq!(pod_back.owner_kind, pb::OwnerKind::VirtualMachine as i32);
        assert_eq!(pod_back.owner_name, "vm1");
        assert_eq!(pod_back.labels, pod.labels);
        assert_eq!(pod_back.annotations, pod.annotations);
        assert!(yaml.contains("lastTransitionTime: 2023-11-14T22:13:20Z"), "{yaml}");
    }
}
