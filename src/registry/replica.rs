//! Building the registry's state from the store: at open, and again whenever the store is a
//! replica of the cluster database that changed under it (clustered mode: a standby follows the
//! mirror; an active reloads after a failed cluster commit, see `store/cluster.rs`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use tracing::{info, warn};

use super::{ipam_config, pending_condition, unallocated_condition, Change, Registry, RegistryError, State};
use crate::ipam::{AllocationRequest, SubnetIpam};
use crate::store::{ConsistencyReport, Owner, Resource, Store};

/// The state the store holds (IPAM rebuilt from its allocations) and its consistency report.
/// Records are read one at a time into the state (no whole snapshot beside it); the
/// allocations are read twice, once to rebuild IPAM and once for the check.
pub(super) fn build_state(store: &Store) -> Result<(State, ConsistencyReport), RegistryError> {
    let mut state = State::default();
    for subnet in store.subnets() {
        let subnet = subnet?;
        let ipam = SubnetIpam::new(ipam_config(&subnet))
            .map_err(|error| RegistryError::Corrupt(format!("stored subnet {} is invalid: {error}", subnet.name)))?;
        state.ipam.add_subnet(subnet.name.clone(), ipam);
        state.subnets.insert(subnet.name.clone(), subnet);
    }
    for vip in store.vips() {
        let mut vip = vip?;
        vip.conditions = match &vip.pending {
            Some(pending) => unallocated_condition(pending),
            None => pending_condition(),
        };
        state.put_vip(vip);
    }
    for pod in store.pods() {
        state.put_pod(pod?);
    }
    for rule in store.switch_lb_rules() {
        let rule = rule?;
        state.rules.insert(rule.name.clone(), rule);
    }
    let allocated = store
        .ips()
        .map(|entry| entry.map(|(subnet, ip, owner)| (subnet, Resource::Ip(ip), owner)))
        .chain(
            store
                .macs()
                .map(|entry| entry.map(|(subnet, mac, owner)| (subnet, Resource::Mac(mac), owner))),
        );
    let report = Store::check_records(
        state.subnets.keys().map(String::as_str),
        state.vips.values().map(|vip| &**vip),
        state.pods.values(),
        allocated,
    )?;
    for problem in &report.problems {
        warn!(%problem, "store inconsistency");
    }
    // Group the allocations by subnet and owner, then restore each owner's in one call.
    let mut by_owner: BTreeMap<(String, Owner), AllocationRequest> = BTreeMap::new();
    for entry in store.ips() {
        let (subnet, ip, owner) = entry?;
        let entry = by_owner.entry((subnet, owner)).or_default();
        match ip {
            IpAddr::V4(v4) => entry.v4 = Some(v4),
            IpAddr::V6(v6) => entry.v6 = Some(v6),
        }
    }
    for entry in store.macs() {
        let (subnet, mac, owner) = entry?;
        by_owner.entry((subnet, owner)).or_default().mac = Some(mac);
    }
    let mut restore_problems = Vec::new();
    for ((subnet, owner), request) in by_owner {
        let Some(ipam) = state.ipam.get_mut(&subnet) else {
            restore_problems.push(format!("{owner} holds addresses in missing subnet {subnet}"));
            continue;
        };
        if let Err(error) = ipam.restore(&owner, &request) {
            restore_problems.push(format!("cannot restore {owner} in {subnet}: {error}"));
        }
    }
    let mut report = report;
    for problem in restore_problems {
        warn!(%problem, "store inconsistency");
        report.problems.push(problem);
    }
    info!(
        subnets = state.subnets.len(),
        vips = state.vips.len(),
        pods = state.pods.len(),
        rules = state.rules.len(),
        "registry loaded"
    );
    Ok((state, report))
}

impl Registry {
    /// Replaces the in-memory state with what the store holds now and publishes a change for
    /// every object that differs (observed status is kept). Used in clustered mode, where the
    /// store is the replica of the cluster database: a standby follows it, an active reloads
    /// after a failed commit. Returns how many objects changed.
    pub fn reload(&self) -> Result<usize, RegistryError> {
        let (mut fresh, _) = build_state(&self.store)?;
        let mut changes = Vec::new();
        {
            let mut state = self.lock();
            for (name, vip) in fresh.vips.iter_mut() {
                let vip = std::sync::Arc::make_mut(vip);
                // Observed status is kept, unless the VIP got (or lost) its addresses: then its
                // pending reason, or "waiting for the NB sync", is what holds.
                if let Some(old) = state.vips.get(name).filter(|old| old.pending == vip.pending) {
                    vip.conditions = old.conditions.clone();
                    vip.nb_mac = old.nb_mac;
                }
            }
            fresh.rule_status = std::mem::take(&mut state.rule_status);
            changes.extend(differences(&state.subnets, &fresh.subnets).map(Change::Subnet));
            changes.extend(differences(&state.vips, &fresh.vips).map(Change::Vip));
            changes.extend(differences(&state.pods, &fresh.pods).map(Change::Pod));
            changes.extend(differences(&state.rules, &fresh.rules).map(Change::SwitchLbRule));
            *state = fresh;
        }
        let count = changes.len();
        for change in changes {
            self.publish(change);
        }
        Ok(count)
    }
}

/// Keys whose value differs between `old` and `new` (present in one only, or unequal).
fn differences<'a, K: Ord + Clone, V: PartialEq>(
    old: &'a BTreeMap<K, V>,
    new: &'a BTreeMap<K, V>,
) -> impl Iterator<Item = K> + 'a {
    let removed_or_changed = old
        .iter()
        .filter(move |(key, value)| new.get(*key) != Some(*value))
        .map(|(key, _)| key.clone());
    let added = new.keys().filter(move |key| !old.contains_key(*key)).cloned();
    removed_or_changed.chain(added)
}
