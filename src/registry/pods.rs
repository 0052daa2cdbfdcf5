//! Pods: bind (with adoption by a VM's next launcher pod), unbind, get, list.

use super::*;

impl Registry {
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
                let mut vip = Vip::clone(vip);
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
            state.put_vip(vip);
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
            state.put_vip(vip);
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
        self.unbind_pod_at(key, owner_gone, interface, None).await
    }

    /// [`Registry::unbind_pod`], refused with ABORTED when `revision` is set (non-zero) and no
    /// longer the pod's.
    pub async fn unbind_pod_at(
        &self,
        key: &PodRef,
        owner_gone: bool,
        interface: Option<&str>,
        revision: Option<u64>,
    ) -> Result<bool, RegistryError> {
        let mut changes = vec![Change::Pod(key.clone())];
        let going = |name: &str| interface.is_none_or(|wanted| wanted == name);
        let (unbound, subnets) = match self.lock().pods.get(key) {
            None => (true, Vec::new()),
            Some(pod) => (
                !pod.nics.iter().any(|nic| going(&nic.interface)),
                pod.nics.iter().map(|nic| nic.subnet.clone()).collect::<Vec<_>>(),
            ),
        };
        // Pending VIPs there are tried again with what the pod lets go of.
        let pending_elsewhere = self.pending_elsewhere(&subnets);
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
            self.precondition(Kind::Pod, &key.to_string(), revision)?;
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
                            let mut vip = Vip::clone(vip);
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
                    state.put_vip(vip);
                }
                match remaining {
                    Some(remaining) => state.put_pod(remaining),
                    None => {
                        state.remove_pod(key);
                    }
                }
                changes.extend(self.retry_pending(&mut state, &pending_elsewhere));
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
    /// A page of pods with their revisions (read under the registry lock, so each is the
    /// revision of the state returned).
    pub fn pods_page(
        &self,
        after: Option<&PodRef>,
        limit: usize,
        keep: impl Fn(&Pod) -> bool,
    ) -> (Vec<(Pod, u64)>, bool) {
        let state = self.lock();
        let (pods, more) = page_of(&state.pods, after, limit, keep);
        let pods = pods
            .into_iter()
            .map(|pod| {
                let revision = self.store.revision_of(Kind::Pod, &pod.key().to_string()).unwrap_or(0);
                (pod, revision)
            })
            .collect();
        (pods, more)
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
        .map(|vip| Vip::clone(vip))
        .ok_or_else(|| RegistryError::reference_not_found("vip", vip_name))?;
    // BindPod answers with the address: a VIP that holds none yet is refused like a missing one
    // (REFERENCE_NOT_FOUND; the CNI plugin's code 11, try again later).
    if let Some(pending) = &vip.pending {
        return Err(RegistryError::reference_not_ready("vip", vip_name, &pending.message));
    }
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
