//! What NB should hold, computed from the registry's objects and, for facts only NB knows (the
//! router port on a subnet's switch), from the NB cache. Pure: no I/O.

use std::borrow::Borrow;

use compact_str::CompactString;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use crate::model::{
    aap_parents, aap_vips, eligible_nic, selector_matches, MacAddr, Pod, PodRef, Protocol, Subnet, SwitchLbRule, Vip,
    VipType,
};
pub use crate::nb::topology::{RouterMacs, SwitchRouters};
use crate::nb::Owner;
pub use crate::nb::{DesiredLoadBalancer, DesiredPort, PortKind};

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

/// A subnet's health-check source addresses.
pub type HealthCheckSources = BTreeMap<String, (Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>)>;

#[derive(Debug, Default, Clone)]
pub struct Desired {
    /// One per rule and protocol, keyed by its owner: names are not unique in NB.
    pub load_balancers: BTreeMap<Owner, DesiredLoadBalancer>,
    /// Rules that cannot be realized (or could be written but never reached), and why.
    pub rules_blocked: BTreeMap<String, RuleBlocked>,
    /// Rules whose load balancers are written but which are not Ready yet, and why.
    pub rules_unready: BTreeMap<String, RuleBlocked>,
    /// Logical switch name → subnet name.
    pub switches: BTreeMap<String, String>,
    pub ports: BTreeMap<CompactString, DesiredPort>,
    /// The ports each VIP needs (empty for a plain reserved VIP).
    pub vip_ports: BTreeMap<String, Vec<String>>,
    /// The parent ports of each AAP VIP that has any (absent: none; most of 100,000 VIPs).
    pub vip_parents: BTreeMap<String, Vec<String>>,
    /// The ports of each bound pod.
    pub pod_ports: BTreeMap<PodRef, Vec<String>>,
    pub blocked: BTreeMap<String, Blocked>,
    /// The switch_lb_vips a rule's load balancers serve (only these answer ARP/ND).
    pub vips_served: BTreeSet<String>,
    /// VIP → the MAC that answers ARP/ND for it when it is not the VIP's own (a switch_lb_vip's
    /// router port's MAC), for its status.
    pub vip_macs: BTreeMap<String, MacAddr>,
}

impl Desired {
    /// What the plan compares with NB.
    pub fn wanted(&self) -> crate::nb::Wanted<'_> {
        crate::nb::Wanted {
            switches: &self.switches,
            ports: &self.ports,
            load_balancers: &self.load_balancers,
        }
    }
}

/// The managed switches a balancer goes on: `base` and every managed switch attached to the same
/// logical router as one of them. A client on another switch reaches the frontend through the
/// router, and ovn-northd(8) applies a switch's load balancers only to traffic entering from its
/// own ports (`ls_in_pre_lb` skips traffic from a router port), so the client's own switch must
/// hold the balancer; its replies are un-NATed there on the way back.
fn balancer_switches(base: BTreeSet<String>, subnets: &[Subnet], switch_routers: &SwitchRouters) -> BTreeSet<String> {
    let routers: BTreeSet<uuid::Uuid> = base
        .iter()
        .filter_map(|switch| switch_routers.get(switch))
        .copied()
        .collect();
    let mut switches = base;
    switches.extend(
        subnets
            .iter()
            .map(|subnet| &subnet.logical_switch)
            .filter(|switch| {
                switch_routers
                    .get(*switch)
                    .is_some_and(|router| routers.contains(router))
            })
            .cloned(),
    );
    switches
}

/// Addresses for a message: `a, b`.
fn shown(addresses: &[IpAddr]) -> String {
    addresses.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ")
}

/// The managed subnet whose CIDR holds `ip`.
fn subnet_holding(subnets: &[Subnet], ip: IpAddr) -> Option<&Subnet> {
    subnets.iter().find(|subnet| match ip {
        IpAddr::V4(v4) => subnet.cidr_v4.is_some_and(|net| net.contains(&v4)),
        IpAddr::V6(v6) => subnet.cidr_v6.is_some_and(|net| net.contains(&v6)),
    })
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
pub fn load_balancers<V: Borrow<Vip>>(
    desired: &mut Desired,
    rules: &[SwitchLbRule],
    subnets: &[Subnet],
    vips: &[V],
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
        // The frontend's addresses, its subnet, and whether it is a VIP (else an address).
        let (addresses, subnet, is_vip) = match rule.vip.parse::<IpAddr>() {
            Ok(ip) => (vec![ip], subnet_holding(subnets, ip), false),
            Err(_) => match vips
                .iter()
                .map(Borrow::borrow)
                .find(|vip: &&Vip| vip.spec.name == rule.vip)
            {
                found @ (None | Some(Vip { pending: Some(_), .. })) => {
                    // Missing, or waiting for its subnet (or for a requested address): no
                    // addresses yet, so the rule waits.
                    if let Some((reason, message)) = rule.waits_for_vip(found) {
                        desired
                            .rules_blocked
                            .insert(rule.name.clone(), RuleBlocked { reason, message });
                    }
                    continue;
                }
                Some(vip) if vip.spec.vip_type != VipType::SwitchLbVip => {
                    desired.rules_blocked.insert(
                        rule.name.clone(),
                        RuleBlocked {
                            reason: "NotSwitchLbVip",
                            message: format!(
                                "vip {} is not a switch_lb_vip: no port answers ARP/ND for {} with the router's MAC, so no client can reach the load balancer; use a switch_lb_vip VIP",
                                vip.spec.name,
                                shown(&vip.addresses())
                            ),
                        },
                    );
                    continue;
                }
                Some(vip) => (
                    vip.addresses(),
                    subnets.iter().find(|subnet| subnet.name == vip.spec.subnet),
                    true,
                ),
            },
        };
        if let Some(subnet) = subnet.filter(|subnet| !switch_routers.contains_key(&subnet.logical_switch)) {
            // Only a router port can answer ARP/ND for an in-subnet frontend without a second L2
            // destination: a VIP's rule gets no balancer; an address frontend's is written, but
            // neither is Ready.
            let blocked = RuleBlocked {
                reason: "NoRouterPort",
                message: format!(
                    "{} ({}) is inside subnet {}, whose switch {} has no logical router port to answer ARP/ND for it",
                    rule.vip,
                    shown(&addresses),
                    subnet.name,
                    subnet.logical_switch
                ),
            };
            if is_vip {
                desired.rules_blocked.insert(rule.name.clone(), blocked);
                continue;
            }
            desired.rules_unready.insert(rule.name.clone(), blocked);
        }
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
        // The switches whose clients reach the frontend directly: the frontend's subnet's, or,
        // for an address frontend outside every managed subnet (Kube-OVN's `vip: 1.1.1.1`), the
        // switches of the backends' subnets (issue #16 case 6).
        let base: BTreeSet<String> = match subnet {
            Some(subnet) => BTreeSet::from([subnet.logical_switch.clone()]),
            None => backends
                .iter()
                .filter_map(|backend| subnet_holding(subnets, *backend))
                .map(|subnet| subnet.logical_switch.clone())
                .collect(),
        };
        if base.is_empty() {
            desired.rules_blocked.insert(
                rule.name.clone(),
                RuleBlocked {
                    reason: "NoSubnet",
                    message: format!("no managed subnet holds vip {} or its backends", rule.vip),
                },
            );
            continue;
        }
        let switches = balancer_switches(base, subnets, switch_routers);
        if is_vip {
            desired.vips_served.insert(rule.vip.clone());
        }
        // Health checks need a source address in the frontend's subnet: the registry reserves
        // one per subnet with a health-checked frontend and refuses health checks elsewhere.
        let subnet_sources = subnet.and_then(|subnet| sources.get(&subnet.name));
        if rule.health_check && subnet_sources.is_none() && !desired.rules_unready.contains_key(&rule.name) {
            // A health-checked rule accepted before its VIP, whose subnet had no room left for
            // a source address when the VIP was allocated: balanced, but not checked.
            desired.rules_unready.insert(
                rule.name.clone(),
                RuleBlocked {
                    reason: "NoHealthCheckSource",
                    message: format!(
                        "no health-check source address is reserved in the subnet of {}: the load balancer runs without health checks",
                        rule.vip
                    ),
                },
            );
        }
        // A frontend address without a backend of its family drops every connection.
        let unserved: Vec<String> = addresses
            .iter()
            .filter(|address| !backends.iter().any(|backend| backend.is_ipv4() == address.is_ipv4()))
            .map(IpAddr::to_string)
            .collect();
        if !unserved.is_empty() && !desired.rules_unready.contains_key(&rule.name) {
            desired.rules_unready.insert(
                rule.name.clone(),
                RuleBlocked {
                    reason: "NoBackends",
                    message: format!(
                        "no backend of its address family for {}: connections to it fail until an endpoint is given or a bound pod matches the selector",
                        unserved.join(", ")
                    ),
                },
            );
        }
        let protocols: BTreeSet<Protocol> = rule.ports.iter().map(|port| port.protocol).collect();
        for protocol in protocols {
            let mut lb_vips: BTreeMap<SocketAddr, Vec<SocketAddr>> = BTreeMap::new();
            for port in rule.ports.iter().filter(|port| port.protocol == protocol) {
                for vip in &addresses {
                    let targets = backends
                        .iter()
                        .filter(|backend| backend.is_ipv4() == vip.is_ipv4())
                        .map(|backend| SocketAddr::new(*backend, port.target_port))
                        .collect();
                    lb_vips.insert(SocketAddr::new(*vip, port.port), targets);
                }
            }
            let mut monitored = BTreeMap::new();
            let mut health_check = false;
            if rule.health_check {
                if let Some((source_v4, source_v6)) = subnet_sources {
                    for backend in &backends {
                        let source = if backend.is_ipv4() {
                            source_v4.map(IpAddr::V4)
                        } else {
                            source_v6.map(IpAddr::V6)
                        };
                        if let (Some(port), Some(source)) = (port_of.get(backend), source) {
                            monitored.insert(*backend, (port.to_string(), source));
                        }
                    }
                    health_check = true;
                }
            }
            let owner = Owner::Rule {
                rule: rule.name.clone(),
                protocol,
            };
            desired.load_balancers.insert(
                owner.clone(),
                DesiredLoadBalancer {
                    name: format!("{}-{}", rule.name, protocol.as_str()),
                    owner,
                    switches: switches.clone(),
                    router,
                    protocol,
                    vips: lb_vips,
                    affinity_timeout: rule.session_affinity_timeout,
                    health_check,
                    monitored,
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
pub fn compute<V: Borrow<Vip>>(
    subnets: &[Subnet],
    vips: &[V],
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
        let vip: &Vip = vip.borrow();
        let Some(switch) = switch_of.get(vip.spec.subnet.as_str()).filter(|_| vip.is_allocated()) else {
            // No NB rows for a VIP that holds no addresses (it waits for its subnet).
            desired.vip_ports.insert(vip.spec.name.clone(), Vec::new());
            continue;
        };
        let mut ports: Vec<(String, PortKind)> = Vec::new();
        if vip.is_aap() {
            let parents = aap_parents(vip, candidates.get(&vip.spec.name).into_iter().flatten().copied());
            if !parents.is_empty() {
                desired.vip_parents.insert(vip.spec.name.clone(), parents.clone());
            }
            // An OVN virtual port takes one address: one virtual port per family.
            for (index, ip) in vip.addresses().into_iter().enumerate() {
                let name = if index == 0 {
                    vip.spec.name.clone()
                } else {
                    format!("{}:ipv6", vip.spec.name)
                };
                let parents = parents.clone();
                ports.push((name, PortKind::Virtual { ip, parents }));
            }
        } else if vip.spec.vip_type == VipType::SwitchLbVip {
            match router_macs.get(*switch).cloned() {
                Some(mac) => {
                    // A record of the reservation only: no addresses, so no second
                    // `ls_in_l2_lkup` destination for the router MAC (Kube-OVN #5700). The
                    // router port answers ARP/ND for the VIP once a rule's balancer is on the
                    // router (see `load_balancers`).
                    ports.push((vip.spec.name.clone(), PortKind::Reservation));
                    desired.vip_macs.insert(vip.spec.name.clone(), mac);
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
        let mut needed = Vec::new();
        for (name, kind) in ports {
            let port = DesiredPort {
                name: name.as_str().into(),
                switch: (*switch).into(),
                owner: Owner::Vip(vip.spec.name.clone()),
                kind,
            };
            desired.ports.insert(name.as_str().into(), port);
            needed.push(name);
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
            desired.ports.insert(
                nic.port_name.as_str().into(),
                DesiredPort {
                    name: nic.port_name.as_str().into(),
                    switch: (*switch).into(),
                    owner: Owner::Nic {
                        pod: pod.key(),
                        interface: nic.interface.clone(),
                    },
                    kind: PortKind::Nic {
                        mac: nic.mac,
                        ips: nic
                            .v4ip
                            .map(IpAddr::V4)
                            .into_iter()
                            .chain(nic.v6ip.map(IpAddr::V6))
                            .collect(),
                        extra_security: extra_security
                            .get(nic.port_name.as_str())
                            .into_iter()
                            .flatten()
                            .copied()
                            .collect(),
                    },
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
    use crate::model::{LbPort, NicSpec, OwnerKind, PodNic, PodSpec, Strategy, VipSpec};

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
            pending: None,
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

    /// Issue #16 case 1: a health-checked rule maps each backend of both families to its port and
    /// the subnet's source of that family (`nb::encode` spells them with OVN's brackets).
    #[test]
    fn health_checked_rule_on_a_dual_stack_vip() {
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
        let lb = &desired.load_balancers[&Owner::Rule {
            rule: "web".into(),
            protocol: Protocol::Tcp,
        }];
        // Issue #16 case 2: the balancer of an in-subnet frontend goes on the subnet's router too.
        assert_eq!(lb.router, Some(router));
        let socket = |text: &str| text.parse::<SocketAddr>().unwrap();
        assert_eq!(
            lb.vips,
            BTreeMap::from([
                (socket("10.17.0.100:80"), vec![socket("10.17.0.5:8080")]),
                (socket("[fd00:10:17::100]:80"), vec![socket("[fd00:10:17::5]:8080")]),
            ])
        );
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(
            lb.monitored,
            BTreeMap::from([
                (ip("10.17.0.5"), ("web-0.default".to_string(), ip("10.17.0.2"))),
                (ip("fd00:10:17::5"), ("web-0.default".to_string(), ip("fd00:10:17::2"))),
            ])
        );
        assert!(lb.health_check);
    }
}
