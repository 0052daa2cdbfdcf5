//! What one pass wants and how it differs from NB: a full pass over everything, or a scoped
//! pass over the objects a change affects (read from the registry and, through the cache's
//! indexes, only their rows from NB).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::model::{aap_vips, Pod, PodRef, SwitchLbRule, Vip};
use crate::nb::{self, Actual, Owner, Plan};
use crate::ovsdb::Cache;
use crate::registry::Registry;

use super::desired::{self, Desired};
use super::scope::{Dirty, Memory, Object};

/// What one pass computed: the desired rows in its scope, the plan, and the objects whose status
/// it decides.
pub struct Computed {
    pub desired: Desired,
    pub plan: Plan,
    /// Shared with the registry (a full pass copies no VIP).
    pub vips: Vec<Arc<Vip>>,
    pub rules: Vec<SwitchLbRule>,
    /// How many objects and NB rows the pass looked at.
    pub examined: usize,
}

/// The VIP a rule names (`None` for an address frontend).
fn named_vip(rule: &SwitchLbRule) -> Option<&str> {
    rule.vip
        .parse::<std::net::IpAddr>()
        .is_err()
        .then_some(rule.vip.as_str())
}

impl Computed {
    fn new(desired: Desired, plan: Plan, vips: Vec<Arc<Vip>>, rules: Vec<SwitchLbRule>, examined: usize) -> Computed {
        Computed {
            desired,
            plan,
            vips,
            rules,
            examined,
        }
    }
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
        registry.list_vips_shared(),
        registry.list_pods(),
        registry.list_switch_lb_rules(),
    );
    let sources = registry.health_check_sources();
    let actual = Actual::full(cache);
    let (router_macs, switch_routers) = nb::topology::routers_of_switches(cache, &actual.switches, &actual.ports);
    let annotated: BTreeMap<&str, &Vip> = vips.iter().map(|vip| (vip.spec.name.as_str(), &**vip)).collect();
    let candidates = desired::candidates_by_vip(&pods);
    let mut desired = desired::compute(&subnets, &vips, &candidates, &pods, &annotated, &router_macs);
    desired::load_balancers(&mut desired, &rules, &subnets, &vips, &pods, &sources, &switch_routers);
    let plan = nb::plan::plan(&desired.wanted(), &actual, true);
    memory.reset(router_macs, switch_routers);
    for rule in &rules {
        memory.record_rule(&rule.name, named_vip(rule));
    }
    for vip in &vips {
        memory.record_vip(&vip.spec.name, &desired);
    }
    for pod in &pods {
        memory.record_pod(&pod.key(), &desired);
    }
    let examined = vips.len() + pods.len() + rules.len() + actual.len();
    Computed::new(desired, plan, vips, rules, examined)
}

/// A pass over the objects a change affects: its cost follows the change, not the store.
fn compute_scoped(registry: &Registry, cache: &Cache, dirty: &Dirty, memory: &mut Memory) -> Computed {
    let subnets: Vec<_> = registry.list_subnets().into_iter().map(|(subnet, _)| subnet).collect();
    let mut vip_names = dirty.vips.clone();
    // A rule changed or gone changes the status of the VIP it names (served or not).
    for rule in &dirty.rules {
        vip_names.extend(memory.vip_of_rule(rule).cloned());
        if let Ok(rule) = registry.get_switch_lb_rule(rule) {
            vip_names.extend(named_vip(&rule).map(str::to_string));
        }
    }
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
            vip_names.extend(memory.vips_parented_by(port).map(|vip| vip.to_string()));
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
            .filter_map(named_vip)
            .filter_map(|vip| registry.get_vip(vip).ok())
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
    let port_names = desired
        .ports
        .keys()
        .map(|name| name.as_str())
        .chain(
            vip_names
                .iter()
                .flat_map(|name| memory.ports_of_vip(name))
                .map(|port| port.as_str()),
        )
        .chain(
            pod_keys
                .iter()
                .flat_map(|key| memory.ports_of_pod(key))
                .map(|port| port.as_str()),
        );
    let actual = Actual::scoped(
        cache,
        port_names,
        vip_names.iter().map(|name| Owner::Vip(name.clone())),
        rule_names.iter().flat_map(|rule| Owner::rule_balancers(rule)),
    );
    let plan = nb::plan::plan(&desired.wanted(), &actual, false);
    for name in &dirty.rules {
        let rule = rules.iter().find(|rule| &rule.name == name);
        memory.record_rule(name, rule.and_then(named_vip));
    }
    for name in &vip_names {
        memory.record_vip(name, &desired);
    }
    for key in &pod_keys {
        memory.record_pod(key, &desired);
    }
    let examined = vips.len() + pods.len() + candidates.len() + rules.len() + actual.len();
    let vips = vips.into_iter().map(Arc::new).collect();
    Computed::new(desired, plan, vips, rules, examined)
}
