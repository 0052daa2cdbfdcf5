//! The difference between what the daemon wants in NB ([`Wanted`]) and what NB holds
//! ([`Actual`], decoded from the client's cache), as OVSDB operations for one transaction.
//! Owned rows nothing wants are collected; a foreign row in the way is a conflict, never touched.
//! Of a switch or router the daemon only inserts and removes its own ports and balancers.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use uuid::Uuid;

use super::encode::{health_check_options, DesiredLoadBalancer, DesiredPort, LoadBalancerColumns};
use super::{
    is_owned, LoadBalancer, LoadBalancerHealthCheck, LogicalRouter, LogicalSwitch, NbRow, Owner, PortRow,
    LOAD_BALANCER, LOAD_BALANCER_HEALTH_CHECK, LOGICAL_ROUTER, LOGICAL_SWITCH, LOGICAL_SWITCH_PORT, OWNER_KEY,
};
use crate::ovsdb::{Atom, Cache, Condition as Where, Function, Mutation, Operation, Row, Value, WaitUntil};

/// What the daemon wants NB to hold (in a pass's scope).
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// Logical switch name → the subnet it serves.
    pub switches: &'a BTreeMap<String, String>,
    /// Port name → port.
    pub ports: &'a BTreeMap<compact_str::CompactString, DesiredPort>,
    pub load_balancers: &'a BTreeMap<Owner, DesiredLoadBalancer>,
}

/// The NB rows a pass compares with: switches, routers and balancers decoded from the cache (they
/// are few), ports read in place in it (there may be 100,000).
#[derive(Debug, Default)]
pub struct Actual<'a> {
    pub switches: Vec<LogicalSwitch>,
    pub ports: BTreeMap<Uuid, PortRow<'a>>,
    pub routers: Vec<LogicalRouter>,
    pub balancers: Vec<LoadBalancer>,
    pub checks: BTreeMap<Uuid, LoadBalancerHealthCheck>,
}

impl<'c> Actual<'c> {
    /// Every row of the tables the sync writes.
    pub fn full(cache: &'c Cache) -> Actual<'c> {
        Actual {
            switches: LogicalSwitch::all(cache),
            ports: cache
                .rows(LOGICAL_SWITCH_PORT)
                .map(|(uuid, row)| (*uuid, PortRow { uuid: *uuid, row }))
                .collect(),
            routers: LogicalRouter::all(cache),
            balancers: LoadBalancer::all(cache),
            checks: LoadBalancerHealthCheck::all(cache)
                .into_iter()
                .map(|check| (check.uuid, check))
                .collect(),
        }
    }

    /// Only the rows a scoped pass looks at, through the cache's indexes: the ports named
    /// `port_names` or marked with one of `port_owners`, the balancers marked with one of
    /// `balancer_owners` and their health checks, every switch with only those ports in its
    /// `ports` (a switch's port set is probed, not converted), and every router (they are few).
    pub fn scoped<'a>(
        cache: &'c Cache,
        port_names: impl IntoIterator<Item = &'a str>,
        port_owners: impl IntoIterator<Item = Owner>,
        balancer_owners: impl IntoIterator<Item = Owner>,
    ) -> Actual<'c> {
        let mut port_uuids: BTreeSet<Uuid> = BTreeSet::new();
        for name in port_names {
            port_uuids.extend(cache.find(&super::port_by_name(), name).iter().copied());
        }
        for owner in port_owners {
            port_uuids.extend(cache.find(&super::port_by_owner(), &owner.to_string()).iter().copied());
        }
        let ports = port_uuids
            .iter()
            .filter_map(|uuid| {
                cache
                    .row(LOGICAL_SWITCH_PORT, uuid)
                    .map(|row| (*uuid, PortRow { uuid: *uuid, row }))
            })
            .collect();
        let balancers: Vec<LoadBalancer> = balancer_owners
            .into_iter()
            .flat_map(|owner| {
                cache
                    .find(&super::load_balancer_by_owner(), &owner.to_string())
                    .to_vec()
            })
            .filter_map(|uuid| LoadBalancer::get(cache, &uuid))
            .collect();
        let checks = balancers
            .iter()
            .flat_map(|lb| lb.health_check.iter())
            .filter_map(|uuid| LoadBalancerHealthCheck::get(cache, uuid))
            .map(|check| (check.uuid, check))
            .collect();
        Actual {
            switches: LogicalSwitch::all_with_ports_of_interest(cache, &port_uuids),
            ports,
            routers: LogicalRouter::all(cache),
            balancers,
            checks,
        }
    }

    /// How many NB rows the pass looked at (ports and balancers).
    pub fn len(&self) -> usize {
        self.ports.len() + self.balancers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The difference to send, and what could not be done.
#[derive(Debug, Default)]
pub struct Plan {
    pub operations: Vec<Operation>,
    /// Port name → the foreign row in the way.
    pub conflicts: BTreeMap<String, String>,
    /// Each difference found, in words (for `ovn-vipd check`).
    pub differences: Vec<Difference>,
}

/// One way NB differs from what the daemon wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// A row the daemon wants is absent.
    Missing(String),
    /// An owned row holds something else (or is not attached where it belongs).
    Differs(String),
    /// An owned row no object wants.
    Orphan(String),
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::Missing(row) => write!(f, "NB row missing: {row}"),
            Difference::Differs(row) => write!(f, "NB row differs from the desired state: {row}"),
            Difference::Orphan(row) => write!(f, "owned NB row without an object: {row}"),
        }
    }
}

/// A mutation of one `load_balancer` set (of a switch or a router).
fn balancer_set(table: &str, row: Uuid, insert: bool, balancer: Atom) -> Operation {
    let value = Value::set([balancer]);
    Operation::Mutate {
        table: table.into(),
        conditions: vec![Where::uuid(row)],
        mutations: vec![if insert {
            Mutation::insert("load_balancer", value)
        } else {
            Mutation::delete("load_balancer", value)
        }],
    }
}

/// A switch or router whose `load_balancer` set should hold a balancer exactly when it `wants` it.
struct Holder<'a> {
    table: &'static str,
    kind: &'static str,
    uuid: Uuid,
    name: &'a str,
    balancers: &'a BTreeSet<Uuid>,
    wants: bool,
}

/// Inserts the balancer's health checks (fresh rows; the ones they replace are unreferenced and
/// so deleted by OVSDB) and returns their references.
fn health_check_rows(plan: &mut Plan, columns: &LoadBalancerColumns, prefix: &str) -> Value {
    let mut references = Vec::new();
    for (index, vip) in columns.health_checks.iter().enumerate() {
        let uuid_name = format!("{prefix}hc{index}");
        plan.operations.push(Operation::Insert {
            table: LOAD_BALANCER_HEALTH_CHECK.into(),
            row: Row::from([
                ("vip".to_string(), Value::string(vip.clone())),
                ("options".to_string(), Value::string_map(&health_check_options())),
                ("external_ids".to_string(), Value::string_map(&columns.external_ids)),
            ]),
            uuid_name: Some(uuid_name.clone()),
        });
        references.push(Atom::named_uuid(uuid_name));
    }
    Value::Set(references.into_iter().collect())
}

fn health_checks_match(
    actual: &LoadBalancer,
    columns: &LoadBalancerColumns,
    checks: &BTreeMap<Uuid, LoadBalancerHealthCheck>,
) -> bool {
    let existing: Option<BTreeSet<String>> = actual
        .health_check
        .iter()
        .map(|uuid| {
            checks
                .get(uuid)
                .filter(|check| check.options == health_check_options())
                .map(|check| check.vip.clone())
        })
        .collect();
    existing.as_ref() == Some(&columns.health_checks) && actual.health_check.len() == columns.health_checks.len()
}

/// Diffs desired load balancers against NB: one per rule and protocol, found by its owner mark.
/// Of a logical switch or router the daemon changes only its `load_balancer` set, and there only
/// inserts and removes the uuids of its own balancers.
fn plan_load_balancers(
    plan: &mut Plan,
    wanted: &Wanted,
    actual: &Actual,
    switch_by_name: &BTreeMap<&str, &LogicalSwitch>,
) {
    let owned_by_owner: BTreeMap<Owner, &LoadBalancer> = actual
        .balancers
        .iter()
        .filter_map(|lb| Owner::of(&lb.external_ids).map(|owner| (owner, lb)))
        .collect();
    for (index, (owner, lb)) in wanted.load_balancers.iter().enumerate() {
        let switches: Vec<&LogicalSwitch> = lb
            .switches
            .iter()
            .filter_map(|name| switch_by_name.get(name.as_str()).copied())
            .collect();
        if switches.is_empty() {
            // The switch is created in this pass; the next pass attaches the balancer.
            continue;
        }
        let columns = lb.columns();
        match owned_by_owner.get(owner) {
            Some(existing) => {
                let checks_match = health_checks_match(existing, &columns, &actual.checks);
                if !lb.matches(existing, &columns) || !checks_match {
                    plan.differences.push(Difference::Differs(format!(
                        "Load_Balancer {} ({})",
                        lb.name, existing.uuid
                    )));
                    let mut row = lb.row(&columns);
                    if !checks_match {
                        row.insert(
                            "health_check".to_string(),
                            health_check_rows(plan, &columns, &format!("lb{index}")),
                        );
                    }
                    plan.operations.push(Operation::Update {
                        table: LOAD_BALANCER.into(),
                        conditions: vec![Where::uuid(existing.uuid)],
                        row,
                    });
                }
                let switches = actual.switches.iter().map(|switch| Holder {
                    table: LOGICAL_SWITCH,
                    kind: "switch",
                    uuid: switch.uuid,
                    name: &switch.name,
                    balancers: &switch.load_balancer,
                    wants: lb.switches.contains(&switch.name)
                        && switch_by_name.get(switch.name.as_str()).map(|chosen| chosen.uuid) == Some(switch.uuid),
                });
                let routers = actual.routers.iter().map(|router| Holder {
                    table: LOGICAL_ROUTER,
                    kind: "router",
                    uuid: router.uuid,
                    name: &router.name,
                    balancers: &router.load_balancer,
                    wants: lb.router == Some(router.uuid),
                });
                for holder in switches.chain(routers) {
                    if holder.balancers.contains(&existing.uuid) == holder.wants {
                        continue;
                    }
                    let state = if holder.wants {
                        "is not attached to"
                    } else {
                        "is attached to"
                    };
                    plan.differences.push(Difference::Differs(format!(
                        "Load_Balancer {} {state} {} {}",
                        lb.name, holder.kind, holder.name
                    )));
                    plan.operations.push(balancer_set(
                        holder.table,
                        holder.uuid,
                        holder.wants,
                        Atom::Uuid(existing.uuid),
                    ));
                }
            }
            None => {
                plan.differences
                    .push(Difference::Missing(format!("Load_Balancer {}", lb.name)));
                let uuid_name = format!("lb{index}");
                // Guard: names are not indexed, so a retry must not create a second balancer.
                plan.operations.push(Operation::Wait {
                    table: LOAD_BALANCER.into(),
                    conditions: vec![Where::new(
                        "external_ids",
                        Function::Includes,
                        Value::map([(OWNER_KEY, owner.to_string())]),
                    )],
                    columns: vec!["name".into()],
                    until: WaitUntil::Equal,
                    rows: vec![],
                    timeout_ms: Some(0),
                });
                let mut row = lb.row(&columns);
                row.insert(
                    "health_check".to_string(),
                    health_check_rows(plan, &columns, &uuid_name),
                );
                plan.operations.push(Operation::Insert {
                    table: LOAD_BALANCER.into(),
                    row,
                    uuid_name: Some(uuid_name.clone()),
                });
                for switch in &switches {
                    plan.operations.push(balancer_set(
                        LOGICAL_SWITCH,
                        switch.uuid,
                        true,
                        Atom::named_uuid(uuid_name.clone()),
                    ));
                }
                if let Some(router) = lb
                    .router
                    .filter(|uuid| actual.routers.iter().any(|router| router.uuid == *uuid))
                {
                    plan.operations
                        .push(balancer_set(LOGICAL_ROUTER, router, true, Atom::named_uuid(uuid_name)));
                }
            }
        }
    }
    for (owner, existing) in owned_by_owner {
        if wanted.load_balancers.contains_key(&owner) {
            continue;
        }
        plan.differences.push(Difference::Orphan(format!(
            "Load_Balancer {} ({})",
            existing.name, existing.uuid
        )));
        // Detached from every switch and router holding it first.
        let switches = actual
            .switches
            .iter()
            .map(|switch| (LOGICAL_SWITCH, switch.uuid, &switch.load_balancer));
        let routers = actual
            .routers
            .iter()
            .map(|router| (LOGICAL_ROUTER, router.uuid, &router.load_balancer));
        for (table, holder, _) in switches
            .chain(routers)
            .filter(|(_, _, balancers)| balancers.contains(&existing.uuid))
        {
            plan.operations
                .push(balancer_set(table, holder, false, Atom::Uuid(existing.uuid)));
        }
        plan.operations.push(Operation::Delete {
            table: LOAD_BALANCER.into(),
            conditions: vec![Where::uuid(existing.uuid)],
        });
    }
}

/// Diffs what is wanted against what NB holds. `gc_switches` (a full pass, which sees every
/// port) also deletes owned switches nothing wants that hold no ports and no balancers.
pub fn plan(wanted: &Wanted, actual: &Actual, gc_switches: bool) -> Plan {
    let mut plan = Plan::default();
    // A switch name may be used twice (names are not indexed): prefer ours, then the oldest.
    let mut switch_by_name: BTreeMap<&str, &LogicalSwitch> = BTreeMap::new();
    for switch in &actual.switches {
        let keep = match switch_by_name.get(switch.name.as_str()) {
            None => true,
            Some(current) => is_owned(&switch.external_ids) && !is_owned(&current.external_ids),
        };
        if keep {
            switch_by_name.insert(&switch.name, switch);
        }
    }
    let switch_of_port: BTreeMap<Uuid, &LogicalSwitch> = actual
        .switches
        .iter()
        .flat_map(|switch| switch.ports.iter().map(move |port| (*port, switch)))
        .collect();
    let port_by_name: HashMap<&str, &PortRow> = actual.ports.values().map(|port| (port.name(), port)).collect();

    // Switches: created when absent (then owned), used as they are otherwise.
    let mut new_switch: BTreeMap<&str, String> = BTreeMap::new();
    for (index, (switch, subnet)) in wanted.switches.iter().enumerate() {
        if switch_by_name.contains_key(switch.as_str()) {
            continue;
        }
        plan.differences
            .push(Difference::Missing(format!("Logical_Switch {switch}")));
        let uuid_name = format!("switch{index}");
        // Guard: a retried transaction must not create a second switch of the same name.
        plan.operations.push(Operation::Wait {
            table: LOGICAL_SWITCH.into(),
            conditions: vec![Where::equal("name", Value::string(switch.clone()))],
            columns: vec!["name".into()],
            until: WaitUntil::Equal,
            rows: vec![],
            timeout_ms: Some(0),
        });
        plan.operations.push(Operation::Insert {
            table: LOGICAL_SWITCH.into(),
            row: Row::from([
                ("name".to_string(), Value::string(switch.clone())),
                (
                    "external_ids".to_string(),
                    Value::string_map(&Owner::Subnet(subnet.clone()).external_ids()),
                ),
            ]),
            uuid_name: Some(uuid_name.clone()),
        });
        new_switch.insert(switch, uuid_name);
    }
    let switch_ref = |name: &str| -> Option<Atom> {
        if let Some(uuid_name) = new_switch.get(name) {
            return Some(Atom::named_uuid(uuid_name.clone()));
        }
        switch_by_name.get(name).map(|switch| Atom::Uuid(switch.uuid))
    };

    // Ports: insert, update, or report the foreign row in the way.
    let mut inserts: BTreeMap<String, Vec<Atom>> = BTreeMap::new();
    for (index, (name, port)) in wanted.ports.iter().enumerate() {
        match port_by_name.get(name.as_str()) {
            Some(existing) if !existing.is_owned() => {
                plan.conflicts.insert(
                    name.to_string(),
                    format!("Logical_Switch_Port {} ({})", existing.name(), existing.uuid),
                );
            }
            Some(existing) => {
                if !port.matches(existing) {
                    plan.differences
                        .push(Difference::Differs(format!("Logical_Switch_Port {name}")));
                    plan.operations.push(Operation::Update {
                        table: LOGICAL_SWITCH_PORT.into(),
                        conditions: vec![Where::uuid(existing.uuid)],
                        row: port.row(),
                    });
                }
                if !switch_of_port.contains_key(&existing.uuid) {
                    plan.differences.push(Difference::Differs(format!(
                        "Logical_Switch_Port {name} is not on switch {}",
                        port.switch
                    )));
                    if let Some(switch) = switch_ref(&port.switch) {
                        plan.operations.push(Operation::Mutate {
                            table: LOGICAL_SWITCH.into(),
                            conditions: vec![Where::uuid(switch.as_uuid().unwrap_or(Uuid::nil()))],
                            mutations: vec![Mutation::insert("ports", Value::set([Atom::Uuid(existing.uuid)]))],
                        });
                    }
                }
            }
            None => {
                plan.differences
                    .push(Difference::Missing(format!("Logical_Switch_Port {name}")));
                let uuid_name = format!("port{index}");
                plan.operations.push(Operation::Insert {
                    table: LOGICAL_SWITCH_PORT.into(),
                    row: port.row(),
                    uuid_name: Some(uuid_name.clone()),
                });
                inserts
                    .entry(port.switch.to_string())
                    .or_default()
                    .push(Atom::named_uuid(uuid_name));
            }
        }
    }
    // Garbage: owned ports nothing wants; removing them from their switch deletes them.
    let mut removals: BTreeMap<Uuid, Vec<Atom>> = BTreeMap::new();
    for port in actual.ports.values() {
        if port.is_owned() && !wanted.ports.contains_key(port.name()) {
            plan.differences.push(Difference::Orphan(format!(
                "Logical_Switch_Port {} ({})",
                port.name(),
                port.uuid
            )));
            if let Some(switch) = switch_of_port.get(&port.uuid) {
                removals.entry(switch.uuid).or_default().push(Atom::Uuid(port.uuid));
            }
        }
    }
    for (switch_uuid, ports) in removals {
        plan.operations.push(Operation::Mutate {
            table: LOGICAL_SWITCH.into(),
            conditions: vec![Where::uuid(switch_uuid)],
            mutations: vec![Mutation::delete("ports", Value::Set(ports.into_iter().collect()))],
        });
    }
    for (switch, ports) in inserts {
        let Some(reference) = switch_ref(&switch) else { continue };
        plan.operations.push(Operation::Mutate {
            table: LOGICAL_SWITCH.into(),
            conditions: vec![Where::equal("_uuid", Value::Atom(reference))],
            mutations: vec![Mutation::insert("ports", Value::Set(ports.into_iter().collect()))],
        });
    }
    plan_load_balancers(&mut plan, wanted, actual, &switch_by_name);
    // Owned switches whose subnet is gone and that hold no ports (a full pass sees all ports).
    for switch in actual.switches.iter().filter(|_| gc_switches) {
        if is_owned(&switch.external_ids)
            && !wanted.switches.contains_key(&switch.name)
            && switch.ports.is_empty()
            && switch.load_balancer.is_empty()
        {
            plan.differences.push(Difference::Orphan(format!(
                "Logical_Switch {} ({})",
                switch.name, switch.uuid
            )));
            plan.operations.push(Operation::Delete {
                table: LOGICAL_SWITCH.into(),
                conditions: vec![Where::uuid(switch.uuid)],
            });
        }
    }
    plan
}
