//! Facts only NB knows about a managed switch: the logical router port attached to it (through
//! its `type=router` port, whose `options:router-port` names the peer), that port's MAC and its
//! router.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{LogicalRouter, LogicalRouterPort, LogicalSwitch, LogicalSwitchPort, NbRow, PortRow};
use crate::model::MacAddr;
use crate::ovsdb::Cache;

/// Each switch's router port MAC (what answers ARP/ND for a switch_lb_vip).
pub type RouterMacs = BTreeMap<String, MacAddr>;

/// Each switch's logical router (`_uuid`), for the switches attached to one through a router port.
pub type SwitchRouters = BTreeMap<String, Uuid>;

/// Whether a port is a switch's end of a router link (its change can move a switch to another
/// router or change the router MAC).
pub fn is_router_link(port: &LogicalSwitchPort) -> bool {
    port.port_type == "router"
}

/// The logical router port attached to `switch` (the peer named by the `router-port` option of
/// the switch's `type=router` port).
fn router_port_of<'a>(
    switch: &LogicalSwitch,
    ports: &BTreeMap<Uuid, PortRow>,
    router_ports: &'a [LogicalRouterPort],
) -> Option<&'a LogicalRouterPort> {
    switch.ports.iter().filter_map(|uuid| ports.get(uuid)).find_map(|port| {
        if port.port_type() != "router" {
            return None;
        }
        let peer = port.option("router-port")?;
        router_ports.iter().find(|router_port| router_port.name == peer)
    })
}

/// The router port MAC and the router of every switch attached to one. `ports` must hold every
/// port of `switches` (a full pass's rows).
pub fn routers_of_switches(
    cache: &Cache,
    switches: &[LogicalSwitch],
    ports: &BTreeMap<Uuid, PortRow>,
) -> (RouterMacs, SwitchRouters) {
    let router_ports = LogicalRouterPort::all(cache);
    let routers = LogicalRouter::all(cache);
    let mut macs = RouterMacs::new();
    let mut switch_routers = SwitchRouters::new();
    for switch in switches {
        let Some(router_port) = router_port_of(switch, ports, &router_ports) else {
            continue;
        };
        if let Ok(mac) = router_port.mac.parse::<MacAddr>() {
            macs.insert(switch.name.clone(), mac);
        }
        if let Some(router) = routers.iter().find(|router| router.ports.contains(&router_port.uuid)) {
            switch_routers.insert(switch.name.clone(), router.uuid);
        }
    }
    (macs, switch_routers)
}
