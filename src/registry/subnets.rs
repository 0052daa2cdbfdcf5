//! Subnets: create, update, get, list, delete.

use super::*;

impl Registry {
    /// Creates a subnet. The VIPs that named it before it existed (pending, `SubnetNotFound`)
    /// are allocated in the same batch as the subnet, so a crash leaves both or neither; one
    /// whose request the subnet cannot meet stays pending with the reason (`AddressTaken`,
    /// `AddressNotInSubnet`, ...) and does not fail the creation.
    pub async fn create_subnet(&self, subnet: Subnet) -> Result<Subnet, RegistryError> {
        let elsewhere = self.in_use_on([], Some(&subnet));
        let mut changes = Vec::new();
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
                state.ipam.add_subnet(subnet.name.clone(), ipam);
                let pending = allocate_pending(&mut state, &subnet.name, &elsewhere, &mut batch);
                if let Err(error) = self.store.apply(&batch) {
                    state.ipam.remove_subnet(&subnet.name);
                    return Err(error.into());
                }
                state.subnets.insert(subnet.name.clone(), subnet.clone());
                changes.push(Change::Subnet(subnet.name.clone()));
                changes.extend(pending.changes());
                pending.commit(&mut state);
                None
            }
        };
        if let Some(existing) = existing {
            // A retry: answer once what answered the first time is durable.
            self.store.durable().await?;
            return Ok(existing);
        }
        self.finish(changes).await?;
        Ok(subnet)
    }

    /// Replaces a subnet's mutable fields (`exclude_ips`, `strategy`) with those of `subnet`;
    /// every other field must be the subnet's (InvalidArgument naming it otherwise). An address
    /// that the new `exclude_ips` excludes, the old did not, and an owner holds refuses the
    /// update (FAILED_PRECONDITION naming address and owner): nothing changes. Answers once the
    /// change is durable; the IPAM keeps every allocation.
    pub async fn update_subnet(&self, subnet: Subnet) -> Result<Subnet, RegistryError> {
        self.update_subnet_at(subnet, None).await
    }

    /// [`Registry::update_subnet`], refused with ABORTED when `revision` is set (non-zero) and
    /// no longer the subnet's.
    pub async fn update_subnet_at(&self, subnet: Subnet, revision: Option<u64>) -> Result<Subnet, RegistryError> {
        let elsewhere = self.in_use_elsewhere([subnet.name.as_str()]);
        let mut changes = Vec::new();
        let changed = {
            let mut state = self.lock();
            let existing = state
                .subnets
                .get(&subnet.name)
                .cloned()
                .ok_or_else(|| RegistryError::not_found("subnet", &subnet.name))?;
            self.precondition(Kind::Subnet, &subnet.name, revision)?;
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
                let mut allocations: Vec<_> = old
                    .allocations()
                    .map(|(owner, held)| (owner.to_string(), *held))
                    .collect();
                allocations.sort_by(|a, b| a.0.cmp(&b.0));
                for (owner, held) in &allocations {
                    let addresses = held.v4.map(IpAddr::V4).into_iter().chain(held.v6.map(IpAddr::V6));
                    for ip in addresses {
                        if new.is_excluded(ip) && !old.is_excluded(ip) {
                            return Err(RegistryError::AddressTaken(format!(
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
                // Pending VIPs hold nothing, so no exclusion can refuse them; they are tried
                // again against the updated subnet (a narrower exclude_ips may free room for a
                // dynamic one; a static request may name an excluded address, as in Kube-OVN).
                let old = state.ipam.remove_subnet(&subnet.name);
                state.ipam.add_subnet(subnet.name.clone(), new);
                let pending = allocate_pending(&mut state, &subnet.name, &elsewhere, &mut batch);
                if let Err(error) = self.store.apply(&batch) {
                    if let Some(old) = old {
                        state.ipam.add_subnet(subnet.name.clone(), old);
                    }
                    return Err(error.into());
                }
                state.subnets.insert(subnet.name.clone(), subnet.clone());
                changes.push(Change::Subnet(subnet.name.clone()));
                changes.extend(pending.changes());
                pending.commit(&mut state);
                true
            }
        };
        if changed {
            self.finish(changes).await?;
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
        ip.and_then(|ip| ipam.owner_of_ip(ip).map(str::to_string))
            .or_else(|| mac.and_then(|mac| ipam.owner_of_mac(mac).map(str::to_string)))
    }

    /// Up to `limit` subnets named after `after` (name order) that `keep` accepts, with their
    /// usage, and whether more follow: one page of a listing, read under one lock.
    pub fn subnets_page(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&Subnet) -> bool,
    ) -> (Vec<(Subnet, SubnetUsage, u64)>, bool) {
        let state = self.lock();
        let (subnets, more) = page_of(&state.subnets, after, limit, keep);
        let subnets = subnets
            .into_iter()
            .map(|subnet| {
                let usage = state.ipam.get(&subnet.name).map(usage_of).unwrap_or_default();
                let revision = self.store.revision_of(Kind::Subnet, &subnet.name).unwrap_or(0);
                (subnet, usage, revision)
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
        self.delete_subnet_at(name, None).await
    }

    /// [`Registry::delete_subnet`], refused with ABORTED when `revision` is set (non-zero) and
    /// no longer the subnet's.
    pub async fn delete_subnet_at(&self, name: &str, revision: Option<u64>) -> Result<(), RegistryError> {
        let mut changes = Vec::new();
        {
            let mut state = self.lock();
            if !state.subnets.contains_key(name) {
                return Err(RegistryError::not_found("subnet", name));
            }
            self.precondition(Kind::Subnet, name, revision)?;
            let mut users = Vec::new();
            // A pending VIP holds nothing in the subnet: it does not block the deletion, and
            // waits for the subnet again (SubnetNotFound).
            users.extend(
                state
                    .vips
                    .values()
                    .filter(|vip| vip.spec.subnet == name && vip.is_allocated())
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
            let waiting = Pending::subnet_not_found(name);
            let mut again: Vec<Vip> = state
                .vips
                .values()
                .filter(|vip| vip.spec.subnet == name && vip.pending.as_ref().is_some_and(|p| *p != waiting))
                .map(|vip| Vip::clone(vip))
                .collect();
            for vip in &mut again {
                vip.conditions = unallocated_condition(&waiting);
                vip.pending = Some(waiting.clone());
                batch.push(Write::PutVip(vip.clone()));
            }
            self.store.apply(&batch)?;
            state.subnets.remove(name);
            state.ipam.remove_subnet(name);
            changes.push(Change::Subnet(name.to_string()));
            for vip in again {
                changes.push(Change::Vip(vip.spec.name.clone()));
                state.put_vip(vip);
            }
        }
        self.finish(changes).await
    }
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
