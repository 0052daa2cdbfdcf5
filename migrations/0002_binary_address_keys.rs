//! Store format 2: allocation keys hold addresses in network byte order (4 or 16 bytes) and MACs
//! as their 6 bytes instead of text, so one subnet's allocations sort by address (text sorts
//! `10.16.0.10` before `10.16.0.9`) and an IPv6 address has one spelling only.

use std::net::IpAddr;

use super::{PlannedWrite, Tree, Trees};

pub const DESCRIPTION: &str = "binary address and MAC keys";

fn split(key: &[u8]) -> Result<(&[u8], &str), String> {
    let separator = key
        .iter()
        .position(|byte| *byte == 0)
        .ok_or_else(|| format!("key without separator: {key:?}"))?;
    let text = std::str::from_utf8(&key[separator + 1..]).map_err(|_| format!("key is not text: {key:?}"))?;
    Ok((&key[..separator], text))
}

fn rekey(subnet: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(subnet.len() + 1 + tail.len());
    key.extend_from_slice(subnet);
    key.push(0);
    key.extend_from_slice(tail);
    key
}

pub fn plan(trees: &Trees) -> Result<Vec<PlannedWrite>, String> {
    let mut writes = Vec::new();
    for entry in trees.ips.iter() {
        let (key, value) = entry.map_err(|error| error.to_string())?;
        let (subnet, text) = split(&key)?;
        let ip: IpAddr = text
            .parse()
            .map_err(|_| format!("bad address {text:?} in an allocation key"))?;
        let binary = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        writes.push(PlannedWrite {
            tree: Tree::Ips,
            key: key.to_vec(),
            value: None,
        });
        writes.push(PlannedWrite {
            tree: Tree::Ips,
            key: rekey(subnet, &binary),
            value: Some(value.to_vec()),
        });
    }
    for entry in trees.macs.iter() {
        let (key, value) = entry.map_err(|error| error.to_string())?;
        let (subnet, text) = split(&key)?;
        let octets = text
            .split(':')
            .map(|part| u8::from_str_radix(part, 16).map_err(|_| format!("bad MAC {text:?} in an allocation key")))
            .collect::<Result<Vec<u8>, String>>()?;
        if octets.len() != 6 {
            return Err(format!("bad MAC {text:?} in an allocation key"));
        }
        writes.push(PlannedWrite {
            tree: Tree::Macs,
            key: key.to_vec(),
            value: None,
        });
        writes.push(PlannedWrite {
            tree: Tree::Macs,
            key: rekey(subnet, &octets),
            value: Some(value.to_vec()),
        });
    }
    Ok(writes)
}
