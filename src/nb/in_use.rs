//! What NB uses on a logical switch outside the daemon's own rows: addresses and MACs of
//! foreign ports, the networks and MAC of the router ports attached through `type=router`
//! ports, and the VIPs of foreign load balancers attached to it. IPAM never hands these out
//! (issue #16 case 4: `ovn-nbctl` itself refuses a duplicate address on a switch).

use std::net::IpAddr;

use crate::ipam::{InUseElsewhere, MacAddr};
use std::collections::BTreeSet;

use uuid::Uuid;

use crate::ovsdb::{Atom, AtomSet, Cache, Client, Value};
use crate::registry::InUseOutside;

use super::{
    is_owned, row_is_owned, uuid_set, LoadBalancer, LogicalRouterPort, LogicalSwitchPort, NbRow, LOGICAL_SWITCH,
    LOGICAL_SWITCH_PORT,
};

/// The address of a load balancer's `vips` key: `IP`, `IP:port` or `[IPv6]:port`.
fn lb_key_address(key: &str) -> Option<IpAddr> {
    if let Ok(ip) = key.parse() {
        return Some(ip);
    }
    if let Some(rest) = key.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok());
    }
    key.rsplit_once(':').and_then(|(ip, _)| ip.parse().ok())
}

/// What NB uses on `switch` outside the daemon's rows, each with its user (`port P`,
/// `router port R`, `load balancer L`).
pub fn in_use_outside(cache: &Cache, switch: &str) -> InUseElsewhere {
    let mut used = InUseElsewhere::default();
    let Some((_, switch)) = cache
        .rows(LOGICAL_SWITCH)
        .find(|(_, row)| row.get("name").and_then(Value::as_str) == Some(switch))
    else {
        return used;
    };
    // Only the ports without the daemon's mark matter: found through their index (a switch may
    // hold 100,000 of the daemon's ports, and this runs at every allocation), or by walking the
    // switch's ports when those are fewer. In uuid order either way.
    let empty = AtomSet::new();
    let ports = match switch.get("ports") {
        Some(Value::Set(ports)) => ports,
        _ => &empty,
    };
    let foreign: Option<BTreeSet<Uuid>> = cache
        .indexed(&super::foreign_ports())
        .map(|uuids| uuids.copied().collect());
    let foreign_here: BTreeSet<Uuid> = match foreign {
        Some(foreign) if foreign.len() <= ports.len() => foreign
            .into_iter()
            .filter(|uuid| ports.contains(&Atom::Uuid(*uuid)))
            .collect(),
        _ => ports.iter().filter_map(Atom::as_uuid).collect(),
    };
    for uuid in foreign_here {
        let Some(row) = cache.row(LOGICAL_SWITCH_PORT, &uuid) else {
            continue;
        };
        if row_is_owned(row) {
            continue;
        }
        let port = LogicalSwitchPort::from_row(uuid, row);
        let user = format!("NB port {}", port.name);
        for entry in &port.addresses {
            let mut words = entry.split_whitespace();
            let Some(first) = words.next() else {
                continue;
            };
            if let Ok(mac) = first.parse::<MacAddr>() {
                used.macs.insert(mac, user.clone());
            }
            for word in words {
                if let Ok(ip) = word.parse::<IpAddr>() {
                    used.ips.insert(ip, user.clone());
                }
            }
        }
        if super::topology::is_router_link(&port) {
            let Some(peer) = port.options.get("router-port") else {
                continue;
            };
            let router_ports = LogicalRouterPort::all(cache);
            if let Some(router_port) = router_ports.iter().find(|row| &row.name == peer) {
                let user = format!("NB router port {}", router_port.name);
                if let Ok(mac) = router_port.mac.parse::<MacAddr>() {
                    used.macs.insert(mac, user.clone());
                }
                for network in &router_port.networks {
                    let address = network.split('/').next().unwrap_or_default();
                    if let Ok(ip) = address.parse::<IpAddr>() {
                        used.ips.insert(ip, user.clone());
                    }
                }
            }
        }
    }
    for uuid in uuid_set(switch, "load_balancer") {
        let Some(balancer) = LoadBalancer::get(cache, &uuid) else {
            continue;
        };
        if is_owned(&balancer.external_ids) {
            continue;
        }
        for key in balancer.vips.keys() {
            if let Some(ip) = lb_key_address(key) {
                used.ips.insert(ip, format!("NB load balancer {}", balancer.name));
            }
        }
    }
    used
}

/// Reads the NB client's cache for the registry.
pub struct NbInUse(pub Client);

impl InUseOutside for NbInUse {
    fn in_use(&self, logical_switch: &str) -> InUseElsewhere {
        in_use_outside(&self.0.cache(), logical_switch)
    }
}

#[cfg(test)]
mod tests {
    use super::lb_key_address;

    #[test]
    fn load_balancer_keys_in_every_spelling() {
        for (key, ip) in [
            ("10.0.0.10", "10.0.0.10"),
            ("10.0.0.10:80", "10.0.0.10"),
            ("[fd00::10]:80", "fd00::10"),
            ("fd00::10", "fd00::10"),
        ] {
            assert_eq!(lb_key_address(key), Some(ip.parse().unwrap()), "{key}");
        }
        assert_eq!(lb_key_address("nonsense"), None);
    }
}
