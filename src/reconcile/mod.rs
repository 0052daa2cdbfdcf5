//! NB sync: computes the rows NB should hold from the registry (`desired`), diffs them against
//! the OVSDB client's cache, and sends only the difference, in one transaction. Level-triggered:
//! every pass looks at the whole picture, so a missed event costs nothing but latency, and a pass
//! with nothing to change sends nothing.
//!
//! It never modifies or deletes a row without `external_ids:vendor=ovn-vipd`.

pub mod desired;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::model::Condition;
use crate::nb::{
    self, LoadBalancer, LoadBalancerHealthCheck, LogicalRouterPort, LogicalSwitch, LogicalSwitchPort, NbRow,
};
use crate::ovsdb::{Atom, Client, ClientEvent, Condition as Where, Mutation, Operation, OvsdbError, Row, Value};
use crate::registry::{now_ms, Change, Registry, RuleStatus};
use crate::telemetry::{self, Heartbeat};
use desired::{Blocked, Desired, DesiredLoadBalancer, DesiredPort, OWNER_KEY, VENDOR, VENDOR_KEY};

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
fn plan_load_balancers(
    plan: &mut Plan,
    desired: &Desired,
    switches: &[LogicalSwitch],
    balancers: &[LoadBalancer],
    checks: &BTreeMap<Uuid, LoadBalancerHealthCheck>,
) {
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
                        Value::set([Atom::named_uuid(uuid_name)]),
                    )],
                });
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
    balancers: &[LoadBalancer],
    checks: &BTreeMap<Uuid, LoadBalancerHealthCheck>,
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
    plan_load_balancers(&mut plan, desired, switches, balancers, checks);
    // Owned switches whose subnet is gone and that hold no ports.
    for switch in switches {
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

/// What the registry wants in NB, and the difference to what `cache` holds.
pub fn compute_plan(registry: &Registry, cache: &crate::ovsdb::Cache) -> (Desired, Plan) {
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
    let mut desired = desired::compute(&subnets, &vips, &pods, &switches, &ports, &router_ports);
    desired::load_balancers(&mut desired, &rules, &subnets, &vips, &pods, &sources);
    let balancers = LoadBalancer::all(cache);
    let checks: BTreeMap<Uuid, LoadBalancerHealthCheck> = LoadBalancerHealthCheck::all(cache)
        .into_iter()
        .map(|check| (check.uuid, check))
        .collect();
    let plan = plan(&desired, &switches, &ports, &balancers, &checks);
    (desired, plan)
}

/// One pass: compute, diff, send; then write every VIP's status from what NB holds.
pub async fn pass(registry: &Registry, client: &Client) -> Result<usize, OvsdbError> {
    // Listed first: status is written only for objects the plan below has seen.
    let (vips, rules) = (registry.list_vips(), registry.list_switch_lb_rules());
    let (desired, plan) = compute_plan(registry, &client.cache());
    let sent = plan.operations.len();
    if sent > 0 {
        debug!(operations = sent, "applying NB changes");
        client.transact(&plan.operations).await?;
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
        let conditions = match desired.rules_blocked.get(&rule.name) {
            Some(reason) => condition(false, "NoSubnet", reason.clone(), &previous.conditions),
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

/// What the sync loop tells the daemon.
pub struct Hooks {
    /// Beaten every time round the loop (at least every `IDLE_BEAT`): the watchdog's evidence.
    pub heartbeat: Heartbeat,
    /// Counts finished passes; the first one makes the daemon ready.
    pub passes: tokio::sync::watch::Sender<u64>,
}

/// How often an idle loop still goes round, so the watchdog can tell idle from stuck.
const IDLE_BEAT: Duration = Duration::from_millis(250);

/// Runs until `shutdown`: a pass whenever the registry or NB changes, after every (re)connect,
/// and every `resync_interval` as a safety net.
pub async fn run(
    registry: Arc<Registry>,
    client: Client,
    resync_interval: Duration,
    shutdown: CancellationToken,
    hooks: Hooks,
) {
    let mut registry_changes = registry.subscribe();
    let mut nb_events = client.subscribe();
    let mut resync = tokio::time::interval(resync_interval);
    let mut idle = tokio::time::interval(IDLE_BEAT);
    let mut dirty = true;
    loop {
        hooks.heartbeat.beat();
        if dirty && client.state().is_connected() {
            dirty = false;
            let started = std::time::Instant::now();
            let result = pass(&registry, &client).await;
            telemetry::metrics()
                .reconcile_seconds
                .observe(started.elapsed().as_secs_f64());
            if result.is_ok() {
                hooks.passes.send_modify(|passes| *passes += 1);
            }
            match result {
                Ok(0) => {}
                Ok(sent) => {
                    info!(operations = sent, "NB updated");
                    // Let the monitor deliver our own change before looking again.
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while let Ok(event) = nb_events.recv().await {
                            if matches!(event, ClientEvent::Changed(_)) {
                                break;
                            }
                        }
                    })
                    .await;
                    dirty = true;
                }
                Err(error) => {
                    warn!(%error, "NB sync failed; retrying");
                    if !client.state().is_connected() {
                        mark_unavailable(&registry, &error.to_string());
                    }
                    dirty = true;
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                    continue;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = resync.tick() => dirty = true,
            _ = idle.tick() => {}
            change = registry_changes.recv() => match change {
                // Status is the sync's own output, not a reason to look again.
                Ok(Change::VipStatus(_)) => {}
                Ok(_) | Err(RecvError::Lagged(_)) => dirty = true,
                Err(RecvError::Closed) => return,
            },
            event = nb_events.recv() => match event {
                Ok(ClientEvent::Changed(_)) | Ok(ClientEvent::Resynced { .. }) | Err(RecvError::Lagged(_)) => dirty = true,
                Ok(ClientEvent::Disconnected { error }) => mark_unavailable(&registry, &error),
                Ok(_) => {}
                Err(RecvError::Closed) => return,
            },
        }
        // One level-triggered pass covers every event queued so far: drain them.
        loop {
            match registry_changes.try_recv() {
                Ok(Change::VipStatus(_)) => {}
                Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => dirty = true,
                Err(_) => break,
            }
        }
        loop {
            match nb_events.try_recv() {
                Ok(ClientEvent::Changed(_)) | Ok(ClientEvent::Resynced { .. }) => dirty = true,
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => dirty = true,
                Ok(ClientEvent::Disconnected { error }) => mark_unavailable(&registry, &error),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
}

/// Unused switches and ports of a name set, for tests and `check`.
pub fn owned_port_names(ports: &[LogicalSwitchPort]) -> BTreeSet<String> {
    ports
        .iter()
        .filter(|port| is_owned(&port.external_ids))
        .map(|port| port.name.clone())
        .collect()
}
