//! Switch-LB rules and the health-check source addresses they reserve.

use super::*;

impl Registry {
    /// Replaces a rule's observed status (not persisted: the reconciler recomputes it). A change
    /// gets a revision and is published ([`Change::SwitchLbRuleStatus`]). Returns whether it
    /// changed.
    pub fn set_rule_status(&self, name: &str, status: RuleStatus) -> bool {
        let changed = {
            let mut state = self.lock();
            if !state.rules.contains_key(name) || state.rule_status.get(name) == Some(&status) {
                return false;
            }
            state.rule_status.insert(name.to_string(), status);
            self.log_status(Kind::SwitchLbRule, &[name]);
            true
        };
        if changed {
            self.publish(Change::SwitchLbRuleStatus(name.to_string()));
        }
        changed
    }

    /// Replaces the conditions of every rule `conditions` gives new ones for (it sees the rule's
    /// status and returns them, or `None` to leave it), in one pass under the lock; the changed
    /// ones get status revisions together and are published. Returns how many changed.
    pub fn set_rule_conditions_where(
        &self,
        mut conditions: impl FnMut(&RuleStatus) -> Option<Vec<Condition>>,
    ) -> usize {
        let changed: Vec<String> = {
            let mut state = self.lock();
            let state = &mut *state;
            let mut changed = Vec::new();
            for name in state.rules.keys() {
                let status = state.rule_status.entry(name.clone()).or_default();
                if let Some(new) = conditions(status).filter(|new| *new != status.conditions) {
                    status.conditions = new;
                    changed.push(name.clone());
                }
            }
            self.log_status(Kind::SwitchLbRule, &changed);
            changed
        };
        self.publish_statuses(changed, Change::SwitchLbRuleStatus)
    }

    /// A rule's observed status; empty until the NB sync has looked at it.
    pub fn rule_status(&self, name: &str) -> RuleStatus {
        self.lock().rule_status.get(name).cloned().unwrap_or_default()
    }

    /// Creates a rule, or updates it when `update` is set.
    pub async fn put_switch_lb_rule(&self, rule: SwitchLbRule, update: bool) -> Result<SwitchLbRule, RegistryError> {
        self.put_switch_lb_rule_at(rule, update, None).await
    }

    /// [`Registry::put_switch_lb_rule`]; an update is refused with ABORTED when `revision` is
    /// set (non-zero) and no longer the rule's.
    pub async fn put_switch_lb_rule_at(
        &self,
        rule: SwitchLbRule,
        update: bool,
        revision: Option<u64>,
    ) -> Result<SwitchLbRule, RegistryError> {
        let rule_subnet_name = rule_subnet(&self.lock(), &rule);
        let elsewhere = self.in_use_elsewhere(rule_subnet_name.as_deref());
        let retried = {
            let mut state = self.lock();
            if update && state.rules.contains_key(&rule.name) {
                self.precondition(Kind::SwitchLbRule, &rule.name, revision)?;
            }
            let existing = state.rules.get(&rule.name);
            if existing == Some(&rule) {
                true
            } else {
                if existing.is_some() && !update {
                    return Err(RegistryError::AlreadyExists {
                        kind: "switch-lb rule",
                        name: rule.name.clone(),
                        detail: "with a different spec".into(),
                    });
                }
                if existing.is_none() && update {
                    return Err(RegistryError::not_found("switch-lb rule", &rule.name));
                }
                // A VIP named before it exists is accepted (the Kubernetes way: a bundle applies
                // in any order); the rule is Ready=False, reason VipNotFound (VipNotReady while
                // the VIP waits for its subnet), until it has addresses. Health checks wait too:
                // the source address in the VIP's subnet is reserved when the VIP is allocated
                // (`reserve_waiting_source`).
                let vip_missing = rule.vip.parse::<IpAddr>().is_err() && !state.vips.contains_key(&rule.vip);
                // An address frontend inside a subnet must not be an address IPAM gave to a pod,
                // a health-check source or a VIP that is not a switch_lb_vip: both would answer it.
                if let (Ok(ip), Some(subnet)) = (rule.vip.parse::<IpAddr>(), rule_subnet_name.as_deref()) {
                    if let Some(owner) = state.ipam.get(subnet).and_then(|ipam| ipam.owner_of_ip(ip)) {
                        let switch_lb_vip = owner
                            .strip_prefix("vip/")
                            .and_then(|name| state.vips.get(name))
                            .is_some_and(|vip| vip.spec.vip_type == VipType::SwitchLbVip);
                        if !switch_lb_vip {
                            return Err(RegistryError::AddressTaken(format!(
                                "rule.vip: {ip} is allocated to {owner} in subnet {subnet}"
                            )));
                        }
                    }
                }
                // Two rules serving the same frontend (VIP, protocol, port) would be two load
                // balancers with one VIP entry on one switch: ovn-northd keeps only one of them.
                for (index, port) in rule.ports.iter().enumerate() {
                    let taken_by = state.rules.values().find(|other| {
                        other.name != rule.name
                            && other.vip == rule.vip
                            && other
                                .ports
                                .iter()
                                .any(|theirs| theirs.port == port.port && theirs.protocol == port.protocol)
                    });
                    if let Some(other) = taken_by {
                        return Err(RegistryError::AddressTaken(format!(
                            "rule.ports[{index}].port: {} {} of {} is already served by switch-lb rule {}",
                            port.protocol.as_str(),
                            port.port,
                            rule.vip,
                            other.name
                        )));
                    }
                }
                if rule.health_check && !vip_missing && rule_subnet(&state, &rule).is_none() {
                    return Err(RegistryError::FailedPrecondition(format!(
                        "health checks need the rule's vip {} in a managed subnet",
                        rule.vip
                    )));
                }
                let previous = state.rules.insert(rule.name.clone(), rule.clone());
                let mut batch = WriteBatch::new();
                batch.push(Write::PutSwitchLbRule(rule.clone()));
                let restore_rule = |state: &mut State| match &previous {
                    Some(previous) => {
                        state.rules.insert(previous.name.clone(), previous.clone());
                    }
                    None => {
                        state.rules.remove(&rule.name);
                    }
                };
                let sources = match sync_health_check_sources(&mut state, &mut batch, &elsewhere) {
                    Ok(sources) => sources,
                    Err(error) => {
                        restore_rule(&mut state);
                        return Err(error);
                    }
                };
                if let Err(error) = self.store.apply(&batch) {
                    sources.undo(&mut state);
                    restore_rule(&mut state);
                    return Err(error.into());
                }
                // A rule that waits for its VIP answers with why, as the NB sync reports it; any
                // other one is Pending until the sync has put it in NB (as a new VIP is).
                let (reason, message) = rule
                    .waits_for_vip(state.vips.get(&rule.vip).map(|vip| &**vip))
                    .unwrap_or(("Pending", "waiting for the NB sync".to_string()));
                let previous = state.rule_status.remove(&rule.name).unwrap_or_default();
                let conditions = not_ready_condition(reason, message, &previous.conditions);
                state.rule_status.insert(
                    rule.name.clone(),
                    RuleStatus {
                        conditions,
                        ..Default::default()
                    },
                );
                false
            }
        };
        if retried {
            self.store.durable().await?;
            return Ok(rule);
        }
        self.finish(vec![Change::SwitchLbRule(rule.name.clone())]).await?;
        Ok(rule)
    }

    /// Each subnet's health-check source addresses, where one is reserved.
    pub fn health_check_sources(&self) -> BTreeMap<String, (Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>)> {
        let state = self.lock();
        state
            .subnets
            .keys()
            .filter_map(|subnet| {
                let allocation = state.ipam.get(subnet)?.allocation_of(&health_check_owner(subnet))?;
                Some((subnet.clone(), (allocation.v4, allocation.v6)))
            })
            .collect()
    }

    pub fn get_switch_lb_rule(&self, name: &str) -> Result<SwitchLbRule, RegistryError> {
        self.lock()
            .rules
            .get(name)
            .cloned()
            .ok_or_else(|| RegistryError::not_found("switch-lb rule", name))
    }

    /// Up to `limit` rules named after `after` (name order) that `keep` accepts, and whether
    /// more follow: one page of a listing, read under one lock.
    pub fn switch_lb_rules_page(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&SwitchLbRule) -> bool,
    ) -> (Vec<(SwitchLbRule, u64)>, bool) {
        let state = self.lock();
        let (rules, more) = page_of(&state.rules, after, limit, keep);
        let rules = rules
            .into_iter()
            .map(|rule| {
                let revision = self.store.revision_of(Kind::SwitchLbRule, &rule.name).unwrap_or(0);
                (rule, revision)
            })
            .collect();
        (rules, more)
    }

    pub fn list_switch_lb_rules(&self) -> Vec<SwitchLbRule> {
        self.lock().rules.values().cloned().collect()
    }

    pub async fn delete_switch_lb_rule(&self, name: &str) -> Result<(), RegistryError> {
        self.delete_switch_lb_rule_at(name, None).await
    }

    /// [`Registry::delete_switch_lb_rule`], refused with ABORTED when `revision` is set
    /// (non-zero) and no longer the rule's.
    pub async fn delete_switch_lb_rule_at(&self, name: &str, revision: Option<u64>) -> Result<(), RegistryError> {
        // Pending VIPs of the rule's subnet are tried again with what it lets go of (an address
        // frontend there, a health-check source).
        let subnet = {
            let state = self.lock();
            state.rules.get(name).and_then(|rule| rule_subnet(&state, rule))
        };
        let mut pending_elsewhere = self.pending_elsewhere(subnet.as_slice());
        // The rule's own frontend is free once it is gone.
        let frontend = format!("the frontend of switch-lb rule {name}");
        for used in pending_elsewhere.values_mut() {
            used.ips.retain(|_, user| *user != frontend);
        }
        let mut changes = vec![Change::SwitchLbRule(name.to_string())];
        {
            let mut state = self.lock();
            if !state.rules.contains_key(name) {
                return Err(RegistryError::not_found("switch-lb rule", name));
            }
            self.precondition(Kind::SwitchLbRule, name, revision)?;
            let removed = state.rules.remove(name);
            state.rule_status.remove(name);
            let mut batch = WriteBatch::new();
            batch.push(Write::DeleteSwitchLbRule(name.to_string()));
            let sources = match sync_health_check_sources(&mut state, &mut batch, &BTreeMap::new()) {
                Ok(sources) => sources,
                Err(error) => {
                    if let Some(rule) = removed {
                        state.rules.insert(name.to_string(), rule);
                    }
                    return Err(error);
                }
            };
            if let Err(error) = self.store.apply(&batch) {
                sources.undo(&mut state);
                if let Some(rule) = removed {
                    state.rules.insert(name.to_string(), rule);
                }
                return Err(error.into());
            }
            changes.extend(self.retry_pending(&mut state, &pending_elsewhere));
        }
        self.finish(changes).await
    }
}

/// What a change of health-check sources did to IPAM, so a failed write can undo it.
#[derive(Default)]
struct SourceChanges {
    allocated: Vec<(String, Owner)>,
    released: Vec<(String, Owner, crate::ipam::Allocation)>,
}

impl SourceChanges {
    fn undo(self, state: &mut State) {
        release_all(state, &self.allocated);
        for (subnet, owner, allocation) in self.released {
            if let Some(ipam) = state.ipam.get_mut(&subnet) {
                let request = AllocationRequest {
                    v4: allocation.v4,
                    v6: allocation.v6,
                    mac: Some(allocation.mac),
                };
                let _ = ipam.restore(&owner, &request);
            }
        }
    }
}

/// Reserves a health-check source address in every subnet that has a rule with health checks,
/// and releases it where none is left; the writes go into `batch`.
fn sync_health_check_sources(
    state: &mut State,
    batch: &mut WriteBatch,
    elsewhere: &BTreeMap<String, InUseElsewhere>,
) -> Result<SourceChanges, RegistryError> {
    // A rule on a VIP without addresses (missing, or pending) needs no source yet.
    let needed: BTreeSet<String> = state
        .rules
        .values()
        .filter(|rule| rule.health_check)
        .filter(|rule| {
            rule.vip.parse::<IpAddr>().is_ok() || state.vips.get(&rule.vip).is_some_and(|vip| vip.is_allocated())
        })
        .filter_map(|rule| rule_subnet(state, rule))
        .collect();
    let mut changes = SourceChanges::default();
    let subnet_names: Vec<String> = state.subnets.keys().cloned().collect();
    for subnet in subnet_names {
        let owner = health_check_owner(&subnet);
        let Some(ipam) = state.ipam.get_mut(&subnet) else {
            continue;
        };
        let held = ipam.allocation_of(&owner).copied();
        match (needed.contains(&subnet), held) {
            (true, None) => match ipam.allocate_avoiding(
                &owner,
                &AllocationRequest::default(),
                elsewhere.get(&subnet).unwrap_or(&InUseElsewhere::default()),
            ) {
                Ok(allocation) => {
                    allocation_writes(
                        batch,
                        &subnet,
                        &owner,
                        allocation.v4,
                        allocation.v6,
                        allocation.mac,
                        false,
                    );
                    changes.allocated.push((subnet.clone(), owner));
                }
                Err(error) => {
                    changes.undo(state);
                    return Err(RegistryError::from_ipam(error, &subnet));
                }
            },
            (false, Some(allocation)) => {
                ipam.release(&owner);
                allocation_writes(
                    batch,
                    &subnet,
                    &owner,
                    allocation.v4,
                    allocation.v6,
                    allocation.mac,
                    true,
                );
                changes.released.push((subnet.clone(), owner, allocation));
            }
            _ => {}
        }
    }
    Ok(changes)
}

/// A VIP named `vip` got addresses in `subnet` (created, or allocated from pending): when a
/// health-checked rule waited for it and the subnet holds no health-check source yet, reserves
/// one into `batch` and returns its owner (to release if the batch fails). A subnet without room
/// for it leaves the rule without health checks (its status says `NoHealthCheckSource`); the
/// VIP's allocation is not refused for a rule's sake.
pub(super) fn reserve_waiting_source(
    state: &mut State,
    vip: &str,
    subnet: &str,
    elsewhere: &BTreeMap<String, InUseElsewhere>,
    batch: &mut WriteBatch,
) -> Option<(String, Owner)> {
    if !state.rules.values().any(|rule| rule.health_check && rule.vip == vip) {
        return None;
    }
    let owner = health_check_owner(subnet);
    let ipam = state.ipam.get_mut(subnet)?;
    if ipam.allocation_of(&owner).is_some() {
        return None;
    }
    let nothing = InUseElsewhere::default();
    match ipam.allocate_avoiding(
        &owner,
        &AllocationRequest::default(),
        elsewhere.get(subnet).unwrap_or(&nothing),
    ) {
        Ok(allocation) => {
            allocation_writes(
                batch,
                subnet,
                &owner,
                allocation.v4,
                allocation.v6,
                allocation.mac,
                false,
            );
            Some((subnet.to_string(), owner))
        }
        Err(error) => {
            tracing::warn!(%error, vip, subnet, "no health-check source address for the rules of a VIP");
            None
        }
    }
}
