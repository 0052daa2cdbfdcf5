//! What NB should hold, in the project's terms (a NIC's port, an AAP VIP's virtual port, a rule's
//! load balancer), and how each is spelled in NB's columns. The sync computes these; only this
//! module turns them into OVN strings (ovn-nb(5)).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use uuid::Uuid;

use super::{string_map_is, string_set_is, LoadBalancer, Owner, PortRow};
use crate::model::{MacAddr, Protocol};
use compact_str::CompactString;

use crate::ovsdb::{Row, Value};

/// One Logical_Switch_Port the daemon wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPort {
    /// The port's name (unique in NB); inline up to 24 bytes (the first pass holds one per VIP).
    pub name: CompactString,
    /// The logical switch the port belongs on.
    pub switch: CompactString,
    pub owner: Owner,
    pub kind: PortKind,
}

/// What a port is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortKind {
    /// A pod NIC: `addresses` is its MAC and addresses; `port_security` adds `extra_security`
    /// (the addresses of the AAP VIPs the pod may carry on this NIC).
    Nic {
        mac: MacAddr,
        ips: Vec<IpAddr>,
        extra_security: Vec<IpAddr>,
    },
    /// One address family of an AAP VIP: `type=virtual` with `options:virtual-ip` and
    /// `options:virtual-parents` (the parent port names, comma-separated; omitted when none).
    Virtual { ip: IpAddr, parents: Vec<String> },
    /// A switch_lb_vip's reservation record: a port without addresses, so no second
    /// `ls_in_l2_lkup` destination for the router MAC (Kube-OVN #5700).
    Reservation,
}

/// The columns of a Logical_Switch_Port the daemon writes and compares.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PortColumns {
    port_type: String,
    addresses: BTreeSet<String>,
    port_security: BTreeSet<String>,
    options: BTreeMap<String, String>,
    external_ids: BTreeMap<String, String>,
}

fn joined(parts: impl IntoIterator<Item = String>) -> String {
    parts.into_iter().collect::<Vec<_>>().join(" ")
}

impl DesiredPort {
    fn columns(&self) -> PortColumns {
        let mut columns = PortColumns {
            port_type: String::new(),
            addresses: BTreeSet::new(),
            port_security: BTreeSet::new(),
            options: BTreeMap::new(),
            external_ids: self.owner.external_ids(),
        };
        match &self.kind {
            PortKind::Nic {
                mac,
                ips,
                extra_security,
            } => {
                // ovn-nb(5) `addresses`/`port_security`: "MAC IP…", IPv6 without brackets.
                let ips: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
                columns.addresses =
                    BTreeSet::from([joined(std::iter::once(mac.to_string()).chain(ips.iter().cloned()))]);
                columns.port_security = BTreeSet::from([joined(
                    std::iter::once(mac.to_string())
                        .chain(ips)
                        .chain(extra_security.iter().map(IpAddr::to_string)),
                )]);
            }
            PortKind::Virtual { ip, parents } => {
                columns.port_type = "virtual".into();
                columns.options.insert("virtual-ip".into(), ip.to_string());
                if !parents.is_empty() {
                    columns.options.insert("virtual-parents".into(), parents.join(","));
                }
            }
            PortKind::Reservation => {}
        }
        columns
    }

    /// The row to insert, or to update an owned port with.
    pub(super) fn row(&self) -> Row {
        let columns = self.columns();
        Row::from([
            ("name".to_string(), Value::string(self.name.clone())),
            ("type".to_string(), Value::string(columns.port_type)),
            ("addresses".to_string(), Value::set(columns.addresses)),
            ("port_security".to_string(), Value::set(columns.port_security)),
            ("options".to_string(), Value::string_map(&columns.options)),
            ("external_ids".to_string(), Value::string_map(&columns.external_ids)),
        ])
    }

    /// Whether the NB row holds exactly what this port wants (compared in the cache).
    pub(super) fn matches(&self, actual: &PortRow) -> bool {
        let columns = self.columns();
        actual.port_type() == columns.port_type
            && string_set_is(actual.row, "addresses", &columns.addresses)
            && string_set_is(actual.row, "port_security", &columns.port_security)
            && string_map_is(actual.row, "options", &columns.options)
            && string_map_is(actual.row, "external_ids", &columns.external_ids)
    }
}

/// One OVN load balancer: a switch-LB rule's ports of one protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredLoadBalancer {
    pub name: String,
    pub owner: Owner,
    /// The logical switches the balancer is attached to (those of its clients and backends).
    pub switches: BTreeSet<String>,
    /// The logical router (its `_uuid`) the balancer is also attached to, when its frontend is
    /// inside a switch's subnet: ovn-northd(8), `lr_in_ip_input`, makes the router port answer
    /// ARP requests and IPv6 neighbor solicitations for the load-balancer VIPs of its router with
    /// its own MAC, and makes the switch send those requests to the router port
    /// (`ls_in_l2_lkup`, priority 80). No second L2 destination for the router MAC is needed.
    pub router: Option<Uuid>,
    pub protocol: Protocol,
    /// Frontend → backends (of the frontend's family, in order).
    pub vips: BTreeMap<SocketAddr, Vec<SocketAddr>>,
    /// ClientIP affinity in seconds (`selection_fields=ip_src`, `options:affinity_timeout`).
    pub affinity_timeout: Option<u32>,
    /// One health check per frontend.
    pub health_check: bool,
    /// Health-checked backend → (its logical port, the health-check source address), when health
    /// checks are on (`ip_port_mappings`).
    pub monitored: BTreeMap<IpAddr, (String, IpAddr)>,
}

/// An address as OVN's load-balancer columns spell it where a port or a name may follow: an
/// IPv6 address in square brackets (ovn-nb(5): `vips` keys and values, `ip_port_mappings` keys
/// and the source IP in its values, Load_Balancer_Health_Check `vip`), IPv4 as it is.
pub fn ovn_lb_address(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// `<address>:<port>` in OVN's load-balancer syntax (`[v6]:port` for IPv6).
fn endpoint(address: &SocketAddr) -> String {
    format!("{}:{}", ovn_lb_address(address.ip()), address.port())
}

/// The columns of a Load_Balancer the daemon writes and compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancerColumns {
    pub vips: BTreeMap<String, String>,
    pub selection_fields: BTreeSet<String>,
    pub options: BTreeMap<String, String>,
    pub ip_port_mappings: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
    /// The `vip` of each Load_Balancer_Health_Check (equal to its `vips` key, brackets included).
    pub health_checks: BTreeSet<String>,
}

impl DesiredLoadBalancer {
    /// The balancer in NB's spelling.
    pub fn columns(&self) -> LoadBalancerColumns {
        let vips: BTreeMap<String, String> = self
            .vips
            .iter()
            .map(|(frontend, backends)| {
                (
                    endpoint(frontend),
                    backends.iter().map(endpoint).collect::<Vec<_>>().join(","),
                )
            })
            .collect();
        let (selection_fields, options) = match self.affinity_timeout {
            Some(timeout) => (
                BTreeSet::from(["ip_src".to_string()]),
                BTreeMap::from([("affinity_timeout".to_string(), timeout.to_string())]),
            ),
            None => (BTreeSet::new(), BTreeMap::new()),
        };
        // ovn-nb(5): `[2001::1]`=`sw0-p1:[2002::1]` for IPv6; without the brackets ovn-northd
        // finds no mapping, makes no Service_Monitor and the VIP's flows drop everything.
        let ip_port_mappings = self
            .monitored
            .iter()
            .map(|(backend, (port, source))| (ovn_lb_address(*backend), format!("{port}:{}", ovn_lb_address(*source))))
            .collect();
        let health_checks = if self.health_check {
            vips.keys().cloned().collect()
        } else {
            BTreeSet::new()
        };
        LoadBalancerColumns {
            vips,
            selection_fields,
            options,
            ip_port_mappings,
            external_ids: self.owner.external_ids(),
            health_checks,
        }
    }

    /// The row to insert or update with (without `health_check`, which the plan adds).
    pub(super) fn row(&self, columns: &LoadBalancerColumns) -> Row {
        Row::from([
            (
                "ip_port_mappings".to_string(),
                Value::string_map(&columns.ip_port_mappings),
            ),
            ("name".to_string(), Value::string(self.name.clone())),
            ("protocol".to_string(), Value::set([self.protocol.as_str().to_string()])),
            ("vips".to_string(), Value::string_map(&columns.vips)),
            (
                "selection_fields".to_string(),
                Value::set(columns.selection_fields.iter().cloned()),
            ),
            ("options".to_string(), Value::string_map(&columns.options)),
            ("external_ids".to_string(), Value::string_map(&columns.external_ids)),
        ])
    }

    /// Whether the NB row (health checks aside) holds exactly what this balancer wants.
    pub(super) fn matches(&self, actual: &LoadBalancer, columns: &LoadBalancerColumns) -> bool {
        actual.name == self.name
            && actual.protocol.as_deref() == Some(self.protocol.as_str())
            && actual.vips == columns.vips
            && actual.selection_fields == columns.selection_fields
            && actual.options == columns.options
            && actual.external_ids == columns.external_ids
            && actual.ip_port_mappings == columns.ip_port_mappings
    }
}

/// The options of every health check the daemon creates (OVN's defaults, spelled out).
pub(super) fn health_check_options() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("interval".to_string(), "5".to_string()),
        ("timeout".to_string(), "20".to_string()),
        ("success_count".to_string(), "3".to_string()),
        ("failure_count".to_string(), "3".to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PodRef;

    /// Issue #16 case 1: every load-balancer string that carries an IPv6 address uses OVN's
    /// bracketed syntax (ovn-nb(5) `ip_port_mappings`: `[2001::1]`=`sw0-p1:[2002::1]`).
    #[test]
    fn ipv6_in_load_balancer_rows_uses_ovn_brackets() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let lb = DesiredLoadBalancer {
            name: "web-tcp".into(),
            owner: Owner::Rule {
                rule: "web".into(),
                protocol: Protocol::Tcp,
            },
            switches: BTreeSet::from(["dual".to_string()]),
            router: None,
            protocol: Protocol::Tcp,
            vips: BTreeMap::from([
                (
                    "10.17.0.100:80".parse().unwrap(),
                    vec!["10.17.0.5:8080".parse().unwrap()],
                ),
                (
                    "[fd00:10:17::100]:80".parse().unwrap(),
                    vec!["[fd00:10:17::5]:8080".parse().unwrap()],
                ),
            ]),
            affinity_timeout: None,
            health_check: true,
            monitored: BTreeMap::from([
                (ip("10.17.0.5"), ("web-0.default".to_string(), ip("10.17.0.2"))),
                (ip("fd00:10:17::5"), ("web-0.default".to_string(), ip("fd00:10:17::2"))),
            ]),
        };
        let columns = lb.columns();
        assert_eq!(
            columns.vips,
            BTreeMap::from([
                ("10.17.0.100:80".to_string(), "10.17.0.5:8080".to_string()),
                ("[fd00:10:17::100]:80".to_string(), "[fd00:10:17::5]:8080".to_string()),
            ])
        );
        assert_eq!(
            columns.ip_port_mappings,
            BTreeMap::from([
                ("10.17.0.5".to_string(), "web-0.default:10.17.0.2".to_string()),
                (
                    "[fd00:10:17::5]".to_string(),
                    "web-0.default:[fd00:10:17::2]".to_string()
                ),
            ])
        );
        // A health check's vip must equal its `vips` key, brackets included.
        assert_eq!(
            columns.health_checks,
            BTreeSet::from(["10.17.0.100:80".to_string(), "[fd00:10:17::100]:80".to_string()])
        );
        assert_eq!(columns.external_ids[super::super::OWNER_KEY], "slr/web/tcp");
    }

    /// A port is compared in place in the cached row: the row it writes matches, and any column
    /// it writes, changed, does not.
    #[test]
    fn a_port_matches_the_row_it_writes_in_place() {
        let port = DesiredPort {
            name: "v".into(),
            switch: "s".into(),
            owner: Owner::Vip("v".into()),
            kind: PortKind::Virtual {
                ip: "10.0.0.7".parse().unwrap(),
                parents: vec!["a".into(), "b".into()],
            },
        };
        let row = port.row();
        let uuid = Uuid::from_u128(1);
        assert!(port.matches(&PortRow { uuid, row: &row }));
        for (column, value) in [
            ("type", Value::string("")),
            ("addresses", Value::set(["02:00:00:00:00:01 10.0.0.7"])),
            ("port_security", Value::set(["x"])),
            ("options", Value::map([("virtual-ip", "10.0.0.7")])),
            ("external_ids", Value::map([("vendor", "ovn-vipd")])),
        ] {
            let mut changed = row.clone();
            changed.insert(column.to_string(), value);
            assert!(!port.matches(&PortRow { uuid, row: &changed }), "{column}");
        }
        // A column NB does not hold compares as empty.
        let mut without = row.clone();
        without.remove("addresses");
        assert!(port.matches(&PortRow { uuid, row: &without }));
    }

    #[test]
    fn ports_in_ovn_spelling() {
        let nic = DesiredPort {
            name: "web-0.default".into(),
            switch: "dual".into(),
            owner: Owner::Nic {
                pod: PodRef {
                    namespace: "default".into(),
                    name: "web-0".into(),
                },
                interface: "eth0".into(),
            },
            kind: PortKind::Nic {
                mac: "02:00:00:00:00:05".parse().unwrap(),
                ips: vec!["10.17.0.5".parse().unwrap(), "fd00:10:17::5".parse().unwrap()],
                extra_security: vec!["10.17.0.9".parse().unwrap()],
            },
        };
        let columns = nic.columns();
        assert_eq!(
            columns.addresses,
            BTreeSet::from(["02:00:00:00:00:05 10.17.0.5 fd00:10:17::5".to_string()])
        );
        assert_eq!(
            columns.port_security,
            BTreeSet::from(["02:00:00:00:00:05 10.17.0.5 fd00:10:17::5 10.17.0.9".to_string()])
        );
        let virtual_port = DesiredPort {
            name: "v".into(),
            switch: "dual".into(),
            owner: Owner::Vip("v".into()),
            kind: PortKind::Virtual {
                ip: "fd00:10:17::7".parse().unwrap(),
                parents: vec!["a".into(), "b".into()],
            },
        };
        let columns = virtual_port.columns();
        assert_eq!(columns.port_type, "virtual");
        assert_eq!(columns.options["virtual-ip"], "fd00:10:17::7");
        assert_eq!(columns.options["virtual-parents"], "a,b");
    }
}
