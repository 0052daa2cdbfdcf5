//! What a batch of NB row changes (the monitor's updates, the echo of the daemon's own writes
//! included) touches, in the project's terms: the owner of an owned row, the name of a port (a
//! foreign row may be in the way of an object's port), or NB's topology (switches, routers,
//! router links), whose reach is wide.

use super::{
    uuid_set, Owner, LOAD_BALANCER, LOAD_BALANCER_HEALTH_CHECK, LOGICAL_ROUTER, LOGICAL_ROUTER_PORT, LOGICAL_SWITCH,
    LOGICAL_SWITCH_PORT,
};
use crate::ovsdb::{Cache, Row, RowChange, Value};

/// One thing a row change touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    /// A row owned by this object changed.
    Owner(Owner),
    /// A port of this name changed (owned or not).
    Port(String),
    /// Something whose reach is wide: a switch, a router or a router link, a row owned by a
    /// subnet, or an owner mark this version does not know.
    Topology,
}

/// The owner of a row carrying the daemon's vendor mark; `Topology` for a mark this version
/// cannot read (it may belong to anything).
fn owner(row: &Row) -> Option<Touched> {
    if !super::row_is_owned(row) {
        return None;
    }
    Some(match Owner::of_row(row) {
        Some(Owner::Subnet(_)) | None => Touched::Topology,
        Some(owner) => Touched::Owner(owner),
    })
}

/// A switch or router change: when only its `load_balancer` set (and, for a switch, its `ports`,
/// whose rows have events of their own) changed, the owners of the balancers it gained or lost;
/// anything else can move a switch to another router: `Topology`.
fn container(touched: &mut Vec<Touched>, change: &RowChange, cache: &Cache, own_sets: &[&str]) {
    let (Some(old), Some(new)) = (&change.old, &change.new) else {
        touched.push(Touched::Topology);
        return;
    };
    let others_changed = old
        .iter()
        .filter(|(column, _)| column.as_str() != "load_balancer" && !own_sets.contains(&column.as_str()))
        .any(|(column, value)| new.get(column) != Some(value));
    if others_changed {
        touched.push(Touched::Topology);
        return;
    }
    let (old_lbs, new_lbs) = (uuid_set(old, "load_balancer"), uuid_set(new, "load_balancer"));
    for lb in old_lbs.symmetric_difference(&new_lbs) {
        if let Some(owner) = cache.row(LOAD_BALANCER, lb).and_then(owner) {
            touched.push(owner);
        }
    }
}

/// What `changes` touch. `cache` is read for the balancers a switch or router gained or lost.
pub fn touched(changes: &[RowChange], cache: &Cache) -> Vec<Touched> {
    let mut touched = Vec::new();
    for change in changes {
        let rows = || change.old.iter().chain(change.new.iter());
        match change.table.as_str() {
            LOGICAL_SWITCH_PORT => {
                for row in rows() {
                    if row.get("type").and_then(Value::as_str) == Some("router") {
                        // The router MAC or the switch's router may have changed.
                        touched.push(Touched::Topology);
                        continue;
                    }
                    touched.extend(owner(row));
                    if let Some(name) = row.get("name").and_then(Value::as_str) {
                        touched.push(Touched::Port(name.to_string()));
                    }
                }
            }
            LOAD_BALANCER | LOAD_BALANCER_HEALTH_CHECK => {
                touched.extend(rows().filter_map(|row| owner(row)));
            }
            // Ports added or removed have row events of their own (a port is not a root row: it
            // lives exactly as long as a switch holds it), so the `ports` set, which can be huge,
            // is not compared.
            LOGICAL_SWITCH => container(&mut touched, change, cache, &["ports"]),
            LOGICAL_ROUTER => container(&mut touched, change, cache, &[]),
            LOGICAL_ROUTER_PORT => touched.push(Touched::Topology),
            _ => {}
        }
    }
    touched
}
