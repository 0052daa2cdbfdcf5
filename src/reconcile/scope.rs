//! Incremental passes: what changed ([`Dirty`]), and what the sync remembers of its last passes
//! ([`Memory`]) to know what a change affects without looking at everything.
//!
//! A change to a VIP affects its ports, the port security of its old and new parents, and the
//! load balancers of rules naming it; a change to a pod affects its ports, the VIPs it is or was
//! an eligible parent of, and the rules of its namespace. An NB row maps back to its object by the
//! owner mark ([`crate::nb::Owner`]) or, for a foreign row in the way, by its name. Anything whose
//! reach is wide (a subnet, a switch, a router port) asks for a full pass.

use std::collections::{BTreeSet, HashMap};

use compact_str::CompactString;

use super::desired::{Desired, RouterMacs, SwitchRouters};
use crate::model::PodRef;
use crate::nb::changes::{touched, Touched};
use crate::nb::Owner;
use crate::ovsdb::{Cache, RowChange};
use crate::registry::Change;

/// What the next pass must look at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dirty {
    /// Everything (start-up, reconnect, lag, the periodic tick, wide changes).
    pub full: bool,
    pub vips: BTreeSet<String>,
    pub pods: BTreeSet<PodRef>,
    pub rules: BTreeSet<String>,
}

impl Dirty {
    pub fn full() -> Dirty {
        Dirty {
            full: true,
            ..Dirty::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.full && self.vips.is_empty() && self.pods.is_empty() && self.rules.is_empty()
    }

    pub fn merge(&mut self, other: Dirty) {
        self.full |= other.full;
        self.vips.extend(other.vips);
        self.pods.extend(other.pods);
        self.rules.extend(other.rules);
    }

    /// What a registry change makes dirty; nothing for the sync's own status writes.
    pub fn from_registry(change: &Change) -> Dirty {
        let mut dirty = Dirty::default();
        match change {
            Change::Subnet(_) => dirty.full = true,
            Change::Vip(name) => {
                dirty.vips.insert(name.clone());
            }
            Change::Pod(key) => {
                dirty.pods.insert(key.clone());
            }
            Change::SwitchLbRule(name) => {
                dirty.rules.insert(name.clone());
            }
            Change::VipStatus(_) | Change::SwitchLbRuleStatus(_) => {}
        }
        dirty
    }

    fn add_owner(&mut self, owner: Owner) {
        match owner {
            Owner::Vip(vip) => {
                self.vips.insert(vip);
            }
            Owner::Nic { pod, .. } => {
                self.pods.insert(pod);
            }
            Owner::Rule { rule, .. } => {
                self.rules.insert(rule);
            }
            // A switch: its reach is wide.
            Owner::Subnet(_) => self.full = true,
        }
    }

    fn add_object(&mut self, object: &Object) {
        match object {
            Object::Vip(name) => {
                self.vips.insert(name.to_string());
            }
            Object::Pod(key) => {
                self.pods.insert(key.clone());
            }
        }
    }
}

/// A VIP or port name as the memory keeps it: inline up to 24 bytes (no allocation per name;
/// the memory holds several per VIP, for every VIP).
pub type Name = CompactString;

/// The object a logical switch port belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Vip(Name),
    Pod(PodRef),
}

/// What the sync computed last, per object: enough to know what a change used to affect.
#[derive(Debug, Default)]
pub struct Memory {
    /// AAP VIP → its parent ports.
    parents: HashMap<Name, Box<[Name]>>,
    /// Parent port → the VIPs it is a parent of.
    vips_of_parent: HashMap<Name, BTreeSet<Name>>,
    ports_of_vip: HashMap<Name, Box<[Name]>>,
    ports_of_pod: HashMap<PodRef, Box<[Name]>>,
    /// Port name → its object, so a foreign row in the way maps back to the object it blocks.
    object_of_port: HashMap<Name, Object>,
    /// Rule → the VIP it names (absent for an address frontend), so a deleted rule's VIP is
    /// looked at again.
    vip_of_rule: HashMap<String, String>,
    /// Switch → router port MAC, from the last full pass (a router port change asks for one).
    pub router_macs: RouterMacs,
    /// Switch → its logical router, from the last full pass (a router change asks for one).
    pub switch_routers: SwitchRouters,
}

impl Memory {
    /// Forgets everything but the router MACs (before a full pass records every object).
    pub fn reset(&mut self, router_macs: RouterMacs, switch_routers: SwitchRouters) {
        *self = Memory {
            router_macs,
            switch_routers,
            ..Memory::default()
        };
    }

    pub fn parents_of(&self, vip: &str) -> &[Name] {
        self.parents.get(vip).map_or(&[], |parents| parents)
    }

    pub fn vips_parented_by(&self, port: &str) -> impl Iterator<Item = &Name> {
        self.vips_of_parent.get(port).into_iter().flatten()
    }

    pub fn ports_of_vip(&self, vip: &str) -> &[Name] {
        self.ports_of_vip.get(vip).map_or(&[], |ports| ports)
    }

    pub fn ports_of_pod(&self, pod: &PodRef) -> &[Name] {
        self.ports_of_pod.get(pod).map_or(&[], |ports| ports)
    }

    pub fn object_of_port(&self, port: &str) -> Option<&Object> {
        self.object_of_port.get(port)
    }

    /// Records what `desired` says of the VIP `name` (absent from it: the VIP is gone).
    pub fn record_vip(&mut self, name: &str, desired: &Desired) {
        for parent in self.parents.remove(name).unwrap_or_default() {
            if let Some(vips) = self.vips_of_parent.get_mut(&parent) {
                vips.remove(name);
                if vips.is_empty() {
                    self.vips_of_parent.remove(&parent);
                }
            }
        }
        for port in self.ports_of_vip.remove(name).unwrap_or_default() {
            self.object_of_port.remove(&port);
        }
        if let Some(parents) = desired.vip_parents.get(name).filter(|parents| !parents.is_empty()) {
            for parent in parents {
                self.vips_of_parent
                    .entry(Name::from(parent.as_str()))
                    .or_default()
                    .insert(Name::from(name));
            }
            self.parents.insert(
                Name::from(name),
                parents.iter().map(|parent| Name::from(parent.as_str())).collect(),
            );
        }
        if let Some(ports) = desired.vip_ports.get(name).filter(|ports| !ports.is_empty()) {
            for port in ports {
                self.object_of_port
                    .insert(Name::from(port.as_str()), Object::Vip(Name::from(name)));
            }
            self.ports_of_vip.insert(
                Name::from(name),
                ports.iter().map(|port| Name::from(port.as_str())).collect(),
            );
        }
    }

    /// The VIP the rule named when it was last seen.
    pub fn vip_of_rule(&self, rule: &str) -> Option<&String> {
        self.vip_of_rule.get(rule)
    }

    /// Records the VIP a rule names (`None`: the rule is gone or names an address).
    pub fn record_rule(&mut self, rule: &str, vip: Option<&str>) {
        match vip {
            Some(vip) => self.vip_of_rule.insert(rule.to_string(), vip.to_string()),
            None => self.vip_of_rule.remove(rule),
        };
    }

    /// Records what `desired` says of the pod `key` (absent: unbound or gone).
    pub fn record_pod(&mut self, key: &PodRef, desired: &Desired) {
        for port in self.ports_of_pod.remove(key).unwrap_or_default() {
            self.object_of_port.remove(&port);
        }
        if let Some(ports) = desired.pod_ports.get(key).filter(|ports| !ports.is_empty()) {
            for port in ports {
                self.object_of_port
                    .insert(Name::from(port.as_str()), Object::Pod(key.clone()));
            }
            self.ports_of_pod.insert(
                key.clone(),
                ports.iter().map(|port| Name::from(port.as_str())).collect(),
            );
        }
    }
}

/// What a batch of NB row changes makes dirty: the objects owning the changed rows, the object
/// a changed port name belongs to (a foreign row may be in its way), everything for a topology
/// change. `cache` is read for the balancers a switch or router gained or lost.
pub fn dirty_from_nb(changes: &[RowChange], memory: &Memory, cache: &Cache) -> Dirty {
    let mut dirty = Dirty::default();
    for touched in touched(changes, cache) {
        match touched {
            Touched::Owner(owner) => dirty.add_owner(owner),
            Touched::Port(name) => {
                if let Some(object) = memory.object_of_port(&name) {
                    dirty.add_object(object);
                }
            }
            Touched::Topology => dirty.full = true,
        }
    }
    dirty
}
