//! The registry: the one writer of desired state. A mutation checks the request against the
//! in-memory state and IPAM, allocates, writes one atomic batch to the store, and answers only
//! after the batch is durable. IPAM, the in-memory maps and the store change together under one
//! lock, so an address is never owned twice, not even for a moment.

mod error;
mod pods;
mod replica;
mod rules;
mod subnets;
mod vips;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

pub use error::RegistryError;
use replica::build_state;

use crate::ipam::{AllocationRequest, InUseElsewhere, Ipam, SubnetIpam, SubnetIpamConfig};
use crate::model::{
    aap_vips, port_name, Condition, NicSpec, Pending, Pod, PodNic, PodRef, PodSpec, Subnet, SwitchLbRule, Vip, VipSpec,
    VipType, ANNOTATION_VIP,
};
use crate::store::{pod_nic_owner, vip_owner, ConsistencyReport, Kind, Owner, Store, Write, WriteBatch};

/// What changed, for watchers and the reconciler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Subnet(String),
    Vip(String),
    /// Only the VIP's observed status changed (written by the NB sync, which ignores it).
    VipStatus(String),
    /// Only the rule's observed status changed (as `VipStatus`).
    SwitchLbRuleStatus(String),
    Pod(PodRef),
    SwitchLbRule(String),
}

/// Subnet usage, for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubnetUsage {
    pub used_v4: u128,
    pub free_v4: u128,
    pub used_v6: u128,
    pub free_v6: u128,
}

#[derive(Default)]
struct State {
    ipam: Ipam,
    subnets: BTreeMap<String, Subnet>,
    /// Shared with the full pass's list (`Registry::list_vips_shared`): a pass over 100,000 VIPs
    /// holds pointers, not copies; a change copies only the VIP it changes (`Arc::make_mut`).
    vips: BTreeMap<String, Arc<Vip>>,
    pods: BTreeMap<PodRef, Pod>,
    /// AAP VIP name → the pods whose `ovn.kubernetes.io/aaps` annotation names it: a VIP's
    /// parent candidates without a scan of every pod. Kept by `put_pod` and `remove_pod`.
    pods_by_aap: HashMap<String, BTreeSet<PodRef>>,
    rules: BTreeMap<String, SwitchLbRule>,
    /// Observed status of each rule, written by the NB sync (not persisted).
    rule_status: BTreeMap<String, RuleStatus>,
    /// Pending VIPs (no addresses yet) by the subnet they name: what creating or updating a
    /// subnet, or deleting a VIP there, tries to allocate, without a scan of every VIP. Kept by
    /// `put_vip` and `remove_vip`.
    pending_by_subnet: HashMap<String, BTreeSet<String>>,
}

impl State {
    fn put_vip(&mut self, vip: Vip) {
        self.remove_vip(&vip.spec.name);
        if !vip.is_allocated() {
            self.pending_by_subnet
                .entry(vip.spec.subnet.clone())
                .or_default()
                .insert(vip.spec.name.clone());
        }
        self.vips.insert(vip.spec.name.clone(), Arc::new(vip));
    }

    fn remove_vip(&mut self, name: &str) -> Option<Vip> {
        let vip = Arc::unwrap_or_clone(self.vips.remove(name)?);
        if let Some(names) = self.pending_by_subnet.get_mut(&vip.spec.subnet) {
            names.remove(name);
            if names.is_empty() {
                self.pending_by_subnet.remove(&vip.spec.subnet);
            }
        }
        Some(vip)
    }

    fn put_pod(&mut self, pod: Pod) {
        let key = pod.key();
        self.remove_pod(&key);
        for vip in aap_vips(&pod.spec.annotations) {
            self.pods_by_aap.entry(vip).or_default().insert(key.clone());
        }
        self.pods.insert(key, pod);
    }

    fn remove_pod(&mut self, key: &PodRef) -> Option<Pod> {
        let pod = self.pods.remove(key)?;
        for vip in aap_vips(&pod.spec.annotations) {
            if let Some(keys) = self.pods_by_aap.get_mut(&vip) {
                keys.remove(key);
                if keys.is_empty() {
                    self.pods_by_aap.remove(&vip);
                }
            }
        }
        Some(pod)
    }
}

/// What one NB sync pass observed of a VIP ([`Registry::set_vip_statuses`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipStatusUpdate {
    pub name: String,
    /// The new conditions; `None` leaves them.
    pub conditions: Option<Vec<Condition>>,
    /// The MAC that answers ARP/ND for the VIP in NB when it is not the VIP's own.
    pub nb_mac: Option<crate::model::MacAddr>,
}

/// What the NB sync last made of a switch-LB rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleStatus {
    pub conditions: Vec<Condition>,
    /// The load balancers' VIP entries, `"<vip>:<port>"`.
    pub vips: Vec<String>,
    /// The backend addresses.
    pub backends: Vec<String>,
}

/// What OVN NB already uses on a logical switch outside the daemon's own rows (foreign ports'
/// addresses and MACs, the networks and MAC of router ports attached to it, foreign load
/// balancers' VIPs). The daemon gives the registry one that reads its NB cache; the registry
/// never hands those out.
pub trait InUseOutside: Send + Sync {
    fn in_use(&self, logical_switch: &str) -> InUseElsewhere;
}

pub struct Registry {
    /// Set once the NB client exists; before that (and in tests without NB) nothing is known.
    outside: std::sync::OnceLock<std::sync::Arc<dyn InUseOutside>>,
    store: Store,
    /// One mutation at a time: IPAM, these maps and the store must change together. Held only
    /// for in-memory work and the (non-durable) store write, never across an `.await`.
    state: Mutex<State>,
    changes: broadcast::Sender<Change>,
    /// Observed-status changes only ([`Change::VipStatus`], [`Change::SwitchLbRuleStatus`]), apart from `changes`: a full pass
    /// writes one per VIP (100,000 at once), which would overflow the NB sync's receiver and
    /// cost it a second full pass, though the sync ignores them.
    status_changes: broadcast::Sender<Change>,
}

fn ipam_config(subnet: &Subnet) -> SubnetIpamConfig {
    SubnetIpamConfig {
        cidr_v4: subnet.cidr_v4,
        cidr_v6: subnet.cidr_v6,
        gateway_v4: subnet.gateway_v4,
        gateway_v6: subnet.gateway_v6,
        exclude_ips: subnet.exclude_ips.clone(),
        strategy: subnet.strategy,
        gateway_mac: None,
    }
}

fn allocation_writes(
    batch: &mut WriteBatch,
    subnet: &str,
    owner: &Owner,
    v4: Option<std::net::Ipv4Addr>,
    v6: Option<std::net::Ipv6Addr>,
    mac: crate::model::MacAddr,
    release: bool,
) {
    for ip in v4.map(IpAddr::V4).into_iter().chain(v6.map(IpAddr::V6)) {
        batch.push(if release {
            Write::ReleaseIp {
                subnet: subnet.to_string(),
                ip,
            }
        } else {
            Write::AllocateIp {
                subnet: subnet.to_string(),
                ip,
                owner: owner.clone(),
            }
        });
    }
    batch.push(if release {
        Write::ReleaseMac {
            subnet: subnet.to_string(),
            mac,
        }
    } else {
        Write::AllocateMac {
            subnet: subnet.to_string(),
            mac,
            owner: owner.clone(),
        }
    });
}

/// Ready=False with `reason`, keeping the transition time of `previous` when it said the same.
fn not_ready_condition(reason: &'static str, message: String, previous: &[Condition]) -> Vec<Condition> {
    let last_transition_ms = previous
        .iter()
        .find(|condition| condition.condition_type == "Ready" && !condition.status && condition.reason == reason)
        .map_or_else(now_ms, |condition| condition.last_transition_ms);
    vec![Condition {
        condition_type: "Ready".into(),
        status: false,
        reason: reason.into(),
        message: message.into(),
        last_transition_ms,
    }]
}

/// Ready=False with the reason a VIP holds no addresses yet.
fn unallocated_condition(pending: &Pending) -> Vec<Condition> {
    vec![Condition {
        condition_type: "Ready".into(),
        status: false,
        reason: pending.reason.clone().into(),
        message: pending.message.clone().into(),
        last_transition_ms: now_ms(),
    }]
}

/// Why a pending VIP's request cannot be met in `subnet` (it stays pending): the condition's
/// reason and message.
fn pending_from_ipam(error: &crate::ipam::IpamError, subnet: &str) -> Pending {
    use crate::ipam::IpamError;
    let reason = match error {
        IpamError::OutsideCidr { .. } => "AddressNotInSubnet",
        IpamError::IsGateway { .. } | IpamError::Reserved { .. } => "AddressReserved",
        IpamError::AddressInUse { .. } | IpamError::MacInUse { .. } | IpamError::OwnerHasDifferentAllocation => {
            "AddressTaken"
        }
        IpamError::FamilyNotInSubnet { .. } => "FamilyNotInSubnet",
        IpamError::SubnetFull { .. } => "SubnetFull",
        _ => "InvalidRequest",
    };
    Pending {
        reason: reason.into(),
        message: format!(
            "subnet {subnet}: {error}: the VIP keeps waiting (tried again when the subnet is updated or an address there is released)"
        ),
    }
}

/// What allocating a subnet's pending VIPs did: the VIPs as they are now (allocated, or pending
/// with another reason), and what IPAM allocated for them (their owners and health-check
/// sources), which [`PendingOutcome::undo`] releases when the batch fails.
#[derive(Default)]
struct PendingOutcome {
    vips: Vec<Vip>,
    allocated: Vec<(String, Owner)>,
    /// The VIPs allocated now, for the health-check sources their rules may wait for.
    sources: Vec<String>,
}

impl PendingOutcome {
    fn changes(&self) -> impl Iterator<Item = Change> + '_ {
        self.vips.iter().map(|vip| Change::Vip(vip.spec.name.clone()))
    }

    /// After the batch was applied: the VIPs into the state.
    fn commit(self, state: &mut State) {
        for vip in self.vips {
            state.put_vip(vip);
        }
    }

    /// The batch failed: IPAM lets go of what was allocated for it.
    fn undo(self, state: &mut State) {
        release_all(state, &self.allocated);
    }
}

/// Allocates, into `batch`, every pending VIP naming `subnet` (present in `state` with its IPAM)
/// whose request the subnet can meet now; one it cannot stays pending with the reason
/// (`AddressNotInSubnet`, `AddressTaken`, ...). Only IPAM changes here; `state.vips` changes in
/// [`PendingOutcome::commit`], once the batch is applied.
fn allocate_pending(
    state: &mut State,
    subnet: &str,
    elsewhere: &BTreeMap<String, InUseElsewhere>,
    batch: &mut WriteBatch,
) -> PendingOutcome {
    let mut outcome = PendingOutcome::default();
    let waiting: Vec<Vip> = state
        .pending_by_subnet
        .get(subnet)
        .into_iter()
        .flatten()
        .filter_map(|name| state.vips.get(name))
        .map(|vip| Vip::clone(vip))
        .collect();
    let Some(ipam) = state.ipam.get_mut(subnet) else {
        return outcome;
    };
    let nothing = InUseElsewhere::default();
    for mut vip in waiting {
        let owner = vip_owner(&vip.spec.name);
        let request = AllocationRequest {
            v4: vip.spec.v4ip,
            v6: vip.spec.v6ip,
            mac: vip.spec.mac,
        };
        match ipam.allocate_avoiding(&owner, &request, elsewhere.get(subnet).unwrap_or(&nothing)) {
            Ok(allocation) => {
                vip.v4ip = allocation.v4;
                vip.v6ip = allocation.v6;
                vip.mac = allocation.mac;
                vip.pending = None;
                vip.conditions = pending_condition();
                allocation_writes(batch, subnet, &owner, vip.v4ip, vip.v6ip, vip.mac, false);
                outcome.allocated.push((subnet.to_string(), owner));
                outcome.sources.push(vip.spec.name.clone());
            }
            Err(error) => {
                let pending = pending_from_ipam(&error, subnet);
                if vip.pending.as_ref() == Some(&pending) {
                    continue;
                }
                vip.conditions = unallocated_condition(&pending);
                vip.pending = Some(pending);
            }
        }
        batch.push(Write::PutVip(vip.clone()));
        outcome.vips.push(vip);
    }
    for vip in std::mem::take(&mut outcome.sources) {
        if let Some(source) = rules::reserve_waiting_source(state, &vip, subnet, elsewhere, batch) {
            outcome.allocated.push(source);
        }
    }
    outcome
}

impl Registry {
    /// The subnets among `subnets` where VIPs are pending, with what NB uses there (read before
    /// the state lock, as every allocation does): for [`Registry::retry_pending`].
    fn pending_elsewhere(&self, subnets: &[String]) -> BTreeMap<String, InUseElsewhere> {
        let waiting: Vec<String> = {
            let state = self.lock();
            subnets
                .iter()
                .filter(|subnet| state.pending_by_subnet.contains_key(*subnet))
                .cloned()
                .collect()
        };
        let mut elsewhere = self.in_use_elsewhere(waiting.iter().map(String::as_str));
        for subnet in waiting {
            elsewhere.entry(subnet).or_default();
        }
        elsewhere
    }

    /// After a change that released addresses (already applied, under the same lock): tries the
    /// pending VIPs of the subnets in `elsewhere` (from [`Registry::pending_elsewhere`]) again, in
    /// a batch of its own. A failed write leaves them pending (logged); the change stands.
    fn retry_pending(&self, state: &mut State, elsewhere: &BTreeMap<String, InUseElsewhere>) -> Vec<Change> {
        let mut changes = Vec::new();
        for subnet in elsewhere.keys() {
            let mut batch = WriteBatch::new();
            let outcome = allocate_pending(state, subnet, elsewhere, &mut batch);
            if batch.is_empty() {
                continue;
            }
            match self.store.apply(&batch) {
                Ok(()) => {
                    changes.extend(outcome.changes());
                    outcome.commit(state);
                }
                Err(error) => {
                    tracing::warn!(%error, subnet, "pending VIPs not tried again");
                    outcome.undo(state);
                }
            }
        }
        changes
    }
}

fn pending_condition() -> Vec<Condition> {
    vec![Condition {
        condition_type: "Ready".into(),
        status: false,
        reason: "Pending".into(),
        message: "waiting for the NB sync".into(),
        last_transition_ms: now_ms(),
    }]
}

/// Up to `limit` values of `map` whose keys come after `after` and that `keep` accepts, in key
/// order, and whether another accepted value follows (keyset paging: a key present throughout a
/// listing is on exactly one page).
fn page_of<K, Q, V>(map: &BTreeMap<K, V>, after: Option<&Q>, limit: usize, keep: impl Fn(&V) -> bool) -> (Vec<V>, bool)
where
    K: Ord + std::borrow::Borrow<Q>,
    Q: Ord + ?Sized,
    V: Clone,
{
    use std::ops::Bound;
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut values = Vec::with_capacity(limit.min(map.len()));
    let mut accepted = map
        .range::<Q, _>((start, Bound::Unbounded))
        .map(|(_, value)| value)
        .filter(|value| keep(value));
    for value in accepted.by_ref().take(limit) {
        values.push(value.clone());
    }
    let more = accepted.next().is_some();
    (values, more)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

impl Registry {
    /// Opens the store, rebuilds IPAM from the stored allocations and checks consistency.
    pub fn open(path: &Path) -> Result<(Registry, ConsistencyReport), RegistryError> {
        let store = Store::open(path)?;
        let (state, report) = build_state(&store)?;
        let (changes, _) = broadcast::channel(65_536);
        let (status_changes, _) = broadcast::channel(65_536);
        Ok((
            Registry {
                outside: std::sync::OnceLock::new(),
                store,
                state: Mutex::new(state),
                changes,
                status_changes,
            },
            report,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Tells the registry what NB uses outside its rows; the first call wins.
    pub fn set_in_use_outside(&self, outside: std::sync::Arc<dyn InUseOutside>) {
        let _ = self.outside.set(outside);
    }

    /// What NB uses outside the daemon's rows on the switches of `subnets`, by subnet. Asked
    /// before the state lock is taken: the NB cache has its own lock.
    /// Switch-LB rules naming an address inside a subnet use it as their frontend too: IPAM must
    /// not give it to a pod or VIP.
    fn in_use_elsewhere<'a>(&self, subnets: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, InUseElsewhere> {
        self.in_use_on(subnets, None)
    }

    /// [`Registry::in_use_elsewhere`] for the stored `subnets` and `new`, a subnet not stored yet.
    fn in_use_on<'a>(
        &self,
        subnets: impl IntoIterator<Item = &'a str>,
        new: Option<&Subnet>,
    ) -> BTreeMap<String, InUseElsewhere> {
        let (switches, mut used): (Vec<(String, String)>, BTreeMap<String, InUseElsewhere>) = {
            let state = self.lock();
            let wanted: Vec<&Subnet> = subnets
                .into_iter()
                .filter_map(|name| state.subnets.get(name))
                .chain(new)
                .collect();
            let mut used: BTreeMap<String, InUseElsewhere> = BTreeMap::new();
            for rule in state.rules.values() {
                let Ok(ip) = rule.vip.parse::<IpAddr>() else {
                    continue;
                };
                if let Some(subnet) = wanted.iter().find(|subnet| subnet_contains(subnet, ip)) {
                    used.entry(subnet.name.clone())
                        .or_default()
                        .ips
                        .insert(ip, format!("the frontend of switch-lb rule {}", rule.name));
                }
            }
            let switches = wanted
                .iter()
                .map(|subnet| (subnet.name.clone(), subnet.logical_switch.clone()))
                .collect();
            (switches, used)
        };
        if let Some(outside) = self.outside.get() {
            for (subnet, switch) in switches {
                let nb = outside.in_use(&switch);
                let entry = used.entry(subnet).or_default();
                entry.ips.extend(nb.ips);
                entry.macs.extend(nb.macs);
            }
        }
        used.retain(|_, used| !used.is_empty());
        used
    }

    /// Changes of what is stored (every kind but the status ones), after they are durable.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Changes of an observed status only ([`Change::VipStatus`], [`Change::SwitchLbRuleStatus`]),
    /// each already given a revision in the store's status log ([`Registry::log_status`]).
    pub fn subscribe_status(&self) -> broadcast::Receiver<Change> {
        self.status_changes.subscribe()
    }

    /// Gives status changes of `keys` revisions (see [`crate::store::revisions`]); called under
    /// the registry lock, right after the new status is in place. A store error (raising the
    /// durable revision floor) is logged: watches then miss these status changes, nothing else.
    fn log_status(&self, kind: Kind, keys: &[impl AsRef<str>]) {
        let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
        if let Err(error) = self.store.log_status(kind, &keys) {
            tracing::warn!(%error, ?kind, count = keys.len(), "status changes got no revision");
        }
    }

    /// Publishes the status changes of `names` (already logged under the lock) after it was let
    /// go; returns how many.
    fn publish_statuses(&self, names: Vec<String>, change: fn(String) -> Change) -> usize {
        let count = names.len();
        for name in names {
            self.publish(change(name));
        }
        count
    }

    fn publish(&self, change: Change) {
        let channel = match change {
            Change::VipStatus(_) | Change::SwitchLbRuleStatus(_) => &self.status_changes,
            _ => &self.changes,
        };
        let _ = channel.send(change);
    }

    /// Applies the batch, durably; the in-memory state was already changed by the caller.
    async fn finish(&self, changes: Vec<Change>) -> Result<(), RegistryError> {
        let durable = self.store.durable().await;
        for change in changes {
            self.publish(change);
        }
        durable?;
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// An object's revision (0 when it is not stored), read under the registry lock: read
    /// before the object itself, it is never newer than the state read after it, so an update
    /// carrying it can only be refused wrongly (ABORTED, read again), never accepted wrongly.
    pub fn revision(&self, kind: Kind, key: &str) -> u64 {
        let _state = self.lock();
        self.store.revision_of(kind, key).unwrap_or(0)
    }

    /// Optimistic concurrency (like Kubernetes' resourceVersion precondition): `Ok` when
    /// `revision` is absent or 0 (no precondition) or the object's current revision; ABORTED
    /// naming the field `revision` and the current revision otherwise. Called under the
    /// registry lock, so nothing changes the object between this check and the write.
    fn precondition(&self, kind: Kind, key: &str, revision: Option<u64>) -> Result<(), RegistryError> {
        let Some(expected) = revision.filter(|revision| *revision != 0) else {
            return Ok(());
        };
        let current = self.store.revision_of(kind, key);
        if current == Some(expected) {
            return Ok(());
        }
        Err(RegistryError::Aborted {
            field: "revision".into(),
            object: format!("{} {key}", kind_name(kind)),
            expected,
            current: current.unwrap_or(0),
        })
    }

    /// Flushes the store (at shutdown).
    pub fn flush(&self) -> Result<(), RegistryError> {
        Ok(self.store.flush()?)
    }

    /// Runs the consistency check on what is stored now.
    pub fn check(&self) -> Result<ConsistencyReport, RegistryError> {
        let snapshot = self.store.load()?;
        Ok(Store::check(&snapshot))
    }
}

/// How errors name a kind.
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Subnet => "subnet",
        Kind::Vip => "vip",
        Kind::Pod => "pod",
        Kind::SwitchLbRule => "switch-lb rule",
    }
}

/// The owner of a subnet's load-balancer health-check source address.
pub fn health_check_owner(subnet: &str) -> Owner {
    format!("healthcheck/{subnet}")
}

fn subnet_contains(subnet: &Subnet, ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => subnet.cidr_v4.is_some_and(|net| net.contains(&v4)),
        IpAddr::V6(v6) => subnet.cidr_v6.is_some_and(|net| net.contains(&v6)),
    }
}

/// The subnet a rule's VIP lives in: the named VIP's, or the one whose CIDR holds the address.
fn rule_subnet(state: &State, rule: &SwitchLbRule) -> Option<String> {
    match rule.vip.parse::<IpAddr>() {
        Ok(ip) => state
            .subnets
            .values()
            .find(|subnet| match ip {
                IpAddr::V4(v4) => subnet.cidr_v4.is_some_and(|net| net.contains(&v4)),
                IpAddr::V6(v6) => subnet.cidr_v6.is_some_and(|net| net.contains(&v6)),
            })
            .map(|subnet| subnet.name.clone()),
        Err(_) => state.vips.get(&rule.vip).map(|vip| vip.spec.subnet.clone()),
    }
}

fn release_all(state: &mut State, owners: &[(String, Owner)]) {
    for (subnet, owner) in owners {
        if let Some(ipam) = state.ipam.get_mut(subnet) {
            ipam.release(owner);
        }
    }
}

fn usage_of(ipam: &SubnetIpam) -> SubnetUsage {
    SubnetUsage {
        used_v4: ipam.used_v4(),
        free_v4: ipam.free_v4(),
        used_v6: ipam.used_v6(),
        free_v6: ipam.free_v6(),
    }
}

impl crate::telemetry::StateSource for Registry {
    fn vip_counts(&self) -> Vec<(String, &'static str, u64)> {
        let state = self.lock();
        let mut counts: BTreeMap<(&str, &'static str), u64> = BTreeMap::new();
        for vip in state.vips.values() {
            let kind = match vip.spec.vip_type {
                VipType::SwitchLbVip => "switch_lb_vip",
                VipType::Reserved if vip.is_aap() => "aap",
                VipType::Reserved => "reserved",
            };
            *counts.entry((vip.spec.subnet.as_str(), kind)).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|((subnet, kind), count)| (subnet.to_string(), kind, count))
            .collect()
    }

    fn address_usage(&self) -> Vec<crate::telemetry::AddressUsage> {
        let mut all = Vec::new();
        for (subnet, usage) in self.list_subnets() {
            for (family, present, used, free) in [
                ("ipv4", subnet.cidr_v4.is_some(), usage.used_v4, usage.free_v4),
                ("ipv6", subnet.cidr_v6.is_some(), usage.used_v6, usage.free_v6),
            ] {
                if present {
                    all.push(crate::telemetry::AddressUsage {
                        subnet: subnet.name.clone(),
                        family,
                        used,
                        free,
                    });
                }
            }
        }
        all
    }
}
