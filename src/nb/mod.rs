//! The only module that knows OVN Northbound's vocabulary (tables, columns, options, the
//! daemon's `external_ids` marks), both ways: typed rows decoded from the OVSDB client's cache
//! (this file), what they mean for the sync ([`changes`], [`topology`], [`in_use_outside`]), the
//! daemon's wishes encoded into rows ([`encode`]) and the difference sent as operations
//! ([`plan`]); and the list of tables and columns the daemon depends on (checked against the
//! server's schema at connect time). Knows nothing of JSON-RPC.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

pub mod changes;
pub mod encode;
mod in_use;
mod owner;
pub mod plan;
pub mod topology;

pub use encode::{DesiredLoadBalancer, DesiredPort, PortKind};
pub use in_use::{in_use_outside, NbInUse};
pub use owner::{is_owned, row_is_owned, Owner, UnknownOwner, OWNER_KEY, VENDOR, VENDOR_KEY};
pub use plan::{Actual, Difference, Plan, Wanted};

use crate::ovsdb::{Atom, Cache, ClientConfig, IndexSpec, Remote, Row, Value};

pub const DATABASE: &str = "OVN_Northbound";

pub const NB_GLOBAL: &str = "NB_Global";
pub const LOGICAL_SWITCH: &str = "Logical_Switch";
pub const LOGICAL_SWITCH_PORT: &str = "Logical_Switch_Port";
pub const LOGICAL_ROUTER: &str = "Logical_Router";
pub const LOGICAL_ROUTER_PORT: &str = "Logical_Router_Port";
pub const LOAD_BALANCER: &str = "Load_Balancer";
pub const LOAD_BALANCER_HEALTH_CHECK: &str = "Load_Balancer_Health_Check";

/// Every table and column the daemon reads or writes. A server whose schema lacks one is refused
/// with an error naming it, instead of failing later in a transaction.
pub const REQUIRED_COLUMNS: &[(&str, &[&str])] = &[
    (NB_GLOBAL, &["nb_cfg", "external_ids", "options"]),
    (
        LOGICAL_SWITCH,
        &["name", "ports", "load_balancer", "external_ids", "other_config"],
    ),
    (
        LOGICAL_SWITCH_PORT,
        &[
            "name",
            "type",
            "addresses",
            "port_security",
            "options",
            "external_ids",
            "up",
            "enabled",
        ],
    ),
    (LOGICAL_ROUTER, &["name", "ports", "load_balancer", "external_ids"]),
    (LOGICAL_ROUTER_PORT, &["name", "mac", "networks", "external_ids"]),
    (
        LOAD_BALANCER,
        &[
            "name",
            "vips",
            "protocol",
            "selection_fields",
            "options",
            "health_check",
            "ip_port_mappings",
            "external_ids",
        ],
    ),
    (LOAD_BALANCER_HEALTH_CHECK, &["vip", "options", "external_ids"]),
];

/// A client configuration that monitors and requires the tables above.
pub fn client_config(remotes: Vec<Remote>) -> ClientConfig {
    let mut config = ClientConfig::new(remotes, DATABASE);
    config.monitored_tables = REQUIRED_COLUMNS.iter().map(|(table, _)| table.to_string()).collect();
    config.indexes = vec![
        port_by_name(),
        port_by_owner(),
        foreign_ports(),
        load_balancer_by_owner(),
    ];
    // The reconnect backoff stays at the client's default cap (1 s): NB is local or on the
    // control plane's network, and a takeover waits for the NB lock after an NB leader change.
    config.required_columns = REQUIRED_COLUMNS
        .iter()
        .map(|(table, columns)| (table.to_string(), columns.iter().map(|c| c.to_string()).collect()))
        .collect();
    // Only what the daemon reads or writes is monitored and cached: a logical switch port has
    // about twice as many columns as the daemon uses.
    config.monitored_columns = config.required_columns.clone();
    config
}

/// Logical_Switch_Port by name (names are unique in NB).
pub fn port_by_name() -> IndexSpec {
    IndexSpec::column(LOGICAL_SWITCH_PORT, "name")
}

/// Logical_Switch_Port by the daemon's owner mark (`external_ids:ovn-vipd/owner`).
pub fn port_by_owner() -> IndexSpec {
    IndexSpec::map_key(LOGICAL_SWITCH_PORT, "external_ids", OWNER_KEY)
}

/// The Logical_Switch_Ports without the daemon's mark, by their `external_ids:vendor` (`""` when
/// they have none): what [`in_use_outside`] reads at every allocation, without walking a switch
/// of 100,000 owned ports. The daemon's own ports are not in it.
pub fn foreign_ports() -> IndexSpec {
    IndexSpec::map_key_except(LOGICAL_SWITCH_PORT, "external_ids", VENDOR_KEY, VENDOR, "")
}

/// Load_Balancer by the daemon's owner mark.
pub fn load_balancer_by_owner() -> IndexSpec {
    IndexSpec::map_key(LOAD_BALANCER, "external_ids", OWNER_KEY)
}

fn string(row: &Row, column: &str) -> String {
    row.get(column).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn optional_string(row: &Row, column: &str) -> Option<String> {
    row.get(column).and_then(Value::as_str).map(str::to_string)
}

fn string_set(row: &Row, column: &str) -> BTreeSet<String> {
    match row.get(column) {
        Some(Value::Set(items)) => items.iter().filter_map(Atom::as_str).map(str::to_string).collect(),
        Some(Value::Atom(Atom::String(text))) => BTreeSet::from([text.to_string()]),
        _ => BTreeSet::new(),
    }
}

fn uuid_set(row: &Row, column: &str) -> BTreeSet<Uuid> {
    match row.get(column) {
        Some(Value::Set(items)) => items.iter().filter_map(Atom::as_uuid).collect(),
        Some(Value::Atom(Atom::Uuid(uuid))) => BTreeSet::from([*uuid]),
        _ => BTreeSet::new(),
    }
}

fn string_map(row: &Row, column: &str) -> BTreeMap<String, String> {
    match row.get(column) {
        Some(Value::Map(entries)) => entries
            .iter()
            .filter_map(|(key, value)| Some((key.as_str()?.to_string(), value.as_str()?.to_string())))
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn optional_bool(row: &Row, column: &str) -> Option<bool> {
    row.get(column).and_then(Value::as_atom).and_then(Atom::as_bool)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbGlobal {
    pub uuid: Uuid,
    pub nb_cfg: i64,
    pub external_ids: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalSwitch {
    pub uuid: Uuid,
    pub name: String,
    pub ports: BTreeSet<Uuid>,
    pub load_balancer: BTreeSet<Uuid>,
    pub external_ids: BTreeMap<String, String>,
    pub other_config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalSwitchPort {
    pub uuid: Uuid,
    pub name: String,
    pub port_type: String,
    pub addresses: BTreeSet<String>,
    pub port_security: BTreeSet<String>,
    pub options: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
    pub up: Option<bool>,
    pub enabled: Option<bool>,
}

/// A Logical_Switch_Port read in place in the cache: what a pass compares with, without a typed
/// copy of every port (a full pass looks at every one of a switch's 100,000 ports).
#[derive(Debug, Clone, Copy)]
pub struct PortRow<'a> {
    pub uuid: Uuid,
    pub row: &'a Row,
}

impl<'a> PortRow<'a> {
    pub fn name(&self) -> &'a str {
        self.row.get("name").and_then(Value::as_str).unwrap_or_default()
    }

    pub fn port_type(&self) -> &'a str {
        self.row.get("type").and_then(Value::as_str).unwrap_or_default()
    }

    /// One `options` entry.
    pub fn option(&self, key: &str) -> Option<&'a str> {
        self.row.get("options")?.as_map()?.get_str(key).and_then(Atom::as_str)
    }

    /// Whether the port carries the daemon's mark.
    pub fn is_owned(&self) -> bool {
        row_is_owned(self.row)
    }

    /// The typed copy (of one port).
    pub fn typed(&self) -> LogicalSwitchPort {
        LogicalSwitchPort::from_row(self.uuid, self.row)
    }
}

/// Whether the string set `column` of `row` holds exactly `wanted` (compared in place).
fn string_set_is(row: &Row, column: &str, wanted: &BTreeSet<String>) -> bool {
    let wanted = wanted.iter().map(String::as_str);
    match row.get(column) {
        Some(Value::Set(items)) => items.iter().filter_map(Atom::as_str).eq(wanted),
        Some(Value::Atom(Atom::String(text))) => std::iter::once(text.as_str()).eq(wanted),
        _ => wanted.eq(std::iter::empty::<&str>()),
    }
}

/// Whether the string map `column` of `row` holds exactly `wanted` (compared in place).
fn string_map_is(row: &Row, column: &str, wanted: &BTreeMap<String, String>) -> bool {
    let wanted = wanted.iter().map(|(key, value)| (key.as_str(), value.as_str()));
    match row.get(column) {
        Some(Value::Map(entries)) => entries
            .iter()
            .filter_map(|(key, value)| Some((key.as_str()?, value.as_str()?)))
            .eq(wanted),
        _ => wanted.eq(std::iter::empty::<(&str, &str)>()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalRouter {
    pub uuid: Uuid,
    pub name: String,
    pub ports: BTreeSet<Uuid>,
    pub load_balancer: BTreeSet<Uuid>,
    pub external_ids: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalRouterPort {
    pub uuid: Uuid,
    pub name: String,
    pub mac: String,
    pub networks: BTreeSet<String>,
    pub external_ids: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancer {
    pub uuid: Uuid,
    pub name: String,
    pub vips: BTreeMap<String, String>,
    pub protocol: Option<String>,
    pub selection_fields: BTreeSet<String>,
    pub options: BTreeMap<String, String>,
    pub health_check: BTreeSet<Uuid>,
    pub ip_port_mappings: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancerHealthCheck {
    pub uuid: Uuid,
    pub vip: String,
    pub options: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
}

/// A typed NB row, decoded from a cached row.
pub trait NbRow: Sized {
    const TABLE: &'static str;
    fn from_row(uuid: Uuid, row: &Row) -> Self;

    /// Every row of the table in the cache.
    fn all(cache: &Cache) -> Vec<Self> {
        cache
            .rows(Self::TABLE)
            .map(|(uuid, row)| Self::from_row(*uuid, row))
            .collect()
    }

    fn get(cache: &Cache, uuid: &Uuid) -> Option<Self> {
        cache.row(Self::TABLE, uuid).map(|row| Self::from_row(*uuid, row))
    }
}

impl NbRow for NbGlobal {
    const TABLE: &'static str = NB_GLOBAL;
    fn from_row(uuid: Uuid, row: &Row) -> Self {
        NbGlobal {
            uuid,
            nb_cfg: row
                .get("nb_cfg")
                .and_then(Value::as_atom)
                .and_then(Atom::as_i64)
                .unwrap_or(0),
            external_ids: string_map(row, "external_ids"),
            options: string_map(row, "options"),
        }
    }
}

impl LogicalSwitch {
    /// Every switch, with only the ports of `of_interest` in `ports`: a switch with 100,000 ports
    /// is not converted whole when a pass looks at a few of them.
    pub fn all_with_ports_of_interest(cache: &Cache, of_interest: &BTreeSet<Uuid>) -> Vec<LogicalSwitch> {
        cache
            .rows(LOGICAL_SWITCH)
            .map(|(uuid, row)| {
                let ports = match row.get("ports") {
                    Some(Value::Set(items)) => of_interest
                        .iter()
                        .filter(|port| items.contains(&Atom::Uuid(**port)))
                        .copied()
                        .collect(),
                    Some(Value::Atom(Atom::Uuid(port))) if of_interest.contains(port) => BTreeSet::from([*port]),
                    _ => BTreeSet::new(),
                };
                LogicalSwitch {
                    uuid: *uuid,
                    name: string(row, "name"),
                    ports,
                    load_balancer: uuid_set(row, "load_balancer"),
                    external_ids: string_map(row, "external_ids"),
                    other_config: string_map(row, "other_config"),
                }
            })
            .collect()
    }
}

impl NbRow for LogicalSwitch {
    const TABLE: &'static str = LOGICAL_SWITCH;
    fn from_row(uuid: Uuid, row: &Row) -> Self {
        LogicalSwitch {
            uuid,
            name: string(row, "name"),
            ports: uuid_set(row, "ports"),
            load_balancer: uuid_set(row, "load_balancer"),
            external_ids: string_map(row, "external_ids"),
            other_config: string_map(row, "other_config"),
        }
    }
}

impl NbRow for LogicalSwitchPort {
    const TABLE: &'static str = LOGICAL_SWITCH_PORT;
    fn from_row(uuid: Uuid, row: &Row) -> Self {
        LogicalSwitchPort {
            uuid,
            name: string(row, "name"),
            port_type: string(row, "type"),
            addresses: string_set(row, "addresses"),
            port_security: string_set(row, "port_security"),
            options: string_map(row, "options"),
            external_ids: string_map(row, "external_ids"),
            up: optional_bool(row, "up"),
            enabled: optional_bool(row, "enabled"),
        }
    }
}

impl NbRow for LogicalRouter {
    const TABLE: &'static str = LOGICAL_ROUTER;
    fn from_row(uuid: Uuid, row: &Row) -> Self {
        LogicalRouter {
            uuid,
            name: string(row, "name"),
            ports: uuid_set(row, "ports"),
            load_balancer: uuid_set(row, "load_balancer"),
            external_ids: string_map(row, "external_ids"),
        }
    }
}

impl NbRow for LogicalRouterPort {
    const TABLE: &'static str = LOGICAL_ROUTER_PORT;
    fn from_row(uuid: Uuid, row: &Row) -> Self {
        LogicalRouterPort {
            uuid,
            name: string(row, "name"),
            mac: string(row, "mac"),
            networks: string_set(row, "networks"),
            external_ids: string_map(row, "external_ids"),
        }
    }
}

impl NbRow for LoadBalancer {
    const TABLE: &'static str = LOAD_BALANCER;
    fn from_row(uuid: Uuid, row: &Row) -> Self {
        LoadBalancer {
            uuid,
            name: string(row, "name"),
            vips: string_map(row, "vips"),
            protocol: optional_string(row, "protocol"),
            selection_fields: string_set(row, "selection_fields"),
            options: string_map(row, "options"),
            health_check: uuid_set(row, "health_check"),
            ip_port_mappings: string_map(row, "ip_port_mappings"),
            external_ids: string_map(row, "external_ids"),
        }
    }
}

impl NbRow for LoadBalancerHealthCheck {
    const TABLE: &'static str = LOAD_BALANCER_HEALTH_CHECK;
    fn from_row(uuid: Uuid, row: &Row) -> Self {
        LoadBalancerHealthCheck {
            uuid,
            vip: string(row, "vip"),
            options: string_map(row, "options"),
            external_ids: string_map(row, "external_ids"),
        }
    }
}

/// A short summary of the cache, for logs.
pub fn summary(cache: &Cache) -> BTreeMap<&'static str, usize> {
    REQUIRED_COLUMNS
        .iter()
        .map(|(table, _)| (*table, cache.len(table)))
        .collect()
}
