//! NB sync: computes the rows NB should hold from the registry (`desired`), diffs them against
//! the OVSDB client's cache, and sends only the difference, in one transaction. A change to one
//! object is reconciled by a pass over what it affects (`scope`), found through the cache's
//! indexes and the sync's memory, so its cost does not grow with the store. A full pass (start-up,
//! reconnect, lag, the periodic tick) looks at everything and collects what nothing wants, so a
//! missed event costs nothing but latency. A pass with nothing to change sends nothing.
//!
//! It never modifies or deletes a row without `external_ids:vendor=ovn-vipd`.

pub mod desired;
pub mod scope;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};
use uuid::Uuid;

use crate::model::{aap_vips, Condition, Pod, PodRef, Protocol, SwitchLbRule, Vip};
use crate::nb::{
    self, LoadBalancer, LoadBalancerHealthCheck, LogicalRouter, LogicalRouterPort, LogicalSwitch, LogicalSwitchPort,
    NbRow,
};
use crate::ovsdb::{Atom, Cache, Client, ClientEvent, Condition as Where, Mutation, Operation, OvsdbError, Row, Value};
use crate::registry::{now_ms, Registry, RuleStatus};
use crate::role::Role;
use crate::telemetry::{self, Heartbeat};
use desired::{Blocked, Desired, DesiredLoadBalancer, DesiredPort, OWNER_KEY, VENDOR, VENDOR_KEY};
use scope::{dirty_from_nb, Dirty, Memory, Object};

fn is_owned(external_ids: &BTreeMap<String, String>) -> bool {
    external_ids.get(VENDOR_KEY).map(String::as_str) == Some(VENDOR)
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

fn port_row(port: &DesiredPort) -> Row {
    Row::from([
        ("name".to_string(), Value::string(port.name.clone())),
        ("type".to_string(), Value::string(port.port_type.clone())),
        ("addresses".to_string(), Value::set(port.addresses.iter().cloned())),
        (
            "port_security".to_string(),
            Value::set(port.port_security.iter().cloned()),
        ),
        ("options".to_string(), Value::string_map(&port.options)),
        ("external_ids".to_string(), Value::string_map(&port.external_ids)),
    ])
}

fn port_matches(actual: &LogicalSwitchPort, desired: &DesiredPort) -> bool {
    actual.port_type == desired.port_type
        && actual.addresses == desired.addresses
        && actual.port_security == desired.port_security
        && actual.options == desired.options
        && actual.external_ids == desired.external_ids
}

/// Inserts the balancer's health checks (fresh rows; the ones they replace are unreferenced and
/// so deleted by OVSDB) and returns their references.
fn health_check_rows(plan: &mut Plan, lb: &DesiredLoadBalancer, prefix: &str) -> Value {
    let mut references = Vec::new();
    for (index, vip) in lb.health_checks.iter().enumerate() {
        let uuid_name = format!("{prefix}hc{index}");
        plan.operations.push(Operation::Insert {
            table: nb::LOAD_BALANCER_HEALTH_CHECK.into(),
            row: Row::from([
                ("vip".to_string(), Value::string(vip.clone())),
                (
                    "options".to_string(),
                    Value::string_map(&desired::health_check_options()),
                ),
                ("external_ids".to_string(), Value::string_map(&lb.external_ids)),
            ]),
            uuid_name: Some(uuid_name.clone()),
        });
        references.push(Atom::named_uuid(uuid_name));
    }
    Value::Set(references.into_iter().collect())
}

fn health_checks_match(
    actual: &LoadBalancer,
    desired: &DesiredLoadBalancer,
    checks: &BTreeMap<Uuid, LoadBalancerHealthCheck>,
) -> bool {
    let existing: Option<BTreeSet<String>> = actual
        .health_check
        .iter()
        .map(|uuid| {
            checks
                .get(uuid)
                .filter(|check| check.options == desired::health_check_options())
                .map(|check| check.vip.clone())
        })
        .collect();
    existing.as_ref() == Some(&desired.health_checks) && actual.health_check.len() == desired.health_checks.len()
}

fn load_balancer_row(lb: &DesiredLoadBalancer) -> Row {
    Row::from([
        ("ip_port_mappings".to_string(), Value::string_map(&lb.ip_port_mappings)),
        ("name".to_string(), Value::string(lb.name.clone())),
        ("protocol".to_string(), Value::set([lb.protocol.clone()])),
        ("vips".to_string(), Value::string_map(&lb.vips)),
        (
            "selection_fields".to_string(),
            Value::set(lb.selection_fields.iter().cloned()),
        ),
        ("options".to_string(), Value::string_map(&lb.options)),
        ("external_ids".to_string(), Value::string_map(&lb.external_ids)),
    ])
}

fn load_balancer_matches(actual: &LoadBalancer, desired: &DesiredLoadBalancer) -> bool {
    actual.name == desired.name
        && actual.protocol.as_deref() == Some(desired.protocol.as_str())
        && actual.vips == desired.vips
        && actual.selection_fields == desired.selection_fields
        && actual.options == desired.options
        && actual.external_ids == desired.external_ids
        && actual.ip_port_mappings == desired.ip_port_mappings
}

/// Diffs desired load balancers against NB: one per rule and protocol, found by its owner mark.
/// Of a logical router the daemon changes only its `load_balancer` set, and there only inserts
/// and removes the uuids of its own balancers.
fn plan_load_balancers(
    plan: &mut Plan,
    desired: &Desired,
    switches: &[LogicalSwitch],
    routers: &[LogicalRouter],
    balancers: &[LoadBalancer],
    checks: &BTreeMap<Uuid, LoadBalancerHealthCheck>,
) {
    let router_mutation = |router: Uuid, mutation: Mutation| Operation::Mutate {
        table: nb::LOGICAL_ROUTER.into(),
        conditions: vec![Where::uuid(router)],
        mutations: vec![mutation],
    };
    let owned_by_key: BTreeMap<&str, &LoadBalancer> = balancers
        .iter()
        .filter(|lb| is_owned(&lb.external_ids))
        .filter_map(|lb| lb.external_ids.get(OWNER_KEY).map(|owner| (owner.as_str(), lb)))
        .collect();
    let switch_by_name: BTreeMap<&str, &LogicalSwitch> =
        switches.iter().map(|switch| (switch.name.as_str(), switch)).collect();
    for (index, (owner, lb)) in desired.load_balancers.iter().enumerate() {
        let Some(switch) = switch_by_name.get(lb.switch.as_str()) else {
            // The switch is created in this pass; the next pass attaches the balancer.
            continue;
        };
        match owned_by_key.get(owner.as_str()) {
            Some(actual) => {
                let checks_match = health_checks_match(actual, lb, checks);
                if !load_balancer_matches(actual, lb) || !checks_match {
                    plan.differences.push(Difference::Differs(format!(
                        "Load_Balancer {} ({})",
                        lb.name, actual.uuid
                    )));
                    let mut row = load_balancer_row(lb);
                    if !checks_match {
                        row.insert(
                            "health_check".to_string(),
                            health_check_rows(plan, lb, &format!("lb{index}")),
                        );
                    }
                    plan.operations.push(Operation::Update {
                        table: nb::LOAD_BALANCER.into(),
                        conditions: vec![Where::uuid(actual.uuid)],
                        row,
                    });
                }
                if !switch.load_balancer.contains(&actual.uuid) {
                    plan.differences.push(Difference::Differs(format!(
                        "Load_Balancer {} is not attached to {}",
                        lb.name, switch.name
                    )));
                    plan.operations.push(Operation::Mutate {
                        table: nb::LOGICAL_SWITCH.into(),
                        conditions: vec![Where::uuid(switch.uuid)],
                        mutations: vec![Mutation::insert("load_balancer", Value::set([Atom::Uuid(actual.uuid)]))],
                    });
                }
                for router in routers {
                    let attached = router.load_balancer.contains(&actual.uuid);
                    let wanted = lb.router == Some(router.uuid);
                    if wanted && !attached {
                        plan.differences.push(Difference::Differs(format!(
                            "Load_Balancer {} is not attached to router {}",
                            lb.name, router.name
                        )));
                        plan.operations.push(router_mutation(
                            router.uuid,
                            Mutation::insert("load_balancer", Value::set([Atom::Uuid(actual.uuid)])),
                        ));
                    } else if attached && !wanted {
                        plan.differences.push(Difference::Differs(format!(
                            "Load_Balancer {} is attached to router {}",
                            lb.name, router.name
                        )));
                        plan.operations.push(router_mutation(
                            router.uuid,
                            Mutation::delete("load_balancer", Value::set([Atom::Uuid(actual.uuid)])),
                        ));
                    }
                }
            }
            None => {
                plan.differences
                    .push(Difference::Missing(format!("Load_Balancer {}", lb.name)));
                let uuid_name = format!("lb{index}");
                // Guard: names are not indexed, so a retry must not create a second balancer.
                plan.operations.push(Operation::Wait {
                    table: nb::LOAD_BALANCER.into(),
                    conditions: vec![Where::new(
                        "external_ids",
                        crate::ovsdb::Function::Includes,
                        Value::map([(OWNER_KEY, owner.clone())]),
                    )],
                    columns: vec!["name".into()],
                    until: crate::ovsdb::WaitUntil::Equal,
                    rows: vec![],
                    timeout_ms: Some(0),
                });
                let mut row = load_balancer_row(lb);
                row.insert("health_check".to_string(), health_check_rows(plan, lb, &uuid_name));
                plan.operations.push(Operation::Insert {
                    table: nb::LOAD_BALANCER.into(),
                    row,
                    uuid_name: Some(uuid_name.clone()),
                });
                plan.operations.push(Operation::Mutate {
                    table: nb::LOGICAL_SWITCH.into(),
                    conditions: vec![Where::uuid(switch.uuid)],
                    mutations: vec![Mutation::insert(
                        "load_balancer",
                        Value::set([Atom::named_uuid(uuid_name.clone())]),
                    )],
                });
                if let Some(router) = lb
                    .router
                    .filter(|uuid| routers.iter().any(|router| router.uuid == *uuid))
                {
                    plan.operations.push(router_mutation(
                        router,
                        Mutation::insert("load_balancer", Value::set([Atom::named_uuid(uuid_name)])),
                    ));
                }
            }
        }
    }
    for (owner, actual) in owned_by_key {
        if desired.load_balancers.contains_key(owner) {
            continue;
        }
        plan.differences.push(Difference::Orphan(format!(
            "Load_Balancer {} ({})",
            actual.name, actual.uuid
        )));
        for switch in switches
            .iter()
            .filter(|switch| switch.load_balancer.contains(&actual.uuid))
        {
            plan.operations.push(Operation::Mutate {
                table: nb::LOGICAL_SWITCH.into(),
                conditions: vec![Where::uuid(switch.uuid)],
                mutations: vec![Mutation::delete("load_balancer", Value::set([Atom::Uuid(actual.uuid)]))],
            });
        }
        for router in routers
            .iter()
            .filter(|router| router.load_balancer.contains(&actual.uuid))
        {
            plan.operations.push(router_mutation(
                router.uuid,
                Mutation::delete("load_balancer", Value::set([Atom::Uuid(actual.uuid)])),
            ));
        }
        plan.operations.push(Operation::Delete {
            table: nb::LOAD_BALANCER.into(),
            conditions: vec![Where::uuid(actual.uuid)],
        });
    }
}

/// Diffs desired against actual NB rows.
pub fn plan(
    desired: &Desired,
    switches: &[LogicalSwitch],
    ports: &BTreeMap<Uuid, LogicalSwitchPort>,
    routers: &[LogicalRouter],
    balancers: &[LoadBalancer],
    checks: &BTreeMap<Uuid, LoadBalancerHealthCheck>,
    gc_switches: bool,
) -> Plan {
    let mut plan = Plan::default();
    // A switch name may be used twice (names are not indexed): prefer ours, then the oldest.
    let mut switch_by_name: BTreeMap<&str, &LogicalSwitch> = BTreeMap::new();
    for switch in switches {
        let keep = match switch_by_name.get(switch.name.as_str()) {
            None => true,
            Some(current) => is_owned(&switch.external_ids) && !is_owned(&current.external_ids),
        };
        if keep {
            switch_by_name.insert(&switch.name, switch);
        }
    }
    let switch_of_port: BTreeMap<Uuid, &LogicalSwitch> = switches
        .iter()
        .flat_map(|switch| switch.ports.iter().map(move |port| (*port, switch)))
        .collect();
    let port_by_name: BTreeMap<&str, &LogicalSwitchPort> =
        ports.values().map(|port| (port.name.as_str(), port)).collect();

    // Switches: created when absent (then owned), used as they are otherwise.
    let mut new_switch: BTreeMap<&str, String> = BTreeMap::new();
    for (index, (switch, subnet)) in desired.switches.iter().enumerate() {
        if switch_by_name.contains_key(switch.as_str()) {
            continue;
        }
        plan.differences
            .push(Difference::Missing(format!("Logical_Switch {switch}")));
        let uuid_name = format!("switch{index}");
        // Guard: a retried transaction must not create a second switch of the same name.
        plan.operations.push(Operation::Wait {
            table: nb::LOGICAL_SWITCH.into(),
            conditions: vec![Where::equal("name", Value::string(switch.clone()))],
            columns: vec!["name".into()],
            until: crate::ovsdb::WaitUntil::Equal,
            rows: vec![],
            timeout_ms: Some(0),
        });
        plan.operations.push(Operation::Insert {
            table: nb::LOGICAL_SWITCH.into(),
            row: Row::from([
                ("name".to_string(), Value::string(switch.clone())),
                (
                    "external_ids".to_string(),
                    Value::map([
                        (VENDOR_KEY, VENDOR.to_string()),
                        (OWNER_KEY, format!("subnet/{subnet}")),
                    ]),
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
    for (index, (name, port)) in desired.ports.iter().enumerate() {
        match port_by_name.get(name.as_str()) {
            Some(actual) if !is_owned(&actual.external_ids) => {
                plan.conflicts.insert(
                    name.clone(),
                    format!("Logical_Switch_Port {} ({})", actual.name, actual.uuid),
                );
            }
            Some(actual) => {
                if !port_matches(actual, port) {
                    plan.differences
                        .push(Difference::Differs(format!("Logical_Switch_Port {name}")));
                    plan.operations.push(Operation::Update {
                        table: nb::LOGICAL_SWITCH_PORT.into(),
                        conditions: vec![Where::uuid(actual.uuid)],
                        row: port_row(port),
                    });
                }
                if !switch_of_port.contains_key(&actual.uuid) {
                    plan.differences.push(Difference::Differs(format!(
                        "Logical_Switch_Port {name} is not on switch {}",
                        port.switch
                    )));
                    if let Some(switch) = switch_ref(&port.switch) {
                        plan.operations.push(Operation::Mutate {
                            table: nb::LOGICAL_SWITCH.into(),
                            conditions: vec![Where::uuid(switch_uuid_or_nil(&switch))],
                            mutations: vec![Mutation::insert("ports", Value::set([Atom::Uuid(actual.uuid)]))],
                        });
                    }
                }
            }
            None => {
                plan.differences
                    .push(Difference::Missing(format!("Logical_Switch_Port {name}")));
                let uuid_name = format!("port{index}");
                plan.operations.push(Operation::Insert {
                    table: nb::LOGICAL_SWITCH_PORT.into(),
                    row: port_row(port),
                    uuid_name: Some(uuid_name.clone()),
                });
                inserts
                    .entry(port.switch.clone())
                    .or_default()
                    .push(Atom::named_uuid(uuid_name));
            }
        }
    }
    // Garbage: owned ports nothing wants; removing them from their switch deletes them.
    let mut removals: BTreeMap<Uuid, Vec<Atom>> = BTreeMap::new();
    for port in ports.values() {
        if is_owned(&port.external_ids) && !desired.ports.contains_key(&port.name) {
            plan.differences.push(Difference::Orphan(format!(
                "Logical_Switch_Port {} ({})",
                port.name, port.uuid
            )));
            if let Some(switch) = switch_of_port.get(&port.uuid) {
                removals.entry(switch.uuid).or_default().push(Atom::Uuid(port.uuid));
            }
        }
    }
    for (switch_uuid, ports) in removals {
        plan.operations.push(Operation::Mutate {
            table: nb::LOGICAL_SWITCH.into(),
            conditions: vec![Where::uuid(switch_uuid)],
            mutations: vec![Mutation::delete("ports", Value::Set(ports.into_iter().collect()))],
        });
    }
    for (switch, ports) in inserts {
        let Some(reference) = switch_ref(&switch) else { continue };
        let condition = match &reference {
            Atom::NamedUuid(name) => Where::equal("_uuid", Value::Atom(Atom::named_uuid(name.clone()))),
            other => Where::equal("_uuid", Value::Atom(other.clone())),
        };
        plan.operations.push(Operation::Mutate {
            table: nb::LOGICAL_SWITCH.into(),
            conditions: vec![condition],
            mutations: vec![Mutation::insert("ports", Value::Set(ports.into_iter().collect()))],
        });
    }
    plan_load_balancers(&mut plan, desired, switches, routers, balancers, checks);
    // Owned switches whose subnet is gone and that hold no ports (a full pass sees all ports).
    for switch in switches.iter().filter(|_| gc_switches) {
        if is_owned(&switch.external_ids)
            && !desired.switches.contains_key(&switch.name)
            && switch.ports.is_empty()
            && switch.load_balancer.is_empty()
        {
            plan.differences.push(Difference::Orphan(format!(
                "Logical_Switch {} ({})",
                switch.name, switch.uuid
            )));
            plan.operations.push(Operation::Delete {
                table: nb::LOGICAL_SWITCH.into(),
                conditions: vec![Where::uuid(switch.uuid)],
            });
        }
    }
    plan
}

fn switch_uuid_or_nil(atom: &Atom) -> Uuid {
    atom.as_uuid().unwrap_or(Uuid::nil())
}

fn condition(status: bool, reason: &str, message: String, previous: &[Condition]) -> Vec<Condition> {
    let last_transition_ms = previous
        .iter()
        .find(|condition| {
            condition.condition_type == "Ready" && condition.status == status && condition.reason == reason
        })
        .map(|condition| condition.last_transition_ms)
        .unwrap_or_else(now_ms);
    vec![Condition {
        condition_type: "Ready".into(),
        status,
        reason: reason.into(),
        message,
        last_transition_ms,
    }]
}

/// What one pass computed: the desired rows in its scope, the plan, and the objects whose status
/// it decides.
pub struct Computed {
    pub desired: Desired,
    pub plan: Plan,
    pub vips: Vec<Vip>,
    pub rules: Vec<SwitchLbRule>,
    /// How many objects and NB rows the pass looked at.
    pub examined: usize,
}

/// What the registry wants in NB for `dirty` (everything, or the objects a change affects), and
/// the difference to what `cache` holds. `memory` is read and updated.
pub fn compute_plan(registry: &Registry, cache: &Cache, dirty: &Dirty, memory: &mut Memory) -> Computed {
    if dirty.full {
        compute_full(registry, cache, memory)
    } else {
        compute_scoped(registry, cache, dirty, memory)
    }
}

fn compute_full(registry: &Registry, cache: &Cache, memory: &mut Memory) -> Computed {
    let subnets: Vec<_> = registry.list_subnets().into_iter().map(|(subnet, _)| subnet).collect();
    let (vips, pods, rules) = (
        registry.list_vips(),
        registry.list_pods(),
        registry.list_switch_lb_rules(),
    );
    let sources = registry.health_check_sources();
    let switches = LogicalSwitch::all(cache);
    let ports: BTreeMap<Uuid, LogicalSwitchPort> = LogicalSwitchPort::all(cache)
        .into_iter()
        .map(|port| (port.uuid, port))
        .collect();
    let router_ports = LogicalRouterPort::all(cache);
    let routers = LogicalRouter::all(cache);
    let router_macs = desired::router_macs(&switches, &ports, &router_ports);
    let switch_routers = desired::switch_routers(&switches, &ports, &router_ports, &routers);
    let annotated: BTreeMap<&str, &Vip> = vips.iter().map(|vip| (vip.spec.name.as_str(), vip)).collect();
    let candidates = desired::candidates_by_vip(&pods);
    let mut desired = desired::compute(&subnets, &vips, &candidates, &pods, &annotated, &router_macs);
    desired::load_balancers(&mut desired, &rules, &subnets, &vips, &pods, &sources, &switch_routers);
    let balancers = LoadBalancer::all(cache);
    let checks: BTreeMap<Uuid, LoadBalancerHealthCheck> = LoadBalancerHealthCheck::all(cache)
        .into_iter()
        .map(|check| (check.uuid, check))
        .collect();
    let plan = plan(&desired, &switches, &ports, &routers, &balancers, &checks, true);
    memory.reset(router_macs, switch_routers);
    for vip in &vips {
        memory.record_vip(&vip.spec.name, &desired);
    }
    for pod in &pods {
        memory.record_pod(&pod.key(), &desired);
    }
    let examined = vips.len() + pods.len() + rules.len() + ports.len() + balancers.len();
    Computed {
        desired,
        plan,
        vips,
        rules,
        examined,
    }
}

/// A pass over the objects a change affects: its cost follows the change, not the store.
fn compute_scoped(registry: &Registry, cache: &Cache, dirty: &Dirty, memory: &mut Memory) -> Computed {
    let subnets: Vec<_> = registry.list_subnets().into_iter().map(|(subnet, _)| subnet).collect();
    let mut vip_names = dirty.vips.clone();
    let mut pod_keys = dirty.pods.clone();
    let mut pods: BTreeMap<PodRef, Pod> = BTreeMap::new();
    // A pod affects the VIPs it names, holds, or was a parent of.
    for key in &dirty.pods {
        if let Ok(pod) = registry.get_pod(key) {
            vip_names.extend(aap_vips(&pod.spec.annotations));
            vip_names.extend(pod.nics.iter().filter_map(|nic| nic.vip.clone()));
            pods.insert(key.clone(), pod);
        }
        for port in memory.ports_of_pod(key) {
            vip_names.extend(memory.vips_parented_by(port).cloned());
        }
    }
    let vips: Vec<Vip> = vip_names
        .iter()
        .filter_map(|name| registry.get_vip(name).ok())
        .collect();
    // Parent candidates: the pods whose annotation names an AAP VIP in scope.
    let candidates: Vec<Pod> = vips
        .iter()
        .filter(|vip| vip.is_aap())
        .flat_map(|vip| registry.pods_naming_aap(&vip.spec.name))
        .map(|pod| (pod.key(), pod))
        .collect::<BTreeMap<_, _>>()
        .into_values()
        .collect();
    // A VIP that changed changes the port security of its old and new parents.
    for vip in vips.iter().filter(|vip| dirty.vips.contains(&vip.spec.name)) {
        for port in memory.parents_of(&vip.spec.name) {
            if let Some(Object::Pod(key)) = memory.object_of_port(port) {
                pod_keys.insert(key.clone());
            }
        }
        for pod in &candidates {
            if crate::model::eligible_nic(vip, pod).is_some() {
                pod_keys.insert(pod.key());
            }
        }
    }
    for name in dirty
        .vips
        .iter()
        .filter(|name| !vips.iter().any(|vip| &vip.spec.name == *name))
    {
        // A deleted VIP: its old parents lose its addresses.
        for port in memory.parents_of(name) {
            if let Some(Object::Pod(key)) = memory.object_of_port(port) {
                pod_keys.insert(key.clone());
            }
        }
    }
    for key in &pod_keys {
        if pods.contains_key(key) {
            continue;
        }
        let found = candidates
            .iter()
            .find(|pod| &pod.key() == key)
            .cloned()
            .or_else(|| registry.get_pod(key).ok());
        if let Some(pod) = found {
            pods.insert(key.clone(), pod);
        }
    }
    let pods: Vec<Pod> = pods.into_values().collect();
    // The VIPs the pods' annotations name decide their port security.
    let extra: Vec<Vip> = pods
        .iter()
        .flat_map(|pod| aap_vips(&pod.spec.annotations))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|name| !vip_names.contains(name))
        .filter_map(|name| registry.get_vip(&name).ok())
        .collect();
    let annotated: BTreeMap<&str, &Vip> = vips
        .iter()
        .chain(extra.iter())
        .map(|vip| (vip.spec.name.as_str(), vip))
        .collect();
    let candidate_index = desired::candidates_by_vip(&candidates);
    let mut desired = desired::compute(
        &subnets,
        &vips,
        &candidate_index,
        &pods,
        &annotated,
        &memory.router_macs,
    );

    // Rules: the changed ones, those naming a VIP in scope, and those selecting pods of a
    // namespace a changed pod is in.
    let pod_namespaces: BTreeSet<&str> = dirty.pods.iter().map(|key| key.namespace.as_str()).collect();
    let rules: Vec<SwitchLbRule> = registry
        .list_switch_lb_rules()
        .into_iter()
        .filter(|rule| {
            dirty.rules.contains(&rule.name)
                || vip_names.contains(&rule.vip)
                || (!rule.selector.is_empty()
                    && (rule.namespace.is_empty() || pod_namespaces.contains(rule.namespace.as_str())))
        })
        .collect();
    let mut rule_names: BTreeSet<String> = dirty.rules.clone();
    rule_names.extend(rules.iter().map(|rule| rule.name.clone()));
    if !rules.is_empty() {
        let rule_vips: Vec<Vip> = rules
            .iter()
            .filter(|rule| rule.vip.parse::<std::net::IpAddr>().is_err())
            .filter_map(|rule| registry.get_vip(&rule.vip).ok())
            .collect();
        let rule_pods = if rules.iter().any(|rule| rule.namespace.is_empty()) {
            registry.list_pods()
        } else {
            rules
                .iter()
                .map(|rule| rule.namespace.as_str())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .flat_map(|namespace| registry.pods_in_namespace(namespace))
                .collect()
        };
        let sources = registry.health_check_sources();
        desired::load_balancers(
            &mut desired,
            &rules,
            &subnets,
            &rule_vips,
            &rule_pods,
            &sources,
            &memory.switch_routers,
        );
    }

    // The NB rows in scope: by name for what is wanted, by owner and memory for what was.
    let mut port_uuids: BTreeSet<Uuid> = BTreeSet::new();
    let mut by_name = |name: &str| {
        port_uuids.extend(cache.find(&nb::port_by_name(), name).iter().copied());
    };
    for name in desired.ports.keys() {
        by_name(name);
    }
    for name in &vip_names {
        for port in memory.ports_of_vip(name) {
            by_name(port);
        }
    }
    for key in &pod_keys {
        for port in memory.ports_of_pod(key) {
            by_name(port);
        }
    }
    for name in &vip_names {
        port_uuids.extend(cache.find(&nb::port_by_owner(), &format!("vip/{name}")).iter().copied());
    }
    let ports: BTreeMap<Uuid, LogicalSwitchPort> = port_uuids
        .iter()
        .filter_map(|uuid| LogicalSwitchPort::get(cache, uuid))
        .map(|port| (port.uuid, port))
        .collect();
    let switches = LogicalSwitch::all_with_ports_of_interest(cache, &port_uuids);
    let balancers: Vec<LoadBalancer> = rule_names
        .iter()
        .flat_map(|rule| {
            [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
                .into_iter()
                .map(move |protocol| format!("slr/{rule}/{}", protocol.as_str()))
        })
        .flat_map(|owner| cache.find(&nb::load_balancer_by_owner(), &owner).to_vec())
        .filter_map(|uuid| LoadBalancer::get(cache, &uuid))
        .collect();
    let checks: BTreeMap<Uuid, LoadBalancerHealthCheck> = balancers
        .iter()
        .flat_map(|lb| lb.health_check.iter())
        .filter_map(|uuid| LoadBalancerHealthCheck::get(cache, uuid))
        .map(|check| (check.uuid, check))
        .collect();
    // Routers are few: all of them, for the balancers' attachments.
    let routers = LogicalRouter::all(cache);
    let plan = plan(&desired, &switches, &ports, &routers, &balancers, &checks, false);
    for name in &vip_names {
        memory.record_vip(name, &desired);
    }
    for key in &pod_keys {
        memory.record_pod(key, &desired);
    }
    let examined = vips.len() + pods.len() + candidates.len() + rules.len() + ports.len() + balancers.len();
    Computed {
        desired,
        plan,
        vips,
        rules,
        examined,
    }
}

/// One pass over `dirty`: compute, diff, send; then write the status of the VIPs and rules in
/// scope from what NB holds.
pub async fn pass(
    registry: &Registry,
    client: &Client,
    dirty: &Dirty,
    memory: &mut Memory,
    lock: Option<&str>,
) -> Result<usize, OvsdbError> {
    let Computed {
        desired,
        plan,
        vips,
        rules,
        examined,
    } = compute_plan(registry, &client.cache(), dirty, memory);
    if dirty.full {
        let span = tracing::Span::current();
        span.record(
            "vips",
            tracing::field::display(span_names(vips.iter().map(|vip| vip.spec.name.clone()))),
        );
        span.record(
            "rules",
            tracing::field::display(span_names(rules.iter().map(|rule| rule.name.clone()))),
        );
    }
    let kind = if dirty.full { "full" } else { "incremental" };
    let metrics = telemetry::metrics();
    metrics
        .sync_passes
        .get_or_create(&telemetry::PassLabels { kind: kind.into() })
        .inc();
    metrics.sync_pass_objects.set(examined as i64);
    let sent = plan.operations.len();
    if sent > 0 {
        debug!(operations = sent, "applying NB changes");
        match lock {
            // The fence: the server refuses the whole transaction unless this session holds the
            // lock (RFC 7047 §5.2.10), so a daemon that lost it cannot land a write.
            Some(lock) => {
                let mut operations = Vec::with_capacity(sent + 1);
                operations.push(Operation::Assert { lock: lock.to_string() });
                operations.extend(plan.operations.iter().cloned());
                client.transact(&operations).await?;
            }
            None => {
                client.transact(&plan.operations).await?;
            }
        }
    }
    // Rule status: the balancers' VIP entries and backends, or why there are none.
    for rule in &rules {
        let prefix = format!("slr/{}/", rule.name);
        let balancers: Vec<_> = desired
            .load_balancers
            .iter()
            .filter(|(owner, _)| owner.starts_with(&prefix))
            .map(|(_, lb)| lb)
            .collect();
        let vips: Vec<String> = balancers.iter().flat_map(|lb| lb.vips.keys().cloned()).collect();
        let mut backends: Vec<String> = balancers
            .iter()
            .flat_map(|lb| lb.vips.values())
            .flat_map(|targets| targets.split(',').filter(|target| !target.is_empty()))
            .filter_map(|target| {
                target
                    .rsplit_once(':')
                    .map(|(address, _)| address.trim_matches(['[', ']']).to_string())
            })
            .collect();
        backends.sort();
        backends.dedup();
        let previous = registry.rule_status(&rule.name);
        let conditions = match desired
            .rules_blocked
            .get(&rule.name)
            .or(desired.rules_unready.get(&rule.name))
        {
            Some(blocked) => condition(false, blocked.reason, blocked.message.clone(), &previous.conditions),
            None => condition(
                true,
                "Synced",
                "NB holds this rule's load balancers".into(),
                &previous.conditions,
            ),
        };
        registry.set_rule_status(
            &rule.name,
            RuleStatus {
                conditions,
                vips,
                backends,
            },
        );
    }
    // VIP status, from what was planned and refused; written only where it changes.
    for vip in &vips {
        let name = &vip.spec.name;
        let (status, reason, message) = if let Some(Blocked::NoRouterPort { switch }) = desired.blocked.get(name) {
            (
                false,
                "NoRouterPort",
                format!("switch {switch} has no logical router port"),
            )
        } else if let Some(row) = desired
            .vip_ports
            .get(name)
            .into_iter()
            .flatten()
            .find_map(|port| plan.conflicts.get(port))
        {
            (false, "Conflict", format!("{row} exists and is not owned by ovn-vipd"))
        } else {
            (true, "Synced", "NB holds what this VIP needs".to_string())
        };
        // Status reports the MAC that answers ARP/ND for the VIP in NB, when it is not the VIP's
        // own: the router port's for a switch_lb_vip.
        let nb_mac = desired
            .vip_macs
            .get(name)
            .and_then(|mac| mac.parse::<crate::model::MacAddr>().ok())
            .filter(|mac| *mac != vip.mac);
        registry.set_vip_nb_mac(name, nb_mac);
        let unchanged = vip.conditions.len() == 1
            && vip.conditions[0].status == status
            && vip.conditions[0].reason == reason
            && vip.conditions[0].message == message;
        if !unchanged {
            registry.set_vip_conditions(name, condition(status, reason, message, &vip.conditions));
        }
    }
    Ok(sent)
}

fn mark_unavailable(registry: &Registry, error: &str) {
    for vip in registry.list_vips() {
        let conditions = condition(
            false,
            "NBUnavailable",
            format!("OVN NB is unavailable: {error}"),
            &vip.conditions,
        );
        registry.set_vip_conditions(&vip.spec.name, conditions);
    }
}

/// What the sync controller tells the daemon.
pub struct Hooks {
    /// Beaten every time round the loop (at least every `IDLE_BEAT`): the watchdog's evidence.
    pub heartbeat: Heartbeat,
    /// Counts finished passes; the first one makes the daemon ready.
    pub passes: tokio::sync::watch::Sender<u64>,
    /// The daemon's role (active, standby), for the API, the health service and the metrics.
    pub role: tokio::sync::watch::Sender<Role>,
}

/// The sync controller's settings.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Interval of the safety-net full pass.
    pub resync_interval: Duration,
    /// The OVSDB lock on NB that makes this daemon the one writer ([`crate::role::LOCK_NAME`]);
    /// `None` writes without one (a single daemon that owns its NB, e.g. `check --repair`).
    pub lock: Option<String>,
    /// How long to wait for the monitor's echo of a write before looking at its scope again.
    pub echo_timeout: Duration,
    /// First delay after a failed pass; doubled on each failure up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl ControllerConfig {
    pub fn new(resync_interval: Duration, lock: Option<String>) -> ControllerConfig {
        ControllerConfig {
            resync_interval,
            lock,
            echo_timeout: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// How often an idle loop still goes round, so the watchdog can tell idle from stuck.
const IDLE_BEAT: Duration = Duration::from_millis(250);

/// Everything the sync reacts to, in one closed set: the controller loop takes one at a time and
/// no source is read anywhere else, so none can be dropped while another is awaited.
#[derive(Debug)]
enum Event {
    /// The registry changed an object.
    Registry(crate::registry::Change),
    /// NB rows changed (including the echo of our own writes).
    NbChanged(Arc<Vec<crate::ovsdb::RowChange>>),
    /// The client (re)connected and its cache is in sync; it may have been replaced whole.
    NbResynced {
        remote: String,
        resumed: bool,
    },
    /// The NB connection was lost (and with it any lock it held).
    NbDisconnected(String),
    /// The server granted the lock.
    LockGained(String),
    /// The server took the lock away (`stolen`).
    LockLost(String),
    /// An event stream overflowed: what changed is unknown.
    Lagged(&'static str),
    /// The periodic safety-net full pass is due.
    ResyncTick,
    /// The echo of the last write did not arrive in time.
    EchoTimeout,
    /// A failed pass may be retried.
    RetryDue,
    /// Nothing happened for `IDLE_BEAT`.
    Idle,
    Shutdown,
}

/// The state of the one sync loop.
struct Controller {
    registry: Arc<Registry>,
    client: Client,
    config: ControllerConfig,
    hooks: Hooks,
    memory: Memory,
    /// What the next pass looks at.
    pending: Dirty,
    /// After a write: the scope it covered and when to stop waiting for its echo. No pass runs
    /// meanwhile (the cache may not show the write yet), but every event is still handled.
    echo: Option<(Dirty, tokio::time::Instant)>,
    /// The error policy: after a failed pass, no pass before this instant.
    retry_at: Option<tokio::time::Instant>,
    backoff: Duration,
    role: Role,
    /// Whether the server has granted the lock on the current connection.
    locked: bool,
}

/// Runs until `shutdown`: one loop over [`Event`]s. A pass over what changed runs whenever the
/// registry or NB changes; a full pass after every (re)connect, on lag, when the lock is gained,
/// and every `resync_interval`. A failed pass is retried with exponential backoff. With a lock
/// configured, passes run only while it is held, and every write asserts it.
///
/// `nb_events` must be subscribed before the client's first connection (see
/// [`Client::start_subscribed`]): the lock's grant comes once, with that connection.
pub async fn run(
    registry: Arc<Registry>,
    client: Client,
    mut nb_events: tokio::sync::broadcast::Receiver<ClientEvent>,
    config: ControllerConfig,
    shutdown: CancellationToken,
    hooks: Hooks,
) {
    let mut registry_changes = registry.subscribe();
    let mut resync = tokio::time::interval(config.resync_interval);
    resync.tick().await;
    let mut idle = tokio::time::interval(IDLE_BEAT);
    let backoff = config.backoff_initial;
    let mut controller = Controller {
        registry,
        client,
        config,
        hooks,
        memory: Memory::default(),
        pending: Dirty::full(),
        echo: None,
        retry_at: None,
        backoff,
        role: Role::Unknown,
        locked: false,
    };
    if controller.config.lock.is_none() {
        controller.set_role(Role::Active);
    }
    loop {
        controller.hooks.heartbeat.beat();
        if controller.may_pass() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = controller.pass() => {}
            }
        }
        let echo_deadline = controller.echo.as_ref().map(|(_, deadline)| *deadline);
        let retry_at = controller.retry_at;
        let event = tokio::select! {
            _ = shutdown.cancelled() => Event::Shutdown,
            _ = resync.tick() => Event::ResyncTick,
            _ = idle.tick() => Event::Idle,
            _ = sleep_until(echo_deadline) => Event::EchoTimeout,
            _ = sleep_until(retry_at) => Event::RetryDue,
            change = registry_changes.recv() => match change {
                Ok(change) => Event::Registry(change),
                Err(RecvError::Lagged(_)) => Event::Lagged("registry"),
                Err(RecvError::Closed) => Event::Shutdown,
            },
            event = nb_events.recv() => match event {
                Ok(event) => Event::from(event),
                Err(RecvError::Lagged(_)) => Event::Lagged("NB"),
                Err(RecvError::Closed) => Event::Shutdown,
            },
        };
        if matches!(event, Event::Shutdown) {
            return;
        }
        controller.handle(event);
        // One pass covers every event queued so far: take them all first.
        loop {
            let event = match registry_changes.try_recv() {
                Ok(change) => Event::Registry(change),
                Err(TryRecvError::Lagged(_)) => Event::Lagged("registry"),
                Err(_) => match nb_events.try_recv() {
                    Ok(event) => Event::from(event),
                    Err(TryRecvError::Lagged(_)) => Event::Lagged("NB"),
                    Err(_) => break,
                },
            };
            controller.handle(event);
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl From<ClientEvent> for Event {
    fn from(event: ClientEvent) -> Event {
        match event {
            ClientEvent::Changed(changes) => Event::NbChanged(changes),
            ClientEvent::Resynced { remote, resumed } => Event::NbResynced { remote, resumed },
            ClientEvent::Disconnected { error } => Event::NbDisconnected(error),
            ClientEvent::LockAcquired(lock) => Event::LockGained(lock),
            ClientEvent::LockStolen(lock) => Event::LockLost(lock),
        }
    }
}

impl Controller {
    fn may_pass(&self) -> bool {
        !self.pending.is_empty()
            && self.echo.is_none()
            && self.retry_at.is_none()
            && self.role == Role::Active
            && self.client.state().is_connected()
    }

    fn set_role(&mut self, role: Role) {
        if self.role == role {
            return;
        }
        match role {
            Role::Active => info!(lock = ?self.config.lock, "active: this daemon writes NB"),
            Role::Standby => warn!(
                lock = ?self.config.lock,
                "standby: another daemon holds the NB lock; waiting for it, writing nothing to NB"
            ),
            Role::Unknown => info!("NB lock not held (no NB connection); writing nothing to NB"),
        }
        self.role = role;
        telemetry::metrics().active.set(i64::from(role == Role::Active));
        self.hooks.role.send_replace(role);
    }

    fn is_our_lock(&self, lock: &str) -> bool {
        self.config.lock.as_deref() == Some(lock)
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Registry(change) => {
                unavailable_if_disconnected(&change, &self.registry, &self.client);
                self.pending.merge(Dirty::from_registry(&change));
            }
            Event::NbChanged(changes) => {
                self.pending
                    .merge(dirty_from_nb(&changes, &self.memory, &self.client.cache()));
                // The first change after a write is its echo: the touched objects are looked at
                // again, which confirms them (a pass is not repeated whole for its own echo).
                self.echo = None;
            }
            Event::NbResynced { remote, resumed } => {
                let summary = nb::summary(&self.client.cache());
                info!(%remote, resumed, ?summary, "NB cache in sync");
                // The cache may have been replaced whole: look at everything.
                self.pending.full = true;
                self.echo = None;
                if self.config.lock.is_some() && !self.locked {
                    // The lock was asked for on this connection before it became ready; a grant
                    // would have come first (`LockGained`), so another session holds it.
                    self.set_role(Role::Standby);
                }
            }
            Event::NbDisconnected(error) => {
                warn!(%error, "NB unavailable");
                mark_unavailable(&self.registry, &error);
                if let Some((scope, _)) = self.echo.take() {
                    self.pending.merge(scope);
                }
                // The server drops a session's locks with the session.
                if self.config.lock.is_some() {
                    self.locked = false;
                    if self.role == Role::Active {
                        self.set_role(Role::Unknown);
                    }
                }
            }
            Event::LockGained(lock) if self.is_our_lock(&lock) => {
                self.locked = true;
                self.pending.full = true;
                self.retry_at = None;
                self.set_role(Role::Active);
            }
            Event::LockLost(lock) if self.is_our_lock(&lock) => {
                self.locked = false;
                self.set_role(Role::Standby);
            }
            Event::LockGained(_) | Event::LockLost(_) => {}
            Event::Lagged(stream) => {
                warn!(stream, "events overflowed; full pass");
                self.pending.full = true;
                if let Some((scope, _)) = self.echo.take() {
                    self.pending.merge(scope);
                }
                // A lost lock event must not leave the role wrong: ask the client what it holds.
                if let Some(lock) = self.config.lock.clone() {
                    self.locked = self.client.holds_lock(&lock);
                    if self.locked {
                        self.set_role(Role::Active);
                    } else if self.client.state().is_connected() {
                        self.set_role(Role::Standby);
                    } else if self.role == Role::Active {
                        self.set_role(Role::Unknown);
                    }
                }
            }
            Event::ResyncTick => {
                let summary = nb::summary(&self.client.cache());
                info!(
                    ?summary,
                    connected = self.client.state().is_connected(),
                    role = self.role.as_str(),
                    "periodic resync"
                );
                self.pending.full = true;
            }
            Event::EchoTimeout => {
                // Without an echo, look at the same scope again.
                if let Some((scope, _)) = self.echo.take() {
                    self.pending.merge(scope);
                }
            }
            Event::RetryDue => self.retry_at = None,
            Event::Idle | Event::Shutdown => {}
        }
    }

    /// One pass over what is pending; its outcome sets the echo wait or the retry time.
    async fn pass(&mut self) {
        let scope = std::mem::take(&mut self.pending);
        let started = std::time::Instant::now();
        let lock = self.config.lock.clone();
        let span = pass_span(&scope);
        let result = pass(&self.registry, &self.client, &scope, &mut self.memory, lock.as_deref())
            .instrument(span.clone())
            .await;
        telemetry::metrics()
            .reconcile_seconds
            .observe(started.elapsed().as_secs_f64());
        span.in_scope(|| {
            debug!(full = scope.full, vips = scope.vips.len(), pods = scope.pods.len(), rules = scope.rules.len(), elapsed = ?started.elapsed(), "sync pass");
        });
        match result {
            Ok(sent) => {
                self.backoff = self.config.backoff_initial;
                self.hooks.passes.send_modify(|passes| *passes += 1);
                if sent > 0 {
                    info!(operations = sent, full = scope.full, "NB updated");
                    self.echo = Some((scope, tokio::time::Instant::now() + self.config.echo_timeout));
                }
            }
            Err(error) => {
                if is_lock_refusal(&error) {
                    // The server says this session does not hold the lock (its `stolen` may still
                    // be on the way): nothing was written; wait for the lock again.
                    warn!(%error, "NB refused the write: the lock is not ours; standby");
                    self.locked = false;
                    self.set_role(Role::Standby);
                } else {
                    warn!(%error, retry_in = ?self.backoff, "NB sync failed; retrying");
                }
                if !self.client.state().is_connected() {
                    mark_unavailable(&self.registry, &error.to_string());
                }
                self.pending.merge(scope);
                self.retry_at = Some(tokio::time::Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(self.config.backoff_max);
            }
        }
    }
}

/// The server's refusal of an `assert` (RFC 7047 §5.2.10: error "not owner").
pub fn is_lock_refusal(error: &OvsdbError) -> bool {
    matches!(error, OvsdbError::Transaction(error) if error.error == "not owner")
}

/// A VIP created or changed while NB is away says so at once (not "Pending").
fn unavailable_if_disconnected(change: &crate::registry::Change, registry: &Registry, client: &Client) {
    let crate::registry::Change::Vip(name) = change else {
        return;
    };
    let state = client.state();
    if state.is_connected() {
        return;
    }
    let Ok(vip) = registry.get_vip(name) else { return };
    let error = state.last_error.unwrap_or_else(|| "not connected".into());
    registry.set_vip_conditions(
        name,
        condition(
            false,
            "NBUnavailable",
            format!("OVN NB is unavailable: {error}"),
            &vip.conditions,
        ),
    );
}

/// A span per pass naming what it looks at (the first few objects of each kind), so every log
/// line of a pass says which objects it was about.
fn pass_span(scope: &Dirty) -> tracing::Span {
    let span = tracing::info_span!(
        "pass",
        full = scope.full,
        vips = tracing::field::Empty,
        pods = tracing::field::Empty,
        rules = tracing::field::Empty,
    );
    // A full pass names what it looked at once it knows (see `pass`).
    if !scope.full {
        span.record("vips", tracing::field::display(span_names(scope.vips.iter().cloned())));
        span.record(
            "pods",
            tracing::field::display(span_names(scope.pods.iter().map(|pod| pod.to_string()))),
        );
        span.record(
            "rules",
            tracing::field::display(span_names(scope.rules.iter().cloned())),
        );
    }
    span
}

/// The first eight names, then "…".
fn span_names(items: impl Iterator<Item = String>) -> String {
    let mut names: Vec<String> = items.take(9).collect();
    if names.len() == 9 {
        names[8] = "…".into();
    }
    names.join(",")
}
