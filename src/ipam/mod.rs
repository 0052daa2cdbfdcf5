//! IPAM: address and MAC allocation for the subnets the daemon manages. Pure logic: no I/O, no
//! clock, no logging; the registry persists what it decides.
//!
//! Each address family of a subnet is a range of integers. What may not be handed out
//! dynamically (gateway, excluded addresses, allocated addresses, addresses in their reuse
//! delay) is one [`IntervalSet`] of coalesced runs, so memory follows what is allocated, never
//! the size of the space, and finding a free address is one ordered-map lookup whether the
//! subnet is empty or 99 % full.

mod intervals;
mod mac;

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::{Deserialize, Serialize};

pub use intervals::IntervalSet;
pub use mac::{MacAddr, MacParseError};

/// An opaque owner key chosen by the caller, e.g. `vip/vip-aap` or `pod/default/busybox/eth0`.
pub type Owner = String;

/// An owner as IPAM keeps it: one shared allocation per owner, referenced by its address(es),
/// its MAC and its allocation entry (three `String` copies before).
type SharedOwner = std::sync::Arc<str>;

/// Released addresses wait here before reuse; beyond this many, the oldest become free at once.
pub const REUSE_QUEUE_LIMIT: usize = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Strategy {
    /// Spread over the free space.
    #[default]
    Random,
    /// Lowest free address first.
    Sequential,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("subnet full: no free {family} address")]
    SubnetFull { family: Family },
    #[error("{ip} is outside the subnet's CIDR {cidr}")]
    OutsideCidr { ip: IpAddr, cidr: String },
    #[error("{ip} is the subnet's gateway")]
    IsGateway { ip: IpAddr },
    #[error("{ip} is the subnet's {what} address")]
    Reserved { ip: IpAddr, what: &'static str },
    #[error("{ip} is already owned by {owner}")]
    AddressInUse { ip: IpAddr, owner: Owner },
    #[error("mac {mac} is already owned by {owner}")]
    MacInUse { mac: MacAddr, owner: Owner },
    #[error("mac {mac} is {reason}")]
    InvalidMac { mac: MacAddr, reason: &'static str },
    #[error("invalid excluded address {entry:?}: {reason}")]
    InvalidExclude { entry: String, reason: String },
    #[error("the subnet has no {family} CIDR, so {ip} cannot be allocated")]
    FamilyNotInSubnet { ip: IpAddr, family: Family },
    #[error("the owner already holds other addresses in this subnet")]
    OwnerHasDifferentAllocation,
    #[error("invalid CIDR {cidr}: {reason}")]
    InvalidCidr { cidr: String, reason: String },
    #[error("invalid gateway {ip}: {reason}")]
    InvalidGateway { ip: IpAddr, reason: String },
    #[error("a subnet needs an IPv4 CIDR, an IPv6 CIDR, or both")]
    NoCidr,
}

impl IpamError {
    /// The request field the error is about, for error details.
    pub fn field(&self) -> &'static str {
        let family_field = |ip: &IpAddr| if ip.is_ipv4() { "v4ip" } else { "v6ip" };
        match self {
            IpamError::OutsideCidr { ip, .. }
            | IpamError::IsGateway { ip }
            | IpamError::Reserved { ip, .. }
            | IpamError::AddressInUse { ip, .. }
            | IpamError::FamilyNotInSubnet { ip, .. } => family_field(ip),
            IpamError::MacInUse { .. } | IpamError::InvalidMac { .. } => "mac_address",
            IpamError::InvalidExclude { .. } => "exclude_ips",
            IpamError::InvalidGateway { .. } => "gateway",
            IpamError::InvalidCidr { .. } | IpamError::NoCidr => "cidr",
            IpamError::SubnetFull { .. } | IpamError::OwnerHasDifferentAllocation => "subnet",
        }
    }
}

/// A subnet's addressing, as IPAM needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubnetIpamConfig {
    pub cidr_v4: Option<Ipv4Net>,
    pub cidr_v6: Option<Ipv6Net>,
    pub gateway_v4: Option<Ipv4Addr>,
    pub gateway_v6: Option<Ipv6Addr>,
    /// Kube-OVN `excludeIps`: single addresses, `a..b` ranges and CIDRs, either family.
    pub exclude_ips: Vec<String>,
    pub strategy: Strategy,
    /// Counts as taken when generating MACs (the router port's MAC, when known).
    pub gateway_mac: Option<MacAddr>,
}

/// What to allocate: given addresses/MAC are taken as they are, absent ones are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AllocationRequest {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    pub mac: Option<MacAddr>,
}

/// Addresses and MACs something outside IPAM already uses in the subnet (OVN NB rows the
/// daemon did not make: foreign ports, router ports' networks, foreign load-balancer VIPs), each
/// with a description of the user. Never handed out, not even when asked for explicitly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InUseElsewhere {
    pub ips: std::collections::BTreeMap<IpAddr, String>,
    pub macs: std::collections::BTreeMap<MacAddr, String>,
}

impl InUseElsewhere {
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty() && self.macs.is_empty()
    }
}

/// What an owner holds in one subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Allocation {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    pub mac: MacAddr,
}

/// One address family of a subnet.
#[derive(Debug, Clone)]
struct FamilyPool {
    family: Family,
    cidr: String,
    network: u128,
    broadcast: u128,
    /// The allocatable range: network+1 ..= broadcast-1 (IPv4) or the last address (IPv6).
    first: u128,
    last: u128,
    gateway: u128,
    excluded: IntervalSet,
    /// Not available to dynamic allocation: gateway, excluded, owned, and waiting for reuse.
    taken: IntervalSet,
    owners: HashMap<u128, SharedOwner>,
    /// Released addresses, oldest first; entries no longer in `waiting` are stale.
    reuse_queue: VecDeque<u128>,
    waiting: HashSet<u128>,
}

fn v4_value(ip: Ipv4Addr) -> u128 {
    u32::from(ip) as u128
}

fn v6_value(ip: Ipv6Addr) -> u128 {
    u128::from(ip)
}

impl FamilyPool {
    fn new(
        family: Family,
        cidr: String,
        network: u128,
        broadcast: u128,
        gateway: Option<u128>,
    ) -> Result<FamilyPool, IpamError> {
        let first = network + 1;
        let last = if family == Family::V4 { broadcast - 1 } else { broadcast };
        let gateway = gateway.unwrap_or(first);
        let mut pool = FamilyPool {
            family,
            cidr,
            network,
            broadcast,
            first,
            last,
            gateway,
            excluded: IntervalSet::new(),
            taken: IntervalSet::new(),
            owners: HashMap::default(),
            reuse_queue: VecDeque::new(),
            waiting: HashSet::default(),
        };
        let gateway_ip = pool.ip(gateway);
        if gateway < first || gateway > last {
            return Err(IpamError::InvalidGateway {
                ip: gateway_ip,
                reason: format!("must be a usable address of {}", pool.cidr),
            });
        }
        pool.taken.insert(gateway);
        Ok(pool)
    }

    fn ip(&self, value: u128) -> IpAddr {
        match self.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
        }
    }

    fn exclude(&mut self, start: u128, end: u128) {
        let start = start.max(self.first);
        let end = end.min(self.last);
        if start <= end {
            self.excluded.insert_range(start, end);
            self.taken.insert_range(start, end);
        }
    }

    /// Checks that `value` may be given to an owner explicitly.
    fn check_static(&self, value: u128) -> Result<(), IpamError> {
        let ip = self.ip(value);
        if value < self.network || value > self.broadcast {
            return Err(IpamError::OutsideCidr {
                ip,
                cidr: self.cidr.clone(),
            });
        }
        if value == self.network {
            return Err(IpamError::Reserved {
                ip,
                what: if self.family == Family::V4 {
                    "network"
                } else {
                    "subnet-router anycast"
                },
            });
        }
        if self.family == Family::V4 && value == self.broadcast {
            return Err(IpamError::Reserved { ip, what: "broadcast" });
        }
        if value == self.gateway {
            return Err(IpamError::IsGateway { ip });
        }
        if let Some(owner) = self.owners.get(&value) {
            return Err(IpamError::AddressInUse {
                ip,
                owner: owner.to_string(),
            });
        }
        Ok(())
    }

    fn take_static(&mut self, value: u128, owner: &SharedOwner) -> Result<(), IpamError> {
        self.check_static(value)?;
        self.waiting.remove(&value);
        self.taken.insert(value);
        self.owners.insert(value, owner.clone());
        Ok(())
    }

    fn take_dynamic(&mut self, owner: &SharedOwner, strategy: Strategy, rng: &mut impl Rng) -> Result<u128, IpamError> {
        let value = match strategy {
            Strategy::Sequential => self.taken.first_absent_from(self.first, self.last),
            Strategy::Random => {
                let start = rng.gen_range(self.first..=self.last);
                self.taken
                    .first_absent_from(start, self.last)
                    .or_else(|| self.taken.first_absent_from(self.first, start))
            }
        };
        let value = match value {
            Some(value) => {
                self.taken.insert(value);
                value
            }
            // Nothing never-used is left: the oldest released address goes first.
            None => self
                .pop_reusable()
                .ok_or(IpamError::SubnetFull { family: self.family })?,
        };
        self.owners.insert(value, owner.clone());
        Ok(value)
    }

    fn pop_reusable(&mut self) -> Option<u128> {
        while let Some(value) = self.reuse_queue.pop_front() {
            if self.waiting.remove(&value) {
                return Some(value);
            }
        }
        None
    }

    fn release(&mut self, value: u128) {
        if self.owners.remove(&value).is_none() {
            return;
        }
        if self.excluded.contains(value) {
            return;
        }
        self.waiting.insert(value);
        self.reuse_queue.push_back(value);
        while self.waiting.len() > REUSE_QUEUE_LIMIT {
            if let Some(oldest) = self.pop_reusable() {
                self.taken.remove(oldest);
            }
        }
        if self.reuse_queue.len() > 2 * REUSE_QUEUE_LIMIT {
            self.reuse_queue.retain(|value| self.waiting.contains(value));
        }
    }

    /// Rebuilding from storage, or putting back what a failed write released: must be inside
    /// the CIDR and not owned; no reuse delay. An address put back while it waits for reuse
    /// leaves the queue, or dynamic allocation would hand it to a second owner.
    fn restore(&mut self, value: u128, owner: &SharedOwner) -> Result<(), IpamError> {
        let ip = self.ip(value);
        if value < self.network || value > self.broadcast {
            return Err(IpamError::OutsideCidr {
                ip,
                cidr: self.cidr.clone(),
            });
        }
        if let Some(existing) = self.owners.get(&value) {
            return Err(IpamError::AddressInUse {
                ip,
                owner: existing.to_string(),
            });
        }
        self.waiting.remove(&value);
        self.taken.insert(value);
        self.owners.insert(value, owner.clone());
        Ok(())
    }

    fn size(&self) -> u128 {
        self.last - self.first + 1
    }

    /// Addresses dynamic allocation can still hand out (those waiting for reuse included).
    fn free(&self) -> u128 {
        self.size() - self.taken.len() + self.waiting.len() as u128
    }

    fn used(&self) -> u128 {
        self.owners.len() as u128
    }
}

/// Allocation state of one subnet.
#[derive(Debug, Clone)]
pub struct SubnetIpam {
    v4: Option<FamilyPool>,
    v6: Option<FamilyPool>,
    strategy: Strategy,
    macs: HashMap<MacAddr, SharedOwner>,
    gateway_mac: Option<MacAddr>,
    allocations: HashMap<SharedOwner, Allocation>,
    /// Random picks need no cryptographic quality, only spread; seeded from the OS.
    rng: SmallRng,
}

fn parse_exclude_entry(entry: &str) -> Result<(IpAddr, IpAddr), IpamError> {
    let invalid = |reason: &str| IpamError::InvalidExclude {
        entry: entry.to_string(),
        reason: reason.to_string(),
    };
    let text = entry.trim();
    if let Some((start, end)) = text.split_once("..") {
        let start: IpAddr = start
            .trim()
            .parse()
            .map_err(|_| invalid("the range start is not an IP address"))?;
        let end: IpAddr = end
            .trim()
            .parse()
            .map_err(|_| invalid("the range end is not an IP address"))?;
        if start.is_ipv4() != end.is_ipv4() {
            return Err(invalid("both ends of a range must be of one family"));
        }
        let ordered = match (start, end) {
            (IpAddr::V4(a), IpAddr::V4(b)) => a <= b,
            (IpAddr::V6(a), IpAddr::V6(b)) => a <= b,
            _ => false,
        };
        if !ordered {
            return Err(invalid("the range start is after its end"));
        }
        return Ok((start, end));
    }
    if text.contains('/') {
        let net: ipnet::IpNet = text.parse().map_err(|_| invalid("not a CIDR"))?;
        return Ok((net.network(), net.broadcast()));
    }
    let ip: IpAddr = text
        .parse()
        .map_err(|_| invalid("expected an IP address, a..b range or CIDR"))?;
    Ok((ip, ip))
}

impl SubnetIpam {
    pub fn new(config: SubnetIpamConfig) -> Result<SubnetIpam, IpamError> {
        if config.cidr_v4.is_none() && config.cidr_v6.is_none() {
            return Err(IpamError::NoCidr);
        }
        let v4 = match config.cidr_v4 {
            Some(net) => {
                if !(8..=30).contains(&net.prefix_len()) {
                    return Err(IpamError::InvalidCidr {
                        cidr: net.to_string(),
                        reason: "an IPv4 subnet must be from /8 to /30".into(),
                    });
                }
                if net.network() != net.addr() {
                    return Err(IpamError::InvalidCidr {
                        cidr: net.to_string(),
                        reason: format!("host bits are set; did you mean {}?", net.trunc()),
                    });
                }
                if let Some(gateway) = config.gateway_v4 {
                    if !net.contains(&gateway) {
                        return Err(IpamError::InvalidGateway {
                            ip: IpAddr::V4(gateway),
                            reason: format!("outside {net}"),
                        });
                    }
                }
                Some(FamilyPool::new(
                    Family::V4,
                    net.to_string(),
                    v4_value(net.network()),
                    v4_value(net.broadcast()),
                    config.gateway_v4.map(v4_value),
                )?)
            }
            None => None,
        };
        let v6 = match config.cidr_v6 {
            Some(net) => {
                // Kube-OVN's default pod CIDR is a /112 and /120, /126 and /127 are in use; a /128
                // has no address besides the subnet-router anycast (RFC 4291 §2.6.1).
                if !(8..=127).contains(&net.prefix_len()) {
                    return Err(IpamError::InvalidCidr {
                        cidr: net.to_string(),
                        reason: "an IPv6 subnet must be from /8 to /127".into(),
                    });
                }
                if net.network() != net.addr() {
                    return Err(IpamError::InvalidCidr {
                        cidr: net.to_string(),
                        reason: format!("host bits are set; did you mean {}?", net.trunc()),
                    });
                }
                if let Some(gateway) = config.gateway_v6 {
                    if !net.contains(&gateway) {
                        return Err(IpamError::InvalidGateway {
                            ip: IpAddr::V6(gateway),
                            reason: format!("outside {net}"),
                        });
                    }
                }
                Some(FamilyPool::new(
                    Family::V6,
                    net.to_string(),
                    v6_value(net.network()),
                    v6_value(net.broadcast()),
                    config.gateway_v6.map(v6_value),
                )?)
            }
            None => None,
        };
        if config.gateway_v4.is_some() && v4.is_none() || config.gateway_v6.is_some() && v6.is_none() {
            let ip = config
                .gateway_v4
                .map(IpAddr::V4)
                .or(config.gateway_v6.map(IpAddr::V6))
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            return Err(IpamError::InvalidGateway {
                ip,
                reason: "the subnet has no CIDR of its family".into(),
            });
        }
        let mut ipam = SubnetIpam {
            v4,
            v6,
            strategy: config.strategy,
            macs: HashMap::default(),
            gateway_mac: config.gateway_mac,
            allocations: HashMap::default(),
            rng: SmallRng::from_entropy(),
        };
        for entry in &config.exclude_ips {
            let (start, end) = parse_exclude_entry(entry)?;
            match (start, end) {
                (IpAddr::V4(a), IpAddr::V4(b)) => {
                    if let Some(pool) = ipam.v4.as_mut() {
                        pool.exclude(v4_value(a), v4_value(b));
                    }
                }
                (IpAddr::V6(a), IpAddr::V6(b)) => {
                    if let Some(pool) = ipam.v6.as_mut() {
                        pool.exclude(v6_value(a), v6_value(b));
                    }
                }
                _ => {}
            }
        }
        Ok(ipam)
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Every owner and what it holds.
    pub fn allocations(&self) -> impl Iterator<Item = (&str, &Allocation)> {
        self.allocations
            .iter()
            .map(|(owner, allocation)| (&**owner, allocation))
    }

    pub fn allocation_of(&self, owner: &str) -> Option<&Allocation> {
        self.allocations.get(owner)
    }

    pub fn owner_of_ip(&self, ip: IpAddr) -> Option<&str> {
        match ip {
            IpAddr::V4(v4) => self.v4.as_ref()?.owners.get(&v4_value(v4)).map(|owner| &**owner),
            IpAddr::V6(v6) => self.v6.as_ref()?.owners.get(&v6_value(v6)).map(|owner| &**owner),
        }
    }

    pub fn owner_of_mac(&self, mac: &MacAddr) -> Option<&str> {
        self.macs.get(mac).map(|owner| &**owner)
    }

    /// Whether dynamic allocation could ever return `ip` (false for gateway and excluded ones).
    pub fn is_excluded(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self
                .v4
                .as_ref()
                .is_some_and(|pool| pool.excluded.contains(v4_value(v4))),
            IpAddr::V6(v6) => self
                .v6
                .as_ref()
                .is_some_and(|pool| pool.excluded.contains(v6_value(v6))),
        }
    }

    pub fn gateway_v4(&self) -> Option<Ipv4Addr> {
        self.v4.as_ref().map(|pool| Ipv4Addr::from(pool.gateway as u32))
    }

    pub fn gateway_v6(&self) -> Option<Ipv6Addr> {
        self.v6.as_ref().map(|pool| Ipv6Addr::from(pool.gateway))
    }

    pub fn used_v4(&self) -> u128 {
        self.v4.as_ref().map_or(0, FamilyPool::used)
    }

    pub fn free_v4(&self) -> u128 {
        self.v4.as_ref().map_or(0, FamilyPool::free)
    }

    pub fn used_v6(&self) -> u128 {
        self.v6.as_ref().map_or(0, FamilyPool::used)
    }

    pub fn free_v6(&self) -> u128 {
        self.v6.as_ref().map_or(0, FamilyPool::free)
    }

    fn check_mac(&self, mac: MacAddr) -> Result<(), IpamError> {
        if mac.is_multicast() {
            return Err(IpamError::InvalidMac {
                mac,
                reason: "a multicast address",
            });
        }
        if mac.is_zero() {
            return Err(IpamError::InvalidMac {
                mac,
                reason: "all zeros",
            });
        }
        if self.gateway_mac == Some(mac) {
            return Err(IpamError::MacInUse {
                mac,
                owner: "the gateway".into(),
            });
        }
        if let Some(owner) = self.macs.get(&mac) {
            return Err(IpamError::MacInUse {
                mac,
                owner: owner.to_string(),
            });
        }
        Ok(())
    }

    /// Allocates for `owner`. Both families of a dual-stack subnet are allocated, or neither.
    /// Asking again with a compatible request returns what the owner holds.
    /// [`SubnetIpam::allocate`], never handing out (or accepting) what `elsewhere` uses: a
    /// requested address or MAC in it is `AddressInUse`/`MacInUse` naming the user; dynamic
    /// allocation skips it. `elsewhere` is not remembered.
    pub fn allocate_avoiding(
        &mut self,
        owner: &str,
        request: &AllocationRequest,
        elsewhere: &InUseElsewhere,
    ) -> Result<Allocation, IpamError> {
        if elsewhere.is_empty() || self.allocations.contains_key(owner) {
            return self.allocate(owner, request);
        }
        let requested = request.v4.map(IpAddr::V4).into_iter().chain(request.v6.map(IpAddr::V6));
        for ip in requested {
            if let Some(user) = elsewhere.ips.get(&ip) {
                return Err(IpamError::AddressInUse {
                    ip,
                    owner: user.clone(),
                });
            }
        }
        if let Some(mac) = request.mac {
            if let Some(user) = elsewhere.macs.get(&mac) {
                return Err(IpamError::MacInUse {
                    mac,
                    owner: user.clone(),
                });
            }
        }
        // Mark what is used elsewhere as taken for this one allocation, then unmark it.
        let mut marked: Vec<(Family, u128)> = Vec::new();
        for ip in elsewhere.ips.keys() {
            let (pool, value) = match ip {
                IpAddr::V4(v4) => (self.v4.as_mut(), v4_value(*v4)),
                IpAddr::V6(v6) => (self.v6.as_mut(), v6_value(*v6)),
            };
            if let Some(pool) = pool {
                if (pool.first..=pool.last).contains(&value) && !pool.taken.contains(value) {
                    pool.taken.insert(value);
                    marked.push((pool.family, value));
                }
            }
        }
        let mut marked_macs = Vec::new();
        for mac in elsewhere.macs.keys() {
            if !self.macs.contains_key(mac) {
                self.macs.insert(*mac, SharedOwner::from(""));
                marked_macs.push(*mac);
            }
        }
        // An address waiting for reuse is already taken, so it was not marked: one handed back
        // from the reuse queue may still be used elsewhere. Give it back (to the end of the
        // queue) and try again, at most once per such address.
        let hits = |result: &Result<Allocation, IpamError>| -> Option<Family> {
            let Ok(allocation) = result else {
                return None;
            };
            if allocation
                .v4
                .is_some_and(|ip| elsewhere.ips.contains_key(&IpAddr::V4(ip)))
            {
                return Some(Family::V4);
            }
            if allocation
                .v6
                .is_some_and(|ip| elsewhere.ips.contains_key(&IpAddr::V6(ip)))
            {
                return Some(Family::V6);
            }
            None
        };
        let mut result = self.allocate(owner, request);
        let mut retries = elsewhere.ips.len();
        while let Some(family) = hits(&result) {
            self.release(owner);
            if retries == 0 {
                result = Err(IpamError::SubnetFull { family });
                break;
            }
            retries -= 1;
            result = self.allocate(owner, request);
        }
        for (family, value) in marked {
            let pool = match family {
                Family::V4 => self.v4.as_mut(),
                Family::V6 => self.v6.as_mut(),
            };
            if let Some(pool) = pool {
                pool.taken.remove(value);
            }
        }
        for mac in marked_macs {
            self.macs.remove(&mac);
        }
        result
    }

    pub fn allocate(&mut self, owner: &str, request: &AllocationRequest) -> Result<Allocation, IpamError> {
        let mut rng = self.rng.clone();
        let result = self.allocate_with(owner, request, &mut rng);
        self.rng = rng;
        result
    }

    pub fn allocate_with(
        &mut self,
        owner: &str,
        request: &AllocationRequest,
        rng: &mut impl Rng,
    ) -> Result<Allocation, IpamError> {
        if let Some(existing) = self.allocations.get(owner) {
            let compatible = request.v4.is_none_or(|ip| existing.v4 == Some(ip))
                && request.v6.is_none_or(|ip| existing.v6 == Some(ip))
                && request.mac.is_none_or(|mac| existing.mac == mac);
            return if compatible {
                Ok(*existing)
            } else {
                Err(IpamError::OwnerHasDifferentAllocation)
            };
        }
        // Check everything that can be checked before taking anything.
        if let Some(ip) = request.v4 {
            match &self.v4 {
                Some(pool) => pool.check_static(v4_value(ip))?,
                None => {
                    return Err(IpamError::FamilyNotInSubnet {
                        ip: IpAddr::V4(ip),
                        family: Family::V4,
                    })
                }
            }
        }
        if let Some(ip) = request.v6 {
            match &self.v6 {
                Some(pool) => pool.check_static(v6_value(ip))?,
                None => {
                    return Err(IpamError::FamilyNotInSubnet {
                        ip: IpAddr::V6(ip),
                        family: Family::V6,
                    })
                }
            }
        }
        if let Some(mac) = request.mac {
            self.check_mac(mac)?;
        }
        let owner = &SharedOwner::from(owner);
        let strategy = self.strategy;
        let v4 = match self.v4.as_mut() {
            Some(pool) => Some(match request.v4 {
                Some(ip) => pool.take_static(v4_value(ip), owner).map(|_| v4_value(ip))?,
                None => pool.take_dynamic(owner, strategy, rng)?,
            }),
            None => None,
        };
        let v6 = match self.v6.as_mut() {
            Some(pool) => {
                let taken = match request.v6 {
                    Some(ip) => pool.take_static(v6_value(ip), owner).map(|_| v6_value(ip)),
                    None => pool.take_dynamic(owner, strategy, rng),
                };
                match taken {
                    Ok(value) => Some(value),
                    Err(error) => {
                        // All or nothing: give the IPv4 address back without a reuse delay.
                        if let (Some(pool), Some(value)) = (self.v4.as_mut(), v4) {
                            pool.owners.remove(&value);
                            if !pool.excluded.contains(value) {
                                pool.taken.remove(value);
                            }
                        }
                        return Err(error);
                    }
                }
            }
            None => None,
        };
        let mac = match request.mac {
            Some(mac) => mac,
            None => loop {
                let candidate = MacAddr::random_local(rng);
                if self.check_mac(candidate).is_ok() {
                    break candidate;
                }
            },
        };
        self.macs.insert(mac, owner.clone());
        let allocation = Allocation {
            v4: v4.map(|value| Ipv4Addr::from(value as u32)),
            v6: v6.map(Ipv6Addr::from),
            mac,
        };
        self.allocations.insert(owner.clone(), allocation);
        Ok(allocation)
    }

    /// Releases what `owner` holds; its addresses are reused only after the never-used ones.
    pub fn release(&mut self, owner: &str) -> Option<Allocation> {
        let allocation = self.allocations.remove(owner)?;
        if let (Some(pool), Some(ip)) = (self.v4.as_mut(), allocation.v4) {
            pool.release(v4_value(ip));
        }
        if let (Some(pool), Some(ip)) = (self.v6.as_mut(), allocation.v6) {
            pool.release(v6_value(ip));
        }
        self.macs.remove(&allocation.mac);
        Some(allocation)
    }

    /// Rebuilds an allocation read from storage: no reuse delay and no exclusion check, but a
    /// second owner of an address or MAC is refused so the caller can report it.
    pub fn restore(&mut self, owner: &str, request: &AllocationRequest) -> Result<Allocation, IpamError> {
        if self.allocations.contains_key(owner) {
            return Err(IpamError::OwnerHasDifferentAllocation);
        }
        let Some(mac) = request.mac else {
            return Err(IpamError::InvalidMac {
                mac: MacAddr::from_octets([0; 6]),
                reason: "missing from the stored allocation",
            });
        };
        if let Some(existing) = self.macs.get(&mac) {
            return Err(IpamError::MacInUse {
                mac,
                owner: existing.to_string(),
            });
        }
        if let Some(ip) = request.v4 {
            let pool = self.v4.as_ref().ok_or(IpamError::FamilyNotInSubnet {
                ip: IpAddr::V4(ip),
                family: Family::V4,
            })?;
            if let Some(existing) = pool.owners.get(&v4_value(ip)) {
                return Err(IpamError::AddressInUse {
                    ip: IpAddr::V4(ip),
                    owner: existing.to_string(),
                });
            }
        }
        if let Some(ip) = request.v6 {
            let pool = self.v6.as_ref().ok_or(IpamError::FamilyNotInSubnet {
                ip: IpAddr::V6(ip),
                family: Family::V6,
            })?;
            if let Some(existing) = pool.owners.get(&v6_value(ip)) {
                return Err(IpamError::AddressInUse {
                    ip: IpAddr::V6(ip),
                    owner: existing.to_string(),
                });
            }
        }
        let owner = &SharedOwner::from(owner);
        if let (Some(pool), Some(ip)) = (self.v4.as_mut(), request.v4) {
            pool.restore(v4_value(ip), owner)?;
        }
        if let (Some(pool), Some(ip)) = (self.v6.as_mut(), request.v6) {
            if let Err(error) = pool.restore(v6_value(ip), owner) {
                if let (Some(pool), Some(ip)) = (self.v4.as_mut(), request.v4) {
                    pool.owners.remove(&v4_value(ip));
                    pool.taken.remove(v4_value(ip));
                }
                return Err(error);
            }
        }
        self.macs.insert(mac, owner.clone());
        let allocation = Allocation {
            v4: request.v4,
            v6: request.v6,
            mac,
        };
        self.allocations.insert(owner.clone(), allocation);
        Ok(allocation)
    }
}

/// The IPAM of every managed subnet.
#[derive(Debug, Default)]
pub struct Ipam {
    subnets: std::collections::HashMap<String, SubnetIpam>,
}

impl Ipam {
    pub fn add_subnet(&mut self, name: String, subnet: SubnetIpam) {
        self.subnets.insert(name, subnet);
    }

    pub fn remove_subnet(&mut self, name: &str) -> Option<SubnetIpam> {
        self.subnets.remove(name)
    }

    pub fn get(&self, name: &str) -> Option<&SubnetIpam> {
        self.subnets.get(name)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut SubnetIpam> {
        self.subnets.get_mut(name)
    }
}

#[cfg(test)]
mod tests;
