//! What NB should hold, computed from the registry's objects and, for facts only NB knows (the
//! router port on a subnet's switch), from the NB cache. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::model::{aap_vips, selector_matches, Pod, Subnet, Vip, VipType};
use crate::nb::{LogicalRouterPort, LogicalSwitch, LogicalSwitchPort};

/// Marks every row the daemon creates; rows without it are never modified or deleted.
pub const VENDOR_KEY: &str = "vendor";
pub const VENDOR: &str = "ovn-vipd";
/// The object a row belongs to: `subnet/<name>`, `vip/<name>`, `pod/<namespace>/<name>/<nic>`.
pub const OWNER_KEY: &str = "ovn-vipd/owner";

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

#[derive(Debug, Default, Clone)]
pub struct Desired {
    /// Logical switch name → subnet name.
    pub switches: BTreeMap<String, String>,
    pub ports: BTreeMap<String, DesiredPort>,
    /// The ports each VIP needs (empty for a plain reserved VIP).
    pub vip_ports: BTreeMap<String, Vec<String>>,
    pub blocked: BTreeMap<String, Blocked>,
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

/// The ports of pods eligible to carry an AAP VIP: bound, same namespace, labels matching the
/// VIP's selector, the VIP listed in `ovn.kubernetes.io/aaps`, with a NIC in the VIP's subnet.
pub fn aap_parents(vip: &Vip, pods: &[Pod]) -> Vec<String> {
    if !vip.is_aap() {
        return Vec::new();
    }
    let mut parents: Vec<String> = pods
        .iter()
        .filter(|pod| pod.bound && pod.spec.namespace == vip.spec.namespace)
        .filter(|pod| selector_matches(&vip.spec.selector, &pod.spec.labels))
        .filter(|pod| aap_vips(&pod.spec.annotations).contains(&vip.spec.name))
        .filter_map(|pod| {
            pod.nics
                .iter()
                .find(|nic| nic.subnet == vip.spec.subnet)
                .map(|nic| nic.port_name.clone())
        })
        .collect();
    parents.sort();
    parents
}

/// The MAC of the logical router port attached to `switch` (via its `type=router` port).
pub fn router_port_mac(
    switch: &str,
    switches: &[LogicalSwitch],
    ports: &BTreeMap<uuid::Uuid, LogicalSwitchPort>,
    router_ports: &[LogicalRouterPort],
) -> Option<String> {
    let switch = switches.iter().find(|candidate| candidate.name == switch)?;
    switch.ports.iter().filter_map(|uuid| ports.get(uuid)).find_map(|port| {
        if port.port_type != "router" {
            return None;
        }
        let peer = port.options.get("router-port")?;
        router_ports
            .iter()
            .find(|router_port| &router_port.name == peer)
            .map(|router_port| router_port.mac.clone())
    })
}

pub fn compute(
    subnets: &[Subnet],
    vips: &[Vip],
    pods: &[Pod],
    nb_switches: &[LogicalSwitch],
    nb_ports: &BTreeMap<uuid::Uuid, LogicalSwitchPort>,
    nb_router_ports: &[LogicalRouterPort],
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
    // Extra port-security addresses per pod port, from the AAP VIPs it may carry.
    let mut extra_security: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
    for vip in vips {
        let Some(switch) = switch_of.get(vip.spec.subnet.as_str()) else {
            continue;
        };
        let mut needed = Vec::new();
        if vip.is_aap() {
            let parents = aap_parents(vip, pods);
            for parent in &parents {
                extra_security
                    .entry(parent.clone())
                    .or_default()
                    .extend(vip.addresses());
            }
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
            match router_port_mac(switch, nb_switches, nb_ports, nb_router_ports) {
                Some(mac) => {
                    let address = joined(std::iter::once(mac).chain(vip.addresses().iter().map(IpAddr::to_string)));
                    let name = vip.spec.name.clone();
                    desired.ports.insert(
                        name.clone(),
                        DesiredPort {
                            name: name.clone(),
                            switch: switch.to_string(),
                            port_type: String::new(),
                            addresses: BTreeSet::from([address]),
                            port_security: BTreeSet::new(),
                            options: BTreeMap::new(),
                            external_ids: owned(format!("vip/{}", vip.spec.name)),
                        },
                    );
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
            if let Some(extra) = extra_security.get(&nic.port_name) {
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
        }
    }
    desired
}
