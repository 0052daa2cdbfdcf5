//! Key encodings. Every record lives in the one tree `records` (store format 4), its key a
//! [`Space`] byte followed by the key within that space. Names are their UTF-8 bytes; a pod is
//! `namespace/name`; an allocation is the subnet name, a NUL, and the address in network byte
//! order (4 or 16 bytes) or the 6 MAC bytes, so one subnet's allocations are a contiguous,
//! ordered range.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::StoreError;
use crate::model::{MacAddr, PodRef};

/// The key spaces of the `records` tree: the first byte of every key (store format 4; before
/// it, each was a tree of its own, named in the comments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Space {
    /// `subnets`: name → `SubnetRecord`.
    Subnet = 1,
    /// `vips`: name → `VipRecord`.
    Vip = 2,
    /// `pods`: `namespace/name` → `PodRecord`.
    Pod = 3,
    /// `slrs`: name → `SwitchLbRuleRecord`.
    SwitchLbRule = 4,
    /// `ips`: subnet NUL address → `OwnerRecord`.
    Ip = 5,
    /// `macs`: subnet NUL MAC → `OwnerRecord`.
    Mac = 6,
    /// `revisions`: kind byte + object key → revision (u64 big endian).
    Revision = 7,
    /// `changes`: revision (u64 big endian) → `ChangeRecord`.
    Change = 8,
    /// `cluster_rows`: the clustered replica's rows, `table NUL uuid` → the row as JSON.
    ClusterRow = 9,
    /// Clustered replica metadata (the last transaction id; was in `meta`).
    ClusterMeta = 10,
}

impl Space {
    /// `key` within this space, as stored.
    pub fn key(self, key: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(key.len() + 1);
        bytes.push(self as u8);
        bytes.extend_from_slice(key);
        bytes
    }

    /// The first byte of every key of this space.
    pub fn prefix(self) -> [u8; 1] {
        [self as u8]
    }
}

pub fn pod(pod: &PodRef) -> Vec<u8> {
    format!("{}/{}", pod.namespace, pod.name).into_bytes()
}

pub fn ip(subnet: &str, ip: IpAddr) -> Vec<u8> {
    let mut key = Vec::with_capacity(subnet.len() + 17);
    key.extend_from_slice(subnet.as_bytes());
    key.push(0);
    match ip {
        IpAddr::V4(v4) => key.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => key.extend_from_slice(&v6.octets()),
    }
    key
}

pub fn mac(subnet: &str, mac: MacAddr) -> Vec<u8> {
    let mut key = Vec::with_capacity(subnet.len() + 7);
    key.extend_from_slice(subnet.as_bytes());
    key.push(0);
    key.extend_from_slice(&mac.octets());
    key
}

fn split(key: &[u8]) -> Result<(String, &[u8]), StoreError> {
    let separator = key
        .iter()
        .position(|byte| *byte == 0)
        .ok_or_else(|| StoreError::Corrupt(format!("allocation key without separator: {key:?}")))?;
    let subnet = std::str::from_utf8(&key[..separator])
        .map_err(|_| StoreError::Corrupt(format!("allocation key with a non-UTF-8 subnet: {key:?}")))?;
    Ok((subnet.to_string(), &key[separator + 1..]))
}

pub fn parse_ip(key: &[u8]) -> Result<(String, IpAddr), StoreError> {
    let (subnet, rest) = split(key)?;
    let ip = match rest.len() {
        4 => IpAddr::V4(Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3])),
        16 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(rest);
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        other => {
            return Err(StoreError::Corrupt(format!(
                "address key of {other} bytes in subnet {subnet}"
            )))
        }
    };
    Ok((subnet, ip))
}

pub fn parse_mac(key: &[u8]) -> Result<(String, MacAddr), StoreError> {
    let (subnet, rest) = split(key)?;
    let octets: [u8; 6] = rest
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("mac key of {} bytes in subnet {subnet}", rest.len())))?;
    Ok((subnet, MacAddr::from_octets(octets)))
}
