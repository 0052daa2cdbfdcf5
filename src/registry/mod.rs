//! The registry: the one writer of desired state. A mutation checks the request against the
//! in-memory state and IPAM, allocates, writes one atomic batch to the store, and answers only
//! after the batch is durable. IPAM, the in-memory maps and the store change together under one
//! lock, so an address is never owned twice, not even for a moment.

mod error;
mod replica;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::broadcast;

pub use error::RegistryError;
use replica::build_state;

use crate::ipam::{AllocationRequest, InUseElsewhere, Ipam, SubnetIpam, SubnetIpamConfig};
use crate::model::{
    aap_vips, port_name, Condition, NicSpec, Pod, PodNic, PodRef, PodSpec, Subnet, SwitchLbRule, Vip, VipSpec, VipType,
    ANNOTATION_VIP,
};
use crate::store::{pod_nic_owner, vip_owner, ConsistencyReport, Owner, Store, Write, WriteBatch};

/// What changed, for watchers and the reconciler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Subnet(String),
    Vip(String),
    /// Only the VIP's observed status changed (written by the NB sync, which ignores it).
    VipStatus(String),
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
    vips: BTreeMap<String, Vip>,
    pods: BTreeMap<PodRef, Pod>,
    /// AAP VIP name → the pods whose `ovn.kubernetes.io/aaps` annotation names it: a VIP's
    /// parent candidates without a scan of every pod. Kept by `put_pod` and `remove_pod`.
    pods_by_aap: HashMap<String, BTreeSet<PodRef>>,
    rules: BTreeMap<String, SwitchLbRule>,
    /// Observed status of each rule, written by the NB sync (not persisted).
    rule_status: BTreeMap<String, RuleStatus>,
}

impl State {
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
        let snapshot = store.load()?;
        let (state, report) = build_state(snapshot)?;
        let (changes, _) = broadcast::channel(65_536);
        Ok((
            Registry {
                outside: std::sync::OnceLock::new(),
                store,
                state: Mutex::new(state),
                changes,
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
        let (switches, mut used): (Vec<(String, String)>, BTreeMap<String, InUseElsewhere>) = {
            let state = self.lock();
            let wanted: Vec<&Subnet> = subnets.into_iter().filter_map(|name| state.subnets.get(name)).collect();
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

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    fn publish(&self, change: Change) {
        let _ = self.changes.send(change);
    }

    /// Applies the batch, durably; the in-memory state was already changed by the caller. The
    /// changes are published even when the write fails: its outcome may be unknown (a cluster
    /// commit whose leader died may have committed), and a reload from the replica that finds
    /// the same state publishes nothing, so without them the NB sync would never look at these
    /// objects again (it reads their current state, whatever it turns out to be).
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

    // ---- subnets ----

    pub async fn create_subnet(&self, subnet: Subnet) -> Result<Subnet, RegistryError> {
        let existing = {
            let mut state = self.lock();
            if let Some(existing) = state.subnets.get(&subnet.name) {
                if *existing == subnet {
                    Some(existing.clone())
                } else {
                    return Err(RegistryError::AlreadyExists {
                        kind: "subnet",
                        name: subnet.name.clone(),
                        detail: "with a different spec".into(),
                    });
                }
            } else {
                let ipam = SubnetIpam::new(ipam_config(&subnet)).map_err(RegistryError::from_ipam_subnet)?;
                if let Some(overlap) = overlapping_subnet(&state, &subnet) {
                    return Err(RegistryError::FailedPrecondition(overlap));
                }
                let mut batch = WriteBatch::new();
                batch.push(Write::PutSubnet(subnet.clone()));
                self.store.apply(&batch)?;
                state.ipam.add_subnet(subnet.name.clone(), ipam);
                state.subnets.insert(subnet.name.clone(), subnet.clone());
                None
            }
        };
        if let Some(existing) = existing {
            // A retry: answer once what answered the first time is durable.
            self.store.durable().await?;
            return Ok(existing);
        }
        self.finish(vec![Change::Subnet(subnet.name.clone())]).await?;
        Ok(subnet)
    }

    /// Replaces a subnet's mutable fields (`exclude_ips`, `strategy`) with those of `subnet`;
    /// every other field must be the subnet's (InvalidArgument naming it otherwise). An address
    /// that the new `exclude_ips` excludes, the old did not, and an owner holds refuses the
    /// update (FAILED_PRECONDITION naming address and owner): nothing changes. Answers once the
    /// change is durable; the IPAM keeps every allocation.
    pub async fn update_subnet(&self, subnet: Subnet) -> Result<Subnet, RegistryError> {
        let changed = {
            let mut state = self.lock();
            let existing = state
                .subnets
                .get(&subnet.name)
                .cloned()
                .ok_or_else(|| RegistryError::not_found("subnet", &subnet.name))?;
            let immutable = [
                ("cidr_v4", existing.cidr_v4 != subnet.cidr_v4),
                ("cidr_v6", existing.cidr_v6 != subnet.cidr_v6),
                ("gateway_v4", existing.gateway_v4 != subnet.gateway_v4),
                ("gateway_v6", existing.gateway_v6 != subnet.gateway_v6),
                ("logical_switch", existing.logical_switch != subnet.logical_switch),
                ("vpc", existing.vpc != subnet.vpc),
            ];
            if let Some((field, _)) = immutable.iter().find(|(_, differs)| *differs) {
                return Err(RegistryError::InvalidArgument {
                    field: field.to_string(),
                    message: "is immutable".into(),
                });
            }
            if existing == subnet {
                false
            } else {
                let old = state
                    .ipam
                    .get(&subnet.name)
                    .ok_or_else(|| RegistryError::Corrupt(format!("subnet {} has no IPAM", subnet.name)))?;
                let mut new = SubnetIpam::new(ipam_config(&subnet)).map_err(RegistryError::from_ipam_subnet)?;
                let mut allocations: Vec<_> = old.allocations().map(|(owner, held)| (owner.clone(), *held)).collect();
                allocations.sort_by(|a, b| a.0.cmp(&b.0));
                for (owner, held) in &allocations {
                    let addresses = held.v4.map(IpAddr::V4).into_iter().chain(held.v6.map(IpAddr::V6));
                    for ip in addresses {
                        if new.is_excluded(ip) && !old.is_excluded(ip) {
                            return Err(RegistryError::FailedPrecondition(format!(
                                "exclude_ips would exclude {ip}, which {owner} holds in subnet {}; release it first",
                                subnet.name
                            )));
                        }
                    }
                    let request = AllocationRequest {
                        v4: held.v4,
                        v6: held.v6,
                        mac: Some(held.mac),
                    };
                    new.restore(owner, &request)
                        .map_err(|error| RegistryError::Corrupt(format!("re-reading {owner}'s allocation: {error}")))?;
                }
                let mut batch = WriteBatch::new();
                batch.push(Write::PutSubnet(subnet.clone()));
                self.store.apply(&batch)?;
                state.ipam.add_subnet(subnet.name.clone(), new);
                state.subnets.insert(subnet.name.clone(), subnet.clone());
                true
            }
        };
        if changed {
            self.finish(vec![Change::Subnet(subnet.name.clone())]).await?;
        } else {
            self.store.durable().await?;
        }
        Ok(subnet)
    }

    pub fn get_subnet(&self, name: &str) -> Result<(Subnet, SubnetUsage), RegistryError> {
        let state = self.lock();
        let subnet = state
            .subnets
            .get(name)
            .cloned()
            .ok_or_else(|| RegistryError::not_found("subnet", name))?;
        let usage = state.ipam.get(name).map(usage_of).unwrap_or_default();
        Ok((subnet, usage))
    }

    /// Every subnet with its effective gateways (given or defaulted by IPAM).
    pub fn subnet_gateways(
        &self,
    ) -> BTreeMap<String, (Subnet, Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>)> {
        let state = self.lock();
        state
            .subnets
            .values()
            .map(|subnet| {
                let ipam = state.ipam.get(&subnet.name);
                (
                    subnet.name.clone(),
                    (
                        subnet.clone(),
                        ipam.and_then(SubnetIpam::gateway_v4),
                        ipam.and_then(SubnetIpam::gateway_v6),
                    ),
                )
            })
            .collect()
    }

    /// The owner of `ip` / `mac` in `subnet`, if IPAM gave it to someone.
    pub fn owner_in_subnet(
        &self,
        subnet: &str,
        ip: Option<IpAddr>,
        mac: Option<&crate::model::MacAddr>,
    ) -> Option<Owner> {
        let state = self.lock();
        let ipam = state.ipam.get(subnet)?;
        ip.and_then(|ip| ipam.owner_of_ip(ip).cloned())
            .or_else(|| mac.and_then(|mac| ipam.owner_of_mac(mac).cloned()))
    }

    /// Up to `limit` subnets named after `after` (name order) that `keep` accepts, with their
    /// usage, and whether more follow: one page of a listing, read under one lock.
    pub fn subnets_page(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&Subnet) -> bool,
    ) -> (Vec<(Subnet, SubnetUsage)>, bool) {
        let state = self.lock();
        let (subnets, more) = page_of(&state.subnets, after, limit, keep);
        let subnets = subnets
            .into_iter()
            .map(|subnet| {
                let usage = state.ipam.get(&subnet.name).map(usage_of).unwrap_or_default();
                (subnet, usage)
            })
            .collect();
        (subnets, more)
    }

    pub fn list_subnets(&self) -> Vec<(Subnet, SubnetUsage)> {
        let state = self.lock();
        state
            .subnets
            .values()
            .map(|subnet| {
                (
                    subnet.clone(),
                    state.ipam.get(&subnet.name).map(usage_of).unwrap_or_default(),
                )
            })
            .collect()
    }

    pub async fn delete_subnet(&self, name: &str) -> Result<(), RegistryError> {
        {
            let mut state = self.lock();
            if !state.subnets.contains_key(name) {
                return Err(RegistryError::not_found("subnet", name));
            }
            let mut users = Vec::new();
            users.extend(
                state
                    .vips
                    .values()
                    .filter(|vip| vip.spec.subnet == name)
                    .map(|vip| format!("vip {}", vip.spec.name)),
            );
            users.extend(
                state
                    .pods
                    .values()
                    .filter(|pod| pod.nics.iter().any(|nic| nic.subnet == name))
                    .map(|pod| format!("pod {}", pod.key())),
            );
            users.extend(
                state
                    .rules
                    .values()
                    .filter(|rule| rule_subnet(&state, rule).as_deref() == Some(name))
                    .map(|rule| format!("switch-lb rule {}", rule.name)),
            );
            if !users.is_empty() {
                let shown: Vec<String> = users.iter().take(10).cloned().collect();
                let more = if users.len() > 10 {
                    format!(" and {} more", users.len() - 10)
                } else {
                    String::new()
                };
                return Err(RegistryError::InUse {
                    kind: "subnet",
                    name: name.to_string(),
                    user: format!("{}{more}", shown.join(", ")),
                });
            }
            let mut batch = WriteBatch::new();
            batch.push(Write::DeleteSubnet(name.to_string()));
            self.store.apply(&batch)?;
            state.subnets.remove(name);
            state.ipam.remove_subnet(name);
        }
        self.finish(vec![Change::Subnet(name.to_string())]).await
    }

    // ---- VIPs ----

    pub async fn create_vip(&self, spec: VipSpec) -> Result<Vip, RegistryError> {
        let elsewhere = self.in_use_elsewhere([spec.subnet.as_str()]);
        let (vip, retried) = {
            let mut state = self.lock();
            if let Some(existing) = state.vips.get(&spec.name) {
                if existing.spec == spec {
                    (existing.clone(), true)
                } else {
                    return Err(RegistryError::AlreadyExists {
                        kind: "vip",
                        name: spec.name.clone(),
                        detail: "with a different spec".into(),
                    });
                }
            } else {
                (self.create_vip_locked(&mut state, spec, &elsewhere)?, false)
            }
        };
        if retried {
            self.store.durable().await?;
            return Ok(vip);
        }
        self.finish(vec![Change::Vip(vip.spec.name.clone())]).await?;
        Ok(vip)
    }

    fn create_vip_locked(
        &self,
        state: &mut State,
        spec: VipSpec,
        elsewhere: &BTreeMap<String, InUseElsewhere>,
    ) -> Result<Vip, RegistryError> {
        {
            if !state.subnets.contains_key(&spec.subnet) {
                return Err(RegistryError::reference_not_found("subnet", &spec.subnet));
            }
            let owner = vip_owner(&spec.name);
            let request = AllocationRequest {
                v4: spec.v4ip,
                v6: spec.v6ip,
                mac: spec.mac,
            };
            let ipam = state
                .ipam
                .get_mut(&spec.subnet)
                .ok_or_else(|| RegistryError::Corrupt(format!("subnet {} has no IPAM", spec.subnet)))?;
            let allocation = ipam
                .allocate_avoiding(
                    &owner,
                    &request,
                    elsewhere.get(&spec.subnet).unwrap_or(&InUseElsewhere::default()),
                )
                .map_err(|error| RegistryError::from_ipam(error, &spec.subnet))?;
            let vip = Vip {
                v4ip: allocation.v4,
                v6ip: allocation.v6,
                mac: allocation.mac,
                holder: None,
                conditions: pending_condition(),
                nb_mac: None,
                spec,
            };
            let mut batch = WriteBatch::new();
            batch.push(Write::PutVip(vip.clone()));
            allocation_writes(&mut batch, &vip.spec.subnet, &owner, vip.v4ip, vip.v6ip, vip.mac, false);
            if let Err(error) = self.store.apply(&batch) {
                ipam.release(&owner);
                return Err(error.into());
            }
            state.vips.insert(vip.spec.name.clone(), vip.clone());
            Ok(vip)
        }
    }

    /// Replaces a VIP's mutable spec fields (`selector`, `namespace`) with those of `spec`;
    /// every other field must be the VIP's (InvalidArgument naming it otherwise): its addresses
    /// and MAC stay as reserved. Answers once the change is durable; the NB sync follows the
    /// `Change::Vip` it publishes (virtual-parents, port_security).
    pub async fn update_vip(&self, spec: VipSpec) -> Result<Vip, RegistryError> {
        let (vip, changed) = {
            let mut state = self.lock();
            let existing = state
                .vips
                .get(&spec.name)
                .cloned()
                .ok_or_else(|| RegistryError::not_found("vip", &spec.name))?;
            let immutable = [
                ("subnet", existing.spec.subnet != spec.subnet),
                ("type", existing.spec.vip_type != spec.vip_type),
                ("v4ip", existing.spec.v4ip != spec.v4ip),
                ("v6ip", existing.spec.v6ip != spec.v6ip),
                ("mac_address", existing.spec.mac != spec.mac),
            ];
            if let Some((field, _)) = immutable.iter().find(|(_, differs)| *differs) {
                return Err(RegistryError::InvalidArgument {
                    field: field.to_string(),
                    message: "is immutable: a VIP keeps the addresses and MAC it reserved".into(),
                });
            }
            if existing.spec == spec {
                (existing, false)
            } else {
                let mut vip = existing;
                vip.spec = spec;
                let mut batch = WriteBatch::new();
                batch.push(Write::PutVip(vip.clone()));
                self.store.apply(&batch)?;
                state.vips.insert(vip.spec.name.clone(), vip.clone());
                (vip, true)
            }
        };
        if changed {
            self.finish(vec![Change::Vip(vip.spec.name.clone())]).await?;
        } else {
            self.store.durable().await?;
        }
        Ok(vip)
    }

    pub fn get_vip(&self, name: &str) -> Result<Vip, RegistryError> {
        self.lock()
            .vips
            .get(name)
            .cloned()
            .ok_or_else(|| RegistryError::not_found("vip", name))
    }

    /// Up to `limit` VIPs named after `after` (name order) that `keep` accepts, and whether
    /// more follow: one page of a listing, read under one lock.
    pub fn vips_page(&self, after: Option<&str>, limit: usize, keep: impl Fn(&Vip) -> bool) -> (Vec<Vip>, bool) {
        page_of(&self.lock().vips, after, limit, keep)
    }

    pub fn list_vips(&self) -> Vec<Vip> {
        self.lock().vips.values().cloned().collect()
    }

    pub async fn delete_vip(&self, name: &str) -> Result<(), RegistryError> {
        if !self.lock().vips.contains_key(name) {
            // "Not found" may rest on a write still in flight (or one whose outcome is unknown
            // until the replica is reloaded): answer it only once every earlier write settled,
            // from the state then.
            self.store.durable().await?;
        }
        {
            let mut state = self.lock();
            let vip = state
                .vips
                .get(name)
                .cloned()
                .ok_or_else(|| RegistryError::not_found("vip", name))?;
            if let Some(holder) = &vip.holder {
                return Err(RegistryError::InUse {
                    kind: "vip",
                    name: name.to_string(),
                    user: format!("pod {holder}"),
                });
            }
            if let Some(rule) = state.rules.values().find(|rule| rule.vip == name) {
                return Err(RegistryError::InUse {
                    kind: "vip",
                    name: name.to_string(),
                    user: format!("switch-lb rule {} (its frontend)", rule.name),
                });
            }
            let owner = vip_owner(name);
            let mut batch = WriteBatch::new();
            batch.push(Write::DeleteVip(name.to_string()));
            allocation_writes(&mut batch, &vip.spec.subnet, &owner, vip.v4ip, vip.v6ip, vip.mac, true);
            self.store.apply(&batch)?;
            if let Some(ipam) = state.ipam.get_mut(&vip.spec.subnet) {
                ipam.release(&owner);
            }
            state.vips.remove(name);
        }
        self.finish(vec![Change::Vip(name.to_string())]).await
    }

    /// Replaces a VIP's observed status (not persisted: the reconciler recomputes it).
    pub fn set_vip_conditions(&self, name: &str, conditions: Vec<Condition>) -> bool {
        let changed = {
            let mut state = self.lock();
            match state.vips.get_mut(name) {
                Some(vip) if vip.conditions != conditions => {
                    vip.conditions = conditions;
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.publish(Change::VipStatus(name.to_string()));
        }
        changed
    }

    /// Records the MAC NB's port for the VIP carries (observed by the sync; `None` when it is the
    /// VIP's own). Returns whether it changed.
    pub fn set_vip_nb_mac(&self, name: &str, nb_mac: Option<crate::model::MacAddr>) -> bool {
        let changed = {
            let mut state = self.lock();
            match state.vips.get_mut(name) {
                Some(vip) if vip.nb_mac != nb_mac => {
                    vip.nb_mac = nb_mac;
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.publish(Change::VipStatus(name.to_string()));
        }
        changed
    }

    /// Replaces a rule's observed status (not persisted: the reconciler recomputes it).
    pub fn set_rule_status(&self, name: &str, status: RuleStatus) {
        let mut state = self.lock();
        if state.rules.contains_key(name) {
            state.rule_status.insert(name.to_string(), status);
        }
    }

    /// A rule's observed status; empty until the NB sync has looked at it.
    pub fn rule_status(&self, name: &str) -> RuleStatus {
        self.lock().rule_status.get(name).cloned().unwrap_or_default()
    }

    // ---- pods ----

    /// Binds a pod: allocates (or reuses) an address per NIC, or hands over the VIP named in
    /// its `ovn.kubernetes.io/vip` annotation, recording the pod as the VIP's holder.
    ///
    /// When the pod is already bound, the request's interfaces it lacks are added to it (a CNI
    /// runtime binds one attachment at a time) and the ones it has must be in the same subnet and
    /// hold what a static request asks for (an address is never silently replaced). Labels and
    /// annotations are merged into the pod's (the request's values win) unless the request
    /// names every NIC the pod has, which replaces them.
    pub async fn bind_pod(&self, spec: PodSpec) -> Result<Pod, RegistryError> {
        let key = PodRef {
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
        };
        let elsewhere = self.in_use_elsewhere(spec.nics.iter().map(|nic| nic.subnet.as_str()));
        let (pod, changes) = {
            let mut state = self.lock();
            for nic in &spec.nics {
                if !state.subnets.contains_key(&nic.subnet) {
                    return Err(RegistryError::reference_not_found("subnet", &nic.subnet));
                }
            }
            let existing = state.pods.get(&key).cloned();
            match (&existing, kept_for_same_vm(&state, &spec)) {
                (None, Some(previous)) => {
                    // A VM's new launcher pod: it takes over what the VM's previous one kept.
                    let pod = self.adopt(&mut state, &key, previous.clone(), spec)?;
                    let mut changes = vec![Change::Pod(key.clone()), Change::Pod(previous)];
                    changes.extend(pod.nics.iter().filter_map(|nic| nic.vip.clone()).map(Change::Vip));
                    changes.extend(aap_vips(&pod.spec.annotations).into_iter().map(Change::Vip));
                    (pod, changes)
                }
                _ => self.bind_locked(&mut state, &key, spec, existing, &elsewhere)?,
            }
        };
        self.finish(changes).await?;
        Ok(pod)
    }

    /// Moves what `previous` (an unbound launcher pod of the same VM) kept to the pod `key`: the
    /// same addresses and MACs on the same NICs (re-owned under the new pod, with its port
    /// names) and the VIP it held; the previous pod's record goes. One batch.
    fn adopt(&self, state: &mut State, key: &PodRef, previous: PodRef, spec: PodSpec) -> Result<Pod, RegistryError> {
        let old = state
            .pods
            .get(&previous)
            .cloned()
            .ok_or_else(|| RegistryError::Corrupt(format!("pod {previous} vanished")))?;
        if old.spec.nics != spec.nics {
            return Err(RegistryError::FailedPrecondition(format!(
                "pod {previous} of the same {} {} kept other NICs; unbind it with owner_gone first",
                "VirtualMachine", spec.owner_name
            )));
        }
        let wanted_vip = spec.annotations.get(ANNOTATION_VIP).cloned();
        let held_vip = old.nics.iter().find_map(|nic| nic.vip.clone());
        if wanted_vip != held_vip {
            return Err(RegistryError::FailedPrecondition(format!(
                "pod {previous} of the same VirtualMachine {} kept {}; unbind it with owner_gone first",
                spec.owner_name,
                held_vip.map_or("no VIP".to_string(), |vip| format!("vip {vip}"))
            )));
        }
        let mut batch = WriteBatch::new();
        let mut moved: Vec<(String, Owner, Owner, crate::ipam::Allocation)> = Vec::new();
        let mut nics = Vec::with_capacity(old.nics.len());
        for (index, nic) in old.nics.iter().enumerate() {
            let mut nic = nic.clone();
            nic.port_name = port_name(&spec.name, &spec.namespace, &nic.interface, index == 0);
            if nic.vip.is_none() {
                let old_owner = pod_nic_owner(&previous, &nic.interface);
                let new_owner = pod_nic_owner(key, &nic.interface);
                let request = AllocationRequest {
                    v4: nic.v4ip,
                    v6: nic.v6ip,
                    mac: Some(nic.mac),
                };
                let outcome = match state.ipam.get_mut(&nic.subnet) {
                    Some(ipam) => match ipam.release(&old_owner) {
                        Some(allocation) => ipam
                            .allocate(&new_owner, &request)
                            .map(|_| allocation)
                            .map_err(|error| {
                                // A static allocation takes the addresses back out of the
                                // reuse delay the release put them in.
                                let _ = ipam.allocate(&old_owner, &request);
                                RegistryError::from_ipam(error, &nic.subnet)
                            }),
                        None => Err(RegistryError::Corrupt(format!(
                            "{old_owner} holds nothing in subnet {}",
                            nic.subnet
                        ))),
                    },
                    None => Err(RegistryError::Corrupt(format!("subnet {} has no IPAM", nic.subnet))),
                };
                let allocation = match outcome {
                    Ok(allocation) => allocation,
                    Err(error) => {
                        undo_moves(state, &moved);
                        return Err(error);
                    }
                };
                allocation_writes(&mut batch, &nic.subnet, &old_owner, nic.v4ip, nic.v6ip, nic.mac, true);
                allocation_writes(&mut batch, &nic.subnet, &new_owner, nic.v4ip, nic.v6ip, nic.mac, false);
                moved.push((nic.subnet.clone(), old_owner, new_owner, allocation));
            }
            nics.push(nic);
        }
        let pod = Pod {
            spec,
            nics,
            bound: true,
        };
        batch.push(Write::DeletePod(previous.clone()));
        batch.push(Write::PutPod(pod.clone()));
        let mut held = None;
        if let Some(vip_name) = &held_vip_name(&pod) {
            if let Some(vip) = state.vips.get(vip_name) {
                let mut vip = vip.clone();
                vip.holder = Some(key.clone());
                batch.push(Write::PutVip(vip.clone()));
                held = Some(vip);
            }
        }
        if let Err(error) = self.store.apply(&batch) {
            undo_moves(state, &moved);
            return Err(error.into());
        }
        if let Some(vip) = held {
            state.vips.insert(vip.spec.name.clone(), vip);
        }
        state.remove_pod(&previous);
        state.put_pod(pod.clone());
        Ok(pod)
    }

    fn bind_locked(
        &self,
        state: &mut State,
        key: &PodRef,
        spec: PodSpec,
        existing: Option<Pod>,
        elsewhere: &BTreeMap<String, InUseElsewhere>,
    ) -> Result<(Pod, Vec<Change>), RegistryError> {
        let already = |detail: String| RegistryError::AlreadyExists {
            kind: "pod",
            name: key.to_string(),
            detail,
        };
        let merged = match &existing {
            None => spec,
            Some(existing) => {
                for request in &spec.nics {
                    let Some(have) = existing.spec.nics.iter().find(|nic| nic.interface == request.interface) else {
                        continue;
                    };
                    if have.subnet != request.subnet {
                        return Err(already(format!(
                            "with interface {} in subnet {}; unbind it first",
                            have.interface, have.subnet
                        )));
                    }
                    if let Some(bound) = existing.nics.iter().find(|nic| nic.interface == request.interface) {
                        static_request_held(key, request, bound)?;
                    }
                }
                let covers_all = existing
                    .spec
                    .nics
                    .iter()
                    .all(|have| spec.nics.iter().any(|nic| nic.interface == have.interface));
                if covers_all {
                    spec
                } else {
                    let mut merged = spec.clone();
                    merged.labels = existing.spec.labels.clone();
                    merged.labels.extend(spec.labels.clone());
                    merged.annotations = existing.spec.annotations.clone();
                    merged.annotations.extend(spec.annotations.clone());
                    merged.nics = existing
                        .spec
                        .nics
                        .iter()
                        .map(|have| {
                            spec.nics
                                .iter()
                                .find(|nic| nic.interface == have.interface)
                                .unwrap_or(have)
                                .clone()
                        })
                        .chain(
                            spec.nics
                                .iter()
                                .filter(|nic| !existing.spec.nics.iter().any(|have| have.interface == nic.interface))
                                .cloned(),
                        )
                        .collect();
                    merged
                }
            }
        };
        let mut nics: Vec<PodNic> = existing.as_ref().map(|pod| pod.nics.clone()).unwrap_or_default();
        let new_specs: Vec<NicSpec> = merged
            .nics
            .iter()
            .filter(|nic| !nics.iter().any(|bound| bound.interface == nic.interface))
            .cloned()
            .collect();
        // The VIP the pod asks for, and the new NIC that takes it.
        let wanted_vip = merged.annotations.get(ANNOTATION_VIP).cloned();
        let held_vip = nics.iter().find_map(|nic| nic.vip.clone());
        let mut vip_nic: Option<(String, Vip)> = None;
        if wanted_vip != held_vip {
            match (&wanted_vip, &held_vip) {
                (Some(vip_name), None) => {
                    let vip = vip_for_pod(state, key, vip_name)?;
                    match new_specs.iter().find(|nic| nic.subnet == vip.spec.subnet) {
                        Some(nic) => vip_nic = Some((nic.interface.clone(), vip)),
                        None if existing.is_some() => {
                            return Err(already(format!(
                                "with another {ANNOTATION_VIP} annotation; unbind it first"
                            )))
                        }
                        None => {
                            return Err(RegistryError::FailedPrecondition(format!(
                                "vip {vip_name} is in subnet {}, and the pod has no NIC there",
                                vip.spec.subnet
                            )))
                        }
                    }
                }
                _ => {
                    return Err(already(format!(
                        "with another {ANNOTATION_VIP} annotation; unbind it first"
                    )))
                }
            }
        }
        let mut batch = WriteBatch::new();
        let mut allocated: Vec<(String, Owner)> = Vec::new();
        for (position, nic_spec) in new_specs.iter().enumerate() {
            let port = port_name(
                &merged.name,
                &merged.namespace,
                &nic_spec.interface,
                existing.is_none() && position == 0,
            );
            if let Some((interface, vip)) = &vip_nic {
                if *interface == nic_spec.interface {
                    let nic = PodNic {
                        interface: nic_spec.interface.clone(),
                        subnet: nic_spec.subnet.clone(),
                        port_name: port,
                        v4ip: vip.v4ip,
                        v6ip: vip.v6ip,
                        mac: vip.mac,
                        vip: Some(vip.spec.name.clone()),
                    };
                    if let Err(error) = static_request_held(key, nic_spec, &nic) {
                        release_all(state, &allocated);
                        return Err(error);
                    }
                    nics.push(nic);
                    continue;
                }
            }
            let owner = pod_nic_owner(key, &nic_spec.interface);
            let request = AllocationRequest {
                v4: nic_spec.v4ip,
                v6: nic_spec.v6ip,
                mac: nic_spec.mac,
            };
            let outcome = match state.ipam.get_mut(&nic_spec.subnet) {
                Some(ipam) => ipam
                    .allocate_avoiding(
                        &owner,
                        &request,
                        elsewhere.get(&nic_spec.subnet).unwrap_or(&InUseElsewhere::default()),
                    )
                    .map_err(|error| RegistryError::from_ipam(error, &nic_spec.subnet)),
                None => Err(RegistryError::Corrupt(format!(
                    "subnet {} has no IPAM",
                    nic_spec.subnet
                ))),
            };
            let allocation = match outcome {
                Ok(allocation) => allocation,
                Err(error) => {
                    release_all(state, &allocated);
                    return Err(error);
                }
            };
            allocated.push((nic_spec.subnet.clone(), owner.clone()));
            allocation_writes(
                &mut batch,
                &nic_spec.subnet,
                &owner,
                allocation.v4,
                allocation.v6,
                allocation.mac,
                false,
            );
            nics.push(PodNic {
                interface: nic_spec.interface.clone(),
                subnet: nic_spec.subnet.clone(),
                port_name: port,
                v4ip: allocation.v4,
                v6ip: allocation.v6,
                mac: allocation.mac,
                vip: None,
            });
        }
        let pod = Pod {
            spec: merged,
            nics,
            bound: true,
        };
        if existing.as_ref() == Some(&pod) {
            // A retry: nothing changes.
            return Ok((pod, Vec::new()));
        }
        let mut changes = vec![Change::Pod(key.clone())];
        batch.push(Write::PutPod(pod.clone()));
        let mut held_vip = None;
        if let Some((_, mut vip)) = vip_nic {
            vip.holder = Some(key.clone());
            batch.push(Write::PutVip(vip.clone()));
            changes.push(Change::Vip(vip.spec.name.clone()));
            held_vip = Some(vip);
        }
        if let Err(error) = self.store.apply(&batch) {
            release_all(state, &allocated);
            return Err(error.into());
        }
        if let Some(vip) = held_vip {
            state.vips.insert(vip.spec.name.clone(), vip);
        }
        // Label changes and new NICs move AAP parents and LB backends.
        changes.extend(aap_vips(&pod.spec.annotations).into_iter().map(Change::Vip));
        state.put_pod(pod.clone());
        Ok((pod, changes))
    }

    /// Unbinds a pod, or with `interface` one of its NICs (the pod is unbound with its last).
    /// StatefulSet pods and VMs keep their addresses (and VIP) unless `owner_gone`: unbinding
    /// one of their NICs only forgets its CNI attachment, and the pod is marked unbound when the
    /// request names no interface or its only one, or no NIC keeps an attachment. Others
    /// release the NIC's addresses. Unbinding what is not bound succeeds with `false`.
    pub async fn unbind_pod(
        &self,
        key: &PodRef,
        owner_gone: bool,
        interface: Option<&str>,
    ) -> Result<bool, RegistryError> {
        let mut changes = vec![Change::Pod(key.clone())];
        let going = |name: &str| interface.is_none_or(|wanted| wanted == name);
        let unbound = match self.lock().pods.get(key) {
            None => true,
            Some(pod) => !pod.nics.iter().any(|nic| going(&nic.interface)),
        };
        if unbound {
            // "Not bound" may rest on a write still in flight (or one whose outcome is unknown
            // until the replica is reloaded): answer it only once every earlier write settled,
            // from the state then.
            self.store.durable().await?;
        }
        {
            let mut state = self.lock();
            let Some(pod) = state.pods.get(key).cloned() else {
                return Ok(false);
            };
            if !pod.nics.iter().any(|nic| going(&nic.interface)) {
                return Ok(false);
            }
            let last = pod.nics.iter().all(|nic| going(&nic.interface));
            let mut batch = WriteBatch::new();
            changes.extend(aap_vips(&pod.spec.annotations).into_iter().map(Change::Vip));
            if pod.spec.owner_kind.keeps_addresses() && !owner_gone {
                let mut kept = pod.clone();
                for nic in kept.spec.nics.iter_mut().filter(|nic| going(&nic.interface)) {
                    nic.attachment = None;
                }
                let had_attachments = pod.spec.nics.iter().any(|nic| nic.attachment.is_some());
                let attached = kept.spec.nics.iter().any(|nic| nic.attachment.is_some());
                if last || (had_attachments && !attached) {
                    kept.bound = false;
                }
                batch.push(Write::PutPod(kept.clone()));
                self.store.apply(&batch)?;
                state.put_pod(kept);
            } else {
                let mut released = Vec::new();
                let mut vips_released = Vec::new();
                for nic in pod.nics.iter().filter(|nic| going(&nic.interface)) {
                    if let Some(vip_name) = &nic.vip {
                        if let Some(vip) = state.vips.get(vip_name) {
                            let mut vip = vip.clone();
                            vip.holder = None;
                            batch.push(Write::PutVip(vip.clone()));
                            vips_released.push(vip);
                        }
                        changes.push(Change::Vip(vip_name.clone()));
                        continue;
                    }
                    let owner = pod_nic_owner(key, &nic.interface);
                    allocation_writes(&mut batch, &nic.subnet, &owner, nic.v4ip, nic.v6ip, nic.mac, true);
                    released.push((nic.subnet.clone(), owner));
                }
                let remaining = (!last).then(|| {
                    let mut remaining = pod.clone();
                    remaining.nics.retain(|nic| !going(&nic.interface));
                    remaining.spec.nics.retain(|nic| !going(&nic.interface));
                    remaining
                });
                match &remaining {
                    Some(remaining) => batch.push(Write::PutPod(remaining.clone())),
                    None => batch.push(Write::DeletePod(key.clone())),
                }
                self.store.apply(&batch)?;
                release_all(&mut state, &released);
                for vip in vips_released {
                    state.vips.insert(vip.spec.name.clone(), vip);
                }
                match remaining {
                    Some(remaining) => state.put_pod(remaining),
                    None => {
                        state.remove_pod(key);
                    }
                }
            }
        }
        self.finish(changes).await?;
        Ok(true)
    }

    pub fn get_pod(&self, key: &PodRef) -> Result<Pod, RegistryError> {
        self.lock()
            .pods
            .get(key)
            .cloned()
            .ok_or_else(|| RegistryError::not_found("pod", &key.to_string()))
    }

    /// Up to `limit` pods after `after` in (namespace, name) order that `keep` accepts, and
    /// whether more follow: one page of a listing, read under one lock.
    pub fn pods_page(&self, after: Option<&PodRef>, limit: usize, keep: impl Fn(&Pod) -> bool) -> (Vec<Pod>, bool) {
        page_of(&self.lock().pods, after, limit, keep)
    }

    pub fn list_pods(&self) -> Vec<Pod> {
        self.lock().pods.values().cloned().collect()
    }

    /// The pods whose `ovn.kubernetes.io/aaps` annotation names `vip`: its parent candidates.
    pub fn pods_naming_aap(&self, vip: &str) -> Vec<Pod> {
        let state = self.lock();
        state
            .pods_by_aap
            .get(vip)
            .into_iter()
            .flatten()
            .filter_map(|key| state.pods.get(key).cloned())
            .collect()
    }

    /// The pods of one namespace (a range of the ordered map: the cost follows the namespace).
    pub fn pods_in_namespace(&self, namespace: &str) -> Vec<Pod> {
        let start = PodRef {
            namespace: namespace.to_string(),
            name: String::new(),
        };
        self.lock()
            .pods
            .range(start..)
            .take_while(|(key, _)| key.namespace == namespace)
            .map(|(_, pod)| pod.clone())
            .collect()
    }

    // ---- switch-LB rules ----

    /// Creates a rule, or updates it when `update` is set.
    pub async fn put_switch_lb_rule(&self, rule: SwitchLbRule, update: bool) -> Result<SwitchLbRule, RegistryError> {
        let rule_subnet_name = rule_subnet(&self.lock(), &rule);
        let elsewhere = self.in_use_elsewhere(rule_subnet_name.as_deref());
        let retried = {
            let mut state = self.lock();
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
                if rule.vip.parse::<IpAddr>().is_err() && !state.vips.contains_key(&rule.vip) {
                    return Err(RegistryError::reference_not_found("vip", &rule.vip));
                }
                // An address frontend inside a subnet must not be an address IPAM gave to a pod,
                // a health-check source or a VIP that is not a switch_lb_vip: both would answer it.
                if let (Ok(ip), Some(subnet)) = (rule.vip.parse::<IpAddr>(), rule_subnet_name.as_deref()) {
                    if let Some(owner) = state.ipam.get(subnet).and_then(|ipam| ipam.owner_of_ip(ip)) {
                        let switch_lb_vip = owner
                            .strip_prefix("vip/")
                            .and_then(|name| state.vips.get(name))
                            .is_some_and(|vip| vip.spec.vip_type == VipType::SwitchLbVip);
                        if !switch_lb_vip {
                            return Err(RegistryError::FailedPrecondition(format!(
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
                        return Err(RegistryError::FailedPrecondition(format!(
                            "rule.ports[{index}].port: {} {} of {} is already served by switch-lb rule {}",
                            port.protocol.as_str(),
                            port.port,
                            rule.vip,
                            other.name
                        )));
                    }
                }
                if rule.health_check && rule_subnet(&state, &rule).is_none() {
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
    ) -> (Vec<SwitchLbRule>, bool) {
        page_of(&self.lock().rules, after, limit, keep)
    }

    pub fn list_switch_lb_rules(&self) -> Vec<SwitchLbRule> {
        self.lock().rules.values().cloned().collect()
    }

    pub async fn delete_switch_lb_rule(&self, name: &str) -> Result<(), RegistryError> {
        {
            let mut state = self.lock();
            if !state.rules.contains_key(name) {
                return Err(RegistryError::not_found("switch-lb rule", name));
            }
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
        }
        self.finish(vec![Change::SwitchLbRule(name.to_string())]).await
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

/// The owner of a subnet's load-balancer health-check source address.
pub fn health_check_owner(subnet: &str) -> Owner {
    format!("healthcheck/{subnet}")
}

/// Within one VPC an address must belong to one subnet (Kube-OVN refuses overlapping CIDRs in a
/// VPC too); subnets of different VPCs may overlap. Names the field and the subnet in the way.
fn overlapping_subnet(state: &State, subnet: &Subnet) -> Option<String> {
    state
        .subnets
        .values()
        .filter(|other| other.vpc == subnet.vpc && other.name != subnet.name)
        .find_map(|other| {
            let v4 = match (subnet.cidr_v4, other.cidr_v4) {
                (Some(a), Some(b)) if a.contains(&b.network()) || b.contains(&a.network()) => {
                    Some(("subnet.cidr_v4", a.to_string(), b.to_string()))
                }
                _ => None,
            };
            let v6 = match (subnet.cidr_v6, other.cidr_v6) {
                (Some(a), Some(b)) if a.contains(&b.network()) || b.contains(&a.network()) => {
                    Some(("subnet.cidr_v6", a.to_string(), b.to_string()))
                }
                _ => None,
            };
            v4.or(v6).map(|(field, mine, theirs)| {
                format!(
                    "{field}: {mine} overlaps {theirs} of subnet {} in VPC {}",
                    other.name, subnet.vpc
                )
            })
        })
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
    let needed: BTreeSet<String> = state
        .rules
        .values()
        .filter(|rule| rule.health_check)
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

/// The unbound pod kept for the same VirtualMachine (owner kind and name) in the namespace of
/// `spec`, when `spec` is a VM launcher pod naming its owner. Only VMs: a StatefulSet's pods
/// share an owner and keep their own names.
fn kept_for_same_vm(state: &State, spec: &PodSpec) -> Option<PodRef> {
    if spec.owner_kind != crate::model::OwnerKind::VirtualMachine || spec.owner_name.is_empty() {
        return None;
    }
    let start = PodRef {
        namespace: spec.namespace.clone(),
        name: String::new(),
    };
    state
        .pods
        .range(start..)
        .take_while(|(key, _)| key.namespace == spec.namespace)
        .find(|(_, pod)| {
            !pod.bound
                && pod.spec.owner_kind == crate::model::OwnerKind::VirtualMachine
                && pod.spec.owner_name == spec.owner_name
        })
        .map(|(key, _)| key.clone())
}

fn held_vip_name(pod: &Pod) -> Option<String> {
    pod.nics.iter().find_map(|nic| nic.vip.clone())
}

/// Gives moved allocations back to their previous owners (a failed adoption).
fn undo_moves(state: &mut State, moved: &[(String, Owner, Owner, crate::ipam::Allocation)]) {
    for (subnet, old_owner, new_owner, allocation) in moved {
        if let Some(ipam) = state.ipam.get_mut(subnet) {
            ipam.release(new_owner);
            let _ = ipam.allocate(
                old_owner,
                &AllocationRequest {
                    v4: allocation.v4,
                    v6: allocation.v6,
                    mac: Some(allocation.mac),
                },
            );
        }
    }
}

/// The VIP `vip_name` as a pod's fixed address: it exists, no other pod holds it, and it is a
/// plain reserved VIP.
fn vip_for_pod(state: &State, key: &PodRef, vip_name: &str) -> Result<Vip, RegistryError> {
    let vip = state
        .vips
        .get(vip_name)
        .cloned()
        .ok_or_else(|| RegistryError::reference_not_found("vip", vip_name))?;
    if let Some(holder) = &vip.holder {
        if holder != key {
            return Err(RegistryError::InUse {
                kind: "vip",
                name: vip_name.to_string(),
                user: format!("pod {holder}"),
            });
        }
    }
    if vip.spec.vip_type != VipType::Reserved || vip.is_aap() {
        return Err(RegistryError::FailedPrecondition(format!(
            "vip {vip_name} is an AAP or switch_lb_vip VIP and cannot be a pod's fixed address"
        )));
    }
    Ok(vip)
}

/// Refuses a static request (address or MAC) the NIC does not hold: a bound address is never
/// silently replaced by another.
fn static_request_held(key: &PodRef, request: &NicSpec, nic: &PodNic) -> Result<(), RegistryError> {
    let mut differences = Vec::new();
    if let Some(ip) = request.v4ip.filter(|ip| nic.v4ip != Some(*ip)) {
        differences.push(format!("{ip} was asked for, it holds {}", describe(nic.v4ip)));
    }
    if let Some(ip) = request.v6ip.filter(|ip| nic.v6ip != Some(*ip)) {
        differences.push(format!("{ip} was asked for, it holds {}", describe(nic.v6ip)));
    }
    if let Some(mac) = request.mac.filter(|mac| nic.mac != *mac) {
        differences.push(format!("mac {mac} was asked for, it holds {}", nic.mac));
    }
    if differences.is_empty() {
        return Ok(());
    }
    let source = match &nic.vip {
        Some(vip) => format!(" (the address of vip {vip})"),
        None => String::new(),
    };
    Err(RegistryError::FailedPrecondition(format!(
        "pod {key} interface {}{source}: {}; unbind it first",
        nic.interface,
        differences.join("; ")
    )))
}

fn describe<T: std::fmt::Display>(address: Option<T>) -> String {
    address.map_or_else(|| "none of that family".to_string(), |address| address.to_string())
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
    fn vip_kinds(&self) -> Vec<(String, &'static str)> {
        self.list_vips()
            .into_iter()
            .map(|vip| {
                let kind = match vip.spec.vip_type {
                    VipType::SwitchLbVip => "switch_lb_vip",
                    VipType::Reserved if vip.is_aap() => "aap",
                    VipType::Reserved => "reserved",
                };
                (vip.spec.subnet, kind)
            })
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
