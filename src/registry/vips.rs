//! VIPs: create, update, get, list, delete, and their observed NB state.

use super::*;

impl Registry {
    pub async fn create_vip(&self, spec: VipSpec) -> Result<Vip, RegistryError> {
        let elsewhere = self.in_use_elsewhere([spec.subnet.as_str()]);
        let (vip, retried) = {
            let mut state = self.lock();
            if let Some(existing) = state.vips.get(&spec.name) {
                if existing.spec == spec {
                    (Vip::clone(existing), true)
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
                // A reference before its target (the Kubernetes way): stored without addresses,
                // Ready=False SubnetNotFound, allocated in the batch that creates the subnet.
                let pending = Pending::subnet_not_found(&spec.subnet);
                let vip = Vip {
                    v4ip: None,
                    v6ip: None,
                    mac: crate::model::MacAddr::from_octets([0; 6]),
                    holder: None,
                    conditions: unallocated_condition(&pending),
                    nb_mac: None,
                    pending: Some(pending),
                    spec,
                };
                let mut batch = WriteBatch::new();
                batch.push(Write::PutVip(vip.clone()));
                self.store.apply(&batch)?;
                state.put_vip(vip.clone());
                return Ok(vip);
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
                pending: None,
                spec,
            };
            let mut batch = WriteBatch::new();
            batch.push(Write::PutVip(vip.clone()));
            allocation_writes(&mut batch, &vip.spec.subnet, &owner, vip.v4ip, vip.v6ip, vip.mac, false);
            let source = rules::reserve_waiting_source(state, &vip.spec.name, &vip.spec.subnet, elsewhere, &mut batch);
            if let Err(error) = self.store.apply(&batch) {
                release_all(state, &[(vip.spec.subnet.clone(), owner)]);
                release_all(state, source.as_slice());
                return Err(error.into());
            }
            state.put_vip(vip.clone());
            Ok(vip)
        }
    }

    /// Replaces a VIP's mutable spec fields (`selector`, `namespace`) with those of `spec`;
    /// every other field must be the VIP's (InvalidArgument naming it otherwise): its addresses
    /// and MAC stay as reserved. Answers once the change is durable; the NB sync follows the
    /// `Change::Vip` it publishes (virtual-parents, port_security).
    pub async fn update_vip(&self, spec: VipSpec) -> Result<Vip, RegistryError> {
        self.update_vip_at(spec, None).await
    }

    /// [`Registry::update_vip`], refused with ABORTED when `revision` is set (non-zero) and no
    /// longer the VIP's.
    pub async fn update_vip_at(&self, spec: VipSpec, revision: Option<u64>) -> Result<Vip, RegistryError> {
        let (vip, changed) = {
            let mut state = self.lock();
            let existing = state
                .vips
                .get(&spec.name)
                .map(|vip| Vip::clone(vip))
                .ok_or_else(|| RegistryError::not_found("vip", &spec.name))?;
            self.precondition(Kind::Vip, &spec.name, revision)?;
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
                state.put_vip(vip.clone());
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
            .map(|vip| Vip::clone(vip))
            .ok_or_else(|| RegistryError::not_found("vip", name))
    }

    /// Up to `limit` VIPs named after `after` (name order) that `keep` accepts, and whether
    /// more follow: one page of a listing, read under one lock.
    /// A page of VIPs with their revisions (read under the registry lock, so each is the
    /// revision of the state returned).
    pub fn vips_page(&self, after: Option<&str>, limit: usize, keep: impl Fn(&Vip) -> bool) -> (Vec<(Vip, u64)>, bool) {
        let state = self.lock();
        let (vips, more) = page_of(&state.vips, after, limit, |vip: &Arc<Vip>| keep(vip));
        let vips = vips
            .into_iter()
            .map(|vip| {
                let vip = Arc::unwrap_or_clone(vip);
                let revision = self.store.revision_of(Kind::Vip, &vip.spec.name).unwrap_or(0);
                (vip, revision)
            })
            .collect();
        (vips, more)
    }

    pub fn list_vips(&self) -> Vec<Vip> {
        self.lock().vips.values().map(|vip| Vip::clone(vip)).collect()
    }

    /// Every VIP, shared with the registry rather than copied (the full pass's list: pointers
    /// for 100,000 VIPs instead of copies). A change made while the list is held copies only
    /// the VIP it changes.
    pub fn list_vips_shared(&self) -> Vec<Arc<Vip>> {
        self.lock().vips.values().cloned().collect()
    }

    pub async fn delete_vip(&self, name: &str) -> Result<(), RegistryError> {
        self.delete_vip_at(name, None).await
    }

    /// [`Registry::delete_vip`], refused with ABORTED when `revision` is set (non-zero) and no
    /// longer the VIP's.
    pub async fn delete_vip_at(&self, name: &str, revision: Option<u64>) -> Result<(), RegistryError> {
        let waiting_subnet = {
            let state = self.lock();
            state
                .vips
                .get(name)
                .filter(|vip| vip.is_allocated() && state.pending_by_subnet.contains_key(&vip.spec.subnet))
                .map(|vip| vip.spec.subnet.clone())
        };
        if !self.lock().vips.contains_key(name) {
            // "Not found" may rest on a write still in flight (or one whose outcome is unknown
            // until the replica is reloaded): answer it only once every earlier write settled,
            // from the state then.
            self.store.durable().await?;
        }
        // Pending VIPs of the subnet are tried again with what this one lets go of.
        let elsewhere = self.in_use_elsewhere(waiting_subnet.as_deref());
        let mut changes = vec![Change::Vip(name.to_string())];
        {
            let mut state = self.lock();
            let vip = state
                .vips
                .get(name)
                .cloned()
                .ok_or_else(|| RegistryError::not_found("vip", name))?;
            self.precondition(Kind::Vip, name, revision)?;
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
            let mut retried = PendingOutcome::default();
            if vip.is_allocated() {
                allocation_writes(&mut batch, &vip.spec.subnet, &owner, vip.v4ip, vip.v6ip, vip.mac, true);
                if let Some(ipam) = state.ipam.get_mut(&vip.spec.subnet) {
                    ipam.release(&owner);
                }
                // Only where NB's foreign addresses were read for it (pending VIPs that arrived
                // since wait for the next deletion or update).
                if waiting_subnet.as_deref() == Some(vip.spec.subnet.as_str()) {
                    retried = allocate_pending(&mut state, &vip.spec.subnet, &elsewhere, &mut batch);
                }
            }
            if let Err(error) = self.store.apply(&batch) {
                retried.undo(&mut state);
                if let (Some(ipam), true) = (state.ipam.get_mut(&vip.spec.subnet), vip.is_allocated()) {
                    let request = AllocationRequest {
                        v4: vip.v4ip,
                        v6: vip.v6ip,
                        mac: Some(vip.mac),
                    };
                    // A static allocation, not `restore`: it also takes the addresses out of
                    // the reuse queue the release put them in.
                    let _ = ipam.allocate(&owner, &request);
                }
                return Err(error.into());
            }
            state.remove_vip(name);
            changes.extend(retried.changes());
            retried.commit(&mut state);
        }
        self.finish(changes).await
    }

    /// Replaces a VIP's observed status (not persisted: the reconciler recomputes it).
    pub fn set_vip_conditions(&self, name: &str, conditions: Vec<Condition>) -> bool {
        let changed = {
            let mut state = self.lock();
            match state.vips.get_mut(name) {
                Some(vip) if vip.conditions != conditions => {
                    Arc::make_mut(vip).conditions = conditions;
                    self.log_status(Kind::Vip, &[name]);
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

    /// Replaces the observed status of every VIP `status` gives one for, in one pass under the
    /// lock (no copy of the VIPs: at 100,000 VIPs a copy per NB disconnect was the cost).
    /// `status` sees each VIP and returns its new conditions, or `None` to leave it. Returns how
    /// many changed.
    pub fn set_vip_conditions_where(&self, mut status: impl FnMut(&Vip) -> Option<Vec<Condition>>) -> usize {
        let changed: Vec<String> = {
            let mut state = self.lock();
            let changed: Vec<String> = state
                .vips
                .values_mut()
                .filter_map(|vip| {
                    let conditions = status(vip).filter(|conditions| *conditions != vip.conditions)?;
                    Arc::make_mut(vip).conditions = conditions;
                    Some(vip.spec.name.clone())
                })
                .collect();
            self.log_status(Kind::Vip, &changed);
            changed
        };
        self.publish_statuses(changed, Change::VipStatus)
    }

    /// Writes what one NB sync pass observed of many VIPs under one lock: each update's
    /// conditions (when given) and NB MAC, where they differ. The changed ones get their status
    /// revisions together (one for all from [`crate::store::STATUS_BULK`] on) and are
    /// published. Returns how many changed.
    pub fn set_vip_statuses(&self, updates: Vec<VipStatusUpdate>) -> usize {
        let changed: Vec<String> = {
            let mut state = self.lock();
            let mut changed = Vec::new();
            for update in updates {
                let Some(vip) = state.vips.get_mut(&update.name) else {
                    continue;
                };
                let conditions = update.conditions.filter(|conditions| *conditions != vip.conditions);
                if vip.nb_mac == update.nb_mac && conditions.is_none() {
                    continue;
                }
                // Copied only when the pass still shares it (it lets each go before this).
                let vip = Arc::make_mut(vip);
                vip.nb_mac = update.nb_mac;
                if let Some(conditions) = conditions {
                    vip.conditions = conditions;
                }
                changed.push(update.name);
            }
            self.log_status(Kind::Vip, &changed);
            changed
        };
        self.publish_statuses(changed, Change::VipStatus)
    }
}
