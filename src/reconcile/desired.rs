//! What NB should hold, computed from the registry's objects and, for facts only NB knows (the
//! router port on a subnet's switch), from the NB cache. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::model::{
    aap_parents, aap_vips, eligible_nic, selector_matches, Pod, PodRef, Subnet, SwitchLbRule, Vip, VipType,
};
use crate::nb::{LogicalRouter, LogicalRouterPort, LogicalSwitch, LogicalSwitchPort};

pub use crate::nb::{OWNER_KEY, VENDOR, VENDOR_KEY};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPort {
    pub name: String,
    /// The logical switch the port belongs on.
    pub switch: String,
    pub port_type: String,
    pub addresses: BTreeSet<String>,
    pub port_security: BTreeSet<String>,
    pub options: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
}

/// Why a VIP cannot be made ready, when it cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    NoRouterPort { switch: String },
}

/// Why a switch-LB rule is not Ready: a condition reason and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleBlocked {
    pub reason: &'static str,
    pub message: String,
}

/// One OVN load balancer: a switch-LB rule's ports of one protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredLoadBalancer {
    pub name: String,
    pub switch: String,
    /// The logical router (its `_uuid`) the balancer is also attached to, when its frontend is
    /// inside the switch's subnet: ovn-northd(8), `lr_in_ip_input`, makes the router port answer
    /// ARP requests and IPv6 neighbor solicitations for the load-balancer VIPs of its router with
    /// its own MAC, and makes the switch send those requests to the router port
    /// (`ls_in_l2_lkup`, priority 80). No second L2 destination for the router MAC is needed.
    pub router: Option<uuid::Uuid>,
    pub protocol: String,
    /// `"<vip>:<port>"` (IPv6 `"[vip]:port"`) → `"<backend>:<target>,…"`.
    pub vips: BTreeMap<String, String>,
    pub selection_fields: BTreeSet<String>,
    pub options: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
    /// Backend IP → `"<logical port>:<health-check source IP>"`, when health checks are on
    /// (IPv6 in brackets on both sides: `"[fd00::5]"` → `"web-0.default:[fd00::2]"`).
    pub ip_port_mappings: BTreeMap<String, String>,
    /// One health check per entry of `vips`, when health checks are on.
    pub health_checks: BTreeSet<String>,
}

/// The options of every health check the daemon creates (OVN's defaults, spelled out).
pub fn health_check_options() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("interval".to_string(), "5".to_string()),
        ("timeout".to_string(), "20".to_string()),
        ("success_count".to_string(), "3".to_string()),
        ("failure_count".to_string(), "3".to_string()),
    ])
}

/// A subnet's health-check source addresses.
pub type HealthCheckSources = BTreeMap<String, (Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>)>;

#[derive(Debug, Default, Clone)]
pub struct Desired {
    /// Keyed by the owner mark (`slr/<rule>/<protocol>`): names are not unique in NB.
    pub load_balancers: BTreeMap<String, DesiredLoadBalancer>,
    /// Rules that cannot be realized (or could be written but never reached), and why.
    pub rules_blocked: BTreeMap<String, RuleBlocked>,
    /// Rules whose load balancers are written but which are not Ready yet, and why.
    pub rules_unready: BTreeMap<String, RuleBlocked>,
    /// Logical switch name → subnet name.
    pub switches: BTreeMap<String, String>,
    pub ports: BTreeMap<String, DesiredPort>,
    /// The ports each VIP needs (empty for a plain reserved VIP).
    pub vip_ports: BTreeMap<String, Vec<String>>,
    /// The parent ports of each AAP VIP.
    pub vip_parents: BTreeMap<String, Vec<String>>,
    /// The ports of each bound pod.
    pub pod_ports: BTreeMap<PodRef, Vec<String>>,
    pub blocked: BTreeMap<String, Blocked>,
    /// VIP → the MAC that answers ARP/ND for it when it is not the VIP's own (a switch_lb_vip's
    /// router-port MAC), for its status.
    pub vip_macs: BTreeMap<String, String>,
}

fn owned(owner: String) -> BTreeMap<String, String> {
    BTreeMap::from([
        (VENDOR_KEY.to_string(), VENDOR.to_string()),
        (OWNER_KEY.to_string(), owner),
    ])
}

fn joined(parts: impl IntoIterator<Item = String>) -> String {
    parts.into_iter().collect::<Vec<_>>().join(" ")
}

/// Each switch's router port MAC (what switch_lb_vip ports answer ARP with).
pub type RouterMacs = BTreeMap<String, String>;

/// The router port MAC of every switch that has one.
pub fn router_macs(
    switches: &[LogicalSwitch],
    ports: &BTreeMap<uuid::Uuid, LogicalSwitchPort>,
    router_ports: &[LogicalRouterPort],
) -> RouterMacs {
    switches
        .iter()
        .filter_map(|switch| {
            router_port_mac(&switch.name, switches, ports, router_ports).map(|mac| (switch.name.clone(), mac))
        })
        .collect()
}

/// The MAC of the logical router port attached to `switch` (via its `type=router` port).
pub fn router_port_mac(
    switch: &str,
    switches: &[LogicalSwitch],
    ports: &BTreeMap<uuid::Uuid, LogicalSwitchPort>,
    router_ports: &[LogicalRouterPort],
) -> Option<String> {
    router_port_of(switch, switches, ports, router_ports).map(|router_port| router_port.mac.clone())
}

/// The logical router port attached to `switch` (the peer named by the `router-port` option of
/// the switch's `type=router` port).
fn router_port_of<'a>(
    switch: &str,
    switches: &[LogicalSwitch],
    ports: &BTreeMap<uuid::Uuid, LogicalSwitchPort>,
    router_ports: &'a [LogicalRouterPort],
) -> Option<&'a LogicalRouterPort> {
    let switch = switches.iter().find(|candidate| candidate.name == switch)?;
    switch.ports.iter().filter_map(|uuid| ports.get(uuid)).find_map(|port| {
        if port.port_type != "router" {
            return None;
        }
        let peer = port.options.get("router-port")?;
        router_ports.iter().find(|router_port| &router_port.name == peer)
    })
}

/// Each switch's logical router (`_uuid`), for the switches attached to one through a router port.
pub type SwitchRouters = BTreeMap<String, uuid::Uuid>;

/// The logical router of every switch that has a router port whose router is in NB.
pub fn switch_routers(
    switches: &[LogicalSwitch],
    ports: &BTreeMap<uuid::Uuid, LogicalSwitchPort>,
    router_ports: &[LogicalRouterPort],
    routers: &[LogicalRouter],
) -> SwitchRouters {
    switches
        .iter()
        .filter_map(|switch| {
            let router_port = router_port_of(&switch.name, switches, ports, router_ports)?;
            let router = routers.iter().find(|router| router.ports.contains(&router_port.uuid))?;
            Some((switch.name.clone(), router.uuid))
        })
        .collect()
}

/// The managed subnet whose CIDR holds `ip`.
fn subnet_holding(subnets: &[Subnet], ip: IpAddr) -> Option<&Subnet> {
    subnets.iter().find(|subnet| match ip {
        IpAddr::V4(v4) => subnet.cidr_v4.is_some_and(|net| net.contains(&v4)),
        IpAddr::V6(v6) => subnet.cidr_v6.is_some_and(|net| net.contains(&v6)),
    })
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
fn endpoint(ip: IpAddr, port: u16) -> String {
    format!("{}:{port}", ovn_lb_address(ip))
}

/// Load balancers for switch-LB rules: backends are the rule's explicit endpoints plus the
/// addresses of bound pods of its namespace whose labels match its selector.
///
/// A rule is Ready only when its frontend can be reached: a rule on a VIP that is not a
/// switch_lb_vip (nothing answers ARP/ND for its address, so in-subnet clients and the router
/// cannot reach it) gets no load balancer and is blocked (`NotSwitchLbVip`), and so is a rule on a
/// switch_lb_vip whose switch has no logical router (`NoRouterPort`: nothing can answer for it).
/// A frontend inside a subnet (a switch_lb_vip, or an address frontend there) puts the balancer
/// on the subnet's switch and on its router (`DesiredLoadBalancer::router`), whose port then
/// answers ARP/ND for it; an address frontend inside a subnet without a router is written but
/// not Ready (`NoRouterPort`).
pub fn load_balancers(
    desired: &mut Desired,
    rules: &[SwitchLbRule],
    subnets: &[Subnet],
    vips: &[Vip],
    pods: &[Pod],
    sources: &HealthCheckSources,
    switch_routers: &SwitchRouters,
) {
    // Which logical port carries each bound pod address: health checks need it.
    let port_of: BTreeMap<IpAddr, &str> = pods
        .iter()
        .filter(|pod| pod.bound)
        .flat_map(|pod| pod.nics.iter())
        .flat_map(|nic| {
            nic.v4ip
                .map(IpAddr::V4)
                .into_iter()
                .chain(nic.v6ip.map(IpAddr::V6))
                .map(move |ip| (ip, nic.port_name.as_str()))
        })
        .collect();
    for rule in rules {
        let (addresses, subnet) = match rule.vip.parse::<IpAddr>() {
            Ok(ip) => {
                let subnet = subnet_holding(subnets, ip);
                if let Some(subnet) = subnet {
                    if !switch_routers.contains_key(&subnet.logical_switch) {
                        // Only a router port can answer ARP/ND for it without a second L2
                        // destination: written, but not Ready.
                        desired.rules_unready.insert(
                            rule.name.clone(),
                            RuleBlocked {
                                reason: "NoRouterPort",
                                message: format!(
                                    "{ip} is inside subnet {}, whose switch {} has no logical router to answer ARP/ND for it",
                                    subnet.name, subnet.logical_switch
                                ),
                            },
                        );
                    }
                }
                (vec![ip], subnet)
            }
            Err(_) => match vips.iter().find(|vip| vip.spec.name == rule.vip) {
                Some(vip) => {
                    let subnet = subnets.iter().find(|subnet| subnet.name == vip.spec.subnet);
                    let shown = || {
                        vip.addresses()
                            .iter()
                            .map(IpAddr::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    if vip.spec.vip_type != VipType::SwitchLbVip {
                        desired.rules_blocked.insert(
                            rule.name.clone(),
                            RuleBlocked {
                                reason: "NotSwitchLbVip",
                                message: format!(
                                    "vip {} is not a switch_lb_vip: no port answers ARP/ND for {} with the router's MAC, so no client can reach the load balancer; use a switch_lb_vip VIP",
                                    vip.spec.name,
                                    shown()
                                ),
                            },
                        );
                        continue;
                    }
                    if let Some(subnet) = subnet {
                        if !switch_routers.contains_key(&subnet.logical_switch) {
                            desired.rules_blocked.insert(
                                rule.name.clone(),
                                RuleBlocked {
                                    reason: "NoRouterPort",
                                    message: format!(
                                        "switch {} has no logical router port: nothing answers ARP/ND for vip {} ({})",
                                        subnet.logical_switch,
                                        vip.spec.name,
                                        shown()
                                    ),
                                },
                            );
                            continue;
                        }
                    }
                    (vip.addresses(), subnet)
                }
                None => {
                    desired.rules_blocked.insert(
                        rule.name.clone(),
                        RuleBlocked {
                            reason: "VipNotFound",
                            message: format!(
                                "vip {} does not exist (yet): the rule becomes ready when it does",
                                rule.vip
                            ),
                        },
                    );
                    continue;
                }
            },
        };
        // The router that answers ARP/ND for a frontend inside the subnet.
        let router = subnet.and_then(|subnet| switch_routers.get(&subnet.logical_switch).copied());
        let mut backends: Vec<IpAddr> = rule.endpoints.clone();
        if !rule.selector.is_empty() {
            for pod in pods.iter().filter(|pod| pod.bound) {
                if (!rule.namespace.is_empty() && pod.spec.namespace != rule.namespace)
                    || !selector_matches(&rule.selector, &pod.spec.labels)
                {
                    continue;
                }
                let nic = pod
                    .nics
                    .iter()
                    .find(|nic| subnet.is_some_and(|subnet| nic.subnet == subnet.name))
                    .or(pod.nics.first());
                if let Some(nic) = nic {
                    backends.extend(nic.v4ip.map(IpAddr::V4));
                    backends.extend(nic.v6ip.map(IpAddr::V6));
                }
            }
        }
        backends.sort();
        backends.dedup();
        // An address frontend outside every managed subnet (Kube-OVN's `vip: 1.1.1.1`) is reached
        // through the router, so the load balancer goes where the clients and backends are: on
        // the switch of the backends' subnet.
        let subnet = match subnet {
            Some(subnet) => subnet,
            None => {
                let mut holding: Vec<&Subnet> = backends
                    .iter()
                    .filter_map(|backend| subnet_holding(subnets, *backend))
                    .collect();
                holding.sort_by(|a, b| a.logical_switch.cmp(&b.logical_switch));
                holding.dedup_by(|a, b| a.logical_switch == b.logical_switch);
                match holding.as_slice() {
                    [one] => *one,
                    [] => {
                        desired.rules_blocked.insert(
                            rule.name.clone(),
                            RuleBlocked {
                                reason: "NoSubnet",
                                message: format!("no managed subnet holds vip {} or its backends", rule.vip),
                            },
                        );
                        continue;
                    }
                    several => {
                        desired.rules_blocked.insert(
                            rule.name.clone(),
                            RuleBlocked {
                                reason: "BackendsOnSeveralSwitches",
                                message: format!(
                                    "the backends of {} are on switches {}; one switch per rule is supported",
                                    rule.vip,
                                    several
                                        .iter()
                                        .map(|subnet| subnet.logical_switch.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            },
                        );
                        continue;
                    }
                }
            }
        };
        let mut protocols: BTreeSet<&'static str> = BTreeSet::new();
        for port in &rule.ports {
            protocols.insert(port.protocol.as_str());
        }
        for protocol in protocols {
            let mut lb_vips = BTreeMap::new();
            for port in rule.ports.iter().filter(|port| port.protocol.as_str() == protocol) {
                for vip in &addresses {
                    let targets: Vec<String> = backends
                        .iter()
                        .filter(|backend| backend.is_ipv4() == vip.is_ipv4())
                        .map(|backend| endpoint(*backend, port.target_port))
                        .collect();
                    lb_vips.insert(endpoint(*vip, port.port), targets.join(","));
                }
            }
            let owner = format!("slr/{}/{protocol}", rule.name);
            let mut ip_port_mappings = BTreeMap::new();
            let mut health_checks = BTreeSet::new();
            if rule.health_check {
                if let Some((source_v4, source_v6)) = sources.get(&subnet.name) {
                    for backend in &backends {
                        let source = if backend.is_ipv4() {
                            source_v4.map(IpAddr::V4)
                        } else {
                            source_v6.map(IpAddr::V6)
                        };
                        if let (Some(port), Some(source)) = (port_of.get(backend), source) {
                            // ovn-nb(5): `[2001::1]`=`sw0-p1:[2002::1]` for IPv6; without the
                            // brackets ovn-northd finds no mapping, makes no Service_Monitor
                            // and the VIP's flows drop everything.
                            ip_port_mappings
                                .insert(ovn_lb_address(*backend), format!("{port}:{}", ovn_lb_address(source)));
                        }
                    }
                    health_checks = lb_vips.keys().cloned().collect();
                }
            }
            let (selection_fields, options) = match rule.session_affinity_timeout {
                Some(timeout) => (
                    BTreeSet::from(["ip_src".to_string()]),
                    BTreeMap::from([("affinity_timeout".to_string(), timeout.to_string())]),
                ),
                None => (BTreeSet::new(), BTreeMap::new()),
            };
            desired.load_balancers.insert(
                owner.clone(),
                DesiredLoadBalancer {
                    name: format!("{}-{protocol}", rule.name),
                    switch: subnet.logical_switch.clone(),
                    router,
                    protocol: protocol.to_string(),
                    vips: lb_vips,
                    selection_fields,
                    options,
                    external_ids: owned(owner),
                    ip_port_mappings,
                    health_checks,
                },
            );
        }
    }
}

/// Indexes `pods` by the AAP VIPs their annotations name.
pub fn candidates_by_vip(pods: &[Pod]) -> BTreeMap<String, Vec<&Pod>> {
    let mut candidates: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in pods {
        for vip in aap_vips(&pod.spec.annotations) {
            candidates.entry(vip).or_default().push(pod);
        }
    }
    candidates
}

/// The desired rows of `vips` and of the bound `pods`, with every subnet's switch.
/// `candidates` must hold, per VIP of `vips`, every pod whose annotation names it;
/// `annotated` every VIP named in the `ovn.kubernetes.io/aaps` annotation of one of `pods`.
pub fn compute(
    subnets: &[Subnet],
    vips: &[Vip],
    candidates: &BTreeMap<String, Vec<&Pod>>,
    pods: &[Pod],
    annotated: &BTreeMap<&str, &Vip>,
    router_macs: &RouterMacs,
) -> Desired {
    let mut desired = Desired::default();
    let switch_of: BTreeMap<&str, &str> = subnets
        .iter()
        .map(|subnet| (subnet.name.as_str(), subnet.logical_switch.as_str()))
        .collect();
    for subnet in subnets {
        desired
            .switches
            .insert(subnet.logical_switch.clone(), subnet.name.clone());
    }
    for vip in vips {
        let Some(switch) = switch_of.get(vip.spec.subnet.as_str()) else {
            continue;
        };
        let mut needed = Vec::new();
        if vip.is_aap() {
            let parents = aap_parents(vip, candidates.get(&vip.spec.name).into_iter().flatten().copied());
            desired.vip_parents.insert(vip.spec.name.clone(), parents.clone());
            // OVN's virtual-ip takes one address: one virtual port per family.
            for (index, ip) in vip.addresses().into_iter().enumerate() {
                let name = if index == 0 {
                    vip.spec.name.clone()
                } else {
                    format!("{}:ipv6", vip.spec.name)
                };
                let mut options = BTreeMap::from([("virtual-ip".to_string(), ip.to_string())]);
                if !parents.is_empty() {
                    options.insert("virtual-parents".to_string(), parents.join(","));
                }
                desired.ports.insert(
                    name.clone(),
                    DesiredPort {
                        name: name.clone(),
                        switch: switch.to_string(),
                        port_type: "virtual".into(),
                        addresses: BTreeSet::new(),
                        port_security: BTreeSet::new(),
                        options,
                        external_ids: owned(format!("vip/{}", vip.spec.name)),
                    },
                );
                needed.push(name);
            }
        } else if vip.spec.vip_type == VipType::SwitchLbVip {
            match router_macs.get(*switch).cloned() {
                Some(mac) => {
                    // A record of the reservation only: no addresses, so no second
                    // `ls_in_l2_lkup` destination for the router MAC (Kube-OVN #5700). The
                    // router port answers ARP/ND for the VIP once a rule's balancer is on the
                    // router (see `load_balancers`).
                    let name = vip.spec.name.clone();
                    desired.ports.insert(
                        name.clone(),
                        DesiredPort {
                            name: name.clone(),
                            switch: switch.to_string(),
                            port_type: String::new(),
                            addresses: BTreeSet::new(),
                            port_security: BTreeSet::new(),
                            options: BTreeMap::new(),
                            external_ids: owned(format!("vip/{}", vip.spec.name)),
                        },
                    );
                    desired.vip_macs.insert(vip.spec.name.clone(), mac);
                    needed.push(name);
                }
                None => {
                    desired.blocked.insert(
                        vip.spec.name.clone(),
                        Blocked::NoRouterPort {
                            switch: switch.to_string(),
                        },
                    );
                }
            }
        }
        desired.vip_ports.insert(vip.spec.name.clone(), needed);
    }
    for pod in pods.iter().filter(|pod| pod.bound) {
        // Extra port-security addresses per NIC, from the AAP VIPs the pod may carry there.
        let mut extra_security: BTreeMap<&str, BTreeSet<IpAddr>> = BTreeMap::new();
        for name in aap_vips(&pod.spec.annotations) {
            let Some(vip) = annotated.get(name.as_str()) else {
                continue;
            };
            if !switch_of.contains_key(vip.spec.subnet.as_str()) {
                continue;
            }
            if let Some(nic) = eligible_nic(vip, pod) {
                extra_security
                    .entry(nic.port_name.as_str())
                    .or_default()
                    .extend(vip.addresses());
            }
        }
        let mut names = Vec::new();
        for nic in &pod.nics {
            let Some(switch) = switch_of.get(nic.subnet.as_str()) else {
                continue;
            };
            let ips: Vec<String> = nic
                .v4ip
                .map(|ip| ip.to_string())
                .into_iter()
                .chain(nic.v6ip.map(|ip| ip.to_string()))
                .collect();
            let address = joined(std::iter::once(nic.mac.to_string()).chain(ips.iter().cloned()));
            let mut security = ips.clone();
            if let Some(extra) = extra_security.get(nic.port_name.as_str()) {
                security.extend(extra.iter().map(IpAddr::to_string));
            }
            let security = joined(std::iter::once(nic.mac.to_string()).chain(security));
            desired.ports.insert(
                nic.port_name.clone(),
                DesiredPort {
                    name: nic.port_name.clone(),
                    switch: switch.to_string(),
                    port_type: String::new(),
                    addresses: BTreeSet::from([address]),
                    port_security: BTreeSet::from([security]),
                    options: BTreeMap::new(),
                    external_ids: owned(format!(
                        "pod/{}/{}/{}",
                        pod.spec.namespace, pod.spec.name, nic.interface
                    )),
                },
            );
            names.push(nic.port_name.clone());
        }
        desired.pod_ports.insert(pod.key(), names);
    }
    desired
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LbPort, MacAddr, NicSpec, OwnerKind, PodNic, PodSpec, Protocol, Strategy, VipSpec};

    fn dual_subnet() -> Subnet {
        Subnet {
            name: "dual".into(),
            logical_switch: "dual".into(),
            cidr_v4: Some("10.17.0.0/16".parse().unwrap()),
            cidr_v6: Some("fd00:10:17::/64".parse().unwrap()),
            gateway_v4: None,
            gateway_v6: None,
            exclude_ips: Vec::new(),
            strategy: Strategy::Random,
            vpc: crate::model::DEFAULT_VPC.into(),
        }
    }

    fn lb_vip() -> Vip {
        Vip {
            spec: VipSpec {
                name: "lbvip".into(),
                namespace: String::new(),
                subnet: "dual".into(),
                vip_type: VipType::SwitchLbVip,
                v4ip: None,
                v6ip: None,
                mac: None,
                selector: BTreeMap::new(),
            },
            v4ip: Some("10.17.0.100".parse().unwrap()),
            v6ip: Some("fd00:10:17::100".parse().unwrap()),
            mac: "02:00:00:00:01:00".parse::<MacAddr>().unwrap(),
            holder: None,
            conditions: Vec::new(),
            nb_mac: None,
        }
    }

    fn web0() -> Pod {
        Pod {
            spec: PodSpec {
                namespace: "default".into(),
                name: "web-0".into(),
                labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
                annotations: BTreeMap::new(),
                owner_kind: OwnerKind::Other,
                owner_name: String::new(),
                nics: vec![NicSpec {
                    subnet: "dual".into(),
                    interface: "eth0".into(),
                    ..Default::default()
                }],
            },
            nics: vec![PodNic {
                interface: "eth0".into(),
                subnet: "dual".into(),
                port_name: "web-0.default".into(),
                v4ip: Some("10.17.0.5".parse().unwrap()),
                v6ip: Some("fd00:10:17::5".parse().unwrap()),
                mac: "02:00:00:00:00:05".parse::<MacAddr>().unwrap(),
                vip: None,
            }],
            bound: true,
        }
    }

    /// Issue #16 case 1: every load-balancer string that carries an IPv6 address uses OVN's
    /// bracketed syntax (ovn-nb(5) `ip_port_mappings`: `[2001::1]`=`sw0-p1:[2002::1]`).
    #[test]
    fn ipv6_in_load_balancer_rows_uses_ovn_brackets() {
        let rule = SwitchLbRule {
            name: "web".into(),
            vip: "lbvip".into(),
            namespace: "default".into(),
            selector: BTreeMap::from([("app".to_string(), "web".to_string())]),
            endpoints: Vec::new(),
            ports: vec![LbPort {
                name: String::new(),
                port: 80,
                target_port: 8080,
                protocol: Protocol::Tcp,
            }],
            session_affinity_timeout: None,
            health_check: true,
        };
        let sources: HealthCheckSources = BTreeMap::from([(
            "dual".to_string(),
            (
                Some("10.17.0.2".parse().unwrap()),
                Some("fd00:10:17::2".parse().unwrap()),
            ),
        )]);
        let mut desired = Desired::default();
        let router = uuid::Uuid::from_u128(7);
        let switch_routers = SwitchRouters::from([("dual".to_string(), router)]);
        load_balancers(
            &mut desired,
            &[rule],
            &[dual_subnet()],
            &[lb_vip()],
            &[web0()],
            &sources,
            &switch_routers,
        );
        let lb = &desired.load_balancers["slr/web/tcp"];
        // Issue #16 case 2: the balancer of an in-subnet frontend goes on the subnet's router too.
        assert_eq!(lb.router, Some(router));
        assert_eq!(
            lb.vips,
            BTreeMap::from([
                ("10.17.0.100:80".to_string(), "10.17.0.5:8080".to_string()),
                ("[fd00:10:17::100]:80".to_string(), "[fd00:10:17::5]:8080".to_string()),
            ])
        );
        assert_eq!(
            lb.ip_port_mappings,
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
            lb.health_checks,
            BTreeSet::from(["10.17.0.100:80".to_string(), "[fd00:10:17::100]:80".to_string()])
        );
    }
}
