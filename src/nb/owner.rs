//! The daemon's mark on the NB rows it creates: `external_ids:vendor=ovn-vipd` (a row without it is
//! never modified or deleted) and `external_ids:ovn-vipd/owner`, the object the row belongs to.
//! The only place the mark is spelled, formatted or parsed.

use std::collections::BTreeMap;
use std::fmt;

use crate::model::{PodRef, Protocol};
use crate::ovsdb::{Atom, Row, Value};

/// Marks every row the daemon creates; rows without it are never modified or deleted.
pub const VENDOR_KEY: &str = "vendor";
pub const VENDOR: &str = "ovn-vipd";
/// The object a row belongs to, as [`Owner`] spells it.
pub const OWNER_KEY: &str = "ovn-vipd/owner";

/// The object an owned NB row belongs to (`external_ids:ovn-vipd/owner`):
/// `subnet/<name>` (a Logical_Switch), `vip/<name>` (its ports), `pod/<namespace>/<name>/<nic>`
/// (a NIC's port), `slr/<rule>/<protocol>` (a rule's Load_Balancer of one protocol, and its
/// health checks).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    Subnet(String),
    Vip(String),
    Nic { pod: PodRef, interface: String },
    Rule { rule: String, protocol: Protocol },
}

impl Owner {
    /// The owner mark of `external_ids`, when the row carries the daemon's vendor mark and an
    /// owner this version knows.
    pub fn of(external_ids: &BTreeMap<String, String>) -> Option<Owner> {
        if !is_owned(external_ids) {
            return None;
        }
        external_ids.get(OWNER_KEY)?.parse().ok()
    }

    /// [`Owner::of`] on a cached row, without decoding the rest of it.
    pub fn of_row(row: &Row) -> Option<Owner> {
        let ids = row.get("external_ids")?.as_map()?;
        if ids.get_str(VENDOR_KEY).and_then(Atom::as_str) != Some(VENDOR) {
            return None;
        }
        ids.get_str(OWNER_KEY).and_then(Atom::as_str)?.parse().ok()
    }

    /// The `external_ids` of a row this owner's object wants: the vendor mark and the owner.
    pub fn external_ids(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (VENDOR_KEY.to_string(), VENDOR.to_string()),
            (OWNER_KEY.to_string(), self.to_string()),
        ])
    }

    /// The balancers a rule may own, one per protocol.
    pub fn rule_balancers(rule: &str) -> impl Iterator<Item = Owner> + '_ {
        [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
            .into_iter()
            .map(move |protocol| Owner::Rule {
                rule: rule.to_string(),
                protocol,
            })
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Subnet(name) => write!(f, "subnet/{name}"),
            Owner::Vip(name) => write!(f, "vip/{name}"),
            Owner::Nic { pod, interface } => write!(f, "pod/{}/{}/{interface}", pod.namespace, pod.name),
            Owner::Rule { rule, protocol } => write!(f, "slr/{rule}/{}", protocol.as_str()),
        }
    }
}

/// An owner mark this version does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownOwner(pub String);

impl std::str::FromStr for Owner {
    type Err = UnknownOwner;

    fn from_str(mark: &str) -> Result<Owner, UnknownOwner> {
        let unknown = || UnknownOwner(mark.to_string());
        let (kind, rest) = mark.split_once('/').ok_or_else(unknown)?;
        match kind {
            "subnet" => Ok(Owner::Subnet(rest.to_string())),
            "vip" => Ok(Owner::Vip(rest.to_string())),
            "pod" => {
                let mut parts = rest.splitn(3, '/');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(namespace), Some(name), interface) => Ok(Owner::Nic {
                        pod: PodRef {
                            namespace: namespace.to_string(),
                            name: name.to_string(),
                        },
                        // Marks written before pods had several NICs name no interface.
                        interface: interface.unwrap_or_default().to_string(),
                    }),
                    _ => Err(unknown()),
                }
            }
            "slr" => {
                let (rule, protocol) = rest.rsplit_once('/').ok_or_else(unknown)?;
                let protocol = match protocol {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    "sctp" => Protocol::Sctp,
                    _ => return Err(unknown()),
                };
                Ok(Owner::Rule {
                    rule: rule.to_string(),
                    protocol,
                })
            }
            _ => Err(unknown()),
        }
    }
}

/// Whether a row's `external_ids` carry the daemon's vendor mark: only such rows are ever
/// modified or deleted.
pub fn is_owned(external_ids: &BTreeMap<String, String>) -> bool {
    external_ids.get(VENDOR_KEY).map(String::as_str) == Some(VENDOR)
}

/// [`is_owned`] on a cached row, without decoding it (a switch holds mostly the daemon's own
/// ports, and this runs at every allocation).
pub fn row_is_owned(row: &Row) -> bool {
    match row.get("external_ids") {
        Some(Value::Map(entries)) => entries.get_str(VENDOR_KEY).and_then(Atom::as_str) == Some(VENDOR),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_marks_round_trip() {
        for mark in [
            "subnet/ovn-default",
            "vip/lbvip",
            "pod/default/web-0/eth0",
            "slr/web/tcp",
            "slr/a/b/udp",
        ] {
            let owner: Owner = mark.parse().unwrap();
            assert_eq!(owner.to_string(), mark);
        }
        for bad in ["", "vip", "slr/web", "slr/web/icmp", "pod/default", "other/x"] {
            assert!(bad.parse::<Owner>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_marked_rows_have_an_owner() {
        let owner = Owner::Vip("v".into());
        assert_eq!(Owner::of(&owner.external_ids()), Some(owner.clone()));
        let mut foreign = owner.external_ids();
        foreign.remove(VENDOR_KEY);
        assert_eq!(Owner::of(&foreign), None);
        assert!(!is_owned(&foreign));
    }
}
